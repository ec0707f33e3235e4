//! Session tests: client bytes in, server frames and core inputs out. No socket, no runtime.

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;
use warren_core::{AmqpError, Effect, Input};
use warren_wire::*;

use std::sync::Arc;

use super::Session;
use crate::counters::{ClientCounters, ClientFigures, MessageSizes};
use crate::ServerConfig;

const CONN: u64 = 7;

fn drain(out: &mut OutBuf) -> BytesMut {
    let mut bytes = BytesMut::new();
    while out.has_remaining() {
        let c = out.chunk();
        bytes.extend_from_slice(c);
        let n = c.len();
        out.advance(n);
    }
    bytes
}

fn frames(bytes: &mut BytesMut) -> Vec<Frame> {
    let dec = FrameDecoder::new(1 << 20);
    let mut v = Vec::new();
    while let Some(f) = dec.decode(bytes).expect("server frames decode") {
        v.push(f);
    }
    v
}

struct Client {
    session: Session,
    now: u64,
    inputs: Vec<Input>,
    /// Bytes received but not yet a whole frame, as a socket reader keeps them.
    inbuf: BytesMut,
}

impl Client {
    fn new(config: ServerConfig) -> Client {
        Client {
            session: Session::new(CONN, &config, true, 0),
            now: 0,
            inputs: Vec::new(),
            inbuf: BytesMut::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
        self.session
            .receive(&mut self.inbuf, self.now, &mut self.inputs);
    }

    fn send(&mut self, channel: u16, m: Method) {
        let mut out = OutBuf::new();
        out.push_method(channel, &m);
        let bytes = drain(&mut out);
        self.send_raw(&bytes);
    }

    fn server_frames(&mut self) -> Vec<Frame> {
        let mut b = drain(self.session.out());
        frames(&mut b)
    }

    fn take_inputs(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.inputs)
    }

    fn apply(&mut self, e: Effect) {
        self.session.apply(e, self.now, &mut self.inputs);
    }

    /// Runs the whole handshake with heartbeat `hb`; leaves the session open.
    fn open(config: ServerConfig, hb: u16) -> Client {
        Client::open_with(config, hb, FieldTable::default())
    }

    /// [`Client::open`] with these client properties in `start-ok`.
    fn open_with(config: ServerConfig, hb: u16, client_properties: FieldTable) -> Client {
        Client::new(config).handshake(hb, client_properties)
    }

    /// A client whose session counts in `counters`.
    fn counted(counters: &Arc<ClientCounters>) -> Client {
        let mut c = Client::new(ServerConfig::default());
        c.session = Session::new(CONN, &ServerConfig::default(), true, 0)
            .with_counters(Arc::clone(counters));
        c
    }

    /// Runs the whole handshake (see [`Client::open`]).
    fn handshake(mut self, hb: u16, client_properties: FieldTable) -> Client {
        let c = &mut self;
        c.send_raw(PROTOCOL_HEADER);
        assert!(matches!(
            &c.server_frames()[..],
            [Frame::Method {
                channel: 0,
                method: Method::ConnectionStart(_)
            }]
        ));
        c.send(
            0,
            Method::ConnectionStartOk(ConnectionStartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: LongStr::from(&b"\0guest\0guest"[..]),
                locale: "en_US".into(),
            }),
        );
        let login = c.take_inputs();
        assert!(
            matches!(&login[..], [Input::Login { username, password, .. }] if username == "guest" && password == "guest")
        );
        c.apply(Effect::Authenticated {
            conn: CONN,
            user: "guest".into(),
        });
        let tune = c.server_frames();
        assert_eq!(
            tune,
            vec![Frame::Method {
                channel: 0,
                method: Method::ConnectionTune(ConnectionTune {
                    channel_max: 2047,
                    frame_max: 131072,
                    heartbeat: 60
                })
            }]
        );
        c.send(
            0,
            Method::ConnectionTuneOk(ConnectionTuneOk {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: hb,
            }),
        );
        c.send(
            0,
            Method::ConnectionOpen(ConnectionOpen {
                virtual_host: "/".into(),
                ..Default::default()
            }),
        );
        assert_eq!(
            c.take_inputs(),
            vec![Input::OpenVhost {
                conn: CONN,
                vhost: "/".into()
            }]
        );
        c.apply(Effect::Send {
            conn: CONN,
            channel: 0,
            method: Method::ConnectionOpenOk(Default::default()),
        });
        assert!(c.session.is_open());
        c.server_frames();
        self
    }

    fn expect_connection_close(&mut self, code: u16) -> String {
        let f = self.server_frames();
        match &f[..] {
            [.., Frame::Method {
                channel: 0,
                method: Method::ConnectionClose(m),
            }] if m.reply_code == code => m.reply_text.to_string(),
            other => panic!("expected connection.close {code}, got {other:?}"),
        }
    }
}

