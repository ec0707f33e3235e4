//! Queues through lapin: queue.declare (server names, counts, equivalence, exclusivity,
//! auto-delete), bind and unbind, purge and delete with their preconditions.

use std::time::Duration;

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::{AMQPValue, FieldTable};
use warren_tests::lapin::{BasicProperties, Channel};
use warren_tests::{
    channel, closed_with, confirm_channel, consume, declare_passive, declare_queue, drain,
    next_delivery, publish, unique, within, Broker,
};

async fn fill(ch: &Channel, q: &str, n: usize) {
    for i in 0..n {
        let c = publish(
            ch,
            "",
            q,
            i.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await;
        assert!(c.is_ack());
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_name_gets_a_server_generated_amq_gen_name() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let a = declare_queue(&ch, "", exclusive()).await;
    let b = declare_queue(&ch, "", exclusive()).await;
    for q in [&a, &b] {
        assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
        assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    }
    assert_ne!(a.name(), b.name());
    declare_passive(&ch, a.name().as_str())
        .await
        .expect("it exists");
}

#[tokio::test(flavor = "multi_thread")]
async fn declare_ok_counts_ready_messages_and_consumers() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let q = unique("counts");
    declare_queue(&ch, &q, exclusive()).await;
    fill(&ch, &q, 3).await;
    let again = declare_queue(&ch, &q, exclusive()).await;
    assert_eq!((again.message_count(), again.consumer_count()), (3, 0));
    let consumer_ch = channel(&conn).await;
    within(consumer_ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c = consume(&consumer_ch, &q, "c1", BasicConsumeOptions::default()).await;
    next_delivery(&mut c).await;
    let passive = declare_passive(&ch, &q).await.unwrap();
    assert_eq!(
        (passive.message_count(), passive.consumer_count()),
        (2, 1),
        "the unacked message is not counted as ready"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_declare_of_a_missing_queue_is_404() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let q = unique("missing");
    let err = declare_passive(&ch, &q).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inequivalent_redeclare_is_406_with_rabbitmq_text() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let q = unique("equiv");
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare_queue(&ch, &q, auto_delete).await;
    let durable = QueueDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    let err = within(ch.queue_declare(q.as_str().into(), durable, FieldTable::default()))
        .await
        .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (406, format!("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"))
    );
    let ch = channel(&conn).await;
    let err = within(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (406, format!("PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'false' but current is 'true'"))
    );
    let ch = channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    let err = within(ch.queue_declare(q.as_str().into(), auto_delete, args))
        .await
        .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (406, format!("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received the value '10' of type 'signedint' but current is none"))
    );
    let ch = channel(&conn).await;
    within(ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn another_connection_cannot_use_an_exclusive_queue() {
    let broker = Broker::start();
    let owner = broker.connect().await;
    let ch = channel(&owner).await;
    let q = unique("excl");
    declare_queue(&ch, &q, exclusive()).await;
    let locked = format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.");
    let other = broker.connect().await;
    let och = channel(&other).await;
    let err = declare_passive(&och, &q).await.unwrap_err();
    assert_eq!(closed_with(&err), (405, locked.clone()));
    let och = channel(&other).await;
    let err = within(och.basic_consume(
        q.as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(closed_with(&err), (405, locked.clone()));
    let och = channel(&other).await;
    let err = within(och.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .unwrap_err();
    assert_eq!(closed_with(&err), (405, locked));
    // The owner still uses it.
    declare_passive(&ch, &q)
        .await
        .expect("the owner's queue is intact");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exclusive_queue_goes_when_its_connection_closes() {
    let broker = Broker::start();
    let owner = broker.connect().await;
    let ch = confirm_channel(&owner).await;
    let q = unique("excl-gone");
    declare_queue(&ch, &q, exclusive()).await;
    fill(&ch, &q, 2).await;
    within(owner.close(200, "bye".into())).await.unwrap();
    let other = broker.connect().await;
    // Deletion after a close is asynchronous in RabbitMQ; give it a moment.
    let mut last = None;
    for _ in 0..50 {
        let och = channel(&other).await;
        match declare_passive(&och, &q).await {
            Err(e) => {
                last = Some(closed_with(&e));
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(
        last,
        Some((404, format!("NOT_FOUND - no queue '{q}' in vhost '/'")))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_delete_queue_goes_when_its_last_consumer_cancels() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let q = unique("auto-delete");
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare_queue(&ch, &q, auto_delete).await;
    // Never consumed: it stays.
    tokio::time::sleep(Duration::from_millis(200)).await;
    declare_passive(&ch, &q)
        .await
        .expect("an unused auto-delete queue stays");
    // lapin cancels a consumer when its handle is dropped: keep both handles alive.
    let _a = consume(&ch, &q, "a", BasicConsumeOptions::default()).await;
    let _b = consume(&ch, &q, "b", BasicConsumeOptions::default()).await;
    within(ch.basic_cancel("a".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    let left = declare_passive(&ch, &q).await.unwrap();
    assert_eq!(left.consumer_count(), 1, "still there with one consumer");
    within(ch.basic_cancel("b".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    let err = declare_passive(&ch, &q).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_reports_how_many_ready_messages_it_removed() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let q = unique("purge");
    declare_queue(&ch, &q, exclusive()).await;
    fill(&ch, &q, 5).await;
    // One message is out unacked: purge leaves it alone.
    let out = within(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .unwrap()
        .expect("a message");
    let purged = within(ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()))
        .await
        .unwrap();
    assert_eq!(purged, 4);
    assert_eq!(declare_passive(&ch, &q).await.unwrap().message_count(), 0);
    within(ch.basic_reject(
        out.delivery.delivery_tag,
        BasicRejectOptions { requeue: true },
    ))
    .await
    .unwrap();
    assert_eq!(drain(&ch, &q).await, ["0"], "the unacked one survived");
    let purged = within(ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()))
        .await
        .unwrap();
    assert_eq!(purged, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_if_empty_and_if_unused_refuse_with_406() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let q = unique("del");
    declare_queue(&ch, &q, QueueDeclareOptions::default()).await;
    fill(&ch, &q, 2).await;
    let if_empty = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    let err = within(ch.queue_delete(q.as_str().into(), if_empty))
        .await
        .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
        )
    );
    let consumer_ch = channel(&conn).await;
    within(consumer_ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut busy = consume(&consumer_ch, &q, "busy", BasicConsumeOptions::default()).await;
    next_delivery(&mut busy).await;
    let ch = channel(&conn).await;
    let if_unused = QueueDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let err = within(ch.queue_delete(q.as_str().into(), if_unused))
        .await
        .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
        )
    );
    let ch = channel(&conn).await;
    let deleted = within(ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(
        deleted, 1,
        "delete-ok counts the ready message, not the unacked one"
    );
    assert_eq!(
        closed_with(&declare_passive(&ch, &q).await.unwrap_err()).0,
        404
    );
    // Deleting a queue that does not exist succeeds, as in RabbitMQ 3.x.
    let ch = channel(&conn).await;
    let deleted = within(ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(deleted, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_and_unbind_change_routing() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let q = unique("bound");
    declare_queue(&ch, &q, exclusive()).await;
    within(ch.queue_bind(
        q.as_str().into(),
        "amq.direct".into(),
        q.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    publish(&ch, "amq.direct", &q, b"bound", BasicProperties::default()).await;
    within(ch.queue_unbind(
        q.as_str().into(),
        "amq.direct".into(),
        q.as_str().into(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    publish(
        &ch,
        "amq.direct",
        &q,
        b"after unbind",
        BasicProperties::default(),
    )
    .await;
    publish(&ch, "", &q, b"default exchange", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, ["bound", "default exchange"]);
    // Unbinding what is not bound succeeds.
    within(ch.queue_unbind(
        q.as_str().into(),
        "amq.direct".into(),
        "never-bound".into(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let missing = unique("no-exchange");
    let err = within(ch.queue_bind(
        q.as_str().into(),
        missing.as_str().into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            404,
            format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
        )
    );
    let ch = channel(&conn).await;
    let missing = unique("no-queue");
    let err = within(ch.queue_bind(
        missing.as_str().into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            404,
            format!("NOT_FOUND - no queue '{missing}' in vhost '/'")
        )
    );
}
