//! Reading packets out of the bytes a peer sent, within a maximum packet size, refusing every
//! packet the specification calls malformed or a protocol error that can be seen without
//! knowing the session (a packet id in use, a topic alias never set, are the session's).

use bytes::{Buf, Bytes, BytesMut};

use crate::data::{read_variable_byte_integer, Reader, MAX_VARIABLE_BYTE_INTEGER};
use crate::error::MqttError;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, PubResponse, Publish, QoS,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};
use crate::properties::{Properties, PropertiesOf};
use crate::reason_code::ReasonCode;
use crate::topic::{split_shared_subscription, validate_topic_filter, validate_topic_name};
use crate::version::Version;

/// RabbitMQ's `mqtt.max_packet_size_unauthenticated` default: the largest remaining length
/// accepted before a CONNECT succeeded.
pub const MAX_PACKET_SIZE_UNAUTHENTICATED: u32 = 65_536;

/// RabbitMQ's `mqtt.max_packet_size_authenticated` default, and the largest remaining length
/// MQTT can express: 256 MiB - 1.
pub const MAX_PACKET_SIZE_AUTHENTICATED: u32 = MAX_VARIABLE_BYTE_INTEGER;

/// Reads packets from a peer's bytes. It knows the protocol version of the connection: a
/// server's decoder learns it from the CONNECT it reads (as soon as the protocol level is read,
/// so a CONNECT refused for a later fault still leaves [`Decoder::version`] at the client's
/// version, for the session to answer in it); a client's decoder is told with
/// [`Decoder::set_version`]. Until then packets are read as 3.1.1.
#[derive(Clone, Debug)]
pub struct Decoder {
    version: Version,
    max_packet_size: u32,
}

impl Default for Decoder {
    /// A decoder for a connection that has not connected yet: 3.1.1 until a CONNECT says
    /// otherwise, [`MAX_PACKET_SIZE_UNAUTHENTICATED`].
    fn default() -> Decoder {
        Decoder::new(MAX_PACKET_SIZE_UNAUTHENTICATED)
    }
}

/// The fixed header at the front of a buffer.
struct FixedHeader {
    packet: PacketType,
    flags: u8,
    /// Bytes of the fixed header itself (2 to 5).
    len: usize,
    /// The remaining length: bytes of variable header and payload.
    remaining: usize,
}

impl Decoder {
    /// A decoder refusing packets whose remaining length is above `max_packet_size` (at most
    /// [`MAX_PACKET_SIZE_AUTHENTICATED`], the largest MQTT can express).
    pub fn new(max_packet_size: u32) -> Decoder {
        Decoder {
            version: Version::V3_1_1,
            max_packet_size: max_packet_size.min(MAX_VARIABLE_BYTE_INTEGER),
        }
    }

    /// The protocol version packets are read in.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Reads later packets in `version` (a client's decoder, before it reads CONNACK).
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The largest remaining length accepted.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Accepts remaining lengths up to `max` from now on (the session raises it to
    /// [`MAX_PACKET_SIZE_AUTHENTICATED`] once CONNECT succeeded, as RabbitMQ does).
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max.min(MAX_VARIABLE_BYTE_INTEGER);
    }