#[test]
fn wrong_protocol_header_is_answered_with_ours_and_closed() {
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(b"AMQP\x00\x00\x09\x00");
    assert_eq!(&drain(c.session.out())[..], PROTOCOL_HEADER);
    assert!(c.session.is_finished());
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(b"GET / HTTP/1.1\r\n");
    assert_eq!(&drain(c.session.out())[..], PROTOCOL_HEADER);
    assert!(c.session.is_finished());
}

#[test]
fn amqplain_login_is_decoded() {
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(PROTOCOL_HEADER);
    c.server_frames();
    let mut table = FieldTable::default();
    table.insert("LOGIN", FieldValue::from("bob"));
    table.insert("PASSWORD", FieldValue::from("s3cret"));
    let mut body = BytesMut::new();
    // An AMQPLAIN response is a table without its length prefix.
    let m = Method::ExchangeDeclare(ExchangeDeclare {
        arguments: table,
        ..Default::default()
    });
    m.encode(&mut body);
    // class, method, ticket, exchange, type, bits: 9 bytes; then the table's 4-byte length.
    let response = Bytes::copy_from_slice(&body[13..]);
    c.send(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: "AMQPLAIN".into(),
            response: LongStr::from(response),
            locale: "en_US".into(),
        }),
    );
    assert!(
        matches!(&c.take_inputs()[..], [Input::Login { username, password, mechanism, .. }]
        if username == "bob" && password == "s3cret" && mechanism == "AMQPLAIN")
    );
}

#[test]
fn tune_ok_above_server_frame_max_is_refused() {
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(PROTOCOL_HEADER);
    c.send(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            mechanism: "PLAIN".into(),
            response: LongStr::from(&b"\0guest\0guest"[..]),
            ..Default::default()
        }),
    );
    c.apply(Effect::Authenticated {
        conn: CONN,
        user: "guest".into(),
    });
    c.server_frames();
    c.send(
        0,
        Method::ConnectionTuneOk(ConnectionTuneOk {
            channel_max: 0,
            frame_max: 1 << 24,
            heartbeat: 0,
        }),
    );
    let text = c.expect_connection_close(530);
    assert!(
        text.starts_with("NOT_ALLOWED - frame_max=16777216"),
        "{text}"
    );
    assert!(matches!(
        &c.take_inputs()[..],
        [_, Input::ConnectionClosed { conn: CONN }]
    ));
}

