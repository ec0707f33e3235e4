//! Writing packets, either direction, in a protocol version. The encoder writes what it is
//! given: it refuses only what cannot be written at all (a field or packet too long, a QoS 1
//! PUBLISH without packet identifier, AUTH before 5.0), and leaves the protocol's other rules
//! to whoever builds the packet, so tests can send a peer what a faulty client would.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use crate::data::{
    put_binary, put_string, put_variable_byte_integer, variable_byte_integer_len,
    MAX_VARIABLE_BYTE_INTEGER,
};
use crate::packet::{Connect, Packet, PacketType, PubResponse, QoS};
use crate::properties::Properties;
use crate::reason_code::ReasonCode;
use crate::version::Version;

/// Why a packet cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A string or binary field longer than its two byte length can say.
    #[error("a field of {0} bytes is longer than 65 535 bytes")]
    FieldTooLong(usize),
    /// A packet whose remaining length is above 268 435 455 bytes.
    #[error("a packet of {0} bytes after its fixed header is larger than MQTT allows")]
    PacketTooLarge(usize),
    /// A subscription identifier above 268 435 455.
    #[error("{0} does not fit a variable byte integer")]
    VariableByteIntegerTooLarge(u32),
    /// A QoS 1 or 2 PUBLISH without a packet identifier.
    #[error("a PUBLISH with QoS {} needs a packet identifier", .0.as_u8())]
    MissingPacketId(QoS),
    /// A packet the version does not have (AUTH before 5.0).
    #[error("{packet} does not exist in MQTT {version}")]
    NotInVersion {
        /// The packet's type.
        packet: PacketType,
        /// The version it was to be written in.
        version: Version,
    },
}

