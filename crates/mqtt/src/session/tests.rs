//! The session against a scripted broker: exact AMQP methods out, exact MQTT packets back.

use std::sync::Mutex;

use super::*;
use crate::{Subscription, SubscriptionOptions};
use warren_bridge::CHANNEL;
use warren_wire::ShortStr;
use warren_wire::{
    BasicConsumeOk, BasicDeliver, ChannelOpenOk, ConfirmSelectOk, ConnectionOpenOk,
    ConnectionStart, ConnectionTune, LongStr, QueueBindOk, QueueDeclareOk, QueueDeleteOk,
};

#[derive(Debug, Default)]
struct Store(Mutex<Vec<(String, String, Retained)>>);

impl RetainedStore for Store {
    fn set(&self, vhost: &str, topic: &str, message: Option<Retained>) {
        let mut all = self.0.lock().expect("test store");
        all.retain(|(v, t, _)| !(v == vhost && t == topic));
        if let Some(m) = message {
            all.push((vhost.to_owned(), topic.to_owned(), m));
        }
    }

    fn matching(&self, vhost: &str, filter: &str) -> Vec<Retained> {
        let all = self.0.lock().expect("test store");
        all.iter()
            .filter(|(v, t, _)| v == vhost && topic::filter_matches(filter, t))
            .map(|(_, _, m)| m.clone())
            .collect()
    }
}

fn config() -> Config {
    Config {
        default_user: "guest".into(),
        default_password: "guest".into(),
        default_vhost: "/".into(),
        connect_timeout_ms: 10_000,
        protocol_property: Some("warren.protocol".into()),
        seed: 1,
        prefetch: 10,
        retained: Arc::new(Store::default()),
    }
}

fn methods(s: &mut Session) -> Vec<Method> {
    warren_bridge::script::methods(s.amqp_out())
}

fn packets(s: &mut Session, version: Version) -> Vec<Packet> {
    let mut bytes = s.mqtt_out().split();
    let mut decoder = Decoder::new(MAX_PACKET_SIZE_AUTHENTICATED);
    decoder.set_version(version);
    let mut out = Vec::new();
    while let Some(p) = decoder.decode(&mut bytes).expect("packets") {
        out.push(p);
    }
    out
}

fn client(s: &mut Session, packet: Packet, version: Version) {
    let mut buf = BytesMut::new();
    encode(&packet, version, &mut buf).expect("encodes");
    s.receive_mqtt(&mut buf, 0);
}

fn broker(s: &mut Session, channel: u16, method: Method) {
    let mut out = OutBuf::new();
    out.push_method(channel, &method);
    broker_out(s, out);
}

fn broker_out(s: &mut Session, mut out: OutBuf) {
    let mut buf = warren_bridge::script::drain(&mut out);
    s.receive_amqp(&mut buf, 0);
}

fn connect_packet(client_id: &str, clean: bool, will: Option<Will>) -> Packet {
    Packet::Connect(Box::new(Connect {
        version: Version::V3_1_1,
        clean_start: clean,
        keep_alive: 10,
        client_id: client_id.into(),
        will,
        username: Some("guest".into()),
        password: Some(Bytes::from_static(b"guest")),
        properties: Properties::default(),
    }))
}

/// Through the AMQP handshake: the bridge opens and the session has work for the broker.
fn amqp_open(s: &mut Session) {
    broker(
        s,
        0,
        Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
        }),
    );
    broker(
        s,
        0,
        Method::ConnectionTune(ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        }),
    );
    broker(
        s,
        0,
        Method::ConnectionOpenOk(ConnectionOpenOk {
            known_hosts: ShortStr::default(),
        }),
    );
    broker(
        s,
        CHANNEL,
        Method::ChannelOpenOk(ChannelOpenOk {
            channel_id: LongStr::default(),
        }),
    );
    let _ = methods(s);
    broker(s, CHANNEL, Method::ConfirmSelectOk(ConfirmSelectOk {}));
}

