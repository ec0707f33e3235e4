//! The session against a scripted broker: each test plays the broker's AMQP side and asserts the
//! exact AMQP methods and STOMP frames the session writes.

use super::*;
use crate::{Decoder, Item};
use warren_bridge::CHANNEL;
use warren_wire::{
    BasicAck, BasicCancel, BasicConsume, BasicDeliver, BasicNack, BasicQos, ChannelClose,
    ChannelOpenOk, ConfirmSelectOk, ConnectionOpenOk, ConnectionStart, ConnectionTune, LongStr,
    QueueBind, QueueBindOk, QueueDeclare, QueueDeclareOk, QueueDelete,
};
use warren_wire::{
    ChannelOpen, ConfirmSelect, ConnectionClose, ConnectionCloseOk, ConnectionOpen,
    ConnectionTuneOk, Frame as AmqpFrame,
};

fn config() -> Config {
    Config {
        limits: Limits::default(),
        default_login: "guest".into(),
        default_passcode: "guest".into(),
        default_vhost: "/".into(),
        server: "Warren/test".into(),
        connect_timeout_ms: 10_000,
        protocol_property: Some("warren.protocol".into()),
        session_id: "session-t".into(),
        seed: 1,
    }
}

/// What the session wrote to the broker since the last call: protocol header bytes dropped,
/// frames decoded.
fn to_broker(s: &mut Session) -> Vec<AmqpFrame> {
    warren_bridge::script::frames(s.amqp_out())
}

fn methods(s: &mut Session) -> Vec<Method> {
    warren_bridge::script::methods(s.amqp_out())
}

/// What the session wrote to the client since the last call.
fn to_client(s: &mut Session) -> Vec<Frame> {
    let mut bytes = s.stomp_out().split();
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(s.version());
    let mut frames = Vec::new();
    while let Some(item) = decoder
        .decode(&mut bytes)
        .expect("the session writes frames")
    {
        if let Item::Frame(f) = item {
            frames.push(f);
        }
    }
    frames
}

fn client(s: &mut Session, text: &str) {
    let mut buf = BytesMut::from(text.as_bytes());
    s.receive_stomp(&mut buf, 0);
}

fn broker(s: &mut Session, method: Method) {
    let mut out = OutBuf::new();
    out.push_method(CHANNEL, &method);
    broker_bytes(s, out);
}

fn broker_bytes(s: &mut Session, mut out: OutBuf) {
    let mut buf = warren_bridge::script::drain(&mut out);
    s.receive_amqp(&mut buf, 0);
}

fn deliver(s: &mut Session, tag: &str, delivery_tag: u64, properties: BasicProperties, body: &str) {
    let mut out = OutBuf::new();
    out.push_delivery(
        CHANNEL,
        &Method::BasicDeliver(BasicDeliver {
            consumer_tag: tag.into(),
            delivery_tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        }),
        &properties,
        Bytes::from(body.to_owned()),
        4096,
    );
    broker_bytes(s, out);
}

fn header<'a>(f: &'a Frame, name: &str) -> Option<&'a str> {
    f.header(name)
}

/// A session through CONNECT (1.2, guest) and the AMQP handshake, CONNECTED taken.
fn connected() -> Session {
    let mut s = Session::new(config(), 0);
    client(
        &mut s,
        "CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0",
    );
    handshake(&mut s);
    let frames = to_client(&mut s);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].command, Command::Connected);
    s
}

