//! Publisher confirms, transactions and direct reply-to through lapin.

use std::time::Duration;

use futures_lite::StreamExt;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, Channel};
use warren_tests::{declare_passive, reply_code, reply_text, unique, within, Broker};

async fn count(ch: &Channel, q: &str) -> u32 {
    declare_passive(ch, q).await.unwrap().message_count()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_publish_is_confirmed_and_confirm_and_tx_do_not_mix() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("confirm");
    within(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..500u32 {
        let props = BasicProperties::default().with_delivery_mode(2);
        confirms.push(
            within(ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                props,
            ))
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(within(c).await.unwrap().is_ack());
    }
    assert!(within(ch.wait_for_confirms()).await.unwrap().is_empty());
    assert_eq!(count(&ch, &q).await, 500);
    let err = within(ch.tx_select()).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert_eq!(
        reply_text(&err).unwrap(),
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    );
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.tx_select()).await.unwrap();
    let err = within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap_err();
    assert_eq!(
        reply_text(&err).unwrap(),
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_commit_and_roll_back_publishes_and_acks() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let observer = within(conn.create_channel()).await.unwrap();
    let q = unique("tx");
    within(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.tx_select()).await.unwrap();
    for b in ["a", "b"] {
        within(ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b.as_bytes(),
            BasicProperties::default(),
        ))
        .await
        .unwrap();
    }
    assert_eq!(count(&observer, &q).await, 0, "invisible before commit");
    within(ch.tx_commit()).await.unwrap();
    assert_eq!(count(&observer, &q).await, 2);
    within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"c",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    within(ch.tx_rollback()).await.unwrap();
    assert_eq!(count(&observer, &q).await, 2, "rolled back");
    let m = within(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .unwrap()
        .unwrap();
    within(ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()))
        .await
        .unwrap();
    within(ch.tx_rollback()).await.unwrap();
    within(ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()))
        .await
        .unwrap();
    within(ch.tx_commit()).await.unwrap();
    // The acked message is gone for good: closing the channel requeues nothing.
    within(ch.close(200, "bye".into())).await.unwrap();
    assert_eq!(count(&observer, &q).await, 1);
    let err = within(observer.tx_commit()).await.unwrap_err();
    assert_eq!(
        reply_text(&err).unwrap(),
        "PRECONDITION_FAILED - channel is not transactional"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_reply_to_round_trip() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let server = within(conn.create_channel()).await.unwrap();
    let q = unique("rpc");
    within(server.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let client_conn = broker.connect().await;
    let client = within(client_conn.create_channel()).await.unwrap();
    let mut replies = within(client.basic_consume(
        "amq.rabbitmq.reply-to".into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let props = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("42".into());
    within(client.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"ping",
        props,
    ))
    .await
    .unwrap();
    let mut request = None;
    for _ in 0..50 {
        request = within(server.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
            .await
            .unwrap();
        if request.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request = request.expect("the request arrives");
    let reply_to = request
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("reply_to is set");
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    let props = BasicProperties::default().with_correlation_id("42".into());
    within(server.basic_publish(
        "".into(),
        reply_to,
        BasicPublishOptions::default(),
        b"pong",
        props,
    ))
    .await
    .unwrap();
    let reply = within(replies.next()).await.unwrap().unwrap();
    assert_eq!(reply.data, b"pong");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("42")
    );
    // Consuming the pseudo-queue with acks is refused.
    let ch = within(client_conn.create_channel()).await.unwrap();
    let err = within(ch.basic_consume(
        "amq.rabbitmq.reply-to".into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        reply_text(&err).unwrap(),
        "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    );
}