/// The presence queue's steps (takeover): delete (tried on the second channel, opened
/// first), declare (durable: replicated), consume; then the delete of a will an earlier
/// connection left waiting (tried).
fn presence(s: &mut Session, client_id: &str) {
    let m = methods(s);
    assert!(matches!(&m[..], [Method::ChannelOpen(_)]), "{m:?}");
    broker(
        s,
        2,
        Method::ChannelOpenOk(ChannelOpenOk {
            channel_id: LongStr::default(),
        }),
    );
    let m = methods(s);
    assert!(
        matches!(&m[..], [Method::QueueDelete(d)] if d.queue.as_str() == format!("mqtt-presence-{client_id}")),
        "{m:?}"
    );
    broker(s, 2, delete_ok());
    let m = methods(s);
    assert!(
        matches!(&m[..], [Method::QueueDeclare(d)] if d.durable && !d.auto_delete),
        "{m:?}"
    );
    broker(
        s,
        CHANNEL,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: format!("mqtt-presence-{client_id}").into(),
            message_count: 0,
            consumer_count: 0,
        }),
    );
    let m = methods(s);
    assert!(
        matches!(&m[..], [Method::BasicConsume(c)] if c.consumer_tag.as_str() == "mqtt-presence"),
        "{m:?}"
    );
    broker(
        s,
        CHANNEL,
        Method::BasicConsumeOk(BasicConsumeOk {
            consumer_tag: "mqtt-presence".into(),
        }),
    );
    let m = methods(s);
    assert!(
        matches!(&m[..], [Method::QueueDelete(d)] if d.queue.as_str() == format!("mqtt-will-{client_id}")),
        "{m:?}"
    );
    broker(s, 2, delete_ok());
}

/// A clean 3.1.1 session of `client_id`, CONNACK taken.
fn connected(client_id: &str, will: Option<Will>) -> Session {
    let mut s = Session::new(config(), 0);
    client(
        &mut s,
        connect_packet(client_id, true, will),
        Version::V3_1_1,
    );
    amqp_open(&mut s);
    presence(&mut s, client_id);
    // A clean session drops what a persistent one left (tried: a queue whose home node is
    // down cannot go yet), then CONNACK.
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::QueueDelete(d)] if d.queue.as_str() == format!("mqtt-subscription-{client_id}qos0")),
        "{m:?}"
    );
    broker(
        &mut s,
        2,
        Method::ChannelClose(warren_wire::ChannelClose {
            reply_code: 404,
            reply_text: "NOT_FOUND - home node 3 of a queue is down".into(),
            class_id: 50,
            method_id: 40,
        }),
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::ChannelCloseOk(_), Method::ChannelOpen(_)]),
        "{m:?}"
    );
    broker(
        &mut s,
        2,
        Method::ChannelOpenOk(ChannelOpenOk {
            channel_id: LongStr::default(),
        }),
    );
    let m = methods(&mut s);
    assert!(matches!(&m[..], [Method::QueueDelete(d)] if d.queue.as_str().ends_with("qos1")));
    broker(&mut s, 2, delete_ok());
    assert_eq!(
        packets(&mut s, Version::V3_1_1),
        vec![Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        })]
    );
    s
}

fn delete_ok() -> Method {
    Method::QueueDeleteOk(QueueDeleteOk { message_count: 0 })
}

