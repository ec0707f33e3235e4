//! Connection negotiation as clients see it: connection.start's server properties and
//! capabilities, login and vhost refusal, tune values, heartbeats, many channels on one connection.

use std::time::{Duration, Instant};

use warren_tests::lapin::options::QueueDeclareOptions;
use warren_tests::lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_tests::raw::{method_frame, Args, Field, NoFrame, FRAME_HEARTBEAT, PROTOCOL_HEADER};
use warren_tests::{
    channel, closed_with, confirm_channel, connect, declare_passive, declare_queue, publish,
    unique, within, Broker, RawConn,
};

/// The capabilities RabbitMQ 3.10 announces and clients look for before using an extension.
const CAPABILITIES: [&str; 8] = [
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
];

#[test]
fn connection_start_announces_product_mechanisms_and_capabilities() {
    let broker = Broker::start();
    let mut raw = RawConn::connect(broker.addr());
    raw.send(PROTOCOL_HEADER);
    let start = raw.expect_method(0, (10, 10));
    let mut args = start.args();
    assert_eq!((args.octet(), args.octet()), (0, 9), "protocol version 0-9");
    let props = args.table();
    let mechanisms = String::from_utf8(args.long()).unwrap();
    let locales = String::from_utf8(args.long()).unwrap();
    for key in ["product", "version", "platform"] {
        match props.get(key) {
            Some(Field::Str(s)) => assert!(!s.is_empty(), "{key} is empty"),
            other => panic!("server property {key} is {other:?}"),
        }
    }
    let caps = props.get("capabilities").expect("a capabilities table");
    for cap in CAPABILITIES {
        assert_eq!(caps.get(cap), Some(&Field::Bool(true)), "capability {cap}");
    }
    let mechanisms: Vec<&str> = mechanisms.split(' ').collect();
    assert!(
        mechanisms.contains(&"PLAIN") && mechanisms.contains(&"AMQPLAIN"),
        "{mechanisms:?}"
    );
    assert_eq!(locales, "en_US");
}

#[tokio::test(flavor = "multi_thread")]
async fn tune_offers_rabbitmq_defaults() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let config = conn.configuration();
    assert_eq!(
        (config.channel_max(), config.frame_max(), config.heartbeat()),
        (2047, 131_072, 60)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lower_heartbeat_asked_by_the_client_is_used() {
    let broker = Broker::start();
    let conn = connect(&format!("{}?heartbeat=5", broker.uri())).await;
    assert_eq!(conn.configuration().heartbeat(), 5);
    // The connection stays usable across a few heartbeat intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ch = channel(&conn).await;
    let q = declare_queue(
        &ch,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    assert!(q.name().as_str().starts_with("amq.gen-"));
}

#[test]
fn heartbeats_flow_and_a_silent_client_is_disconnected() {
    let broker = Broker::start();
    // Ask for a 1 s heartbeat in tune-ok, then never send anything again.
    let mut raw = RawConn::handshake_with(broker.addr(), 1);
    let started = Instant::now();
    let frames = raw.expect_disconnect(Duration::from_secs(10));
    let silent_for = started.elapsed();
    let heartbeats = frames.iter().filter(|f| f.kind == FRAME_HEARTBEAT).count();
    assert!(heartbeats >= 1, "the server sent heartbeats: {frames:?}");
    assert!(
        frames
            .iter()
            .all(|f| f.kind == FRAME_HEARTBEAT && f.channel == 0),
        "only heartbeats on channel 0: {frames:?}"
    );
    assert!(
        silent_for < Duration::from_secs(5),
        "dropped after two missed heartbeats, not {silent_for:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_refused_with_403() {
    let broker = Broker::start();
    let bad = broker.uri().replacen("guest:guest", "guest:wrong", 1);
    let err = within(Connection::connect(&bad, ConnectionProperties::default()))
        .await
        .expect_err("login refused");
    assert_eq!(
        closed_with(&err),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_vhost_is_refused_with_530() {
    let broker = Broker::start();
    let vhost = unique("no-such-vhost");
    let err = within(Connection::connect(
        &broker.uri_with_vhost(&vhost),
        ConnectionProperties::default(),
    ))
    .await
    .expect_err("vhost refused");
    assert_eq!(
        closed_with(&err),
        (530, format!("NOT_ALLOWED - vhost {vhost} not found"))
    );
}

#[test]
fn amqplain_login_is_accepted() {
    let broker = Broker::start();
    let mut raw = RawConn::connect(broker.addr());
    raw.send(PROTOCOL_HEADER);
    raw.expect_method(0, (10, 10));
    // AMQPLAIN's response is a field table without its length prefix.
    let table = Args::new()
        .short("LOGIN")
        .octet(b'S')
        .long(b"guest")
        .short("PASSWORD")
        .octet(b'S')
        .long(b"guest");
    let start_ok = Args::new()
        .empty_table()
        .short("AMQPLAIN")
        .long(&table.0)
        .short("en_US");
    raw.send(&method_frame(0, 10, 11, &start_ok.0));
    raw.expect_method(0, (10, 30)); // connection.tune
    raw.send_tune_ok(2047, 131_072, 0);
    raw.send_open("/");
    raw.expect_method(0, (10, 41)); // connection.open-ok
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_channels_share_one_connection() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let mut channels = Vec::new();
    for _ in 0..200 {
        channels.push(confirm_channel(&conn).await);
    }
    let ids: std::collections::HashSet<u16> = channels.iter().map(|c| c.id()).collect();
    assert_eq!(ids.len(), 200, "distinct channel numbers");
    let q = unique("many-channels");
    declare_queue(
        &channels[0],
        &q,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    for ch in &channels {
        let confirmation = publish(ch, "", &q, b"x", BasicProperties::default()).await;
        assert!(confirmation.is_ack());
    }
    let counted = declare_passive(&channels[199], &q).await.unwrap();
    assert_eq!(counted.message_count(), 200);
    // Closing some channels leaves the others working.
    for ch in &channels[..100] {
        within(ch.close(200, "bye".into())).await.unwrap();
    }
    let counted = declare_passive(&channels[150], &q).await.unwrap();
    assert_eq!(counted.message_count(), 200);
}

/// RabbitMQ answers a client's connection.close with close-ok and leaves closing the socket to
/// the client (lapin logs "Socket was readable but we read 0" when the server closes first).
/// The broker forgets the connection at once all the same: its exclusive queue is gone.
#[tokio::test(flavor = "multi_thread")]
async fn after_close_ok_the_client_closes_the_socket_and_the_broker_forgets_it_at_once() {
    let broker = Broker::start();
    let q = unique("closing");
    let mut raw = RawConn::open(broker.addr());
    let declare = Args::new()
        .u16(0)
        .short(&q)
        .bits(&[false, false, true, false, false])
        .empty_table();
    raw.send(&method_frame(1, 50, 10, &declare.0));
    raw.expect_method(1, (50, 11));
    let close = Args::new().u16(200).short("bye").u16(0).u16(0);
    raw.send(&method_frame(0, 10, 50, &close.0));
    raw.expect_method(0, (10, 51));
    assert_eq!(
        raw.read_frame(Duration::from_millis(500)).err(),
        Some(NoFrame::TimedOut),
        "the socket stays open for the client to close"
    );
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let e = declare_passive(&ch, &q)
        .await
        .expect_err("the exclusive queue went with its connection");
    assert_eq!(closed_with(&e).0, 404);
}
