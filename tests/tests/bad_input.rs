//! Malformed and misplaced frames: each closes only the offending connection with the reply code
//! RabbitMQ uses, and other clients carry on.

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::BasicProperties;
use warren_tests::{frame, long_str, method, short_str, within, Broker, RawConn};

fn publish_frames() -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend(short_str(""));
    args.extend(short_str("q"));
    args.push(0);
    frame(1, 1, &method(60, 40, &args))
}

fn header(size: u64) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    frame(2, 1, &p)
}

fn queue_declare_args() -> Vec<u8> {
    let mut args = vec![0, 0];
    args.extend(short_str("q"));
    args.push(0);
    args.extend(long_str(b""));
    args
}

/// Sends `bytes` after a clean handshake and returns the connection.close code.
fn close_code(broker: &Broker, bytes: &[u8]) -> u16 {
    let mut c = RawConn::open(broker.addr());
    c.send(bytes);
    let (channel, code, text, _, _) = c.expect_close();
    assert_eq!(channel, 0, "a connection-level close: {code} {text}");
    assert!(!text.is_empty());
    code
}

#[test]
fn wrong_protocol_header_gets_ours_back() {
    let broker = Broker::start();
    let mut c = RawConn::connect(broker.addr());
    c.send(b"AMQP\x00\x00\x09\x00");
    assert_eq!(c.read_bytes(8), b"AMQP\x00\x00\x09\x01");
    assert!(c.is_closed_by_peer());
}

#[test]
fn frame_errors_close_with_501() {
    let broker = Broker::start();
    // Larger than frame-max (checked before the payload arrives).
    let mut oversized = vec![1, 0, 1];
    oversized.extend_from_slice(&200_000u32.to_be_bytes());
    oversized.extend_from_slice(&[0; 100]);
    assert_eq!(close_code(&broker, &oversized), 501);
    // Bad frame-end octet.
    let mut bad_end = frame(1, 1, &method(20, 20, &[1]));
    *bad_end.last_mut().unwrap() = 0;
    assert_eq!(close_code(&broker, &bad_end), 501);
    // Unknown frame type.
    assert_eq!(close_code(&broker, &frame(9, 1, b"abc")), 501);
    // Arguments that cannot be decoded.
    assert_eq!(
        close_code(&broker, &frame(1, 1, &method(50, 10, &[0, 0, 6, b'q']))),
        501
    );
}

#[test]
fn misplaced_frames_close_with_504_and_505() {
    let broker = Broker::start();
    // A method on a channel that was never opened.
    assert_eq!(
        close_code(
            &broker,
            &frame(1, 5, &method(50, 10, &queue_declare_args()))
        ),
        504
    );
    // A content header with no basic.publish before it.
    assert_eq!(close_code(&broker, &header(2)), 505);
    // A method where a content header belongs.
    let mut bytes = publish_frames();
    bytes.extend(frame(1, 1, &method(50, 10, &queue_declare_args())));
    assert_eq!(close_code(&broker, &bytes), 505);
    // Content on channel 0.
    assert_eq!(close_code(&broker, &frame(3, 0, b"abc")), 505);
    // A channel method on channel 0.
    let mut get = vec![0, 0];
    get.extend(short_str("q"));
    get.push(0);
    assert_eq!(
        close_code(&broker, &frame(1, 0, &method(60, 70, &get))),
        504
    );
    // A heartbeat on a channel other than 0.
    assert_eq!(close_code(&broker, &frame(8, 1, b"")), 505);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_client_does_not_disturb_a_healthy_one() {
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
    let addr = broker.addr();
    tokio::task::spawn_blocking(move || {
        for i in 0..50u8 {
            let mut c = RawConn::open(addr);
            c.send(&[i, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xce]);
            c.expect_close();
        }
    })
    .await
    .unwrap();
    within(ch.basic_publish(
        "".into(),
        q.name().clone(),
        BasicPublishOptions::default(),
        b"fine",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let m = within(ch.basic_get(q.name().clone(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"fine");
}