#[test]
fn a_subscription_is_a_queue_per_qos_bound_to_amq_topic_and_suback_follows_the_bindings() {
    let mut s = connected("c1", None);
    client(
        &mut s,
        Packet::Subscribe(Subscribe {
            packet_id: 7,
            subscriptions: vec![
                Subscription {
                    filter: "a/+/c".into(),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        ..SubscriptionOptions::default()
                    },
                },
                Subscription {
                    filter: "x/#".into(),
                    options: SubscriptionOptions::default(),
                },
            ],
            properties: Properties::default(),
        }),
        Version::V3_1_1,
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::QueueDeclare(d)] if d.queue.as_str() == "mqtt-subscription-c1qos1" && d.auto_delete && d.durable),
        "{m:?}"
    );
    broker(
        &mut s,
        CHANNEL,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "mqtt-subscription-c1qos1".into(),
            message_count: 0,
            consumer_count: 0,
        }),
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::BasicQos(q)] if q.prefetch_count == 10),
        "{m:?}"
    );
    broker(
        &mut s,
        CHANNEL,
        Method::BasicQosOk(warren_wire::BasicQosOk {}),
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::BasicConsume(c)] if !c.no_ack && c.consumer_tag.as_str() == "mqtt-qos1"),
        "{m:?}"
    );
    broker(
        &mut s,
        CHANNEL,
        Method::BasicConsumeOk(BasicConsumeOk {
            consumer_tag: "mqtt-qos1".into(),
        }),
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::QueueBind(b)] if b.exchange.as_str() == "amq.topic" && b.routing_key.as_str() == "a.*.c"),
        "{m:?}"
    );
    assert!(packets(&mut s, Version::V3_1_1).is_empty(), "SUBACK waits");
    broker(&mut s, CHANNEL, Method::QueueBindOk(QueueBindOk {}));
    // The QoS 0 queue for x/#.
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::QueueDeclare(d)] if d.queue.as_str() == "mqtt-subscription-c1qos0")
    );
    broker(
        &mut s,
        CHANNEL,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "mqtt-subscription-c1qos0".into(),
            message_count: 0,
            consumer_count: 0,
        }),
    );
    let m = methods(&mut s);
    assert!(matches!(&m[..], [Method::BasicConsume(c)] if c.no_ack));
    broker(
        &mut s,
        CHANNEL,
        Method::BasicConsumeOk(BasicConsumeOk {
            consumer_tag: "mqtt-qos0".into(),
        }),
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::QueueUnbind(u)] if u.queue.as_str().ends_with("qos1") && u.routing_key.as_str() == "x.#"),
        "a filter moves between the QoS queues: {m:?}"
    );
    broker(
        &mut s,
        CHANNEL,
        Method::QueueUnbindOk(warren_wire::QueueUnbindOk {}),
    );
    let m = methods(&mut s);
    assert!(matches!(&m[..], [Method::QueueBind(b)] if b.queue.as_str().ends_with("qos0")));
    broker(&mut s, CHANNEL, Method::QueueBindOk(QueueBindOk {}));
    assert_eq!(
        packets(&mut s, Version::V3_1_1),
        vec![Packet::SubAck(SubAck {
            packet_id: 7,
            reason_codes: vec![
                ReasonCode::granted(QoS::AtLeastOnce),
                ReasonCode::granted(QoS::AtMostOnce)
            ],
            properties: Properties::default(),
        })]
    );
    // A QoS 1 delivery carries a packet id; the client's PUBACK acks it to the broker.
    let mut headers = FieldTable::default();
    headers.insert("x-mqtt-publish-qos", FieldValue::U8(1));
    let mut out = OutBuf::new();
    out.push_delivery(
        CHANNEL,
        &Method::BasicDeliver(BasicDeliver {
            consumer_tag: "mqtt-qos1".into(),
            delivery_tag: 42,
            redelivered: false,
            exchange: "amq.topic".into(),
            routing_key: "a.b.c".into(),
        }),
        &BasicProperties {
            headers: Some(headers),
            delivery_mode: Some(2),
            ..BasicProperties::default()
        },
        Bytes::from_static(b"hi"),
        4096,
    );
    broker_out(&mut s, out);
    let p = packets(&mut s, Version::V3_1_1);
    let [Packet::Publish(publish)] = &p[..] else {
        panic!("{p:?}")
    };
    assert_eq!(
        (publish.topic.as_str(), publish.qos, &publish.payload[..]),
        ("a/b/c", QoS::AtLeastOnce, &b"hi"[..])
    );
    let id = publish.packet_id.expect("a QoS 1 packet id");
    client(
        &mut s,
        Packet::PubAck(PubResponse {
            packet_id: id,
            reason_code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
        Version::V3_1_1,
    );
    assert_eq!(
        methods(&mut s),
        vec![Method::BasicAck(BasicAck {
            delivery_tag: 42,
            multiple: false
        })]
    );
}

#[test]
fn a_qos1_publish_is_persistent_on_amq_topic_and_acked_once_confirmed_and_retained_is_kept() {
    let mut s = connected("p1", None);
    client(
        &mut s,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "sensors/t.1".into(),
            packet_id: Some(5),
            properties: Properties::default(),
            payload: Bytes::from_static(b"21"),
        }),
        Version::V3_1_1,
    );
    let m = methods(&mut s);
    let [Method::BasicPublish(p)] = &m[..] else {
        panic!("{m:?}")
    };
    // `/` is `.`, and a `.` stays one (RabbitMQ's mapping).
    assert_eq!(
        (p.exchange.as_str(), p.routing_key.as_str()),
        ("amq.topic", "sensors.t.1")
    );
    assert!(packets(&mut s, Version::V3_1_1).is_empty(), "PUBACK waits");
    broker(
        &mut s,
        CHANNEL,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert_eq!(
        packets(&mut s, Version::V3_1_1),
        vec![Packet::PubAck(PubResponse {
            packet_id: 5,
            reason_code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        })]
    );
    let kept = s.config.retained.matching("/", "sensors/#");
    assert_eq!(kept.len(), 1);
    assert_eq!(&kept[0].payload[..], b"21");
}

