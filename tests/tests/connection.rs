//! Connection negotiation: server properties and capabilities, login and vhost refusal, tune,
//! heartbeats, many channels.

use std::time::{Duration, Instant};

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_tests::{
    frame, long_str, method, reply_code, reply_text, short_str, within, Broker, RawConn, RawFrame,
};

#[tokio::test(flavor = "multi_thread")]
async fn connection_start_announces_rabbitmq_capabilities() {
    let broker = Broker::start();
    let mut raw = RawConn::connect(broker.addr());
    raw.send(b"AMQP\x00\x00\x09\x01");
    let Some(RawFrame::Method {
        channel: 0,
        class: 10,
        method: 10,
        args,
    }) = raw.read_frame()
    else {
        panic!("expected connection.start");
    };
    assert_eq!(&args[..2], &[0, 9], "version 0-9");
    let text = String::from_utf8_lossy(&args);
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert!(
            text.contains(&format!("{cap}t\u{1}")),
            "capability {cap} is announced as true"
        );
    }
    for key in [
        "product", "version", "platform", "PLAIN", "AMQPLAIN", "en_US",
    ] {
        assert!(text.contains(key), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tune_is_negotiated_and_many_channels_work() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    assert_eq!(conn.configuration().frame_max(), 131_072);
    assert_eq!(conn.configuration().heartbeat(), 60);
    assert_eq!(conn.configuration().channel_max(), 2047);
    let mut channels = Vec::new();
    for _ in 0..200 {
        channels.push(within(conn.create_channel()).await.unwrap());
    }
    let q = within(channels[0].queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    for ch in &channels {
        within(ch.basic_publish(
            "".into(),
            q.name().clone(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        ))
        .await
        .unwrap();
    }
    let q = within(channels[199].queue_declare(
        q.name().clone(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert_eq!(q.message_count(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_password_and_unknown_vhost_are_refused() {
    let broker = Broker::start();
    let bad = broker.uri().replace("guest:guest", "guest:wrong");
    let err = within(Connection::connect(&bad, ConnectionProperties::default()))
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403), "{err}");
    assert_eq!(
        reply_text(&err).unwrap(),
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
    );
    let unknown = broker.uri().replace("/%2f", "/nope");
    let err = within(Connection::connect(
        &unknown,
        ConnectionProperties::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(530), "{err}");
    assert_eq!(
        reply_text(&err).unwrap(),
        "NOT_ALLOWED - vhost nope not found"
    );
}

#[test]
fn amqplain_login_works() {
    let broker = Broker::start();
    let mut c = RawConn::connect(broker.addr());
    c.send(b"AMQP\x00\x00\x09\x01");
    assert!(matches!(
        c.read_frame(),
        Some(RawFrame::Method {
            class: 10,
            method: 10,
            ..
        })
    ));
    // AMQPLAIN: a field table without its length prefix.
    let mut table = short_str("LOGIN");
    table.push(b'S');
    table.extend(long_str(b"guest"));
    table.extend(short_str("PASSWORD"));
    table.push(b'S');
    table.extend(long_str(b"guest"));
    let mut start_ok = long_str(b"");
    start_ok.extend(short_str("AMQPLAIN"));
    start_ok.extend(long_str(&table));
    start_ok.extend(short_str("en_US"));
    c.send(&frame(1, 0, &method(10, 11, &start_ok)));
    assert!(
        matches!(
            c.read_frame(),
            Some(RawFrame::Method {
                class: 10,
                method: 30,
                ..
            })
        ),
        "connection.tune"
    );
}

#[test]
fn heartbeats_flow_and_a_silent_client_is_disconnected() {
    let broker = Broker::start();
    let mut c = RawConn::connect(broker.addr());
    c.send(b"AMQP\x00\x00\x09\x01");
    c.read_frame();
    let mut start_ok = long_str(b"");
    start_ok.extend(short_str("PLAIN"));
    start_ok.extend(long_str(b"\0guest\0guest"));
    start_ok.extend(short_str("en_US"));
    c.send(&frame(1, 0, &method(10, 11, &start_ok)));
    c.read_frame();
    // Ask for a 1 s heartbeat, then say nothing at all.
    let mut tune_ok = 2047u16.to_be_bytes().to_vec();
    tune_ok.extend_from_slice(&131072u32.to_be_bytes());
    tune_ok.extend_from_slice(&1u16.to_be_bytes());
    c.send(&frame(1, 0, &method(10, 31, &tune_ok)));
    let mut open = short_str("/");
    open.extend(short_str(""));
    open.push(0);
    c.send(&frame(1, 0, &method(10, 40, &open)));
    let started = Instant::now();
    let mut heartbeats = 0;
    while let Some(f) = c.read_frame() {
        if f == (RawFrame::Other {
            kind: 8,
            channel: 0,
        }) {
            heartbeats += 1;
        }
    }
    let silent_for = started.elapsed();
    assert!(heartbeats >= 1, "the server sends heartbeats");
    assert!(
        silent_for < Duration::from_secs(5),
        "closed after missed heartbeats, not later ({silent_for:?})"
    );
}
