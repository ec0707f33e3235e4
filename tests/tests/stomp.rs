//! STOMP clients beside AMQP clients (issue 20): the same queues and exchanges, properties mapped
//! both ways, on one node and across a cluster; the management API lists STOMP connections;
//! bad STOMP input closes only its own connection. (stomp.py's tests are in
//! tests/python/test_stomp.py.)

use std::time::Duration;

use warren_stomp::{Command, Frame};
use warren_tests::cluster::Cluster;
use warren_tests::lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use warren_tests::lapin::types::{AMQPValue, FieldTable};
use warren_tests::lapin::BasicProperties;
use warren_tests::management::{guest_api, wait_for_json};
use warren_tests::stomp::StompClient;
use warren_tests::{
    body, channel, confirm_channel, consume, declare_queue, next_delivery, publish, unique, within,
    Broker,
};

fn subscribe(id: &str, destination: &str, ack: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .with_header("id", id)
        .with_header("destination", destination)
        .with_header("ack", ack)
}

fn send(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .with_header("destination", destination)
        .with_body(body.to_owned())
}

async fn subscribed(client: &mut StompClient, frame: Frame, receipt: &str) {
    client
        .send_confirmed(frame, receipt)
        .await
        .expect("SUBSCRIBE answered by its RECEIPT");
}