#[test]
fn publish_content_is_assembled_across_frames() {
    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(1, Method::ChannelOpen(Default::default()));
    c.take_inputs();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "".into(),
        routing_key: "q".into(),
        ..Default::default()
    });
    let mut out = OutBuf::new();
    out.push_delivery(
        1,
        &publish,
        &BasicProperties::default(),
        Bytes::from(vec![5u8; 10_000]),
        4096,
    );
    let bytes = drain(&mut out);
    // Byte by byte: the session must never mistake a partial frame for an error.
    for b in bytes.iter() {
        c.send_raw(&[*b]);
    }
    match &c.take_inputs()[..] {
        [Input::Publish {
            channel: 1,
            body,
            publish,
            ..
        }] => {
            assert_eq!(body.len(), 10_000);
            assert_eq!(publish.routing_key, "q");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn body_longer_than_declared_closes_the_connection() {
    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(1, Method::ChannelOpen(Default::default()));
    c.send(
        1,
        Method::BasicPublish(BasicPublish {
            routing_key: "q".into(),
            ..Default::default()
        }),
    );
    let mut raw = BytesMut::new();
    encode_frame(&mut raw, 2, 1, |w| {
        ContentHeader {
            class_id: 60,
            weight: 0,
            body_size: 2,
            properties: Default::default(),
        }
        .encode(w)
    });
    encode_frame(&mut raw, 3, 1, |w| w.extend_from_slice(b"abc"));
    c.send_raw(&raw);
    c.expect_connection_close(501);
    assert!(matches!(
        c.take_inputs().last(),
        Some(Input::ConnectionClosed { conn: CONN })
    ));
}

#[test]
fn frames_on_unopened_channels_and_bad_frames_close_the_connection() {
    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(3, Method::QueueDeclare(Default::default()));
    let text = c.expect_connection_close(504);
    assert_eq!(text, "CHANNEL_ERROR - expected 'channel.open'");

    let mut c = Client::open(ServerConfig::default(), 0);
    c.send_raw(&[1, 0, 1, 0x7f, 0, 0, 0]);
    c.expect_connection_close(501);

    let mut c = Client::open(ServerConfig::default(), 0);
    c.send_raw(&[8, 0, 0, 0, 0, 0, 0, 0x00]);
    c.expect_connection_close(501);

    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(1, Method::ChannelOpen(Default::default()));
    let mut raw = BytesMut::new();
    encode_frame(&mut raw, 3, 1, |w| w.extend_from_slice(b"stray body"));
    c.send_raw(&raw);
    c.expect_connection_close(505);
}

#[test]
fn a_message_above_max_size_closes_only_its_channel() {
    let config = ServerConfig {
        max_message_size: 10,
        ..Default::default()
    };
    let mut c = Client::open(config, 0);
    c.send(1, Method::ChannelOpen(Default::default()));
    c.take_inputs();
    let publish = Method::BasicPublish(BasicPublish {
        routing_key: "q".into(),
        ..Default::default()
    });
    let mut out = OutBuf::new();
    out.push_delivery(
        1,
        &publish,
        &BasicProperties::default(),
        Bytes::from(vec![1u8; 11]),
        4096,
    );
    let raw = drain(&mut out);
    c.send_raw(&raw);
    let error =
        AmqpError::precondition_failed("message size 11 is larger than configured max size 10")
            .caused_by(60, 40);
    assert_eq!(
        c.take_inputs(),
        vec![Input::ChannelError {
            conn: CONN,
            channel: 1,
            error
        }]
    );
    assert!(!c.session.is_finished());
}

#[test]
fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let mut c = Client::open(ServerConfig::default(), 2);
    c.now = 1_000;
    c.session.tick(c.now, &mut c.inputs);
    assert_eq!(c.server_frames(), vec![Frame::Heartbeat { channel: 0 }]);
    c.now = 3_000;
    c.send_raw(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    c.now = 6_999;
    c.session.tick(c.now, &mut c.inputs);
    assert!(!c.session.is_finished());
    c.now = 7_000;
    c.session.tick(c.now, &mut c.inputs);
    assert!(c.session.is_finished(), "4 s (2 heartbeats) of silence");
    assert_eq!(
        c.take_inputs(),
        vec![Input::ConnectionClosed { conn: CONN }]
    );
}

#[test]
fn a_connection_paused_by_credit_flow_is_not_read_and_not_timed_out_until_resumed() {
    let counters = Arc::new(ClientCounters::default());
    let mut c = Client::counted(&counters).handshake(2, FieldTable::default());
    assert!(!c.session.in_flow());
    c.now = 1_000;
    c.apply(Effect::Flow {
        conn: CONN,
        paused: true,
    });
    assert!(c.session.in_flow(), "the driver must stop reading");
    // Paused twice in a row is one pause.
    c.apply(Effect::Flow {
        conn: CONN,
        paused: true,
    });
    assert_eq!(counters.read().flow_pauses, 1);
    // Not read, the client is silent: that is not a missed heartbeat.
    c.now = 10_000;
    c.session.tick(c.now, &mut c.inputs);
    assert!(!c.session.is_finished(), "heartbeat monitoring paused");
    assert_eq!(c.server_frames(), vec![Frame::Heartbeat { channel: 0 }]);
    c.apply(Effect::Flow {
        conn: CONN,
        paused: false,
    });
    assert!(!c.session.in_flow());
    // Its silence counts from the resume, not from before the pause.
    c.now = 13_999;
    c.session.tick(c.now, &mut c.inputs);
    assert!(!c.session.is_finished());
    c.now = 14_000;
    c.session.tick(c.now, &mut c.inputs);
    assert!(
        c.session.is_finished(),
        "4 s (2 heartbeats) of silence after the resume"
    );
}

#[test]
fn handshake_timeout_closes_a_client_that_never_opens() {
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(PROTOCOL_HEADER);
    c.now = 9_999;
    c.session.tick(c.now, &mut c.inputs);
    assert!(!c.session.is_finished());
    c.now = 10_000;
    c.session.tick(c.now, &mut c.inputs);
    assert!(c.session.is_finished());
}

#[test]
fn server_channel_close_discards_until_close_ok() {
    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(1, Method::ChannelOpen(Default::default()));
    c.take_inputs();
    c.apply(Effect::CloseChannel {
        conn: CONN,
        channel: 1,
        error: AmqpError::not_found("no queue 'x' in vhost '/'"),
    });
    assert!(
        matches!(&c.server_frames()[..], [Frame::Method { channel: 1, method: Method::ChannelClose(m) }] if m.reply_code == 404)
    );
    c.send(1, Method::QueueDeclare(Default::default()));
    assert_eq!(c.take_inputs(), vec![]);
    c.send(1, Method::ChannelCloseOk(Default::default()));
    c.send(1, Method::ChannelOpen(Default::default()));
    assert!(matches!(
        &c.take_inputs()[..],
        [Input::Method {
            channel: 1,
            method: Method::ChannelOpen(_),
            ..
        }]
    ));
}

#[test]
fn client_close_is_answered_and_reported_to_the_core() {
    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(
        0,
        Method::ConnectionClose(ConnectionClose {
            reply_code: 200,
            reply_text: "bye".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        c.server_frames(),
        vec![Frame::Method {
            channel: 0,
            method: Method::ConnectionCloseOk(ConnectionCloseOk {})
        }]
    );
    assert!(c.session.is_finished());
    assert!(
        c.session.closed_by_client(),
        "the client closes the socket after close-ok, as with RabbitMQ"
    );
    assert_eq!(
        c.take_inputs(),
        vec![Input::ConnectionClosed { conn: CONN }]
    );
}

#[test]
fn the_server_closes_the_socket_itself_when_it_ended_the_connection() {
    // A server-side close answered with close-ok: the server closes at once.
    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(3, Method::QueueDeclare(Default::default()));
    c.expect_connection_close(504);
    c.send(0, Method::ConnectionCloseOk(ConnectionCloseOk {}));
    assert!(c.session.is_finished());
    assert!(!c.session.closed_by_client());
    // Refused protocol, and a silent client dropped by the handshake timeout.
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(b"GET / HTTP/1.1\r\n");
    assert!(c.session.is_finished() && !c.session.closed_by_client());
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(PROTOCOL_HEADER);
    c.now = 10_000;
    c.session.tick(c.now, &mut c.inputs);
    assert!(c.session.is_finished() && !c.session.closed_by_client());
}

fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Arbitrary bytes.
        proptest::collection::vec(any::<u8>(), 0..64),
        // Well-formed frames of any type with arbitrary payloads on low channels.
        (
            prop_oneof![Just(1u8), Just(2), Just(3), Just(8)],
            0u16..4,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, ch, payload)| {
                let mut b = BytesMut::new();
                encode_frame(&mut b, t, ch, |w| w.extend_from_slice(&payload));
                b.to_vec()
            }),
        // Plausible methods.
        (
            0u16..4,
            prop_oneof![
                Just(Method::ChannelOpen(Default::default())),
                Just(Method::ChannelClose(Default::default())),
                Just(Method::ChannelCloseOk(Default::default())),
                Just(Method::BasicPublish(Default::default())),
                Just(Method::QueueDeclare(Default::default())),
                Just(Method::ConnectionClose(Default::default())),
                Just(Method::ConnectionOpen(Default::default())),
            ]
        )
            .prop_map(|(ch, m)| {
                let mut out = OutBuf::new();
                out.push_method(ch, &m);
                drain(&mut out).to_vec()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    /// The connection state machine's fuzz property: any sequence of client bytes after the
    /// handshake never panics, and the server's output is always valid frames.
    #[test]
    fn arbitrary_client_input_never_panics(chunks in proptest::collection::vec(arb_frame(), 0..12)) {
        let mut c = Client::open(ServerConfig::default(), 0);
        for chunk in chunks {
            c.send_raw(&chunk);
            let effects: Vec<Effect> = Vec::new();
            for e in effects { c.apply(e); }
            c.now += 100;
            c.session.tick(c.now, &mut c.inputs);
        }
        let mut out = drain(c.session.out());
        let dec = FrameDecoder::new(1 << 20);
        while let Some(_f) = dec.decode(&mut out).expect("server output is always valid frames") {}
        prop_assert!(out.is_empty());
    }

    #[test]
    fn arbitrary_bytes_before_the_handshake_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut c = Client::new(ServerConfig::default());
        c.send_raw(PROTOCOL_HEADER);
        c.send_raw(&bytes);
        c.session.tick(20_000, &mut c.inputs);
        prop_assert!(c.session.is_finished() || !c.session.is_open());
    }
}

/// The mechanisms offered in `connection.start` by a session with this external user.
fn offered(external: Option<&str>) -> String {
    let mut c = Client::new(ServerConfig::default());
    c.session = Session::new(CONN, &ServerConfig::default(), true, 0)
        .with_external_user(external.map(str::to_owned));
    c.send_raw(PROTOCOL_HEADER);
    match &c.server_frames()[..] {
        [Frame::Method {
            method: Method::ConnectionStart(s),
            ..
        }] => s.mechanisms.to_str().unwrap_or("?").to_owned(),
        other => panic!("expected connection.start, got {other:?}"),
    }
}

#[test]
fn external_is_offered_only_with_a_client_certificate() {
    assert_eq!(offered(None), "PLAIN AMQPLAIN");
    assert_eq!(offered(Some("app")), "PLAIN AMQPLAIN EXTERNAL");
}

#[test]
fn external_logs_in_as_the_certificates_user_whatever_the_response_says() {
    let start_ok = |mechanism: &str| {
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: mechanism.into(),
            response: LongStr::from(&b"\0root\0pw"[..]),
            locale: "en_US".into(),
        })
    };
    let mut c = Client::new(ServerConfig::default());
    c.session = Session::new(CONN, &ServerConfig::default(), false, 0)
        .with_external_user(Some("app".into()));
    c.send_raw(PROTOCOL_HEADER);
    c.server_frames();
    c.send(0, start_ok("EXTERNAL"));
    assert_eq!(
        c.take_inputs(),
        vec![Input::Login {
            conn: CONN,
            mechanism: "EXTERNAL".into(),
            username: "app".into(),
            password: String::new(),
            peer_loopback: false,
            client_properties: FieldTable::default(),
        }]
    );

    // Without a certificate, EXTERNAL is refused as an unknown mechanism.
    let mut c = Client::new(ServerConfig::default());
    c.send_raw(PROTOCOL_HEADER);
    c.server_frames();
    c.send(0, start_ok("EXTERNAL"));
    assert!(c.take_inputs().is_empty(), "no login for the core");
    let close = c.server_frames();
    assert!(
        matches!(&close[..], [Frame::Method { method: Method::ConnectionClose(m), .. }]
            if m.reply_code == 403 && m.reply_text.as_str().contains("unsupported authentication mechanism 'EXTERNAL'")),
        "{close:?}"
    );
}

/// Client properties announcing the `connection.blocked` capability.
fn announcing_blocked() -> FieldTable {
    let mut caps = FieldTable::default();
    caps.insert("connection.blocked", FieldValue::Bool(true));
    let mut props = FieldTable::default();
    props.insert("capabilities", FieldValue::Table(caps));
    props
}

/// A whole `basic.publish` (method, header, body) on channel 1, as bytes.
fn publish_bytes(body: &'static [u8]) -> BytesMut {
    let publish = Method::BasicPublish(BasicPublish {
        routing_key: "q".into(),
        ..Default::default()
    });
    let mut out = OutBuf::new();
    out.push_method(1, &publish);
    out.push_content(
        1,
        &publish,
        &BasicProperties::default(),
        Bytes::from_static(body),
        131_072,
    );
    drain(&mut out)
}

#[test]
fn a_publisher_is_blocked_while_an_alarm_is_on_and_goes_on_where_it_stopped() {
    let mut c = Client::open_with(ServerConfig::default(), 60, announcing_blocked());
    c.send(1, Method::ChannelOpen(ChannelOpen::default()));
    c.take_inputs();
    // An alarm alone blocks nobody ("blocking", as RabbitMQ shows it): methods go on.
    c.session
        .set_alarm(Some("low on memory".into()), c.now, &mut c.inputs);
    assert!(!c.session.is_blocked());
    assert!(c.server_frames().is_empty());
    c.send(
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "q".into(),
            ..Default::default()
        }),
    );
    assert_eq!(c.take_inputs().len(), 1, "a declare passes");

    // A publish blocks the connection: held unprocessed with what follows it, and the client
    // is told why, once.
    let mut bytes = publish_bytes(b"one");
    bytes.extend_from_slice(&publish_bytes(b"two"));
    c.send_raw(&bytes);
    assert!(c.session.is_blocked());
    assert!(c.take_inputs().is_empty(), "nothing reaches the broker");
    assert_eq!(
        c.server_frames(),
        vec![Frame::Method {
            channel: 0,
            method: Method::ConnectionBlocked(ConnectionBlocked {
                reason: "low on memory".into()
            })
        }]
    );
    // Another alarm while blocked sends nothing more.
    c.session
        .set_alarm(Some("low on memory & disk".into()), c.now, &mut c.inputs);
    assert!(c.server_frames().is_empty());
    // Blocked, the client is not read: its silence is not a missed heartbeat.
    c.now += 10 * 60_000;
    c.session.tick(c.now, &mut c.inputs);
    assert!(!c.session.is_finished(), "heartbeat monitoring paused");
    assert_eq!(
        c.server_frames(),
        vec![Frame::Heartbeat { channel: 0 }],
        "our own heartbeats go on"
    );

    // The alarm clears: unblocked, then both messages, in order.
    c.session.set_alarm(None, c.now, &mut c.inputs);
    assert_eq!(
        c.server_frames(),
        vec![Frame::Method {
            channel: 0,
            method: Method::ConnectionUnblocked(ConnectionUnblocked {})
        }]
    );
    // The driver hands the bytes it kept back in (as connection.rs does after an unblock).
    c.send_raw(&[]);
    let bodies: Vec<Bytes> = c
        .take_inputs()
        .into_iter()
        .filter_map(|i| match i {
            Input::Publish { body, .. } => Some(body),
            _ => None,
        })
        .collect();
    assert_eq!(
        bodies,
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
    assert!(!c.session.is_blocked());
}