fn handshake(s: &mut Session) {
    assert!(methods(s).is_empty(), "the protocol header only");
    broker(
        s,
        Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "PLAIN AMQPLAIN".into(),
            locales: "en_US".into(),
        }),
    );
    let m = methods(s);
    let [Method::ConnectionStartOk(ok)] = m.as_slice() else {
        panic!("{m:?}");
    };
    assert_eq!(ok.mechanism.as_str(), "PLAIN");
    assert_eq!(&ok.response.as_bytes()[..], b"\0guest\0guest");
    assert_eq!(
        ok.client_properties
            .get("warren.protocol")
            .and_then(|v| v.as_str()),
        Some("STOMP 1.2")
    );
    broker(
        s,
        Method::ConnectionTune(ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        }),
    );
    assert_eq!(
        methods(s),
        vec![
            Method::ConnectionTuneOk(ConnectionTuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 0
            }),
            Method::ConnectionOpen(ConnectionOpen {
                virtual_host: "/".into(),
                capabilities: ShortStr::default(),
                insist: false
            }),
        ]
    );
    broker(
        s,
        Method::ConnectionOpenOk(ConnectionOpenOk {
            known_hosts: ShortStr::default(),
        }),
    );
    assert_eq!(
        methods(s),
        vec![Method::ChannelOpen(ChannelOpen {
            out_of_band: ShortStr::default()
        })]
    );
    broker(
        s,
        Method::ChannelOpenOk(ChannelOpenOk {
            channel_id: LongStr::default(),
        }),
    );
    assert_eq!(
        methods(s),
        vec![Method::ConfirmSelect(ConfirmSelect { nowait: false })]
    );
    broker(s, Method::ConfirmSelectOk(ConfirmSelectOk {}));
}

fn declare_ok(s: &mut Session, queue: &str) {
    broker(
        s,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: queue.into(),
            message_count: 0,
            consumer_count: 0,
        }),
    );
}

fn consume_ok(s: &mut Session, tag: &str) {
    broker(
        s,
        Method::BasicConsumeOk(warren_wire::BasicConsumeOk {
            consumer_tag: tag.into(),
        }),
    );
}

#[test]
fn connect_opens_an_amqp_connection_and_channel_then_answers_connected() {
    let mut s = Session::new(config(), 0);
    client(
        &mut s,
        "CONNECT\naccept-version:1.0,1.1,1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:5000,10000\n\n\0",
    );
    // Frames sent before CONNECTED wait for it.
    client(&mut s, "SEND\ndestination:/topic/t\n\nearly\0");
    handshake(&mut s);
    assert_eq!(
        to_client(&mut s),
        vec![Frame::new(Command::Connected)
            .with_header("server", "Warren/test")
            .with_header("session", "session-t")
            .with_header("heart-beat", "10000,5000")
            .with_header("version", "1.2")]
    );
    let m = methods(&mut s);
    assert!(
        matches!(m.as_slice(), [Method::BasicPublish(p)] if p.exchange.as_str() == "amq.topic" && p.routing_key.as_str() == "t"),
        "{m:?}"
    );
    // Heart-beats every half of the 10 s promised; a client silent for three times its 5 s is
    // gone.
    s.tick(4_999);
    assert!(s.stomp_out().is_empty());
    s.tick(5_000);
    assert_eq!(&s.stomp_out().split()[..], b"\n");
    let mut beat = BytesMut::from(&b"\n"[..]);
    s.receive_stomp(&mut beat, 12_000);
    s.tick(27_000);
    assert!(!s.is_closed());
    s.tick(27_001);
    assert!(s.is_closed());
}

#[test]
fn a_refused_login_is_an_error_frame_and_the_end() {
    let mut s = Session::new(config(), 0);
    client(
        &mut s,
        "CONNECT\naccept-version:1.2\nlogin:guest\npasscode:wrong\n\n\0",
    );
    let _ = methods(&mut s);
    broker(
        &mut s,
        Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
        }),
    );
    let _ = methods(&mut s);
    broker(
        &mut s,
        Method::ConnectionClose(ConnectionClose {
            reply_code: 403,
            reply_text: "ACCESS_REFUSED - Login was refused".into(),
            class_id: 0,
            method_id: 0,
        }),
    );
    let frames = to_client(&mut s);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].command, Command::Error);
    assert_eq!(header(&frames[0], "message"), Some("Bad CONNECT"));
    assert_eq!(&frames[0].body[..], b"Access refused for user 'guest'\n");
    assert!(s.is_closed());
    assert_eq!(
        methods(&mut s),
        vec![Method::ConnectionCloseOk(ConnectionCloseOk {})]
    );
}