/// Appends `packet` to `out` as `version` writes it (a CONNECT as the version it names).
/// Properties and other fields MQTT 5 added are left out before 5.0; reason codes become the
/// return codes of 3.1 and 3.1.1 (see [`ReasonCode::to_v3_connack`] and
/// [`ReasonCode::to_v3_suback`]). In 5.0 an acknowledgement, DISCONNECT or AUTH with success
/// and no properties is written in its short form. On error nothing is appended.
pub fn encode(packet: &Packet, version: Version, out: &mut BytesMut) -> Result<(), EncodeError> {
    // The variable header and payload (but a PUBLISH's payload, appended as it is).
    let mut body = BytesMut::new();
    let v5 = version.is_v5();
    let mut flags = 0u8;
    let mut payload: &[u8] = &[];
    match packet {
        Packet::Connect(connect) => write_connect(connect, &mut body)?,
        Packet::ConnAck(connack) => {
            let session_present = connack.session_present && version != Version::V3_1;
            body.put_u8(u8::from(session_present));
            if v5 {
                body.put_u8(connack.reason_code.0);
                connack.properties.write(&mut body)?;
            } else {
                body.put_u8(connack.reason_code.to_v3_connack());
            }
        }
        Packet::Publish(publish) => {
            flags =
                u8::from(publish.dup) << 3 | publish.qos.as_u8() << 1 | u8::from(publish.retain);
            put_string(&mut body, &publish.topic)?;
            if publish.qos != QoS::AtMostOnce {
                let id = publish
                    .packet_id
                    .ok_or(EncodeError::MissingPacketId(publish.qos))?;
                body.put_u16(id);
            }
            if v5 {
                publish.properties.write(&mut body)?;
            }
            payload = &publish.payload;
        }
        Packet::PubAck(response) | Packet::PubRec(response) | Packet::PubComp(response) => {
            write_pub_response(response, v5, &mut body)?;
        }
        Packet::PubRel(response) => {
            flags = 0b0010;
            write_pub_response(response, v5, &mut body)?;
        }
        Packet::Subscribe(subscribe) => {
            flags = 0b0010;
            body.put_u16(subscribe.packet_id);
            if v5 {
                subscribe.properties.write(&mut body)?;
            }
            for subscription in &subscribe.subscriptions {
                put_string(&mut body, &subscription.filter)?;
                let o = &subscription.options;
                let mut byte = o.qos.as_u8();
                if v5 {
                    byte |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling as u8) << 4;
                }
                body.put_u8(byte);
            }
        }
        Packet::SubAck(suback) => {
            body.put_u16(suback.packet_id);
            if v5 {
                suback.properties.write(&mut body)?;
            }
            for &code in &suback.reason_codes {
                body.put_u8(match version {
                    Version::V5 => code.0,
                    Version::V3_1_1 => code.to_v3_suback(),
                    // 3.1 has no failure code: as RabbitMQ, a failure reads as granted QoS 0.
                    Version::V3_1 => code.granted_qos().unwrap_or_default().as_u8(),
                });
            }
        }
        Packet::Unsubscribe(unsubscribe) => {
            flags = 0b0010;
            body.put_u16(unsubscribe.packet_id);
            if v5 {
                unsubscribe.properties.write(&mut body)?;
            }
            for filter in &unsubscribe.filters {
                put_string(&mut body, filter)?;
            }
        }
        Packet::UnsubAck(unsuback) => {
            body.put_u16(unsuback.packet_id);
            if v5 {
                unsuback.properties.write(&mut body)?;
                body.extend(unsuback.reason_codes.iter().map(|code| code.0));
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => {
            if v5 {
                write_reason_and_properties(
                    disconnect.reason_code,
                    &disconnect.properties,
                    &mut body,
                )?;
            }
        }
        Packet::Auth(auth) => {
            if !v5 {
                return Err(EncodeError::NotInVersion {
                    packet: PacketType::Auth,
                    version,
                });
            }
            write_reason_and_properties(auth.reason_code, &auth.properties, &mut body)?;
        }
    }
    let remaining = body.len() + payload.len();
    let remaining_u32 = u32::try_from(remaining)
        .ok()
        .filter(|&n| n <= MAX_VARIABLE_BYTE_INTEGER)
        .ok_or(EncodeError::PacketTooLarge(remaining))?;
    out.reserve(1 + variable_byte_integer_len(remaining_u32) + remaining);
    out.put_u8((packet.packet_type() as u8) << 4 | flags);
    put_variable_byte_integer(out, remaining_u32)?;
    out.extend_from_slice(&body);
    out.extend_from_slice(payload);
    Ok(())
}

fn write_connect(connect: &Connect, body: &mut BytesMut) -> Result<(), EncodeError> {
    let version = connect.version;
    put_string(body, version.protocol_name())?;
    body.put_u8(version.protocol_level());
    let mut flags = u8::from(connect.username.is_some()) << 7
        | u8::from(connect.password.is_some()) << 6
        | u8::from(connect.clean_start) << 1;
    if let Some(will) = &connect.will {
        flags |= u8::from(will.retain) << 5 | will.qos.as_u8() << 3 | 1 << 2;
    }
    body.put_u8(flags);
    body.put_u16(connect.keep_alive);
    if version.is_v5() {
        connect.properties.write(body)?;
    }
    put_string(body, &connect.client_id)?;
    if let Some(will) = &connect.will {
        if version.is_v5() {
            will.properties.write(body)?;
        }
        put_string(body, &will.topic)?;
        put_binary(body, &will.payload)?;
    }
    if let Some(username) = &connect.username {
        put_string(body, username)?;
    }
    if let Some(password) = &connect.password {
        put_binary(body, password)?;
    }
    Ok(())
}

fn write_pub_response(
    response: &PubResponse,
    v5: bool,
    body: &mut BytesMut,
) -> Result<(), EncodeError> {
    body.put_u16(response.packet_id);
    if v5 {
        write_reason_and_properties(response.reason_code, &response.properties, body)?;
    }
    Ok(())
}

/// The end of a 5.0 acknowledgement, DISCONNECT or AUTH: nothing for success without
/// properties, the reason code alone without properties, else both.
fn write_reason_and_properties(
    reason_code: ReasonCode,
    properties: &Properties,
    body: &mut BytesMut,
) -> Result<(), EncodeError> {
    if properties.is_empty() {
        if reason_code != ReasonCode::SUCCESS {
            body.put_u8(reason_code.0);
        }
        return Ok(());
    }
    body.put_u8(reason_code.0);
    properties.write(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::{Decoder, MAX_PACKET_SIZE_AUTHENTICATED};
    use crate::packet::Publish;
    use crate::packet::{
        Auth, ConnAck, Disconnect, RetainHandling, SubAck, Subscribe, Subscription,
        SubscriptionOptions, UnsubAck, Unsubscribe, Will,
    };
    use bytes::Bytes;

    fn encoded(packet: &Packet, version: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(packet, version, &mut out).expect("encodable");
        out.to_vec()
    }

    fn decoded(bytes: &[u8], version: Version) -> Packet {
        let mut d = Decoder::new(MAX_PACKET_SIZE_AUTHENTICATED);
        d.set_version(version);
        let mut buf = BytesMut::from(bytes);
        let packet = d.decode(&mut buf).expect("valid").expect("whole");
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        packet
    }

    /// `packet` is written as `bytes` and `bytes` read as `packet`.
    fn golden(packet: Packet, version: Version, bytes: &[u8]) {
        assert_eq!(encoded(&packet, version), bytes, "{packet:?} in {version}");
        assert_eq!(decoded(bytes, version), packet, "{bytes:02x?} in {version}");
    }

    /// The CONNECT of the specification's example variable header (3.1.1 §3.1.2.10, 5.0
    /// §3.1.2.12): user name, password, will QoS 1, clean session, keep alive 10, and in 5.0
    /// a session expiry interval of 10.
    fn spec_connect(version: Version) -> Packet {
        Packet::Connect(Box::new(Connect {
            version,
            clean_start: true,
            keep_alive: 10,
            client_id: "cid".into(),
            will: Some(Will {
                topic: "w/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
            properties: Properties {
                session_expiry_interval: version.is_v5().then_some(10),
                ..Properties::default()
            },
        }))
    }

    const CONNECT_PAYLOAD: &[u8] = b"\x00\x03cid\x00\x03w/t\x00\x03bye\x00\x01u\x00\x01p";

    #[test]
    fn connect_as_in_the_specification() {
        let mut v4 = b"\x10\x1f\x00\x04MQTT\x04\xce\x00\x0a".to_vec();
        v4.extend_from_slice(CONNECT_PAYLOAD);
        golden(spec_connect(Version::V3_1_1), Version::V3_1_1, &v4);

        // 5.0: properties after keep alive (Session Expiry Interval 10), will properties
        // (none) before the will topic.
        let mut v5 =
            b"\x10\x26\x00\x04MQTT\x05\xce\x00\x0a\x05\x11\x00\x00\x00\x0a\x00\x03cid\x00".to_vec();
        v5.extend_from_slice(&CONNECT_PAYLOAD[5..]);
        golden(spec_connect(Version::V5), Version::V5, &v5);

        let mut v3 = b"\x10\x21\x00\x06MQIsdp\x03\xce\x00\x0a".to_vec();
        v3.extend_from_slice(CONNECT_PAYLOAD);
        golden(spec_connect(Version::V3_1), Version::V3_1, &v3);
    }

    #[test]
    fn publish_qos_1_as_in_the_specification() {
        // 3.1.1 §3.3.2.3: topic "a/b", packet identifier 10.
        let publish = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "a/b".into(),
            packet_id: Some(10),
            payload: Bytes::from_static(b"hi"),
            ..Publish::default()
        });
        golden(
            publish.clone(),
            Version::V3_1_1,
            b"\x32\x09\x00\x03a/b\x00\x0ahi",
        );
        golden(publish, Version::V5, b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi");
        // DUP and RETAIN in the flags, QoS 2.
        let publish = Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "t".into(),
            packet_id: Some(1),
            ..Publish::default()
        });
        golden(publish, Version::V3_1_1, b"\x3d\x05\x00\x01t\x00\x01");
    }

    #[test]
    fn subscribe_as_in_the_specification() {
        // 3.1.1 §3.8.3.1: packet identifier 10, "a/b" QoS 1, "c/d" QoS 2.
        let subscribe = |options: [SubscriptionOptions; 2]| {
            Packet::Subscribe(Subscribe {
                packet_id: 10,
                subscriptions: vec![
                    Subscription {
                        filter: "a/b".into(),
                        options: options[0],
                    },
                    Subscription {
                        filter: "c/d".into(),
                        options: options[1],
                    },
                ],
                properties: Properties::default(),
            })
        };
        let qos = |qos| SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        golden(
            subscribe([qos(QoS::AtLeastOnce), qos(QoS::ExactlyOnce)]),
            Version::V3_1_1,
            b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/d\x02",
        );
        // 5.0: the other options in the same byte.
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        };
        golden(
            subscribe([options, qos(QoS::ExactlyOnce)]),
            Version::V5,
            b"\x82\x0f\x00\x0a\x00\x00\x03a/b\x2d\x00\x03c/d\x02",
        );
    }

    #[test]
    fn connack_in_each_version() {
        golden(
            Packet::ConnAck(ConnAck::default()),
            Version::V3_1_1,
            b"\x20\x02\x00\x00",
        );
        golden(
            Packet::ConnAck(ConnAck {
                session_present: true,
                ..ConnAck::default()
            }),
            Version::V3_1_1,
            b"\x20\x02\x01\x00",
        );
        golden(
            Packet::ConnAck(ConnAck {
                reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                ..ConnAck::default()
            }),
            Version::V3_1_1,
            b"\x20\x02\x00\x01",
        );
        golden(
            Packet::ConnAck(ConnAck::default()),
            Version::V5,
            b"\x20\x03\x00\x00\x00",
        );
        golden(
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NOT_AUTHORIZED,
                properties: Properties {
                    reason_string: Some("no".into()),
                    ..Properties::default()
                },
            }),
            Version::V5,
            b"\x20\x08\x00\x87\x05\x1f\x00\x02no",
        );
        // 3.1 has no session present flag, and 3.1.1 no "banned": server unavailable.
        assert_eq!(
            encoded(
                &Packet::ConnAck(ConnAck {
                    session_present: true,
                    reason_code: ReasonCode::BANNED,
                    ..ConnAck::default()
                }),
                Version::V3_1
            ),
            b"\x20\x02\x00\x03"
        );
    }

    #[test]
    fn acknowledgements_and_pings_in_their_short_forms() {
        golden(Packet::PingReq, Version::V3_1_1, b"\xc0\x00");
        golden(Packet::PingResp, Version::V5, b"\xd0\x00");
        golden(
            Packet::Disconnect(Disconnect::default()),
            Version::V5,
            b"\xe0\x00",
        );
        golden(
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::SESSION_TAKEN_OVER,
                ..Disconnect::default()
            }),
            Version::V5,
            b"\xe0\x01\x8e",
        );
        let puback = |reason_code| {
            Packet::PubAck(PubResponse {
                packet_id: 10,
                reason_code,
                properties: Properties::default(),
            })
        };
        golden(
            puback(ReasonCode::SUCCESS),
            Version::V5,
            b"\x40\x02\x00\x0a",
        );
        golden(
            puback(ReasonCode::NO_MATCHING_SUBSCRIBERS),
            Version::V5,
            b"\x40\x03\x00\x0a\x10",
        );
        golden(
            Packet::PubRel(PubResponse {
                packet_id: 10,
                ..PubResponse::default()
            }),
            Version::V3_1_1,
            b"\x62\x02\x00\x0a",
        );
    }

    #[test]
    fn suback_failures_before_5() {
        let suback = Packet::SubAck(SubAck {
            packet_id: 10,
            reason_codes: vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::NOT_AUTHORIZED,
            ],
            properties: Properties::default(),
        });
        assert_eq!(
            encoded(&suback, Version::V3_1_1),
            b"\x90\x05\x00\x0a\x01\x02\x80"
        );
        assert_eq!(
            encoded(&suback, Version::V3_1),
            b"\x90\x05\x00\x0a\x01\x02\x00"
        );
        assert_eq!(
            encoded(&suback, Version::V5),
            b"\x90\x06\x00\x0a\x00\x01\x02\x87"
        );
    }

    /// `p` in 5.0, no properties before.
    fn rich(version: Version, p: Properties) -> Properties {
        if version.is_v5() {
            p
        } else {
            Properties::default()
        }
    }

    fn user() -> Vec<(String, String)> {
        vec![("k".into(), "v1".into()), ("k".into(), "v2".into())]
    }

    /// One packet of every type (several for some), valid in `version`.
    fn samples(version: Version) -> Vec<Packet> {
        let v5 = version.is_v5();
        let code = |rc: ReasonCode| if v5 { rc } else { ReasonCode::SUCCESS };
        let response = |reason_code| PubResponse {
            packet_id: 65_535,
            reason_code: code(reason_code),
            properties: rich(
                version,
                Properties {
                    reason_string: Some("why".into()),
                    user_properties: user(),
                    ..Properties::default()
                },
            ),
        };
        let mut packets = vec![
            Packet::Connect(Box::new(Connect {
                version,
                clean_start: false,
                keep_alive: 0,
                client_id: "client é".into(),
                will: Some(Will {
                    topic: "will/topic".into(),
                    payload: Bytes::from_static(b"\x00\xff"),
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    properties: rich(
                        version,
                        Properties {
                            payload_format_indicator: Some(true),
                            message_expiry_interval: Some(60),
                            content_type: Some("text/plain".into()),
                            response_topic: Some("reply/here".into()),
                            correlation_data: Some(Bytes::from_static(b"corr")),
                            will_delay_interval: Some(5),
                            user_properties: user(),
                            ..Properties::default()
                        },
                    ),
                }),
                username: Some("guest".into()),
                password: Some(Bytes::from_static(b"guest")),
                properties: rich(
                    version,
                    Properties {
                        session_expiry_interval: Some(u32::MAX),
                        authentication_method: Some("SCRAM-SHA-1".into()),
                        authentication_data: Some(Bytes::from_static(b"data")),
                        request_problem_information: Some(false),
                        request_response_information: Some(true),
                        receive_maximum: Some(10),
                        topic_alias_maximum: Some(0),
                        maximum_packet_size: Some(1024),
                        user_properties: user(),
                        ..Properties::default()
                    },
                ),
            })),
            Packet::Connect(Box::new(Connect {
                version,
                clean_start: true,
                keep_alive: 60,
                client_id: String::new(),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            })),
            Packet::ConnAck(ConnAck {
                session_present: version != Version::V3_1,
                reason_code: ReasonCode::SUCCESS,
                properties: rich(
                    version,
                    Properties {
                        session_expiry_interval: Some(0),
                        assigned_client_identifier: Some("assigned".into()),
                        server_keep_alive: Some(30),
                        authentication_method: Some("m".into()),
                        authentication_data: Some(Bytes::new()),
                        response_information: Some("resp".into()),
                        server_reference: Some("other".into()),
                        reason_string: Some("ok".into()),
                        receive_maximum: Some(65_535),
                        topic_alias_maximum: Some(16),
                        maximum_qos: Some(QoS::AtLeastOnce),
                        retain_available: Some(true),
                        maximum_packet_size: Some(268_435_455),
                        wildcard_subscription_available: Some(true),
                        subscription_identifier_available: Some(false),
                        shared_subscription_available: Some(false),
                        user_properties: user(),
                        ..Properties::default()
                    },
                ),
            }),
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                properties: Properties::default(),
            }),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: "$SYS/a b/é".into(),
                packet_id: None,
                properties: rich(
                    version,
                    Properties {
                        payload_format_indicator: Some(false),
                        message_expiry_interval: Some(0),
                        content_type: Some("application/json".into()),
                        response_topic: Some("r".into()),
                        correlation_data: Some(Bytes::from_static(b"\x01")),
                        subscription_identifiers: vec![1, 268_435_455, 128],
                        topic_alias: Some(3),
                        user_properties: user(),
                        ..Properties::default()
                    },
                ),
                payload: Bytes::from(vec![7u8; 300]),
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "a".into(),
                packet_id: Some(1),
                properties: Properties::default(),
                payload: Bytes::new(),
            }),
            Packet::PubAck(response(ReasonCode::QUOTA_EXCEEDED)),
            Packet::PubRec(response(ReasonCode::PACKET_IDENTIFIER_IN_USE)),
            Packet::PubRel(response(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
            Packet::PubComp(response(ReasonCode::SUCCESS)),
            Packet::Subscribe(Subscribe {
                packet_id: 2,
                subscriptions: vec![
                    Subscription {
                        filter: "sport/+/#".into(),
                        options: SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: v5,
                            retain_as_published: v5,
                            retain_handling: if v5 {
                                RetainHandling::SendAtNewSubscribe
                            } else {
                                RetainHandling::SendAtSubscribe
                            },
                        },
                    },
                    Subscription {
                        filter: "#".into(),
                        options: SubscriptionOptions::default(),
                    },
                ],
                properties: rich(
                    version,
                    Properties {
                        subscription_identifiers: vec![42],
                        user_properties: user(),
                        ..Properties::default()
                    },
                ),
            }),
            Packet::SubAck(SubAck {
                packet_id: 2,
                reason_codes: vec![
                    ReasonCode::GRANTED_QOS_2,
                    ReasonCode::GRANTED_QOS_0,
                    if version == Version::V3_1 {
                        ReasonCode::GRANTED_QOS_1
                    } else if v5 {
                        ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    },
                ],
                properties: rich(
                    version,
                    Properties {
                        reason_string: Some("partly".into()),
                        ..Properties::default()
                    },
                ),
            }),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 3,
                filters: vec!["sport/+/#".into(), "a".into()],
                properties: rich(
                    version,
                    Properties {
                        user_properties: user(),
                        ..Properties::default()
                    },
                ),
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: 3,
                reason_codes: if v5 {
                    vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
                } else {
                    Vec::new()
                },
                properties: rich(
                    version,
                    Properties {
                        reason_string: Some("done".into()),
                        ..Properties::default()
                    },
                ),
            }),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect {
                reason_code: code(ReasonCode::SERVER_MOVED),
                properties: rich(
                    version,
                    Properties {
                        session_expiry_interval: Some(1),
                        server_reference: Some("elsewhere".into()),
                        reason_string: Some("moved".into()),
                        user_properties: user(),
                        ..Properties::default()
                    },
                ),
            }),
        ];
        if v5 {
            packets.push(Packet::Auth(Auth {
                reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties {
                    authentication_method: Some("SCRAM-SHA-1".into()),
                    authentication_data: Some(Bytes::from_static(b"challenge")),
                    reason_string: Some("more".into()),
                    user_properties: user(),
                    ..Properties::default()
                },
            }));
        }
        packets
    }

    #[test]
    fn every_packet_round_trips_in_every_version() {
        for version in [Version::V3_1, Version::V3_1_1, Version::V5] {
            for packet in samples(version) {
                let bytes = encoded(&packet, version);
                assert_eq!(decoded(&bytes, version), packet, "{version}");
            }
        }
    }

    #[test]
    fn fields_of_5_are_left_out_before_5() {
        let v5 = samples(Version::V5);
        let v4 = samples(Version::V3_1_1);
        // CONNECT names its own version; AUTH has no 3.1.1 form (zip stops before it).
        for (rich, plain) in v5.iter().zip(&v4).skip(2) {
            assert_eq!(
                encoded(rich, Version::V3_1_1),
                encoded(plain, Version::V3_1_1),
                "{rich:?}"
            );
        }
    }

    #[test]
    fn what_cannot_be_written_is_refused_and_nothing_appended() {
        let mut out = BytesMut::from(&b"kept"[..]);
        let publish = |qos, packet_id, topic: String, payload: Bytes| {
            Packet::Publish(Publish {
                qos,
                topic,
                packet_id,
                payload,
                ..Publish::default()
            })
        };
        assert_eq!(
            encode(
                &publish(QoS::AtLeastOnce, None, "a".into(), Bytes::new()),
                Version::V3_1_1,
                &mut out
            ),
            Err(EncodeError::MissingPacketId(QoS::AtLeastOnce))
        );
        assert_eq!(
            encode(
                &publish(QoS::AtMostOnce, None, "a".repeat(65_536), Bytes::new()),
                Version::V3_1_1,
                &mut out
            ),
            Err(EncodeError::FieldTooLong(65_536))
        );
        assert_eq!(
            encode(&Packet::Auth(Auth::default()), Version::V3_1_1, &mut out),
            Err(EncodeError::NotInVersion {
                packet: PacketType::Auth,
                version: Version::V3_1_1
            })
        );
        let mut too_many = Properties::default();
        too_many.subscription_identifiers.push(268_435_456);
        assert_eq!(
            encode(
                &Packet::Subscribe(Subscribe {
                    packet_id: 1,
                    subscriptions: Vec::new(),
                    properties: too_many
                }),
                Version::V5,
                &mut out
            ),
            Err(EncodeError::VariableByteIntegerTooLarge(268_435_456))
        );
        // 256 MiB of payload: zeroed pages the encoder refuses before touching them.
        let huge = Bytes::from(vec![0u8; 268_435_456]);
        assert_eq!(
            encode(
                &publish(QoS::AtMostOnce, None, "a".into(), huge),
                Version::V3_1_1,
                &mut out
            ),
            Err(EncodeError::PacketTooLarge(268_435_456 + 3))
        );
        assert_eq!(&out[..], b"kept");
    }
}