#[test]
fn a_client_without_the_capability_is_blocked_silently() {
    let mut c = Client::open(ServerConfig::default(), 0);
    c.send(1, Method::ChannelOpen(ChannelOpen::default()));
    c.take_inputs();
    c.session
        .set_alarm(Some("low on disk".into()), c.now, &mut c.inputs);
    c.send_raw(&publish_bytes(b"x"));
    assert!(c.session.is_blocked());
    assert!(c.server_frames().is_empty(), "no connection.blocked");
    c.session.set_alarm(None, c.now, &mut c.inputs);
    assert!(c.server_frames().is_empty(), "no connection.unblocked");
    c.send_raw(&[]);
    assert!(matches!(&c.take_inputs()[..], [Input::Publish { .. }]));
}

/// The core's effect `method` for the client on `channel`.
fn reply(channel: u16, method: Method) -> Effect {
    Effect::Send {
        conn: CONN,
        channel,
        method,
    }
}

/// The core's effect `method` with a one-byte content for the client on `channel`.
fn content(channel: u16, method: Method) -> Effect {
    Effect::SendContent {
        conn: CONN,
        channel,
        method,
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"m"),
    }
}

fn deliver(consumer_tag: &str, delivery_tag: u64) -> Method {
    Method::BasicDeliver(BasicDeliver {
        consumer_tag: consumer_tag.into(),
        delivery_tag,
        ..Default::default()
    })
}