#[test]
fn no_common_version_and_frames_before_connect_are_refused() {
    let mut s = Session::new(config(), 0);
    client(&mut s, "CONNECT\naccept-version:2.0\n\n\0");
    let frames = to_client(&mut s);
    assert_eq!(header(&frames[0], "message"), Some("Version mismatch"));
    assert!(s.is_closed());

    let mut s = Session::new(config(), 0);
    client(&mut s, "SEND\ndestination:/queue/a\n\nx\0");
    let frames = to_client(&mut s);
    assert_eq!(header(&frames[0], "message"), Some("Illegal command"));
    assert!(s.is_closed());

    // A client that never sends CONNECT is told, and closed.
    let mut s = Session::new(config(), 0);
    s.tick(9_999);
    assert!(!s.is_closed());
    s.tick(10_000);
    let frames = to_client(&mut s);
    assert_eq!(header(&frames[0], "message"), Some("Connection timed out"));
    assert!(s.is_closed());
}

#[test]
fn a_send_to_a_queue_declares_it_once_and_its_receipt_waits_for_the_confirm() {
    let mut s = connected();
    client(
        &mut s,
        "SEND\ndestination:/queue/jobs\nreceipt:r1\npersistent:true\n\none\0\
         SEND\ndestination:/queue/jobs\n\ntwo\0",
    );
    assert_eq!(
        methods(&mut s),
        vec![Method::QueueDeclare(QueueDeclare {
            ticket: 0,
            queue: "jobs".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })]
    );
    declare_ok(&mut s, "jobs");
    let frames = to_broker(&mut s);
    let publishes: Vec<&Method> = frames
        .iter()
        .filter_map(|f| match f {
            AmqpFrame::Method { method, .. } => Some(method),
            _ => None,
        })
        .collect();
    assert_eq!(
        publishes.len(),
        2,
        "both publishes, one declare: {frames:?}"
    );
    let persistent = frames.iter().find_map(|f| match f {
        AmqpFrame::Header { header, .. } => Some(header.properties.delivery_mode),
        _ => None,
    });
    assert_eq!(persistent, Some(Some(2)));
    assert!(
        to_client(&mut s).is_empty(),
        "no receipt before the confirm"
    );
    broker(
        &mut s,
        Method::BasicAck(BasicAck {
            delivery_tag: 2,
            multiple: true,
        }),
    );
    assert_eq!(
        to_client(&mut s),
        vec![Frame::new(Command::Receipt).with_header("receipt-id", "r1")]
    );
}

