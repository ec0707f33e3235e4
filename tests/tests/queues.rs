//! queue.declare / bind / unbind / purge / delete through lapin.

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::BasicProperties;
use warren_tests::{declare_passive, reply_code, reply_text, unique, within, Broker};

#[tokio::test(flavor = "multi_thread")]
async fn declare_ok_counts_server_names_and_inequivalent_redeclare() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = within(ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
    let name = unique("q");
    within(ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    for body in [b"1", b"2", b"3"] {
        within(ch.basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        ))
        .await
        .unwrap();
    }
    let consumer_ch = within(conn.create_channel()).await.unwrap();
    within(consumer_ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let _consumer = within(consumer_ch.basic_consume(
        name.as_str().into(),
        "c1".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let passive = declare_passive(&ch, &name).await.unwrap();
    assert_eq!(
        (passive.message_count(), passive.consumer_count()),
        (2, 1),
        "one message is out to the consumer"
    );
    let err = within(ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert_eq!(
        reply_text(&err).unwrap(),
        format!("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '/': received 'true' but current is 'false'")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_queues_are_locked_and_die_with_their_connection() {
    let broker = Broker::start();
    let owner = broker.connect().await;
    let ch = within(owner.create_channel()).await.unwrap();
    let name = unique("excl");
    within(ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let other = broker.connect().await;
    let och = within(other.create_channel()).await.unwrap();
    let err = declare_passive(&och, &name).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(405));
    assert!(reply_text(&err).unwrap().starts_with(&format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}'"
    )));
    within(owner.close(200, "bye".into())).await.unwrap();
    let och = within(other.create_channel()).await.unwrap();
    let err = declare_passive(&och, &name).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_delete_queue_goes_when_its_last_consumer_cancels() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let name = unique("ad");
    within(ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    // lapin cancels a consumer when its handle is dropped: keep both alive.
    let mut consumers = Vec::new();
    for tag in ["a", "b"] {
        consumers.push(
            within(ch.basic_consume(
                name.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ))
            .await
            .unwrap(),
        );
    }
    within(ch.basic_cancel("a".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    let q = declare_passive(&ch, &name).await.unwrap();
    assert_eq!(q.consumer_count(), 1, "still there with one consumer");
    within(ch.basic_cancel("b".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    let err = declare_passive(&ch, &name).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_delete_if_unused_if_empty_bind_unbind() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let name = unique("pd");
    within(ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.queue_bind(
        name.as_str().into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        within(ch.basic_publish(
            "amq.direct".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        within(ch.queue_purge(name.as_str().into(), QueuePurgeOptions::default()))
            .await
            .unwrap(),
        3
    );
    within(ch.queue_unbind(
        name.as_str().into(),
        "amq.direct".into(),
        "k".into(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.basic_publish(
        "amq.direct".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    within(ch.basic_publish(
        "".into(),
        name.as_str().into(),
        BasicPublishOptions::default(),
        b"y",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let err = within(ch.queue_delete(
        name.as_str().into(),
        QueueDeleteOptions {
            if_empty: true,
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert_eq!(
        reply_text(&err).unwrap(),
        format!("PRECONDITION_FAILED - queue '{name}' in vhost '/' not empty")
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let consumer_ch = within(conn.create_channel()).await.unwrap();
    let _busy = within(consumer_ch.basic_consume(
        name.as_str().into(),
        "busy".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let err = within(ch.queue_delete(
        name.as_str().into(),
        QueueDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert_eq!(
        reply_text(&err).unwrap(),
        format!("PRECONDITION_FAILED - queue '{name}' in vhost '/' in use")
    );
    let ch = within(conn.create_channel()).await.unwrap();
    // Only the message sent to the default exchange arrived: the unbind took effect. It is now
    // out to the consumer, so the delete reports 0 ready messages.
    let deleted = within(ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert!(deleted <= 1);
}
