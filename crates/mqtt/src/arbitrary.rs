//! Proptest strategies for packets a peer following the specification could send in a given
//! version: what the encoder writes of them, the decoder reads back equal.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::select;

use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, PubResponse, Publish, QoS,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};
use crate::properties::{Properties, PropertiesOf, PropertyId};
use crate::reason_code::ReasonCode;
use crate::version::Version;

/// Text with multi-byte characters and separators, never U+0000.
fn text() -> impl Strategy<Value = String> {
    "[a-z/ .é☃]{0,6}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

/// A valid topic name.
pub(crate) fn topic_name() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z .é*$]{0,3}", 1..4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("not empty", |t| !t.is_empty())
}

/// A valid topic filter (never a shared subscription).
fn topic_filter() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(
            prop_oneof![3 => "[a-z .é]{0,3}", 1 => Just("+".to_owned())],
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("not empty", |f| !f.is_empty())
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::V3_1),
        Just(Version::V3_1_1),
        Just(Version::V5)
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Any reason code a 5.0 `packet` may carry.
fn reason_code(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> = (0..=255u8)
        .map(ReasonCode)
        .filter(|rc| rc.allowed_in(packet))
        .collect();
    select(allowed)
}

/// Properties valid in `context` for `version` (none before 5.0).
fn properties(version: Version, context: PropertiesOf) -> BoxedStrategy<Properties> {
    if !version.is_v5() {
        return Just(Properties::default()).boxed();
    }
    let first = (
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(topic_name()),
        proptest::option::of(binary()),
        proptest::collection::vec(1..=268_435_455u32, 0..3),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(text()),
    );
    let second = (
        proptest::option::of(binary()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(1..=u16::MAX),
        proptest::option::of(any::<u16>()),
        proptest::option::of(1..=u16::MAX),
    );
    let third = (
        proptest::option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        proptest::option::of(any::<bool>()),
        proptest::collection::vec((text(), text()), 0..3),
        proptest::option::of(1..=u32::MAX),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
    );
    (first, second, third)
        .prop_map(move |(a, b, c)| {
            let mut p = Properties {
                payload_format_indicator: a.0,
                message_expiry_interval: a.1,
                content_type: a.2,
                response_topic: a.3,
                correlation_data: a.4,
                subscription_identifiers: a.5,
                session_expiry_interval: a.6,
                assigned_client_identifier: a.7,
                server_keep_alive: a.8,
                authentication_method: a.9,
                authentication_data: b.0,
                request_problem_information: b.1,
                will_delay_interval: b.2,
                request_response_information: b.3,
                response_information: b.4,
                server_reference: b.5,
                reason_string: b.6,
                receive_maximum: b.7,
                topic_alias_maximum: b.8,
                topic_alias: b.9,
                maximum_qos: c.0,
                retain_available: c.1,
                user_properties: c.2,
                maximum_packet_size: c.3,
                wildcard_subscription_available: c.4,
                subscription_identifier_available: c.5,
                shared_subscription_available: c.6,
            };
            restrict(&mut p, context);
            p
        })
        .boxed()
}

/// Clears what `context` may not carry.
fn restrict(p: &mut Properties, context: PropertiesOf) {
    use PropertyId::*;
    fn keep<T>(slot: &mut Option<T>, id: PropertyId, context: PropertiesOf) {
        if !id.allowed_in(context) {
            *slot = None;
        }
    }
    keep(
        &mut p.payload_format_indicator,
        PayloadFormatIndicator,
        context,
    );
    keep(
        &mut p.message_expiry_interval,
        MessageExpiryInterval,
        context,
    );
    keep(&mut p.content_type, ContentType, context);
    keep(&mut p.response_topic, ResponseTopic, context);
    keep(&mut p.correlation_data, CorrelationData, context);
    if !SubscriptionIdentifier.allowed_in(context) {
        p.subscription_identifiers.clear();
    }
    if context != PropertiesOf::Publish {
        p.subscription_identifiers.truncate(1);
    }
    keep(
        &mut p.session_expiry_interval,
        SessionExpiryInterval,
        context,
    );
    keep(
        &mut p.assigned_client_identifier,
        AssignedClientIdentifier,
        context,
    );
    keep(&mut p.server_keep_alive, ServerKeepAlive, context);
    keep(&mut p.authentication_method, AuthenticationMethod, context);
    keep(&mut p.authentication_data, AuthenticationData, context);
    if context == PropertiesOf::Connect && p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    keep(
        &mut p.request_problem_information,
        RequestProblemInformation,
        context,
    );
    keep(&mut p.will_delay_interval, WillDelayInterval, context);
    keep(
        &mut p.request_response_information,
        RequestResponseInformation,
        context,
    );
    keep(&mut p.response_information, ResponseInformation, context);
    keep(&mut p.server_reference, ServerReference, context);
    keep(&mut p.reason_string, ReasonString, context);
    keep(&mut p.receive_maximum, ReceiveMaximum, context);
    keep(&mut p.topic_alias_maximum, TopicAliasMaximum, context);
    keep(&mut p.topic_alias, TopicAlias, context);
    keep(&mut p.maximum_qos, MaximumQos, context);
    keep(&mut p.retain_available, RetainAvailable, context);
    keep(&mut p.maximum_packet_size, MaximumPacketSize, context);
    keep(
        &mut p.wildcard_subscription_available,
        WildcardSubscriptionAvailable,
        context,
    );
    keep(
        &mut p.subscription_identifier_available,
        SubscriptionIdentifierAvailable,
        context,
    );
    keep(
        &mut p.shared_subscription_available,
        SharedSubscriptionAvailable,
        context,
    );
}

fn connect(version: Version) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        properties(version, PropertiesOf::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        proptest::option::of(will),
        proptest::option::of(text()),
        proptest::option::of(binary()),
        properties(version, PropertiesOf::Connect),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                mut username,
                password,
                properties,
            )| {
                // Before 5.0 a password comes with a user name.
                if !version.is_v5() && password.is_some() && username.is_none() {
                    username = Some(String::new());
                }
                Packet::Connect(Box::new(Connect {
                    version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(version: Version) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        reason_code(PacketType::ConnAck).boxed()
    } else {
        (0..=5u8)
            .prop_filter_map("defined", ReasonCode::from_v3_connack)
            .boxed()
    };
    (
        any::<bool>(),
        code,
        properties(version, PropertiesOf::ConnAck),
    )
        .prop_map(move |(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: session_present && version != Version::V3_1,
                reason_code,
                properties,
            })
        })
}

fn publish(version: Version) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        properties(version, PropertiesOf::Publish),
        binary(),
        any::<bool>(),
    )
        .prop_map(
            |(dup, qos, retain, topic, id, properties, payload, aliased)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // 5.0: an empty topic name with a topic alias.
                let topic = if aliased && properties.topic_alias.is_some() {
                    String::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: (!at_most_once).then_some(id),
                    properties,
                    payload,
                })
            },
        )
}