    /// The next packet at the front of `buf`, consumed from it; `Ok(None)` until a whole one is
    /// there, with nothing consumed. A packet whose fixed header is wrong or whose remaining
    /// length is too large is refused as soon as its fixed header is in, so a peer never makes
    /// `buf` hold more than five bytes plus the maximum packet size before it is refused. A
    /// PUBLISH's payload shares `buf`'s memory. An error ends the connection: what is left in
    /// `buf` after one is unspecified.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, MqttError> {
        let Some(header) = self.fixed_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < header.len + header.remaining {
            return Ok(None);
        }
        buf.advance(header.len);
        let body = buf.split_to(header.remaining).freeze();
        self.packet(header.packet, header.flags, body).map(Some)
    }

    /// Reads and checks the fixed header at the front of `buf`; `None` while it is not all
    /// there.
    fn fixed_header(&self, buf: &[u8]) -> Result<Option<FixedHeader>, MqttError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let (kind, flags) = (first >> 4, first & 0x0F);
        let packet = match PacketType::from_u8(kind) {
            Some(PacketType::Auth) if !self.version.is_v5() => None,
            other => other,
        };
        let Some(packet) = packet else {
            return Err(MqttError::ReservedPacketType(kind));
        };
        self.check_flags(packet, flags)?;
        let Some((remaining, varint_len)) = read_variable_byte_integer(&buf[1..])? else {
            return Ok(None);
        };
        if remaining > self.max_packet_size {
            return Err(MqttError::PacketTooLarge {
                size: remaining,
                max: self.max_packet_size,
            });
        }
        Ok(Some(FixedHeader {
            packet,
            flags,
            len: 1 + varint_len,
            remaining: usize::try_from(remaining).map_err(|_| MqttError::PacketTooLarge {
                size: remaining,
                max: self.max_packet_size,
            })?,
        }))
    }

    /// The flags each packet type requires (§2.1.3).
    fn check_flags(&self, packet: PacketType, flags: u8) -> Result<(), MqttError> {
        let ok = match packet {
            PacketType::Publish => {
                let qos = (flags >> 1) & 0b11;
                if qos == 3 {
                    return Err(MqttError::InvalidQos(packet));
                }
                // [MQTT-3.3.1-2]: DUP is 0 in every QoS 0 PUBLISH.
                !(qos == 0 && flags & 0b1000 != 0)
            }
            // 3.1 set DUP on resent PUBREL, SUBSCRIBE and UNSUBSCRIBE too.
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => {
                flags == 0b0010 || (self.version == Version::V3_1 && flags == 0b1010)
            }
            _ => flags == 0,
        };
        if !ok {
            return Err(MqttError::InvalidFlags { packet, flags });
        }
        Ok(())
    }

    /// Reads the variable header and payload of a packet of type `packet`.
    fn packet(&mut self, packet: PacketType, flags: u8, body: Bytes) -> Result<Packet, MqttError> {
        let mut r = Reader::new(body, packet);
        let decoded = match packet {
            PacketType::Connect => Packet::Connect(Box::new(self.connect(&mut r)?)),
            PacketType::ConnAck => Packet::ConnAck(self.connack(&mut r)?),
            PacketType::Publish => Packet::Publish(self.publish(&mut r, flags)?),
            PacketType::PubAck => Packet::PubAck(self.pub_response(&mut r)?),
            PacketType::PubRec => Packet::PubRec(self.pub_response(&mut r)?),
            PacketType::PubRel => Packet::PubRel(self.pub_response(&mut r)?),
            PacketType::PubComp => Packet::PubComp(self.pub_response(&mut r)?),
            PacketType::Subscribe => Packet::Subscribe(self.subscribe(&mut r)?),
            PacketType::SubAck => Packet::SubAck(self.suback(&mut r)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(self.unsubscribe(&mut r)?),
            PacketType::UnsubAck => Packet::UnsubAck(self.unsuback(&mut r)?),
            PacketType::PingReq => Packet::PingReq,
            PacketType::PingResp => Packet::PingResp,
            PacketType::Disconnect => {
                let (reason_code, properties) = self.reason_and_properties(
                    &mut r,
                    ReasonCode::NORMAL_DISCONNECTION,
                    PropertiesOf::Disconnect,
                )?;
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties,
                })
            }
            PacketType::Auth => {
                let (reason_code, properties) =
                    self.reason_and_properties(&mut r, ReasonCode::SUCCESS, PropertiesOf::Auth)?;
                Packet::Auth(Auth {
                    reason_code,
                    properties,
                })
            }
        };
        r.finish()?;
        Ok(decoded)
    }

    /// A property block in 5.0, none before.
    fn properties(&self, r: &mut Reader, context: PropertiesOf) -> Result<Properties, MqttError> {
        if self.version.is_v5() {
            Properties::read(r, context)
        } else {
            Ok(Properties::default())
        }
    }

    fn connect(&mut self, r: &mut Reader) -> Result<Connect, MqttError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let Some(version) = Version::from_protocol(&name, level) else {
            return Err(MqttError::UnsupportedProtocolVersion {
                name: String::from_utf8_lossy(&name).into_owned(),
                level,
            });
        };
        self.version = version;
        let flags = r.u8()?;
        if flags & 0b0000_0001 != 0 {
            return Err(MqttError::ConnectReservedFlag);
        }
        let has_username = flags & 0b1000_0000 != 0;
        let has_password = flags & 0b0100_0000 != 0;
        let will_retain = flags & 0b0010_0000 != 0;
        let will_qos = (flags >> 3) & 0b11;
        let has_will = flags & 0b0000_0100 != 0;
        let clean_start = flags & 0b0000_0010 != 0;
        let Some(will_qos) = QoS::from_u8(will_qos) else {
            return Err(MqttError::InvalidQos(PacketType::Connect));
        };
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(MqttError::WillFlagsWithoutWill);
        }
        if !version.is_v5() && has_password && !has_username {
            return Err(MqttError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = self.properties(r, PropertiesOf::Connect)?;
        let client_id = r.string()?;
        let will = if has_will {
            let properties = self.properties(r, PropertiesOf::Will)?;
            let topic = r.string()?;
            if let Err(reason) = validate_topic_name(&topic) {
                return Err(MqttError::InvalidTopicName { topic, reason });
            }
            let payload = r.binary()?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Connect {
            version,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn connack(&self, r: &mut Reader) -> Result<ConnAck, MqttError> {
        let flags = r.u8()?;
        // 3.1 has no session present flag: the byte is unused there.
        let session_present = match self.version {
            Version::V3_1 => false,
            _ if flags & 0xFE != 0 => return Err(MqttError::ConnAckReservedFlags(flags)),
            _ => flags & 1 != 0,
        };
        let code = r.u8()?;
        let reason_code = if self.version.is_v5() {
            self.reason_code(code, PacketType::ConnAck)?
        } else {
            ReasonCode::from_v3_connack(code).ok_or(MqttError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code,
            })?
        };
        let properties = self.properties(r, PropertiesOf::ConnAck)?;
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }

    fn publish(&self, r: &mut Reader, flags: u8) -> Result<Publish, MqttError> {
        let dup = flags & 0b1000 != 0;
        let retain = flags & 0b0001 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(MqttError::InvalidQos(r.packet()))?;
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(self.packet_id(r)?)
        };
        let properties = self.properties(r, PropertiesOf::Publish)?;
        // 5.0: an empty topic name stands for the topic its alias was set to.
        let aliased = topic.is_empty() && properties.topic_alias.is_some();
        if !aliased {
            if let Err(reason) = validate_topic_name(&topic) {
                return Err(MqttError::InvalidTopicName { topic, reason });
            }
        }
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// PUBACK, PUBREC, PUBREL, PUBCOMP: in 5.0 the reason code and the properties may be left
    /// out (success, none).
    fn pub_response(&self, r: &mut Reader) -> Result<PubResponse, MqttError> {
        let packet_id = self.packet_id(r)?;
        let (reason_code, properties) =
            self.reason_and_properties(r, ReasonCode::SUCCESS, PropertiesOf::PubResponse)?;
        Ok(PubResponse {
            packet_id,
            reason_code,
            properties,
        })
    }

    /// The optional reason code and properties ending PUBACK & co., DISCONNECT and AUTH in 5.0
    /// (absent: `default` and none); before 5.0 there is nothing to read.
    fn reason_and_properties(
        &self,
        r: &mut Reader,
        default: ReasonCode,
        context: PropertiesOf,
    ) -> Result<(ReasonCode, Properties), MqttError> {
        if !self.version.is_v5() || r.remaining() == 0 {
            return Ok((default, Properties::default()));
        }
        let reason_code = self.reason_code(r.u8()?, r.packet())?;
        let properties = if r.remaining() == 0 {
            Properties::default()
        } else {
            Properties::read(r, context)?
        };
        Ok((reason_code, properties))
    }

    fn subscribe(&self, r: &mut Reader) -> Result<Subscribe, MqttError> {
        let packet_id = self.packet_id(r)?;
        let properties = self.properties(r, PropertiesOf::Subscribe)?;
        let mut subscriptions = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string()?;
            let options = self.subscription_options(r.u8()?)?;
            if let Err(reason) = validate_topic_filter(&filter) {
                return Err(MqttError::InvalidTopicFilter { filter, reason });
            }
            if self.version.is_v5() {
                match split_shared_subscription(&filter) {
                    Err(reason) => return Err(MqttError::InvalidTopicFilter { filter, reason }),
                    Ok(Some(_)) if options.no_local => {
                        return Err(MqttError::NoLocalOnSharedSubscription(filter))
                    }
                    Ok(_) => {}
                }
            }
            subscriptions.push(Subscription { filter, options });
        }
        if subscriptions.is_empty() {
            return Err(MqttError::NoTopicFilters(PacketType::Subscribe));
        }
        Ok(Subscribe {
            packet_id,
            subscriptions,
            properties,
        })
    }

    fn subscription_options(&self, byte: u8) -> Result<SubscriptionOptions, MqttError> {
        let reserved = if self.version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if byte & reserved != 0 {
            return Err(MqttError::SubscriptionOptionsReserved(byte));
        }
        let qos = QoS::from_u8(byte & 0b11).ok_or(MqttError::InvalidQos(PacketType::Subscribe))?;
        let retain_handling =
            RetainHandling::from_u8((byte >> 4) & 0b11).ok_or(MqttError::InvalidRetainHandling)?;
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    fn suback(&self, r: &mut Reader) -> Result<SubAck, MqttError> {
        let packet_id = self.packet_id(r)?;
        let properties = self.properties(r, PropertiesOf::SubAck)?;
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let code = r.u8()?;
            let reason_code = if self.version.is_v5() {
                self.reason_code(code, PacketType::SubAck)?
            } else {
                ReasonCode::from_v3_suback(code).ok_or(MqttError::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code,
                })?
            };
            reason_codes.push(reason_code);
        }
        if reason_codes.is_empty() {
            return Err(MqttError::NoReasonCodes(PacketType::SubAck));
        }
        Ok(SubAck {
            packet_id,
            reason_codes,
            properties,
        })
    }

    fn unsubscribe(&self, r: &mut Reader) -> Result<Unsubscribe, MqttError> {
        let packet_id = self.packet_id(r)?;
        let properties = self.properties(r, PropertiesOf::Unsubscribe)?;
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string()?;
            let valid = validate_topic_filter(&filter).and_then(|()| {
                if self.version.is_v5() {
                    split_shared_subscription(&filter).map(|_| ())
                } else {
                    Ok(())
                }
            });
            if let Err(reason) = valid {
                return Err(MqttError::InvalidTopicFilter { filter, reason });
            }
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(MqttError::NoTopicFilters(PacketType::Unsubscribe));
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            properties,
        })
    }

    fn unsuback(&self, r: &mut Reader) -> Result<UnsubAck, MqttError> {
        let packet_id = self.packet_id(r)?;
        if !self.version.is_v5() {
            return Ok(UnsubAck {
                packet_id,
                ..UnsubAck::default()
            });
        }
        let properties = Properties::read(r, PropertiesOf::UnsubAck)?;
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            reason_codes.push(self.reason_code(r.u8()?, PacketType::UnsubAck)?);
        }
        if reason_codes.is_empty() {
            return Err(MqttError::NoReasonCodes(PacketType::UnsubAck));
        }
        Ok(UnsubAck {
            packet_id,
            reason_codes,
            properties,
        })
    }

    /// A packet identifier: never 0.
    fn packet_id(&self, r: &mut Reader) -> Result<u16, MqttError> {
        match r.u16()? {
            0 => Err(MqttError::ZeroPacketId(r.packet())),
            id => Ok(id),
        }
    }

    /// A 5.0 reason code `packet` may carry.
    fn reason_code(&self, code: u8, packet: PacketType) -> Result<ReasonCode, MqttError> {
        let reason_code = ReasonCode(code);
        if !reason_code.allowed_in(packet) {
            return Err(MqttError::InvalidReasonCode { packet, code });
        }
        Ok(reason_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arbitrary::conversation;
    use crate::encoder::encode;
    use crate::properties::PropertyId;
    use crate::topic::TopicError;
    use bytes::BufMut;
    use proptest::prelude::*;

    fn decoder(version: Version) -> Decoder {
        let mut d = Decoder::new(MAX_PACKET_SIZE_AUTHENTICATED);
        d.set_version(version);
        d
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Packet>, MqttError> {
        let mut buf = BytesMut::from(bytes);
        let mut packets = Vec::new();
        while let Some(packet) = d.decode(&mut buf)? {
            packets.push(packet);
        }
        Ok(packets)
    }

    /// The error the first packet of `bytes` gets in `version`.
    fn refusal(version: Version, bytes: &[u8]) -> MqttError {
        match decode_all(&mut decoder(version), bytes) {
            Err(e) => e,
            Ok(packets) => panic!("{bytes:02x?} decoded as {packets:?}"),
        }
    }

    fn encoded(packets: &[Packet], version: Version) -> BytesMut {
        let mut out = BytesMut::new();
        for p in packets {
            encode(p, version, &mut out).expect("encodable");
        }
        out
    }

    /// A 3.1.1 or 5.0 CONNECT with `flags`, keep alive 60, then `rest` (properties in 5.0,
    /// payload).
    fn connect_bytes(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u16(u16::try_from(name.len()).expect("short"));
        body.put_slice(name);
        body.put_u8(level);
        body.put_u8(flags);
        body.put_u16(60);
        body.put_slice(rest);
        let mut out = vec![0x10, u8::try_from(body.len()).expect("short")];
        out.extend_from_slice(&body);
        out
    }

    fn sample_publish() -> Packet {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "a/b".into(),
            packet_id: Some(7),
            payload: Bytes::from_static(b"hello"),
            ..Publish::default()
        })
    }

    #[test]
    fn nothing_is_consumed_until_a_whole_packet_is_there_at_any_split() {
        for version in [Version::V3_1, Version::V3_1_1, Version::V5] {
            let packets = [
                sample_publish(),
                Packet::PingReq,
                Packet::Subscribe(Subscribe {
                    packet_id: 1,
                    subscriptions: vec![Subscription {
                        filter: "a/+/#".into(),
                        options: SubscriptionOptions::default(),
                    }],
                    properties: Properties::default(),
                }),
            ];
            let bytes = encoded(&packets, version);
            for cut in 0..=bytes.len() {
                let mut d = decoder(version);
                let mut buf = BytesMut::from(&bytes[..cut]);
                let mut got = Vec::new();
                while let Some(p) = d.decode(&mut buf).expect("valid") {
                    got.push(p);
                }
                let left = buf.len();
                buf.extend_from_slice(&bytes[cut..]);
                while let Some(p) = d.decode(&mut buf).expect("valid") {
                    got.push(p);
                }
                assert_eq!(got, packets, "{version} cut at {cut}");
                assert!(buf.is_empty());
                assert!(left <= cut);
            }
        }
    }

    #[test]
    fn a_publish_payload_shares_the_read_buffer() {
        let bytes = encoded(&[sample_publish()], Version::V3_1_1);
        let mut buf = bytes.clone();
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let Some(Packet::Publish(p)) = decoder(Version::V3_1_1).decode(&mut buf).expect("valid")
        else {
            panic!("not a PUBLISH");
        };
        let at = p.payload.as_ptr() as usize;
        assert!(start <= at && at + p.payload.len() <= end);
        assert_eq!(&p.payload[..], b"hello");
    }

    #[test]
    fn a_packet_too_large_is_refused_from_its_fixed_header_alone() {
        let mut d = Decoder::default();
        assert_eq!(d.max_packet_size(), 65_536);
        // PUBLISH announcing 65 537 bytes: 0x81 0x80 0x04.
        let mut buf = BytesMut::from(&[0x30, 0x81, 0x80, 0x04][..]);
        let err = d.decode(&mut buf).expect_err("too large");
        assert_eq!(
            err,
            MqttError::PacketTooLarge {
                size: 65_537,
                max: 65_536
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
        // Exactly the maximum is waited for.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x04][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        // Once authenticated, the largest MQTT allows.
        d.set_max_packet_size(MAX_PACKET_SIZE_AUTHENTICATED);
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        d.set_max_packet_size(u32::MAX);
        assert_eq!(d.max_packet_size(), MAX_PACKET_SIZE_AUTHENTICATED);
    }

    #[test]
    fn a_remaining_length_of_five_bytes_is_malformed() {
        assert_eq!(
            refusal(Version::V3_1_1, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
            MqttError::MalformedVariableByteInteger
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0xC0, 0x80, 0x00]),
            MqttError::MalformedVariableByteInteger
        );
        assert_eq!(
            MqttError::MalformedVariableByteInteger.reason_code(),
            ReasonCode::MALFORMED_PACKET
        );
    }

    #[test]
    fn reserved_packet_types_are_malformed() {
        assert_eq!(
            refusal(Version::V3_1_1, &[0x00, 0x00]),
            MqttError::ReservedPacketType(0)
        );
        // AUTH exists from 5.0 on only.
        assert_eq!(
            refusal(Version::V3_1_1, &[0xF0, 0x00]),
            MqttError::ReservedPacketType(15)
        );
        assert_eq!(
            decode_all(&mut decoder(Version::V5), &[0xF0, 0x00]),
            Ok(vec![Packet::Auth(Auth::default())])
        );
    }

    #[test]
    fn fixed_header_flags_must_be_those_of_the_packet_type() {
        for (bytes, packet, flags) in [
            (&[0x80, 0x00][..], PacketType::Subscribe, 0),
            (&[0xA0, 0x00], PacketType::Unsubscribe, 0),
            (&[0x60, 0x02, 0, 1], PacketType::PubRel, 0),
            (&[0x8A, 0x00], PacketType::Subscribe, 0b1010),
            (&[0xC1, 0x00], PacketType::PingReq, 1),
            (&[0x11, 0x00], PacketType::Connect, 1),
            (&[0x42, 0x02, 0, 1], PacketType::PubAck, 2),
            (&[0xE8, 0x00], PacketType::Disconnect, 8),
            // DUP on a QoS 0 PUBLISH.
            (&[0x38, 0x03, 0, 1, b'a'], PacketType::Publish, 8),
        ] {
            assert_eq!(
                refusal(Version::V3_1_1, bytes),
                MqttError::InvalidFlags { packet, flags },
                "{bytes:02x?}"
            );
        }
        // 3.1 set DUP on a resent SUBSCRIBE.
        let subscribe = [0x8A, 0x06, 0, 1, 0, 1, b'a', 0];
        assert!(decode_all(&mut decoder(Version::V3_1), &subscribe).is_ok());
    }

    #[test]
    fn qos_3_is_malformed_wherever_it_is() {
        assert_eq!(
            refusal(Version::V3_1_1, &[0x36, 0x05, 0, 1, b'a', 0, 1]),
            MqttError::InvalidQos(PacketType::Publish)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x82, 0x06, 0, 1, 0, 1, b'a', 3]),
            MqttError::InvalidQos(PacketType::Subscribe)
        );
        // Will QoS 3.
        let bytes = connect_bytes(b"MQTT", 4, 0b0001_1100, &[0, 0, 0, 1, b't', 0, 0]);
        assert_eq!(
            refusal(Version::V3_1_1, &bytes),
            MqttError::InvalidQos(PacketType::Connect)
        );
    }

    #[test]
    fn a_publish_with_qos_needs_a_packet_id_that_is_not_0() {
        assert_eq!(
            refusal(Version::V3_1_1, &[0x32, 0x03, 0, 1, b'a']),
            MqttError::Truncated(PacketType::Publish)
        );
        let err = refusal(Version::V3_1_1, &[0x34, 0x05, 0, 1, b'a', 0, 0]);
        assert_eq!(err, MqttError::ZeroPacketId(PacketType::Publish));
        assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
        assert_eq!(
            refusal(Version::V3_1_1, &[0x40, 0x02, 0, 0]),
            MqttError::ZeroPacketId(PacketType::PubAck)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x82, 0x06, 0, 0, 0, 1, b'a', 0]),
            MqttError::ZeroPacketId(PacketType::Subscribe)
        );
    }

    #[test]
    fn strings_must_be_utf8_without_nul() {
        assert_eq!(
            refusal(Version::V3_1_1, &[0x30, 0x04, 0, 2, 0xC3, 0x28]),
            MqttError::InvalidUtf8(PacketType::Publish)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x30, 0x05, 0, 3, b'a', 0, b'b']),
            MqttError::NulCharacter(PacketType::Publish)
        );
        // In a user name too.
        let bytes = connect_bytes(b"MQTT", 4, 0b1000_0010, &[0, 0, 0, 1, 0xFF]);
        assert_eq!(
            refusal(Version::V3_1_1, &bytes),
            MqttError::InvalidUtf8(PacketType::Connect)
        );
    }

    #[test]
    fn a_publish_topic_name_holds_no_wildcard_and_is_not_empty_without_an_alias() {
        let err = refusal(Version::V3_1_1, &[0x30, 0x05, 0, 3, b'a', b'/', b'+']);
        assert_eq!(
            err,
            MqttError::InvalidTopicName {
                topic: "a/+".into(),
                reason: TopicError::WildcardInTopicName
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
        let err = refusal(Version::V3_1_1, &[0x30, 0x02, 0, 0]);
        assert_eq!(
            err,
            MqttError::InvalidTopicName {
                topic: String::new(),
                reason: TopicError::Empty
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
        assert!(matches!(
            refusal(Version::V5, &[0x30, 0x03, 0, 0, 0]),
            MqttError::InvalidTopicName { .. }
        ));
        // 5.0: an empty topic name with a topic alias (0x23) stands for the alias's topic.
        let packets = decode_all(
            &mut decoder(Version::V5),
            &[0x30, 0x06, 0, 0, 3, 0x23, 0, 9],
        )
        .expect("ok");
        let [Packet::Publish(p)] = &packets[..] else {
            panic!("{packets:?}");
        };
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("", Some(9)));
        assert_eq!(
            refusal(Version::V5, &[0x30, 0x06, 0, 0, 3, 0x23, 0, 0]),
            MqttError::TopicAliasZero
        );
        assert_eq!(
            MqttError::TopicAliasZero.reason_code(),
            ReasonCode::TOPIC_ALIAS_INVALID
        );
    }

    #[test]
    fn subscribe_and_unsubscribe_carry_valid_filters_at_least_one() {
        assert_eq!(
            refusal(Version::V3_1_1, &[0x82, 0x02, 0, 1]),
            MqttError::NoTopicFilters(PacketType::Subscribe)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0xA2, 0x02, 0, 1]),
            MqttError::NoTopicFilters(PacketType::Unsubscribe)
        );
        assert_eq!(
            refusal(Version::V5, &[0x82, 0x03, 0, 1, 0]),
            MqttError::NoTopicFilters(PacketType::Subscribe)
        );
        let err = refusal(Version::V3_1_1, &[0x82, 0x07, 0, 1, 0, 2, b'a', b'#', 0]);
        assert_eq!(
            err,
            MqttError::InvalidTopicFilter {
                filter: "a#".into(),
                reason: TopicError::WildcardNotAlone
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::TOPIC_FILTER_INVALID);
        assert_eq!(
            refusal(Version::V3_1_1, &[0xA2, 0x06, 0, 1, 0, 2, b'#', b'/']),
            MqttError::InvalidTopicFilter {
                filter: "#/".into(),
                reason: TopicError::MultiLevelWildcardNotLast
            }
        );
        // A filter without its options byte.
        assert_eq!(
            refusal(Version::V3_1_1, &[0x82, 0x05, 0, 1, 0, 1, b'a']),
            MqttError::Truncated(PacketType::Subscribe)
        );
    }

    #[test]
    fn subscription_options_keep_reserved_bits_clear() {
        // Before 5.0 everything above QoS is reserved.
        assert_eq!(
            refusal(Version::V3_1_1, &[0x82, 0x06, 0, 1, 0, 1, b'a', 0x04]),
            MqttError::SubscriptionOptionsReserved(0x04)
        );
        assert_eq!(
            refusal(Version::V5, &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x40]),
            MqttError::SubscriptionOptionsReserved(0x40)
        );
        assert_eq!(
            refusal(Version::V5, &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30]),
            MqttError::InvalidRetainHandling
        );
        let share = b"$share/g/a";
        let mut bytes = vec![0x82, 0x10, 0, 1, 0, 0, 10];
        bytes.extend_from_slice(share);
        bytes.push(0x04);
        assert_eq!(
            refusal(Version::V5, &bytes),
            MqttError::NoLocalOnSharedSubscription("$share/g/a".into())
        );
        // Before 5.0 `$share/g/a` is an ordinary filter.
        let mut bytes = vec![0x82, 0x0F, 0, 1, 0, 10];
        bytes.extend_from_slice(share);
        bytes.push(0x01);
        assert!(decode_all(&mut decoder(Version::V3_1_1), &bytes).is_ok());
        let bad_share = b"$share/g";
        let mut bytes = vec![0x82, 0x0E, 0, 1, 0, 0, 8];
        bytes.extend_from_slice(bad_share);
        bytes.push(0x00);
        assert_eq!(
            refusal(Version::V5, &bytes),
            MqttError::InvalidTopicFilter {
                filter: "$share/g".into(),
                reason: TopicError::InvalidSharedSubscription
            }
        );
    }

    #[test]
    fn an_unsupported_protocol_is_answered_with_its_code_in_both_versions() {
        for (name, level) in [
            (&b"MQTT"[..], 6),
            (b"MQTT", 3),
            (b"MQIsdp", 4),
            (b"HTTP", 4),
        ] {
            let mut d = Decoder::default();
            let bytes = connect_bytes(name, level, 0b10, &[0, 0]);
            let err = decode_all(&mut d, &bytes).expect_err("unsupported");
            assert_eq!(
                err,
                MqttError::UnsupportedProtocolVersion {
                    name: String::from_utf8_lossy(name).into_owned(),
                    level
                }
            );
            assert_eq!(err.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
            assert_eq!(err.v3_connect_return_code(), Some(0x01));
            // The decoder stays at 3.1.1: the CONNACK it answers with is 3.1.1's.
            assert_eq!(d.version(), Version::V3_1_1);
        }
        assert_eq!(
            MqttError::Truncated(PacketType::Connect).v3_connect_return_code(),
            None
        );
    }

    #[test]
    fn connect_flags_follow_the_specification() {
        let refused = |level: u8, flags: u8, rest: &[u8]| {
            refusal(Version::V3_1_1, &connect_bytes(b"MQTT", level, flags, rest))
        };
        assert_eq!(
            refused(4, 0b0000_0011, &[0, 0]),
            MqttError::ConnectReservedFlag
        );
        assert_eq!(
            refused(4, 0b0010_0010, &[0, 0]),
            MqttError::WillFlagsWithoutWill
        );
        assert_eq!(
            refused(4, 0b0000_1010, &[0, 0]),
            MqttError::WillFlagsWithoutWill
        );
        assert_eq!(
            refused(4, 0b0100_0010, &[0, 0, 0, 1, b'p']),
            MqttError::PasswordWithoutUsername
        );
        // 5.0 allows a password alone.
        let packets = decode_all(
            &mut Decoder::default(),
            &connect_bytes(b"MQTT", 5, 0b0100_0010, &[0, 0, 0, 0, 1, b'p']),
        )
        .expect("valid");
        let [Packet::Connect(c)] = &packets[..] else {
            panic!("{packets:?}");
        };
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (None, Some(&b"p"[..]))
        );
        // A will topic is a topic name.
        assert!(matches!(
            refused(4, 0b0000_0110, &[0, 0, 0, 1, b'#', 0, 0]),
            MqttError::InvalidTopicName { .. }
        ));
        // The payload ends before the user name the flags announce.
        assert_eq!(
            refused(4, 0b1000_0010, &[0, 0]),
            MqttError::Truncated(PacketType::Connect)
        );
        assert_eq!(
            refused(4, 0b0000_0010, &[0, 0, 9]),
            MqttError::TrailingBytes(PacketType::Connect)
        );
    }

    #[test]
    fn the_version_is_learnt_from_connect_even_one_refused_later() {
        let mut d = Decoder::default();
        assert_eq!(d.version(), Version::V3_1_1);
        // A 5.0 CONNECT with Topic Alias (0x23), which CONNECT may not carry.
        let bytes = connect_bytes(b"MQTT", 5, 0b10, &[3, 0x23, 0, 1, 0, 0]);
        let err = decode_all(&mut d, &bytes).expect_err("malformed");
        assert_eq!(
            err,
            MqttError::PropertyNotAllowed {
                packet: PacketType::Connect,
                property: PropertyId::TopicAlias
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
        assert_eq!(d.version(), Version::V5);
        let mut d = Decoder::default();
        let bytes = connect_bytes(b"MQIsdp", 3, 0b10, &[0, 1, b'c']);
        assert!(decode_all(&mut d, &bytes).is_ok());
        assert_eq!(d.version(), Version::V3_1);
    }

    #[test]
    fn a_duplicate_property_is_a_protocol_error() {
        // PUBLISH "a", properties: Content Type "x" twice.
        let bytes = [
            0x30, 0x0C, 0, 1, b'a', 8, 0x03, 0, 1, b'x', 0x03, 0, 1, b'x',
        ];
        let err = refusal(Version::V5, &bytes);
        assert_eq!(err, MqttError::DuplicateProperty(PropertyId::ContentType));
        assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
    }

    #[test]
    fn acknowledgements_carry_only_their_codes_and_nothing_more_before_5() {
        assert_eq!(
            refusal(Version::V5, &[0x40, 0x03, 0, 1, 0x92]),
            MqttError::InvalidReasonCode {
                packet: PacketType::PubAck,
                code: 0x92
            }
        );
        assert_eq!(
            refusal(Version::V5, &[0xE0, 0x01, 0x01]),
            MqttError::InvalidReasonCode {
                packet: PacketType::Disconnect,
                code: 0x01
            }
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x40, 0x03, 0, 1, 0x00]),
            MqttError::TrailingBytes(PacketType::PubAck)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0xE0, 0x01, 0x00]),
            MqttError::TrailingBytes(PacketType::Disconnect)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0xC0, 0x01, 0x00]),
            MqttError::TrailingBytes(PacketType::PingReq)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x90, 0x03, 0, 1, 0x03]),
            MqttError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code: 0x03
            }
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x90, 0x02, 0, 1]),
            MqttError::NoReasonCodes(PacketType::SubAck)
        );
        assert_eq!(
            refusal(Version::V5, &[0xB0, 0x03, 0, 1, 0]),
            MqttError::NoReasonCodes(PacketType::UnsubAck)
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x20, 0x02, 0x00, 0x06]),
            MqttError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: 0x06
            }
        );
        assert_eq!(
            refusal(Version::V3_1_1, &[0x20, 0x02, 0x02, 0x00]),
            MqttError::ConnAckReservedFlags(0x02)
        );
        // 3.1 has no session present flag.
        assert_eq!(
            decode_all(&mut decoder(Version::V3_1), &[0x20, 0x02, 0x01, 0x05]),
            Ok(vec![Packet::ConnAck(ConnAck {
                reason_code: ReasonCode::NOT_AUTHORIZED,
                ..ConnAck::default()
            })])
        );
    }

    #[test]
    fn short_forms_of_5_acknowledgements_read_as_success_without_properties() {
        let packets = decode_all(
            &mut decoder(Version::V5),
            &[
                0x40, 0x02, 0, 1, 0x50, 0x03, 0, 2, 0x10, 0xE0, 0x00, 0xE0, 0x01, 0x04,
            ],
        )
        .expect("valid");
        assert_eq!(
            packets,
            [
                Packet::PubAck(PubResponse {
                    packet_id: 1,
                    ..PubResponse::default()
                }),
                Packet::PubRec(PubResponse {
                    packet_id: 2,
                    reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                    ..PubResponse::default()
                }),
                Packet::Disconnect(Disconnect::default()),
                Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                    ..Disconnect::default()
                }),
            ]
        );
    }

    /// Feeds `bytes` in chunks of the given sizes (cycled), decoding after each, until an error;
    /// checks what is buffered never exceeds a fixed header plus the maximum packet size.
    fn feed(d: &mut Decoder, bytes: &[u8], chunks: &[usize]) -> Result<Vec<Packet>, MqttError> {
        let max = usize::try_from(d.max_packet_size()).expect("fits");
        let mut buf = BytesMut::new();
        let mut packets = Vec::new();
        let mut at = 0;
        for &size in chunks.iter().cycle() {
            if at >= bytes.len() {
                break;
            }
            let end = (at + size.max(1)).min(bytes.len());
            buf.extend_from_slice(&bytes[at..end]);
            at = end;
            while let Some(packet) = d.decode(&mut buf)? {
                packets.push(packet);
            }
            assert!(buf.len() < 5 + max, "{} bytes buffered", buf.len());
        }
        Ok(packets)
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_chunks_never_panic_and_stay_within_the_maximum(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            chunks in proptest::collection::vec(1usize..40, 1..8),
            v5 in any::<bool>(),
        ) {
            let mut d = Decoder::new(64);
            if v5 {
                d.set_version(Version::V5);
            }
            let _ = feed(&mut d, &bytes, &chunks);
        }

        #[test]
        fn damaged_packets_never_panic_and_stay_within_the_maximum(
            (version, packets) in conversation(),
            damage in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
            chunks in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let mut bytes = encoded(&packets, version).to_vec();
            for (at, byte) in damage {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let mut d = Decoder::new(256);
            let _ = feed(&mut d, &bytes, &chunks);
        }

        #[test]
        fn what_is_encoded_decodes_back_whatever_the_chunks(
            (version, packets) in conversation(),
            chunks in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let bytes = encoded(&packets, version);
            // A server's decoder: it learns the version from the CONNECT.
            let mut d = Decoder::new(MAX_PACKET_SIZE_AUTHENTICATED);
            prop_assert_eq!(feed(&mut d, &bytes, &chunks), Ok(packets));
            prop_assert_eq!(d.version(), version);
        }

    }
}