#[test]
fn a_subscription_in_client_individual_mode_consumes_with_its_prefetch_and_acks_by_id() {
    let mut s = connected();
    client(
        &mut s,
        "SUBSCRIBE\nid:7\ndestination:/queue/work\nack:client-individual\nprefetch-count:2\nx-max-length:10\nreceipt:s\n\n\0",
    );
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length", FieldValue::I64(10));
    assert_eq!(
        methods(&mut s),
        vec![Method::QueueDeclare(QueueDeclare {
            ticket: 0,
            queue: "work".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        })]
    );
    declare_ok(&mut s, "work");
    assert_eq!(
        methods(&mut s),
        vec![Method::BasicQos(BasicQos {
            prefetch_size: 0,
            prefetch_count: 2,
            global: false
        })]
    );
    broker(&mut s, Method::BasicQosOk(warren_wire::BasicQosOk {}));
    assert_eq!(
        methods(&mut s),
        vec![Method::BasicConsume(BasicConsume {
            ticket: 0,
            queue: "work".into(),
            consumer_tag: "T_7".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })]
    );
    assert!(
        to_client(&mut s).is_empty(),
        "the receipt waits for consume-ok"
    );
    consume_ok(&mut s, "T_7");
    assert_eq!(
        to_client(&mut s),
        vec![Frame::new(Command::Receipt).with_header("receipt-id", "s")]
    );
    let props = BasicProperties {
        content_type: Some("text/plain".into()),
        correlation_id: Some("c".into()),
        ..BasicProperties::default()
    };
    deliver(&mut s, "T_7", 1, props, "hello");
    deliver(&mut s, "T_7", 2, BasicProperties::default(), "");
    let frames = to_client(&mut s);
    assert_eq!(
        frames[0],
        Frame {
            command: Command::Message,
            headers: [
                ("subscription", "7"),
                ("destination", "/queue/q"),
                ("message-id", "T_7@@session-t@@1"),
                ("redelivered", "false"),
                ("ack", "T_7@@session-t@@1"),
                ("correlation-id", "c"),
                ("content-type", "text/plain"),
                ("content-length", "5"),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
            body: Bytes::from_static(b"hello"),
        }
    );
    assert_eq!(
        header(&frames[1], "content-length"),
        None,
        "an empty body has none"
    );
    // The second first: individual acks settle only their own message.
    client(
        &mut s,
        "ACK\nid:T_7@@session-t@@2\n\n\0NACK\nid:T_7@@session-t@@1\nrequeue:false\n\n\0",
    );
    assert_eq!(
        methods(&mut s),
        vec![
            Method::BasicAck(BasicAck {
                delivery_tag: 2,
                multiple: false
            }),
            Method::BasicNack(BasicNack {
                delivery_tag: 1,
                multiple: false,
                requeue: false
            }),
        ]
    );
}

#[test]
fn a_subscribe_s_receipt_comes_before_deliveries_read_with_its_consume_ok() {
    let mut s = connected();
    client(
        &mut s,
        "SUBSCRIBE\nid:r\ndestination:/amq/queue/q\nreceipt:sub\n\n\0",
    );
    let _ = methods(&mut s);
    let mut out = OutBuf::new();
    out.push_method(
        CHANNEL,
        &Method::BasicConsumeOk(warren_wire::BasicConsumeOk {
            consumer_tag: "T_r".into(),
        }),
    );
    out.push_delivery(
        CHANNEL,
        &Method::BasicDeliver(BasicDeliver {
            consumer_tag: "T_r".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        }),
        &BasicProperties::default(),
        Bytes::from_static(b"waiting"),
        4096,
    );
    broker_bytes(&mut s, out);
    let frames = to_client(&mut s);
    let commands: Vec<&Command> = frames.iter().map(|f| &f.command).collect();
    assert_eq!(commands, vec![&Command::Receipt, &Command::Message]);
}

#[test]
fn client_mode_acks_every_earlier_message_of_its_own_subscription_only() {
    let mut s = connected();
    client(
        &mut s,
        "SUBSCRIBE\nid:a\ndestination:/amq/queue/qa\nack:client\n\n\0",
    );
    let _ = methods(&mut s);
    consume_ok(&mut s, "T_a");
    client(
        &mut s,
        "SUBSCRIBE\nid:b\ndestination:/amq/queue/qb\nack:client\n\n\0",
    );
    let _ = methods(&mut s);
    consume_ok(&mut s, "T_b");
    deliver(&mut s, "T_a", 1, BasicProperties::default(), "1");
    deliver(&mut s, "T_b", 2, BasicProperties::default(), "2");
    deliver(&mut s, "T_a", 3, BasicProperties::default(), "3");
    deliver(&mut s, "T_a", 4, BasicProperties::default(), "4");
    let _ = to_client(&mut s);
    client(&mut s, "ACK\nid:T_a@@session-t@@3\n\n\0");
    let acked: Vec<u64> = methods(&mut s)
        .into_iter()
        .map(|m| match m {
            Method::BasicAck(a) => {
                assert!(!a.multiple);
                a.delivery_tag
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(acked, vec![1, 3], "not b's 2, not a's later 4");
}

#[test]
fn a_topic_subscription_gets_its_own_queue_bound_to_amq_topic_durable_when_asked() {
    let mut s = connected();
    client(
        &mut s,
        "SUBSCRIBE\nid:d1\ndestination:/topic/news.*\ndurable:true\nauto-delete:false\n\n\0",
    );
    let m = methods(&mut s);
    let [Method::QueueDeclare(d)] = m.as_slice() else {
        panic!("{m:?}")
    };
    assert!(d.durable && !d.exclusive && !d.auto_delete, "{d:?}");
    let queue = d.queue.to_string();
    assert_eq!(
        queue,
        crate::queue_name::durable_subscription("news.*", "d1")
    );
    declare_ok(&mut s, &queue);
    assert_eq!(
        methods(&mut s),
        vec![Method::QueueBind(QueueBind {
            ticket: 0,
            queue: queue.as_str().into(),
            exchange: "amq.topic".into(),
            routing_key: "news.*".into(),
            nowait: false,
            arguments: FieldTable::default(),
        })]
    );
    broker(&mut s, Method::QueueBindOk(QueueBindOk {}));
    let m = methods(&mut s);
    assert!(
        matches!(m.as_slice(), [Method::BasicConsume(c)] if c.no_ack && c.queue.as_str() == queue)
    );
    consume_ok(&mut s, "T_d1");
    // UNSUBSCRIBE with durable:true cancels and deletes it.
    client(&mut s, "UNSUBSCRIBE\nid:d1\ndurable:true\nreceipt:u\n\n\0");
    assert_eq!(
        methods(&mut s),
        vec![Method::BasicCancel(BasicCancel {
            consumer_tag: "T_d1".into(),
            nowait: false
        })]
    );
    broker(
        &mut s,
        Method::BasicCancelOk(warren_wire::BasicCancelOk {
            consumer_tag: "T_d1".into(),
        }),
    );
    assert_eq!(
        methods(&mut s),
        vec![Method::QueueDelete(QueueDelete {
            ticket: 0,
            queue: queue.as_str().into(),
            if_unused: false,
            if_empty: false,
            nowait: false
        })]
    );
    broker(
        &mut s,
        Method::QueueDeleteOk(warren_wire::QueueDeleteOk { message_count: 0 }),
    );
    assert_eq!(
        to_client(&mut s),
        vec![Frame::new(Command::Receipt).with_header("receipt-id", "u")]
    );
}

#[test]
fn a_reply_to_temp_queue_makes_a_broker_named_private_queue_once() {
    let mut s = connected();
    client(
        &mut s,
        "SEND\ndestination:/queue/rpc\nreply-to:/temp-queue/r\n\nask\0",
    );
    let m = methods(&mut s);
    assert!(matches!(m.as_slice(), [Method::QueueDeclare(d)] if d.queue.as_str() == "rpc"));
    declare_ok(&mut s, "rpc");
    let m = methods(&mut s);
    let [Method::QueueDeclare(d)] = m.as_slice() else {
        panic!("{m:?}")
    };
    assert!(d.exclusive && d.auto_delete && !d.durable && d.queue.is_empty());
    declare_ok(&mut s, "amq.gen-abc");
    let m = methods(&mut s);
    assert!(
        matches!(m.as_slice(), [Method::BasicConsume(c)] if c.queue.as_str() == "amq.gen-abc" && c.no_ack && c.consumer_tag.as_str() == "T_/temp-queue/r"),
        "{m:?}"
    );
    consume_ok(&mut s, "T_/temp-queue/r");
    let frames = to_broker(&mut s);
    let reply_to = frames.iter().find_map(|f| match f {
        AmqpFrame::Header { header, .. } => header.properties.reply_to.clone(),
        _ => None,
    });
    assert_eq!(reply_to.as_deref(), Some("amq.gen-abc"));
    // The same temp queue again: no declare, the same name.
    client(
        &mut s,
        "SEND\ndestination:/queue/rpc\nreply-to:/temp-queue/r\n\nagain\0",
    );
    let frames = to_broker(&mut s);
    assert_eq!(frames.len(), 3, "a publish only: {frames:?}");
    let mut out = OutBuf::new();
    out.push_delivery(
        CHANNEL,
        &Method::BasicDeliver(BasicDeliver {
            consumer_tag: "T_/temp-queue/r".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "amq.gen-abc".into(),
        }),
        &BasicProperties::default(),
        Bytes::from_static(b"answer"),
        4096,
    );
    broker_bytes(&mut s, out);
    let frames = to_client(&mut s);
    assert_eq!(header(&frames[0], "subscription"), Some("/temp-queue/r"));
    assert_eq!(
        header(&frames[0], "destination"),
        Some("/queue/amq.gen-abc")
    );
    assert_eq!(header(&frames[0], "ack"), None, "auto-acknowledged");
}

#[test]
fn a_transaction_holds_its_frames_until_commit_and_abort_drops_them() {
    let mut s = connected();
    client(
        &mut s,
        "BEGIN\ntransaction:t1\n\n\0SEND\ndestination:/topic/a\ntransaction:t1\n\n1\0\
         SEND\ndestination:/topic/a\ntransaction:t1\n\n2\0",
    );
    assert!(methods(&mut s).is_empty());
    client(&mut s, "COMMIT\ntransaction:t1\nreceipt:c\n\n\0");
    let publishes = methods(&mut s)
        .into_iter()
        .filter(|m| matches!(m, Method::BasicPublish(_)))
        .count();
    assert_eq!(publishes, 2);
    assert_eq!(
        to_client(&mut s),
        vec![Frame::new(Command::Receipt).with_header("receipt-id", "c")]
    );
    client(
        &mut s,
        "BEGIN\ntransaction:t2\n\n\0SEND\ndestination:/topic/a\ntransaction:t2\n\n3\0ABORT\ntransaction:t2\n\n\0",
    );
    assert!(methods(&mut s).is_empty());
    client(&mut s, "COMMIT\ntransaction:t2\n\n\0");
    let frames = to_client(&mut s);
    assert_eq!(header(&frames[0], "message"), Some("Bad transaction"));
    assert_eq!(
        &frames[0].body[..],
        b"Invalid transaction identifier: \"t2\"\n"
    );
    assert!(!s.is_closed());
}

#[test]
fn a_channel_closed_by_the_broker_is_an_error_named_after_its_code() {
    let mut s = connected();
    client(
        &mut s,
        "SUBSCRIBE\nid:1\ndestination:/amq/queue/missing\n\n\0",
    );
    let _ = methods(&mut s);
    broker(
        &mut s,
        Method::ChannelClose(ChannelClose {
            reply_code: 404,
            reply_text: "NOT_FOUND - no queue 'missing' in vhost '/'".into(),
            class_id: 60,
            method_id: 20,
        }),
    );
    let frames = to_client(&mut s);
    assert_eq!(header(&frames[0], "message"), Some("not_found"));
    assert_eq!(
        &frames[0].body[..],
        b"NOT_FOUND - no queue 'missing' in vhost '/'"
    );
    assert!(s.is_closed());
}

#[test]
fn errors_a_client_can_correct_keep_the_session_and_the_others_end_it() {
    for (input, message, closes) in [
        ("FOO\n\n\0", "Bad command", false),
        ("SEND\n\nx\0", "Missing destination", false),
        (
            "SEND\ndestination:/nowhere/x\n\nx\0",
            "Unknown destination",
            false,
        ),
        (
            "SEND\ndestination:/queue/a\nmessage-id:m\n\nx\0",
            "Invalid header",
            false,
        ),
        (
            "SUBSCRIBE\ndestination:/queue/a\nack:sometimes\n\n\0",
            "Processing error",
            false,
        ),
        (
            "SUBSCRIBE\ndestination:/topic/a\ndurable:true\n\n\0",
            "Missing Header",
            false,
        ),
        (
            "SUBSCRIBE\nid:1\ndestination:/temp-queue/a\n\n\0",
            "Invalid destination",
            false,
        ),
        ("ACK\nid:nonsense\n\n\0", "Invalid header", false),
        ("ACK\n\n\0", "Missing header", false),
        ("ACK\nid:T_x@@s@@1\n\n\0", "Subscription not found", false),
        ("UNSUBSCRIBE\nid:x\n\n\0", "No subscription found", false),
        ("UNSUBSCRIBE\n\n\0", "Missing destination or id", false),
        ("BEGIN\n\n\0", "Missing transaction", false),
        (
            "SEND\ndestination:/topic/a\ntransaction:none\n\nx\0",
            "Bad transaction",
            false,
        ),
        (
            "SEND\ndestination:/queue/a\ncontent-length:1\n\nxy\0",
            "Invalid frame",
            true,
        ),
        (
            "SEND\ndestination:/queue/a\nbad:\\q\n\nx\0",
            "Invalid frame",
            true,
        ),
        ("SEND\rdestination:/queue/a\n\nx\0", "Invalid frame", true),
    ] {
        let mut s = connected();
        client(&mut s, input);
        let frames = to_client(&mut s);
        assert_eq!(frames.len(), 1, "{input}: {frames:?}");
        assert_eq!(frames[0].command, Command::Error, "{input}");
        assert_eq!(header(&frames[0], "message"), Some(message), "{input}");
        assert_eq!(s.is_closed(), closes, "{input}");
        if !closes {
            client(&mut s, "BEGIN\ntransaction:t\nreceipt:still\n\n\0");
            assert_eq!(
                to_client(&mut s),
                vec![Frame::new(Command::Receipt).with_header("receipt-id", "still")],
                "{input}"
            );
        }
    }
    // A second subscription with the same id ends the session.
    let mut s = connected();
    client(&mut s, "SUBSCRIBE\nid:1\ndestination:/amq/queue/q\n\n\0");
    client(&mut s, "SUBSCRIBE\nid:1\ndestination:/amq/queue/q\n\n\0");
    let frames = to_client(&mut s);
    assert_eq!(
        header(&frames[0], "message"),
        Some("Duplicated subscription identifier")
    );
    assert_eq!(
        &frames[0].body[..],
        b"A subscription identified by 'T_1' already exists."
    );
    assert!(s.is_closed());
}

#[test]
fn disconnect_waits_for_confirms_then_answers_its_receipt_and_closes() {
    let mut s = connected();
    client(
        &mut s,
        "SEND\ndestination:/topic/a\n\nx\0DISCONNECT\nreceipt:bye\n\n\0",
    );
    let _ = methods(&mut s);
    assert!(to_client(&mut s).is_empty());
    assert!(!s.is_closed());
    broker(
        &mut s,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert_eq!(
        to_client(&mut s),
        vec![Frame::new(Command::Receipt).with_header("receipt-id", "bye")]
    );
    assert!(s.is_closed());
    let m = methods(&mut s);
    assert!(matches!(m.as_slice(), [Method::ConnectionClose(c)] if c.reply_code == 200));
}

#[test]
fn a_delivery_after_unsubscribe_goes_back_to_its_queue() {
    let mut s = connected();
    client(
        &mut s,
        "SUBSCRIBE\nid:x\ndestination:/amq/queue/q\nack:client\n\n\0",
    );
    let _ = methods(&mut s);
    consume_ok(&mut s, "T_x");
    client(&mut s, "UNSUBSCRIBE\nid:x\n\n\0");
    let _ = methods(&mut s);
    deliver(&mut s, "T_x", 5, BasicProperties::default(), "late");
    assert!(to_client(&mut s).is_empty());
    // The reject waits behind the cancel's reply; then the subscription is gone.
    broker(
        &mut s,
        Method::BasicCancelOk(warren_wire::BasicCancelOk {
            consumer_tag: "T_x".into(),
        }),
    );
    assert_eq!(
        methods(&mut s),
        vec![Method::BasicReject(BasicReject {
            delivery_tag: 5,
            requeue: true
        })]
    );
    client(&mut s, "UNSUBSCRIBE\nid:x\n\n\0");
    let frames = to_client(&mut s);
    assert_eq!(header(&frames[0], "message"), Some("No subscription found"));
    assert!(!s.is_closed());
}

#[test]
fn heart_beats_are_kept_in_whole_seconds_as_rabbitmq_keeps_them() {
    for (asked, answered) in [
        ("0,0", "0,0"),
        ("0,1000", "1000,0"),
        ("1000,0", "0,1000"),
        ("5000,200", "1000,5000"),
        ("2500,2500", "2000,2000"),
        ("0,999", "1000,0"),
        ("0,60000", "60000,0"),
    ] {
        let mut s = Session::new(config(), 0);
        client(
            &mut s,
            &format!("CONNECT\naccept-version:1.2\nheart-beat:{asked}\n\n\0"),
        );
        handshake(&mut s);
        let frames = to_client(&mut s);
        assert_eq!(header(&frames[0], "heart-beat"), Some(answered), "{asked}");
    }
}

#[test]
fn message_ids_parse_back_to_their_consumer_and_delivery() {
    assert_eq!(
        parse_message_id("T_a@@b@@session-x@@17"),
        Some(("T_a@@b", 17))
    );
    assert_eq!(parse_message_id("T_a@@session-x@@n"), None);
    assert_eq!(parse_message_id("17"), None);
}