#[tokio::test(flavor = "multi_thread")]
async fn stomp_and_amqp_clients_share_queues_and_properties_map_both_ways() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let queue = unique("stomp-q");

    // STOMP subscribes to a queue it declares; AMQP publishes to it with properties.
    let mut stomp = StompClient::connect(broker.stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT");
    subscribed(
        &mut stomp,
        subscribe("s1", &format!("/queue/{queue}"), "client-individual"),
        "r-sub",
    )
    .await;
    let mut headers = FieldTable::default();
    headers.insert("x-trace".into(), AMQPValue::LongString("abc".into()));
    headers.insert("x-count".into(), AMQPValue::LongInt(3));
    publish(
        &ch,
        "",
        &queue,
        b"from amqp",
        BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_correlation_id("corr-1".into())
            .with_delivery_mode(2)
            .with_priority(4)
            .with_headers(headers),
    )
    .await;
    let message = stomp.next().await.expect("MESSAGE");
    assert_eq!(message.command, Command::Message, "{message:?}");
    assert_eq!(&message.body[..], b"from amqp");
    for (name, value) in [
        ("subscription", "s1"),
        ("destination", format!("/queue/{queue}").as_str()),
        ("redelivered", "false"),
        ("content-type", "text/plain"),
        ("correlation-id", "corr-1"),
        ("persistent", "true"),
        ("priority", "4"),
        ("x-trace", "abc"),
        ("x-count", "3"),
    ] {
        assert_eq!(message.header(name), Some(value), "{name} in {message:?}");
    }
    let ack_id = message
        .header("ack")
        .expect("an ack header in 1.2")
        .to_owned();
    stomp
        .send(Frame::new(Command::Ack).with_header("id", ack_id))
        .await
        .expect("ACK");

    // STOMP publishes (confirmed by its receipt) to an exchange AMQP has bound a queue to.
    let amqp_queue = unique("amqp-q");
    declare_queue(&ch, &amqp_queue, QueueDeclareOptions::default()).await;
    within(ch.queue_bind(
        amqp_queue.as_str().into(),
        "amq.topic".into(),
        "orders.new".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    stomp
        .send_confirmed(
            send("/topic/orders.new", "from stomp")
                .with_header("content-type", "application/json")
                .with_header("persistent", "true")
                .with_header("reply-to", "/queue/replies")
                .with_header("x-tenant", "t1"),
            "r-send",
        )
        .await
        .expect("the SEND is confirmed");
    let mut consumer = consume(
        &ch,
        &amqp_queue,
        "c",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(body(&delivery), "from stomp");
    let p = &delivery.properties;
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(
        p.reply_to().as_ref().map(|s| s.as_str()),
        Some("/queue/replies")
    );
    let tenant = p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-tenant").cloned());
    assert_eq!(tenant, Some(AMQPValue::LongString("t1".into())));
    assert!(
        p.headers()
            .as_ref()
            .is_none_or(|h| !h.inner().contains_key("destination")),
        "frame headers stay out of the message: {p:?}"
    );

    // The management API lists the STOMP client as a connection of its own protocol.
    let api = guest_api(&broker);
    let connections = wait_for_json(&api, "/api/connections", Duration::from_secs(10), |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|c| c["protocol"] == "STOMP 1.2"))
    })
    .await
    .expect("the STOMP connection is listed");
    let listed = connections
        .as_array()
        .and_then(|a| a.iter().find(|c| c["protocol"] == "STOMP 1.2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed["user"], "guest", "{listed}");
    let overview = api.get("/api/overview").await.expect("overview");
    let stomp_port = i64::from(broker.stomp_addr().port());
    assert!(
        overview["listeners"].as_array().is_some_and(|l| l
            .iter()
            .any(|l| l["protocol"] == "stomp" && l["port"] == stomp_port)),
        "{overview}"
    );

    // DISCONNECT with a receipt is answered, then the server closes.
    stomp
        .send(Frame::new(Command::Disconnect).with_header("receipt", "bye"))
        .await
        .expect("DISCONNECT");
    let answer = stomp.next().await.expect("RECEIPT");
    assert_eq!(answer.header("receipt-id"), Some("bye"));
    assert!(stomp.closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unacknowledged_stomp_delivery_goes_back_to_its_queue_when_the_client_goes() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let queue = unique("stomp-redeliver");
    let mut first = StompClient::connect(broker.stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT");
    subscribed(
        &mut first,
        subscribe("a", &format!("/queue/{queue}"), "client").with_header("prefetch-count", "1"),
        "r1",
    )
    .await;
    first
        .send_confirmed(send(&format!("/queue/{queue}"), "one"), "s1")
        .await
        .expect("SEND one");
    first
        .send_confirmed(send(&format!("/queue/{queue}"), "two"), "s2")
        .await
        .expect("SEND two");
    let m = first.next().await.expect("MESSAGE one");
    assert_eq!(&m.body[..], b"one");
    // With prefetch 1 nothing more comes until the ACK... and the client goes away instead.
    drop(first);
    let mut second = StompClient::connect(broker.stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT");
    subscribed(
        &mut second,
        subscribe("b", &format!("/queue/{queue}"), "auto"),
        "r2",
    )
    .await;
    let again = second.next().await.expect("redelivered");
    assert_eq!(&again.body[..], b"one");
    assert_eq!(again.header("redelivered"), Some("true"));
    let next = second.next().await.expect("the second");
    assert_eq!(&next.body[..], b"two");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_stomp_input_gets_an_error_and_closes_only_that_connection() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let mut bystander = StompClient::connect(broker.stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT");
    for (input, message) in [
        (&b"HELLO\n\n\0"[..], "Illegal command"),
        (
            &b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:nope\n\n\0"[..],
            "Bad CONNECT",
        ),
        (
            &b"CONNECT\naccept-version:1.2\nhost:no-such-vhost\n\n\0"[..],
            "Bad CONNECT",
        ),
    ] {
        let mut c = StompClient::open(broker.stomp_addr()).await.expect("open");
        c.write_raw(input).await.expect("write");
        let error = c.next().await.expect("an ERROR");
        assert_eq!(error.command, Command::Error, "{error:?}");
        assert_eq!(error.header("message"), Some(message), "{error:?}");
        assert!(c.closed().await, "closed after {message}");
    }
    // An endless header line: bounded, refused, closed.
    let mut c = StompClient::connect(broker.stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT");
    let mut long = b"SEND\ndestination:/topic/x\nx-long:".to_vec();
    long.extend(std::iter::repeat_n(b'a', 200 * 1024));
    let _ = c.write_raw(&long).await;
    let error = c.next().await.expect("an ERROR");
    assert_eq!(error.header("message"), Some("Invalid frame"), "{error:?}");
    assert!(c.closed().await);
    // Unknown commands and destinations in an open session: an ERROR, and (as RabbitMQ) the
    // session goes on; what the broker refuses ends it.
    let mut c = StompClient::connect(broker.stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT");
    for (frame, message) in [
        (Frame::new(Command::Unknown("FLY".into())), "Bad command"),
        (send("/nowhere/x", "x"), "Unknown destination"),
    ] {
        c.send(frame).await.expect("write");
        let error = c.next().await.expect("an ERROR");
        assert_eq!(error.header("message"), Some(message), "{error:?}");
    }
    c.send(subscribe("m", "/amq/queue/does-not-exist", "auto"))
        .await
        .expect("write");
    let error = c.next().await.expect("an ERROR");
    assert_eq!(error.header("message"), Some("not_found"), "{error:?}");
    assert!(c.closed().await);
    // The bystander noticed nothing.
    let queue = unique("bystander");
    subscribed(
        &mut bystander,
        subscribe("q", &format!("/queue/{queue}"), "auto"),
        "r",
    )
    .await;
    bystander
        .send_confirmed(send(&format!("/queue/{queue}"), "still here"), "s")
        .await
        .expect("SEND");
    let m = bystander.next().await.expect("MESSAGE");
    assert_eq!(&m.body[..], b"still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn stomp_and_amqp_clients_on_different_nodes_of_a_cluster_reach_each_other() {
    let cluster = Cluster::start(3, &[]).expect("three nodes");
    let topic = unique("news");
    let mut subscriber = StompClient::connect(cluster.node(2).stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT to node 2");
    subscribed(
        &mut subscriber,
        subscribe("t", &format!("/topic/{topic}.*"), "auto"),
        "r",
    )
    .await;
    // Every node routes from its own replica: the binding must have reached the publishers'
    // nodes, which their clients learn here outside the broker (docs/compatibility.md).
    cluster
        .wait_applied_everywhere(Duration::from_secs(10))
        .expect("the binding reaches every node");
    // A durable queue declared over STOMP on node 3, consumed over AMQP on node 1.
    let queue = unique("work");
    let mut publisher = StompClient::connect(cluster.node(3).stomp_addr(), "guest", "guest")
        .await
        .expect("CONNECT to node 3");
    publisher
        .send_confirmed(send(&format!("/topic/{topic}.a"), "stomp on node 3"), "p1")
        .await
        .expect("SEND");
    publisher
        .send_confirmed(
            send(&format!("/queue/{queue}"), "durable work").with_header("persistent", "true"),
            "p2",
        )
        .await
        .expect("SEND to a queue");
    let conn = cluster.node(1).connect().await;
    let ch = channel(&conn).await;
    publish(
        &ch,
        "amq.topic",
        &format!("{topic}.b"),
        b"amqp on node 1",
        BasicProperties::default(),
    )
    .await;
    let mut got = vec![
        String::from_utf8_lossy(&subscriber.next().await.expect("first").body).into_owned(),
        String::from_utf8_lossy(&subscriber.next().await.expect("second").body).into_owned(),
    ];
    got.sort();
    assert_eq!(got, vec!["amqp on node 1", "stomp on node 3"]);
    let mut consumer = consume(
        &ch,
        &queue,
        "w",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(body(&d), "durable work");
    assert_eq!(*d.properties.delivery_mode(), Some(2));
}
