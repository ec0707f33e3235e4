//! Why bytes are not an MQTT packet the decoder accepts, and which reason code (5.0) or connect
//! return code (3.1, 3.1.1) tells the client so.

use thiserror::Error;

use crate::packet::PacketType;
use crate::properties::PropertyId;
use crate::reason_code::ReasonCode;
use crate::topic::TopicError;

/// Why the decoder refused what a peer sent. Every refusal ends the connection: the session
/// answers a CONNECT with a CONNACK and anything later, in 5.0, with a DISCONNECT carrying
/// [`MqttError::reason_code`] (3.1 and 3.1.1 have no such codes: the connection is just
/// closed, except for an unsupported protocol version, see
/// [`MqttError::v3_connect_return_code`]).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MqttError {
    /// The remaining length announced is above the decoder's maximum packet size (RabbitMQ's
    /// `mqtt.max_packet_size_unauthenticated` / `_authenticated`): refused before the packet
    /// is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The remaining length announced.
        size: u32,
        /// The limit it exceeds.
        max: u32,
    },
    /// A variable byte integer (remaining length, property length, subscription identifier)
    /// longer than four bytes, or longer than its value needs.
    #[error("malformed variable byte integer")]
    MalformedVariableByteInteger,
    /// Packet type 0, or 15 (AUTH) before MQTT 5.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// Fixed header flags other than the packet type requires (0b0010 for PUBREL, SUBSCRIBE
    /// and UNSUBSCRIBE, 0 for others; for PUBLISH, DUP with QoS 0).
    #[error("{packet} with fixed header flags {flags:#06b}")]
    InvalidFlags {
        /// The packet's type.
        packet: PacketType,
        /// Its flags, the low nibble of its first byte.
        flags: u8,
    },
    /// QoS 3 in a PUBLISH, a will or a subscription.
    #[error("{0} with QoS 3")]
    InvalidQos(PacketType),
    /// The remaining length ended before a field did.
    #[error("{0} ends before its last field")]
    Truncated(PacketType),
    /// Bytes left after the last field the packet has.
    #[error("{0} has bytes after its last field")]
    TrailingBytes(PacketType),
    /// A string that is not well-formed UTF-8.
    #[error("{0} holds a string that is not UTF-8")]
    InvalidUtf8(PacketType),
    /// A string holding U+0000.
    #[error("{0} holds a string with U+0000")]
    NulCharacter(PacketType),
    /// A CONNECT's protocol name and level are not MQIsdp/3, MQTT/4 or MQTT/5.
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocolVersion {
        /// The protocol name (lossily decoded).
        name: String,
        /// The protocol level.
        level: u8,
    },
    /// A CONNECT with the reserved bit of its connect flags set ([MQTT-3.1.2-3]).
    #[error("CONNECT with the reserved connect flag set")]
    ConnectReservedFlag,
    /// A CONNECT without a will but with will QoS or will retain set ([MQTT-3.1.2-11],
    /// [MQTT-3.1.2-13], [MQTT-3.1.2-15]).
    #[error("CONNECT without a will sets will QoS or will retain")]
    WillFlagsWithoutWill,
    /// A 3.1 or 3.1.1 CONNECT with a password and no user name ([MQTT-3.1.2-22]).
    #[error("CONNECT with a password but no user name")]
    PasswordWithoutUsername,
    /// A CONNACK with reserved acknowledge flags set ([MQTT-3.2.2-1]).
    #[error("CONNACK with reserved acknowledge flags {0:#04x}")]
    ConnAckReservedFlags(u8),
    /// Packet identifier 0 ([MQTT-2.3.1-1]).
    #[error("{0} with packet identifier 0")]
    ZeroPacketId(PacketType),
    /// A PUBLISH's or will's topic name is not one.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopicName {
        /// The topic name.
        topic: String,
        /// What is wrong with it.
        reason: TopicError,
    },
    /// A SUBSCRIBE's or UNSUBSCRIBE's topic filter is not one.
    #[error("invalid topic filter {filter:?}: {reason}")]
    InvalidTopicFilter {
        /// The topic filter.
        filter: String,
        /// What is wrong with it.
        reason: TopicError,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters ([MQTT-3.8.3-3], [MQTT-3.10.3-2]).
    #[error("{0} without any topic filter")]
    NoTopicFilters(PacketType),
    /// A SUBACK or UNSUBACK (5.0) without reason codes.
    #[error("{0} without any reason code")]
    NoReasonCodes(PacketType),
    /// Subscription options with reserved bits set ([MQTT-3.8.3-4], 5.0 [MQTT-3.8.3-5]).
    #[error("subscription options {0:#04x} with reserved bits set")]
    SubscriptionOptionsReserved(u8),
    /// Retain handling 3 (5.0 §3.8.3.1: "It is a Protocol Error to send a Retain Handling
    /// value of 3").
    #[error("subscription options with retain handling 3")]
    InvalidRetainHandling,
    /// No Local on a shared subscription ([MQTT-3.8.3-4]).
    #[error("no local on shared subscription {0:?}")]
    NoLocalOnSharedSubscription(String),
    /// A property identifier the specification does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property the packet (or a will) may not carry.
    #[error("{packet} may not carry property {property}")]
    PropertyNotAllowed {
        /// The packet it was read in (CONNECT for a will's).
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// A property other than user property and subscription identifier (in PUBLISH) given
    /// twice.
    #[error("property {0} given more than once")]
    DuplicateProperty(PropertyId),
    /// A property value the specification forbids (0 receive maximum, a byte flag other than
    /// 0 or 1, a response topic that is no topic name, …).
    #[error("property {0} with a value the specification forbids")]
    InvalidPropertyValue(PropertyId),
    /// Topic alias 0 ([MQTT-3.3.2-8]).
    #[error("topic alias 0")]
    TopicAliasZero,
    /// Authentication data in a CONNECT without an authentication method.
    #[error("authentication data without an authentication method")]
    AuthenticationDataWithoutMethod,
    /// A reason or return code the packet may not carry.
    #[error("{packet} with reason code {code:#04x}, which it may not carry")]
    InvalidReasonCode {
        /// The packet's type.
        packet: PacketType,
        /// The code.
        code: u8,
    },
}

impl MqttError {
    /// The MQTT 5 reason code that reports this refusal, for the CONNACK (while connecting) or
    /// the DISCONNECT the session sends before closing: 0x95 Packet too large, 0x84
    /// Unsupported Protocol Version, 0x90 Topic Name invalid, 0x8F Topic Filter invalid, 0x94
    /// Topic Alias invalid, 0x82 Protocol Error for a packet that parses but breaks a rule of
    /// the protocol, and 0x81 Malformed Packet for any other.
    pub fn reason_code(&self) -> ReasonCode {
        use MqttError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocolVersion { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            InvalidTopicName {
                reason: TopicError::Empty,
                ..
            } => ReasonCode::PROTOCOL_ERROR,
            InvalidTopicName { .. } => ReasonCode::TOPIC_NAME_INVALID,
            InvalidTopicFilter { .. } => ReasonCode::TOPIC_FILTER_INVALID,
            TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            ZeroPacketId(_)
            | NoTopicFilters(_)
            | NoReasonCodes(_)
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription(_)
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | AuthenticationDataWithoutMethod => ReasonCode::PROTOCOL_ERROR,
            MalformedVariableByteInteger
            | ReservedPacketType(_)
            | InvalidFlags { .. }
            | InvalidQos(_)
            | Truncated(_)
            | TrailingBytes(_)
            | InvalidUtf8(_)
            | NulCharacter(_)
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | PasswordWithoutUsername
            | ConnAckReservedFlags(_)
            | SubscriptionOptionsReserved(_)
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | InvalidReasonCode { .. } => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// The 3.1/3.1.1 connect return code a CONNACK answers this refusal of a CONNECT with:
    /// 0x01 (unacceptable protocol version) for an unsupported protocol version, `None` for
    /// any other (3.1.1 §4.8: the server closes the connection without a CONNACK).
    pub fn v3_connect_return_code(&self) -> Option<u8> {
        match self {
            MqttError::UnsupportedProtocolVersion { .. } => {
                Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION.to_v3_connack())
            }
            _ => None,
        }
    }
}