fn get_ok(delivery_tag: u64) -> Method {
    Method::BasicGetOk(BasicGetOk {
        delivery_tag,
        ..Default::default()
    })
}

impl Client {
    /// A `basic.publish` of `size` bytes on `channel`, content and all.
    fn publish(&mut self, channel: u16, mandatory: bool, size: usize) {
        let publish = Method::BasicPublish(BasicPublish {
            routing_key: "q".into(),
            mandatory,
            ..Default::default()
        });
        let mut out = OutBuf::new();
        out.push_delivery(
            channel,
            &publish,
            &BasicProperties::default(),
            Bytes::from(vec![0u8; size]),
            131_072,
        );
        let bytes = drain(&mut out);
        self.send_raw(&bytes);
    }

    /// The core's effects, as the connection task hands them over (confirms coalesced).
    fn apply_all(&mut self, effects: Vec<Effect>) {
        let mut effects = effects;
        self.session
            .apply_all(&mut effects, self.now, &mut self.inputs);
    }

    /// Opens `channel` (the core answers at once).
    fn open_channel(&mut self, channel: u16) {
        self.send(channel, Method::ChannelOpen(ChannelOpen::default()));
        self.take_inputs();
        self.apply_all(vec![reply(
            channel,
            Method::ChannelOpenOk(Default::default()),
        )]);
    }
}