#[test]
fn a_client_gone_without_disconnect_publishes_its_will_and_one_that_disconnects_does_not() {
    let will = Will {
        topic: "wills/c".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    };
    let mut s = connected("w1", Some(will.clone()));
    // Silent past 1.5 keep-alives (10 s): the will goes, then the session closes.
    s.tick(15_000);
    assert!(!s.is_closed());
    s.tick(15_001);
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::BasicPublish(p)] if p.routing_key.as_str() == "wills.c"),
        "{m:?}"
    );
    assert!(!s.is_closed(), "the will's confirm first");
    broker(
        &mut s,
        CHANNEL,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert!(s.is_closed());

    let mut s = connected("w2", Some(will));
    client(
        &mut s,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties::default(),
        }),
        Version::V3_1_1,
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::ConnectionClose(_)]),
        "no will: {m:?}"
    );
    assert!(s.is_closed());
}

#[test]
fn a_persistent_session_finds_its_queues_says_so_and_consumes_again() {
    let mut s = Session::new(config(), 0);
    client(&mut s, connect_packet("dev", false, None), Version::V3_1_1);
    amqp_open(&mut s);
    presence(&mut s, "dev");
    // Its QoS 1 queue (the one a session keeps) is looked for on the second channel.
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::QueueDeclare(d)] if d.passive && d.queue.as_str() == "mqtt-subscription-devqos1"),
        "{m:?}"
    );
    broker(
        &mut s,
        2,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "mqtt-subscription-devqos1".into(),
            message_count: 3,
            consumer_count: 0,
        }),
    );
    assert_eq!(
        packets(&mut s, Version::V3_1_1),
        vec![Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        })]
    );
    let m = methods(&mut s);
    assert!(matches!(&m[..], [Method::BasicQos(_)]), "{m:?}");
    broker(
        &mut s,
        CHANNEL,
        Method::BasicQosOk(warren_wire::BasicQosOk {}),
    );
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::BasicConsume(c)] if c.queue.as_str() == "mqtt-subscription-devqos1"),
        "{m:?}"
    );
}

