//! Malformed and misplaced frames sent by hand: each gets RabbitMQ's reply (code, and text where
//! RabbitMQ's wording is not an Erlang term dump), only the offending connection ends, and a
//! fresh lapin client is served normally afterwards.

use std::time::Duration;

use warren_tests::raw::{
    basic_publish, body_frame, content_header, frame, method_frame, queue_declare, Args, NoFrame,
    ServerClose, FRAME_HEARTBEAT, PROTOCOL_HEADER, RAW_FRAME_MAX,
};
use warren_tests::{
    assert_serves_clients_blocking, block_on, channel, declare_passive, unique, within, Broker,
    RawConn,
};

const WAIT: Duration = Duration::from_secs(5);

/// Sends `bytes` after a clean handshake and channel.open on channel 1; returns the
/// connection.close the server answers with, after checking that the server closes the socket
/// once the close-ok is sent and that other clients are still served.
fn hard_error(broker: &Broker, bytes: &[u8]) -> ServerClose {
    let mut raw = RawConn::open(broker.addr());
    raw.send(bytes);
    let close = raw.expect_server_close(WAIT);
    assert_eq!(
        (close.channel, close.close_method),
        (0, (10, 50)),
        "a connection.close: {close:?}"
    );
    raw.send_close_ok();
    raw.expect_disconnect(WAIT);
    assert_serves_clients_blocking(broker);
    close
}

fn code_and_text(c: &ServerClose) -> (u16, &str) {
    (c.reply_code, c.reply_text.as_str())
}

#[test]
fn an_unsupported_protocol_header_gets_0_9_1_back_and_the_socket_closed() {
    let broker = Broker::start();
    for header in [
        &b"AMQP\x00\x00\x09\x00"[..],
        b"AMQP\x01\x01\x00\x0a",
        b"AMQP\x00\x01\x00\x00",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut raw = RawConn::connect(broker.addr());
        raw.send(header);
        assert_eq!(
            raw.read_bytes(8, WAIT),
            PROTOCOL_HEADER,
            "answer to {header:?}"
        );
        let after = raw.expect_disconnect(WAIT);
        assert!(after.is_empty(), "nothing after the header: {after:?}");
    }
    assert_serves_clients_blocking(&broker);
}