/// RabbitMQ's global counters, churn, logins and message sizes, counted from the frames a
/// session reads and writes, exactly.
#[test]
fn what_a_client_does_is_counted_from_its_frames() {
    let counters = Arc::new(ClientCounters::default());
    let mut c = Client::counted(&counters).handshake(0, FieldTable::default());

    // Channel 1 in confirm mode: three publishes, the last mandatory and returned; the core
    // confirms each, the session sends one `basic.ack` with `multiple=true`.
    c.open_channel(1);
    c.send(1, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    c.apply_all(vec![reply(1, Method::ConfirmSelectOk(ConfirmSelectOk {}))]);
    c.publish(1, false, 10);
    c.publish(1, false, 500);
    c.publish(1, true, 20_000);
    assert_eq!(
        c.take_inputs().len(),
        3 + 1,
        "confirm.select and three publishes"
    );
    let ack = |tag| {
        reply(
            1,
            Method::BasicAck(BasicAck {
                delivery_tag: tag,
                multiple: false,
            }),
        )
    };
    c.server_frames();
    c.apply_all(vec![
        content(1, Method::BasicReturn(BasicReturn::default())),
        ack(1),
        ack(2),
        ack(3),
    ]);
    let sent = c.server_frames();
    assert!(
        sent.contains(&Frame::Method {
            channel: 1,
            method: Method::BasicAck(BasicAck {
                delivery_tag: 3,
                multiple: true
            })
        }),
        "one multiple ack: {sent:?}"
    );

    // Channel 2, no confirms: a publish of 100 bytes; a manual-ack consumer that gets two
    // messages, acked with one multiple ack; an auto-ack consumer the server names; a get-ok
    // with no-ack, a get-empty, a get-ok rejected (not an ack).
    c.open_channel(2);
    c.publish(2, false, 100);
    c.send(
        2,
        Method::BasicConsume(BasicConsume {
            queue: "q".into(),
            consumer_tag: "manual".into(),
            ..Default::default()
        }),
    );
    c.send(
        2,
        Method::BasicConsume(BasicConsume {
            queue: "q".into(),
            no_ack: true,
            ..Default::default()
        }),
    );
    c.apply_all(vec![
        reply(
            2,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "manual".into(),
            }),
        ),
        reply(
            2,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "amq.ctag-1".into(),
            }),
        ),
        content(2, deliver("manual", 1)),
        content(2, deliver("amq.ctag-1", 2)),
        content(2, deliver("manual", 3)),
    ]);
    c.send(
        2,
        Method::BasicAck(BasicAck {
            delivery_tag: 3,
            multiple: true,
        }),
    );
    for no_ack in [true, false, false] {
        c.send(
            2,
            Method::BasicGet(BasicGet {
                queue: "q".into(),
                no_ack,
                ..Default::default()
            }),
        );
    }
    c.apply_all(vec![
        content(2, get_ok(4)),
        reply(2, Method::BasicGetEmpty(BasicGetEmpty::default())),
        content(2, get_ok(5)),
    ]);
    c.send(
        2,
        Method::BasicReject(BasicReject {
            delivery_tag: 5,
            requeue: true,
        }),
    );
    // The client closes channel 2.
    c.send(2, Method::ChannelClose(ChannelClose::default()));
    c.apply_all(vec![reply(2, Method::ChannelCloseOk(ChannelCloseOk {}))]);

    // Channel 3 in a transaction: its ack counts when it commits.
    c.open_channel(3);
    c.send(3, Method::TxSelect(TxSelect {}));
    c.send(
        3,
        Method::BasicGet(BasicGet {
            queue: "q".into(),
            ..Default::default()
        }),
    );
    c.apply_all(vec![
        reply(3, Method::TxSelectOk(TxSelectOk {})),
        content(3, get_ok(1)),
    ]);
    c.send(
        3,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert_eq!(counters.read().acknowledged, 2, "not before the commit");
    c.send(3, Method::TxCommit(TxCommit {}));
    c.apply_all(vec![reply(3, Method::TxCommitOk(TxCommitOk {}))]);

    let open = ClientFigures {
        messages_received: 4,
        messages_received_confirm: 3,
        messages_confirmed: 3,
        messages_unroutable_returned: 1,
        delivered_consume_manual_ack: 2,
        delivered_consume_auto_ack: 1,
        delivered_get_manual_ack: 2,
        delivered_get_auto_ack: 1,
        get_empty: 1,
        acknowledged: 3,
        connections_opened: 1,
        connections_closed: 0,
        channels_opened: 3,
        channels_closed: 1,
        auth_attempts_succeeded: 1,
        auth_attempts_failed: 0,
        flow_pauses: 0,
        queues_declared: 0,
        queues_created: 0,
        queues_deleted: 0,
        messages_unroutable_dropped: 0,
        message_sizes: MessageSizes {
            // 10 and 100; 500; none; 20 000; nothing larger.
            cumulative: [2, 3, 3, 4, 4, 4, 4, 4, 4],
            sum: 10 + 500 + 20_000 + 100,
        },
    };
    assert_eq!(counters.read(), open);

    // The connection ends with channels 1 and 3 open: they close with it.
    drop(c);
    let ended = ClientFigures {
        connections_closed: 1,
        channels_closed: 3,
        ..open.clone()
    };
    assert_eq!(counters.read(), ended);

    // A refused login is a failed attempt; the connection was never opened, but it closed
    // (as RabbitMQ's reader counts every connection it served).
    let mut refused = Client::counted(&counters);
    refused.send_raw(PROTOCOL_HEADER);
    refused.send(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongStr::from(&b"\0guest\0wrong"[..]),
            locale: "en_US".into(),
        }),
    );
    refused.apply_all(vec![Effect::CloseConnection {
        conn: CONN,
        error: AmqpError::access_refused("Login was refused"),
    }]);
    drop(refused);
    assert_eq!(
        counters.read(),
        ClientFigures {
            auth_attempts_failed: 1,
            connections_closed: 2,
            ..ended
        }
    );
}
