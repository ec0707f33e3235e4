//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to` pseudo-queue) through lapin: RPC round
//! trips and the rules for consuming from and publishing to it.

use std::time::Duration;

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, Channel, Consumer};
use warren_tests::{
    channel, closed_with, confirm_channel, consume, declare_queue, next_delivery, unique, within,
    Broker,
};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    }
}

async fn reply_consumer(ch: &Channel) -> Consumer {
    consume(ch, REPLY_TO, "", no_ack()).await
}

async fn request(ch: &Channel, queue: &str, body: &str, correlation_id: &str) {
    let props = BasicProperties::default()
        .with_reply_to(REPLY_TO.into())
        .with_correlation_id(correlation_id.into());
    within(ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    ))
    .await
    .expect("publish the request");
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_reach_the_requesting_channel() {
    let broker = Broker::start();
    let server_conn = broker.connect().await;
    let server = channel(&server_conn).await;
    let rpc = unique("rpc");
    declare_queue(
        &server,
        &rpc,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let mut requests = consume(&server, &rpc, "server", no_ack()).await;

    let client_conn = broker.connect().await;
    let client = channel(&client_conn).await;
    let mut replies = reply_consumer(&client).await;
    for n in 0..3 {
        request(&client, &rpc, &format!("ping {n}"), &n.to_string()).await;
        let req = next_delivery(&mut requests).await;
        let reply_to = req.properties.reply_to().clone().expect("reply_to is set");
        assert!(
            reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
            "the broker rewrote reply_to into a routable name: {reply_to}"
        );
        let props = BasicProperties::default().with_correlation_id(
            req.properties
                .correlation_id()
                .clone()
                .expect("correlation id"),
        );
        within(server.basic_publish(
            "".into(),
            reply_to.clone(),
            BasicPublishOptions::default(),
            format!("pong {n}").as_bytes(),
            props,
        ))
        .await
        .unwrap();
        let reply = next_delivery(&mut replies).await;
        assert_eq!(reply.data, format!("pong {n}").as_bytes());
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
            Some(n.to_string())
        );
        assert_eq!(reply.routing_key, reply_to);
        assert_eq!(reply.exchange.as_str(), "");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consuming_replies_with_acks_is_406() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let err = within(ch.basic_consume(
        REPLY_TO.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            "PRECONDITION_FAILED - reply consumer cannot acknowledge".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requesting_a_reply_without_a_reply_consumer_is_406() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    // Confirm mode, so the publish's own confirm carries the channel.close.
    let ch = confirm_channel(&conn).await;
    let q = unique("rpc-nobody");
    declare_queue(
        &ch,
        &q,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let props = BasicProperties::default().with_reply_to(REPLY_TO.into());
    let confirm = within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"ping",
        props,
    ))
    .await
    .expect("publish the request");
    let err = within(confirm).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist".into()
        )
    );
    assert!(conn.status().connected(), "only the channel closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_to_a_closed_requester_is_dropped_quietly() {
    let broker = Broker::start();
    let server_conn = broker.connect().await;
    let server = channel(&server_conn).await;
    let rpc = unique("rpc-gone");
    declare_queue(
        &server,
        &rpc,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let mut requests = consume(&server, &rpc, "server", no_ack()).await;
    let client_conn = broker.connect().await;
    let client = channel(&client_conn).await;
    let _replies = reply_consumer(&client).await;
    request(&client, &rpc, "ping", "1").await;
    let req = next_delivery(&mut requests).await;
    within(client_conn.close(200, "bye".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply_to = req.properties.reply_to().clone().expect("reply_to");
    within(server.basic_publish(
        "".into(),
        reply_to,
        BasicPublishOptions::default(),
        b"too late",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    // The responder's channel is unaffected: its next call succeeds.
    let q = declare_queue(
        &server,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(q.message_count(), 0);
    assert!(server.status().connected());
}