#[test]
fn an_unknown_frame_type_is_a_501_frame_error() {
    let broker = Broker::start();
    let close = hard_error(&broker, &frame(9, 1, b"abc"));
    assert_eq!(close.reply_code, 501);
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[test]
fn a_frame_larger_than_frame_max_is_a_501_frame_error() {
    let broker = Broker::start();
    // Only the frame header: the size alone must be refused, before any payload arrives.
    let mut oversized = vec![1, 0, 1];
    oversized.extend_from_slice(&(RAW_FRAME_MAX + 1).to_be_bytes());
    let close = hard_error(&broker, &oversized);
    assert_eq!(close.reply_code, 501);
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[test]
fn a_body_frame_of_exactly_frame_max_is_accepted() {
    let broker = Broker::start();
    let mut raw = RawConn::open(broker.addr());
    let declare = Args::new()
        .u16(0)
        .short("")
        .bits(&[false, false, true, false, false])
        .empty_table();
    raw.send(&method_frame(1, 50, 10, &declare.0));
    let queue = raw.expect_method(1, (50, 11)).args().short();
    // Confirm mode: the basic.ack says the queue has the message (RabbitMQ answers a passive
    // declare ahead of deliveries still on their way to the queue).
    raw.send(&method_frame(1, 85, 10, &Args::new().bits(&[false]).0));
    raw.expect_method(1, (85, 11));
    // A whole frame is 8 octets of framing plus the payload; frame-max counts all of it.
    let payload = vec![b'x'; RAW_FRAME_MAX as usize - 8];
    let body = body_frame(1, &payload);
    assert_eq!(
        body.len(),
        RAW_FRAME_MAX as usize,
        "the body frame is exactly frame-max"
    );
    let mut bytes = basic_publish(1, "", &queue);
    bytes.extend(content_header(1, payload.len() as u64));
    bytes.extend(body);
    raw.send(&bytes);
    raw.expect_method(1, (60, 80)); // basic.ack
    raw.send(&queue_declare(1, &queue, true));
    let ok = raw.expect_method(1, (50, 11));
    let mut args = ok.args();
    assert_eq!(args.short(), queue);
    assert_eq!(args.u32(), 1, "the message arrived");
}

#[test]
fn a_bad_frame_end_octet_is_a_501_frame_error() {
    let broker = Broker::start();
    let mut bad_end = method_frame(1, 20, 20, &[1]);
    *bad_end.last_mut().expect("a frame has an end octet") = 0;
    let close = hard_error(&broker, &bad_end);
    assert_eq!(close.reply_code, 501);
    assert!(close.reply_text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[test]
fn method_arguments_that_cannot_be_decoded_are_a_501_frame_error() {
    let broker = Broker::start();
    // queue.declare whose queue name claims 6 bytes but has 1.
    let close = hard_error(&broker, &method_frame(1, 50, 10, &[0, 0, 6, b'q']));
    assert_eq!(close.reply_code, 501);
    assert!(
        close.reply_text.starts_with("FRAME_ERROR - cannot decode"),
        "{close:?}"
    );
    assert_eq!(close.cause, (50, 10));
}

/// RabbitMQ 3.10 drops the socket without a connection.close on an unknown class or method id
/// (its reader process exits). The user-visible outcome that must hold: the connection ends.
/// A server that says why first may only use 540 NOT_IMPLEMENTED or 503 COMMAND_INVALID.
#[test]
fn an_unknown_class_or_method_ends_the_connection() {
    let broker = Broker::start();
    for (channel, class, method) in [(1, 20, 99), (1, 99, 10), (1, 60, 99), (0, 10, 99)] {
        let mut raw = RawConn::open(broker.addr());
        raw.send(&method_frame(channel, class, method, &[]));
        match raw.read_frame(WAIT) {
            Err(NoFrame::Closed) => {}
            Err(NoFrame::TimedOut) => panic!("{class}/{method}: the connection is still open"),
            Ok(f) => {
                assert_eq!(
                    f.method_id(),
                    Some((10, 50)),
                    "only a connection.close: {f:?}"
                );
                let code = f.args().u16();
                assert!(
                    code == 540 || code == 503,
                    "close code {code} for {class}/{method}"
                );
                raw.send_close_ok();
                raw.expect_disconnect(WAIT);
            }
        }
        assert_serves_clients_blocking(&broker);
    }
}

/// A body longer than its header declared is never delivered and closes the connection.
/// RabbitMQ 3.10 notices only at the next method on the channel (505 UNEXPECTED_FRAME); Warren
/// refuses the body frame itself (501 FRAME_ERROR), as `docs/compatibility.md` records.
#[test]
fn a_body_longer_than_its_header_declared_is_never_delivered_and_closes_the_connection() {
    let broker = Broker::start();
    let queue = unique("overlong-body");
    let mut raw = RawConn::open(broker.addr());
    raw.send(&queue_declare(1, &queue, false));
    raw.expect_method(1, (50, 11));
    let mut bytes = basic_publish(1, "", &queue);
    bytes.extend(content_header(1, 2));
    bytes.extend(body_frame(1, b"abcd"));
    bytes.extend(queue_declare(1, &queue, true));
    raw.send(&bytes);
    let (class, method, code, text) = raw.expect_close(WAIT);
    let expected = [
        (
            505,
            "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
        ),
        (
            501,
            "FRAME_ERROR - content body is larger than the 2 bytes its header declared",
        ),
    ];
    assert_eq!((class, method), (10, 50), "a connection-level close");
    assert!(
        expected.contains(&(code, text.as_str())),
        "unexpected close {code} {text}"
    );
    raw.send_close_ok();
    raw.expect_disconnect(WAIT);
    block_on(async {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        let q = declare_passive(&ch, &queue)
            .await
            .expect("the queue is there");
        assert_eq!(q.message_count(), 0, "nothing was delivered");
        within(ch.queue_delete(queue.as_str().into(), Default::default()))
            .await
            .expect("queue.delete");
    });
    assert_serves_clients_blocking(&broker);
}

#[test]
fn a_method_on_a_channel_never_opened_is_504() {
    let broker = Broker::start();
    let close = hard_error(&broker, &queue_declare(5, "q", false));
    assert_eq!(
        code_and_text(&close),
        (504, "CHANNEL_ERROR - expected 'channel.open'")
    );
    assert_eq!(close.cause, (50, 10));
}

#[test]
fn opening_an_open_channel_again_is_504() {
    let broker = Broker::start();
    let close = hard_error(&broker, &method_frame(1, 20, 10, &Args::new().short("").0));
    assert_eq!(
        code_and_text(&close),
        (504, "CHANNEL_ERROR - second 'channel.open' seen")
    );
}

#[test]
fn a_channel_method_on_channel_0_is_504() {
    let broker = Broker::start();
    let get = Args::new().u16(0).short("q").bits(&[false]);
    let close = hard_error(&broker, &method_frame(0, 60, 70, &get.0));
    assert_eq!(
        code_and_text(&close),
        (
            504,
            "CHANNEL_ERROR - unexpected method in connection state running"
        )
    );
    assert_eq!(close.cause, (60, 70));
}

#[test]
fn a_content_header_without_a_publish_is_505() {
    let broker = Broker::start();
    let close = hard_error(&broker, &content_header(1, 2));
    assert_eq!(
        code_and_text(&close),
        (
            505,
            "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
        )
    );
}

#[test]
fn a_method_where_the_content_header_belongs_is_505() {
    let broker = Broker::start();
    let mut bytes = basic_publish(1, "", "q");
    bytes.extend(queue_declare(1, "q", false));
    let close = hard_error(&broker, &bytes);
    assert_eq!(
        code_and_text(&close),
        (
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"
        )
    );
    assert_eq!(close.cause, (60, 40));
}

#[test]
fn content_or_heartbeats_on_the_wrong_channel_are_505() {
    let broker = Broker::start();
    let close = hard_error(&broker, &body_frame(0, b"abc"));
    assert_eq!(close.reply_code, 505);
    assert!(
        close.reply_text.starts_with("UNEXPECTED_FRAME - "),
        "{close:?}"
    );
    let close = hard_error(&broker, &frame(FRAME_HEARTBEAT, 1, b""));
    assert_eq!(close.reply_code, 505);
    assert!(
        close.reply_text.starts_with("UNEXPECTED_FRAME - "),
        "{close:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn many_broken_clients_do_not_disturb_a_healthy_one() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = warren_tests::confirm_channel(&conn).await;
    let q = warren_tests::exclusive_queue(&ch).await;
    let addr = broker.addr();
    tokio::task::spawn_blocking(move || {
        for i in 0..30u8 {
            let mut raw = RawConn::open(addr);
            raw.send(&[i, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xce]);
            let close = raw.expect_server_close(WAIT);
            assert!(close.reply_code >= 500, "a hard error: {close:?}");
            // Hang up without close-ok, as a broken client would.
        }
    })
    .await
    .expect("the broken clients ran");
    let c = warren_tests::publish(&ch, "", &q, b"fine", Default::default()).await;
    assert!(c.is_ack());
    assert_eq!(warren_tests::drain(&ch, &q).await, ["fine"]);
}