#[test]
fn connect_refusals_are_connacks_and_the_end() {
    // An empty client id with a persistent 3.1.1 session: identifier rejected (2).
    let mut s = Session::new(config(), 0);
    client(&mut s, connect_packet("", false, None), Version::V3_1_1);
    let p = packets(&mut s, Version::V3_1_1);
    assert!(
        matches!(&p[..], [Packet::ConnAck(a)] if a.reason_code.to_v3_connack() == 2),
        "{p:?}"
    );
    assert!(s.is_closed());
    // A refused login: bad user name or password (4).
    let mut s = Session::new(config(), 0);
    client(&mut s, connect_packet("c", true, None), Version::V3_1_1);
    broker(
        &mut s,
        0,
        Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
        }),
    );
    broker(
        &mut s,
        0,
        Method::ConnectionClose(warren_wire::ConnectionClose {
            reply_code: 403,
            reply_text: "ACCESS_REFUSED".into(),
            class_id: 0,
            method_id: 0,
        }),
    );
    let p = packets(&mut s, Version::V3_1_1);
    assert!(
        matches!(&p[..], [Packet::ConnAck(a)] if a.reason_code.to_v3_connack() == 4),
        "{p:?}"
    );
    assert!(s.is_closed());
    // A packet other than CONNECT first: closed without a word.
    let mut s = Session::new(config(), 0);
    client(&mut s, Packet::PingReq, Version::V3_1_1);
    assert!(s.is_closed());
    assert!(packets(&mut s, Version::V3_1_1).is_empty());
}

#[test]
fn a_connection_whose_presence_consumer_is_cancelled_was_taken_over_and_goes_without_its_will() {
    let will = Will {
        topic: "wills/t".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    };
    let mut s = connected("t1", Some(will));
    broker(
        &mut s,
        CHANNEL,
        Method::BasicCancel(warren_wire::BasicCancel {
            consumer_tag: "mqtt-presence".into(),
            nowait: true,
        }),
    );
    assert!(s.is_closed());
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::ConnectionClose(_)]),
        "closed, no will published: {m:?}"
    );
}