fn pub_response(version: Version, packet: PacketType) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        reason_code(packet).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (
        packet_id(),
        code,
        properties(version, PropertiesOf::PubResponse),
    )
        .prop_map(move |(packet_id, reason_code, properties)| {
            let response = PubResponse {
                packet_id,
                reason_code,
                properties,
            };
            match packet {
                PacketType::PubAck => Packet::PubAck(response),
                PacketType::PubRec => Packet::PubRec(response),
                PacketType::PubRel => Packet::PubRel(response),
                _ => Packet::PubComp(response),
            }
        })
}

fn subscribe(version: Version) -> impl Strategy<Value = Packet> {
    let options = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendAtNewSubscribe),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(
            move |(qos, no_local, retain_as_published, retain_handling)| {
                if version.is_v5() {
                    SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    }
                } else {
                    SubscriptionOptions {
                        qos,
                        ..SubscriptionOptions::default()
                    }
                }
            },
        );
    (
        packet_id(),
        proptest::collection::vec(
            (topic_filter(), options)
                .prop_map(|(filter, options)| Subscription { filter, options }),
            1..4,
        ),
        properties(version, PropertiesOf::Subscribe),
    )
        .prop_map(|(packet_id, subscriptions, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                subscriptions,
                properties,
            })
        })
}

fn suback(version: Version) -> impl Strategy<Value = Packet> {
    let code = match version {
        Version::V5 => reason_code(PacketType::SubAck).boxed(),
        Version::V3_1_1 => select(vec![0x00, 0x01, 0x02, 0x80])
            .prop_map(ReasonCode)
            .boxed(),
        Version::V3_1 => select(vec![0x00, 0x01, 0x02]).prop_map(ReasonCode).boxed(),
    };
    (
        packet_id(),
        proptest::collection::vec(code, 1..4),
        properties(version, PropertiesOf::SubAck),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn unsubscribe(version: Version) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        proptest::collection::vec(topic_filter(), 1..4),
        properties(version, PropertiesOf::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(version: Version) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        proptest::collection::vec(reason_code(PacketType::UnsubAck), 1..4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        packet_id(),
        codes,
        properties(version, PropertiesOf::UnsubAck),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn disconnect(version: Version) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        reason_code(PacketType::Disconnect).boxed()
    } else {
        Just(ReasonCode::NORMAL_DISCONNECTION).boxed()
    };
    (code, properties(version, PropertiesOf::Disconnect)).prop_map(|(reason_code, properties)| {
        Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason_code(PacketType::Auth),
        properties(Version::V5, PropertiesOf::Auth),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
}

/// Any packet but CONNECT (which sets the version of the decoder reading it) in `version`.
pub(crate) fn packet_after_connect(version: Version) -> BoxedStrategy<Packet> {
    let mut choices = vec![
        connack(version).boxed(),
        publish(version).boxed(),
        pub_response(version, PacketType::PubAck).boxed(),
        pub_response(version, PacketType::PubRec).boxed(),
        pub_response(version, PacketType::PubRel).boxed(),
        pub_response(version, PacketType::PubComp).boxed(),
        subscribe(version).boxed(),
        suback(version).boxed(),
        unsubscribe(version).boxed(),
        unsuback(version).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version).boxed(),
    ];
    if version.is_v5() {
        choices.push(auth().boxed());
    }
    proptest::strategy::Union::new(choices).boxed()
}

/// A version, a CONNECT in it, and packets that may follow it in that version.
pub(crate) fn conversation() -> impl Strategy<Value = (Version, Vec<Packet>)> {
    version().prop_flat_map(|version| {
        (
            connect(version),
            proptest::collection::vec(packet_after_connect(version), 0..6),
        )
            .prop_map(move |(connect, rest)| {
                let mut packets = vec![connect];
                packets.extend(rest);
                (version, packets)
            })
    })
}