/// A clean 5.0 session of `client_id` with CONNECT `properties` and `will`; CONNACK taken.
fn connected_v5(client_id: &str, properties: Properties, will: Option<Will>) -> Session {
    let mut s = Session::new(config(), 0);
    client(
        &mut s,
        Packet::Connect(Box::new(Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive: 10,
            client_id: client_id.into(),
            will,
            username: Some("guest".into()),
            password: Some(Bytes::from_static(b"guest")),
            properties,
        })),
        Version::V5,
    );
    amqp_open(&mut s);
    presence(&mut s, client_id);
    for qos in ["qos0", "qos1"] {
        let m = methods(&mut s);
        assert!(
            matches!(&m[..], [Method::QueueDelete(d)] if d.queue.as_str() == format!("mqtt-subscription-{client_id}{qos}")),
            "{m:?}"
        );
        broker(&mut s, 2, delete_ok());
    }
    let p = packets(&mut s, Version::V5);
    let [Packet::ConnAck(ack)] = &p[..] else {
        panic!("{p:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    // Shared subscriptions are not offered; subscription identifiers are.
    assert_eq!(ack.properties.shared_subscription_available, Some(false));
    assert_eq!(ack.properties.subscription_identifier_available, Some(true));
    s
}

fn subscribe_v5(s: &mut Session, packet_id: u16, filters: &[&str], id: Option<u32>) {
    client(
        s,
        Packet::Subscribe(Subscribe {
            packet_id,
            subscriptions: filters
                .iter()
                .map(|f| Subscription {
                    filter: (*f).into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                })
                .collect(),
            properties: Properties {
                subscription_identifiers: id.into_iter().collect(),
                ..Properties::default()
            },
        }),
        Version::V5,
    );
}

/// Answers every method the session sends on its channel with its `-ok` until it sends none.
fn answer_all(s: &mut Session) -> Vec<Method> {
    let mut sent = Vec::new();
    loop {
        let m = methods(s);
        if m.is_empty() {
            return sent;
        }
        for method in m {
            let reply = match &method {
                Method::QueueDeclare(d) => Method::QueueDeclareOk(QueueDeclareOk {
                    queue: d.queue.clone(),
                    message_count: 0,
                    consumer_count: 0,
                }),
                Method::BasicQos(_) => Method::BasicQosOk(warren_wire::BasicQosOk {}),
                Method::BasicConsume(c) => Method::BasicConsumeOk(BasicConsumeOk {
                    consumer_tag: c.consumer_tag.clone(),
                }),
                Method::QueueBind(_) => Method::QueueBindOk(QueueBindOk {}),
                Method::QueueUnbind(_) => Method::QueueUnbindOk(warren_wire::QueueUnbindOk {}),
                other => panic!("unexpected {other:?}"),
            };
            broker(s, CHANNEL, reply);
            sent.push(method);
        }
    }
}

fn deliver(s: &mut Session, tag: u64, routing_key: &str) {
    let mut headers = FieldTable::default();
    headers.insert("x-mqtt-publish-qos", FieldValue::U8(1));
    let mut out = OutBuf::new();
    out.push_delivery(
        CHANNEL,
        &Method::BasicDeliver(BasicDeliver {
            consumer_tag: "mqtt-qos1".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "amq.topic".into(),
            routing_key: routing_key.into(),
        }),
        &BasicProperties {
            headers: Some(headers),
            ..BasicProperties::default()
        },
        Bytes::from_static(b"m"),
        4096,
    );
    broker_out(s, out);
}

#[test]
fn a_v5_clients_receive_maximum_caps_its_prefetch_and_its_subscription_ids_come_with_deliveries() {
    let mut s = connected_v5(
        "v5",
        Properties {
            receive_maximum: Some(3),
            ..Properties::default()
        },
        None,
    );
    subscribe_v5(&mut s, 1, &["a/+"], Some(7));
    let sent = answer_all(&mut s);
    assert!(
        sent.iter()
            .any(|m| matches!(m, Method::BasicQos(q) if q.prefetch_count == 3)),
        "the client's Receive Maximum (3) under mqtt.prefetch (10): {sent:?}"
    );
    subscribe_v5(&mut s, 2, &["a/b"], Some(9));
    answer_all(&mut s);
    subscribe_v5(&mut s, 3, &["a/#"], None);
    answer_all(&mut s);
    // A shared subscription is refused; the others of the SUBSCRIBE are granted.
    subscribe_v5(&mut s, 4, &["$share/g/a/b", "z"], Some(11));
    answer_all(&mut s);
    let acks: Vec<(u16, Vec<ReasonCode>)> = packets(&mut s, Version::V5)
        .into_iter()
        .map(|p| match p {
            Packet::SubAck(a) => (a.packet_id, a.reason_codes),
            other => panic!("{other:?}"),
        })
        .collect();
    let granted = ReasonCode::granted(QoS::AtLeastOnce);
    assert_eq!(
        acks,
        vec![
            (1, vec![granted]),
            (2, vec![granted]),
            (3, vec![granted]),
            (
                4,
                vec![ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, granted]
            ),
        ]
    );
    // One copy, with the identifiers of every subscription it matches (a/# has none).
    for (tag, key, ids) in [
        (1, "a.b", vec![7, 9]),
        (2, "a.c", vec![7]),
        (3, "a.c.d", vec![]),
        (4, "z", vec![11]),
    ] {
        deliver(&mut s, tag, key);
        let p = packets(&mut s, Version::V5);
        let [Packet::Publish(publish)] = &p[..] else {
            panic!("{key}: {p:?}")
        };
        assert_eq!(publish.properties.subscription_identifiers, ids, "{key}");
    }
    // Subscribed again without one: the filter's identifier goes.
    subscribe_v5(&mut s, 5, &["a/b"], None);
    answer_all(&mut s);
    let _ = packets(&mut s, Version::V5);
    deliver(&mut s, 5, "a.b");
    let p = packets(&mut s, Version::V5);
    let [Packet::Publish(publish)] = &p[..] else {
        panic!("{p:?}")
    };
    assert_eq!(publish.properties.subscription_identifiers, vec![7]);
}

#[test]
fn a_receive_maximum_or_subscription_identifier_of_zero_is_a_protocol_error() {
    let mut s = Session::new(config(), 0);
    client(
        &mut s,
        Packet::Connect(Box::new(Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive: 10,
            client_id: "z".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties {
                receive_maximum: Some(0),
                ..Properties::default()
            },
        })),
        Version::V5,
    );
    let p = packets(&mut s, Version::V5);
    assert!(
        matches!(&p[..], [Packet::ConnAck(a)] if a.reason_code == ReasonCode::PROTOCOL_ERROR),
        "{p:?}"
    );
    assert!(s.is_closed());

    let mut s = connected_v5("z", Properties::default(), None);
    subscribe_v5(&mut s, 1, &["a"], Some(0));
    let p = packets(&mut s, Version::V5);
    assert!(
        matches!(&p[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR),
        "{p:?}"
    );
}

#[test]
fn a_delayed_will_waits_in_a_queue_that_dead_letters_it_to_its_topic() {
    let will = Will {
        topic: "wills/d".into(),
        payload: Bytes::from_static(b"late"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(30),
            message_expiry_interval: Some(5),
            ..Properties::default()
        },
    };
    // The session outlives the connection by 10 s: the will waits 10 s, not 30.
    let mut s = connected_v5(
        "d1",
        Properties {
            session_expiry_interval: Some(10),
            ..Properties::default()
        },
        Some(will.clone()),
    );
    s.client_closed();
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::QueueDelete(d)] if d.queue.as_str() == "mqtt-will-d1"),
        "a will left earlier is replaced: {m:?}"
    );
    broker(&mut s, 2, delete_ok());
    let m = methods(&mut s);
    let [Method::QueueDeclare(d)] = &m[..] else {
        panic!("{m:?}")
    };
    assert_eq!(d.queue.as_str(), "mqtt-will-d1");
    assert!(d.durable && !d.auto_delete && !d.exclusive);
    let arg = |name: &str| d.arguments.get(name).cloned();
    assert_eq!(arg("x-message-ttl"), Some(FieldValue::I64(10_000)));
    assert_eq!(
        arg("x-dead-letter-exchange"),
        Some(FieldValue::LongStr("amq.topic".into()))
    );
    assert_eq!(
        arg("x-dead-letter-routing-key"),
        Some(FieldValue::LongStr("wills.d".into()))
    );
    assert_eq!(arg("x-expires"), Some(FieldValue::I64(70_000)));
    broker(
        &mut s,
        CHANNEL,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "mqtt-will-d1".into(),
            message_count: 0,
            consumer_count: 0,
        }),
    );
    let m = methods(&mut s);
    let [Method::BasicPublish(p)] = &m[..] else {
        panic!("{m:?}")
    };
    assert_eq!(
        (p.exchange.as_str(), p.routing_key.as_str()),
        ("", "mqtt-will-d1")
    );
    broker(
        &mut s,
        CHANNEL,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert!(s.is_closed());

    // A clean session (expiry 0) ends with the connection: its will goes at once.
    let mut s = connected_v5("d2", Properties::default(), Some(will));
    s.client_closed();
    let m = methods(&mut s);
    assert!(
        matches!(&m[..], [Method::BasicPublish(p)] if p.exchange.as_str() == "amq.topic" && p.routing_key.as_str() == "wills.d"),
        "{m:?}"
    );
}
