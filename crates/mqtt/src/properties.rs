//! MQTT 5 properties (spec §2.2.2): every property identifier of the specification, which
//! packets may carry which, the values each may take, and how a property block is read and
//! written. Before 5.0 no packet has properties, and nothing here is used.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::data::{put_binary, put_string, put_variable_byte_integer, Reader};
use crate::encoder::EncodeError;
use crate::error::MqttError;
use crate::packet::QoS;
use crate::topic::validate_topic_name;

/// A property identifier (the byte before each property's value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertyId {
    /// 0x01, byte: the payload is unspecified bytes (0) or UTF-8 (1).
    PayloadFormatIndicator = 0x01,
    /// 0x02, four byte integer: the message's lifetime in seconds.
    MessageExpiryInterval = 0x02,
    /// 0x03, string: the payload's content type.
    ContentType = 0x03,
    /// 0x08, string: the topic name of the response to a request.
    ResponseTopic = 0x08,
    /// 0x09, binary: ties a response to its request.
    CorrelationData = 0x09,
    /// 0x0B, variable byte integer: a subscription's identifier.
    SubscriptionIdentifier = 0x0B,
    /// 0x11, four byte integer: how long the session outlives the connection, in seconds.
    SessionExpiryInterval = 0x11,
    /// 0x12, string: the client id the server chose for an empty one.
    AssignedClientIdentifier = 0x12,
    /// 0x13, two byte integer: the keep alive the server imposes.
    ServerKeepAlive = 0x13,
    /// 0x15, string: the extended authentication method.
    AuthenticationMethod = 0x15,
    /// 0x16, binary: extended authentication data.
    AuthenticationData = 0x16,
    /// 0x17, byte: whether failures may carry a reason string and user properties.
    RequestProblemInformation = 0x17,
    /// 0x18, four byte integer: how long after the connection ends the will is published.
    WillDelayInterval = 0x18,
    /// 0x19, byte: whether the client asks for response information in CONNACK.
    RequestResponseInformation = 0x19,
    /// 0x1A, string: the basis of response topics.
    ResponseInformation = 0x1A,
    /// 0x1C, string: another server for the client to use.
    ServerReference = 0x1C,
    /// 0x1F, string: a human-readable reason.
    ReasonString = 0x1F,
    /// 0x21, two byte integer: how many QoS 1 and 2 publications may be unacknowledged.
    ReceiveMaximum = 0x21,
    /// 0x22, two byte integer: the highest topic alias accepted.
    TopicAliasMaximum = 0x22,
    /// 0x23, two byte integer: a number standing for a topic name.
    TopicAlias = 0x23,
    /// 0x24, byte: the highest QoS the server supports (0 or 1; absent: 2).
    MaximumQos = 0x24,
    /// 0x25, byte: whether the server supports retained messages.
    RetainAvailable = 0x25,
    /// 0x26, string pair: an application's name and value, repeatable.
    UserProperty = 0x26,
    /// 0x27, four byte integer: the largest packet accepted.
    MaximumPacketSize = 0x27,
    /// 0x28, byte: whether the server supports wildcard subscriptions.
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29, byte: whether the server supports subscription identifiers.
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A, byte: whether the server supports shared subscriptions.
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// The property an identifier byte names; `None` for any byte the specification does not
    /// define.
    pub fn from_u8(id: u8) -> Option<PropertyId> {
        use PropertyId::*;
        Some(match id {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQos,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// The specification's name of the property.
    pub fn name(self) -> &'static str {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator => "Payload Format Indicator",
            MessageExpiryInterval => "Message Expiry Interval",
            ContentType => "Content Type",
            ResponseTopic => "Response Topic",
            CorrelationData => "Correlation Data",
            SubscriptionIdentifier => "Subscription Identifier",
            SessionExpiryInterval => "Session Expiry Interval",
            AssignedClientIdentifier => "Assigned Client Identifier",
            ServerKeepAlive => "Server Keep Alive",
            AuthenticationMethod => "Authentication Method",
            AuthenticationData => "Authentication Data",
            RequestProblemInformation => "Request Problem Information",
            WillDelayInterval => "Will Delay Interval",
            RequestResponseInformation => "Request Response Information",
            ResponseInformation => "Response Information",
            ServerReference => "Server Reference",
            ReasonString => "Reason String",
            ReceiveMaximum => "Receive Maximum",
            TopicAliasMaximum => "Topic Alias Maximum",
            TopicAlias => "Topic Alias",
            MaximumQos => "Maximum QoS",
            RetainAvailable => "Retain Available",
            UserProperty => "User Property",
            MaximumPacketSize => "Maximum Packet Size",
            WildcardSubscriptionAvailable => "Wildcard Subscription Available",
            SubscriptionIdentifierAvailable => "Subscription Identifier Available",
            SharedSubscriptionAvailable => "Shared Subscription Available",
        }
    }

    /// Whether a property block of `context` may carry this property (the table of §2.2.2.2).
    pub(crate) fn allowed_in(self, context: PropertiesOf) -> bool {
        use PropertiesOf as C;
        use PropertyId::*;
        match self {
            UserProperty => true,
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => matches!(context, C::Publish | C::Will),
            SubscriptionIdentifier => matches!(context, C::Publish | C::Subscribe),
            SessionExpiryInterval => matches!(context, C::Connect | C::ConnAck | C::Disconnect),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQos
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => context == C::ConnAck,
            AuthenticationMethod | AuthenticationData => {
                matches!(context, C::Connect | C::ConnAck | C::Auth)
            }
            RequestProblemInformation | RequestResponseInformation => context == C::Connect,
            WillDelayInterval => context == C::Will,
            ServerReference => matches!(context, C::ConnAck | C::Disconnect),
            ReasonString => !matches!(
                context,
                C::Connect | C::Publish | C::Will | C::Subscribe | C::Unsubscribe
            ),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(context, C::Connect | C::ConnAck)
            }
            TopicAlias => context == C::Publish,
        }
    }
}

impl fmt::Display for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), *self as u8)
    }
}

/// Which property block is read: a packet's, or a CONNECT's will properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PropertiesOf {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// The MQTT 5 properties of one packet (or of a will). Every property is optional; user
/// properties and subscription identifiers may repeat and keep their order. Which packets may
/// carry which is checked on reading, not on writing: the encoder writes what is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    /// Payload Format Indicator: `Some(true)` when the payload is UTF-8 character data,
    /// `Some(false)` when unspecified bytes (PUBLISH, will).
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval in seconds (PUBLISH, will).
    pub message_expiry_interval: Option<u32>,
    /// Content Type (PUBLISH, will).
    pub content_type: Option<String>,
    /// Response Topic, a topic name (PUBLISH, will).
    pub response_topic: Option<String>,
    /// Correlation Data (PUBLISH, will).
    pub correlation_data: Option<Bytes>,
    /// Subscription Identifiers, 1 to 268 435 455: those of every matching subscription in a
    /// PUBLISH to a client, at most one in a SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    /// Session Expiry Interval in seconds (CONNECT, CONNACK, DISCONNECT).
    pub session_expiry_interval: Option<u32>,
    /// Assigned Client Identifier (CONNACK).
    pub assigned_client_identifier: Option<String>,
    /// Server Keep Alive in seconds (CONNACK).
    pub server_keep_alive: Option<u16>,
    /// Authentication Method (CONNECT, CONNACK, AUTH).
    pub authentication_method: Option<String>,
    /// Authentication Data (CONNECT, CONNACK, AUTH).
    pub authentication_data: Option<Bytes>,
    /// Request Problem Information (CONNECT).
    pub request_problem_information: Option<bool>,
    /// Will Delay Interval in seconds (will).
    pub will_delay_interval: Option<u32>,
    /// Request Response Information (CONNECT).
    pub request_response_information: Option<bool>,
    /// Response Information (CONNACK).
    pub response_information: Option<String>,
    /// Server Reference (CONNACK, DISCONNECT).
    pub server_reference: Option<String>,
    /// Reason String (every acknowledgement, DISCONNECT, AUTH).
    pub reason_string: Option<String>,
    /// Receive Maximum, not 0 (CONNECT, CONNACK).
    pub receive_maximum: Option<u16>,
    /// Topic Alias Maximum (CONNECT, CONNACK).
    pub topic_alias_maximum: Option<u16>,
    /// Topic Alias, not 0 (PUBLISH).
    pub topic_alias: Option<u16>,
    /// Maximum QoS, 0 or 1 (CONNACK).
    pub maximum_qos: Option<QoS>,
    /// Retain Available (CONNACK).
    pub retain_available: Option<bool>,
    /// User Properties, name and value, in order; a name may repeat (every packet).
    pub user_properties: Vec<(String, String)>,
    /// Maximum Packet Size in bytes, not 0 (CONNECT, CONNACK).
    pub maximum_packet_size: Option<u32>,
    /// Wildcard Subscription Available (CONNACK).
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription Identifier Available (CONNACK).
    pub subscription_identifier_available: Option<bool>,
    /// Shared Subscription Available (CONNACK).
    pub shared_subscription_available: Option<bool>,
}

/// Sets a property read once, refusing it the second time: "It is a Protocol Error to include
/// … more than once", says 5.0 of every property but user property and subscription identifier.
fn set_once<T>(slot: &mut Option<T>, id: PropertyId, value: T) -> Result<(), MqttError> {
    if slot.is_some() {
        return Err(MqttError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads a byte that must be 0 or 1.
fn read_bool(r: &mut Reader, id: PropertyId) -> Result<bool, MqttError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(MqttError::InvalidPropertyValue(id)),
    }
}

/// Reads a two byte integer that must not be 0.
fn read_nonzero_u16(r: &mut Reader, id: PropertyId) -> Result<u16, MqttError> {
    match r.u16()? {
        0 => Err(MqttError::InvalidPropertyValue(id)),
        n => Ok(n),
    }
}

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Reads a property block (its variable byte integer length, then the properties) of
    /// `context`. A property the block may not carry, or an identifier the specification does
    /// not define, is malformed; a property repeated that may not repeat, or a value the
    /// specification forbids, is a protocol error.
    pub(crate) fn read(r: &mut Reader, context: PropertiesOf) -> Result<Properties, MqttError> {
        use PropertyId::*;
        let len = r.variable_byte_integer()?;
        let len = usize::try_from(len).map_err(|_| MqttError::Truncated(r.packet()))?;
        let mut block = Reader::new(r.take(len)?, r.packet());
        let mut p = Properties::default();
        while block.remaining() > 0 {
            let byte = block.u8()?;
            let Some(id) = PropertyId::from_u8(byte) else {
                return Err(MqttError::UnknownProperty(byte));
            };
            if !id.allowed_in(context) {
                return Err(MqttError::PropertyNotAllowed {
                    packet: r.packet(),
                    property: id,
                });
            }
            let b = &mut block;
            match id {
                PayloadFormatIndicator => {
                    let v = read_bool(b, id)?;
                    set_once(&mut p.payload_format_indicator, id, v)?;
                }
                MessageExpiryInterval => set_once(&mut p.message_expiry_interval, id, b.u32()?)?,
                ContentType => set_once(&mut p.content_type, id, b.string()?)?,
                ResponseTopic => {
                    let topic = b.string()?;
                    if validate_topic_name(&topic).is_err() {
                        return Err(MqttError::InvalidPropertyValue(id));
                    }
                    set_once(&mut p.response_topic, id, topic)?;
                }
                CorrelationData => set_once(&mut p.correlation_data, id, b.binary()?)?,
                SubscriptionIdentifier => {
                    let n = b.variable_byte_integer()?;
                    if n == 0 {
                        return Err(MqttError::InvalidPropertyValue(id));
                    }
                    // Only a PUBLISH may carry several (5.0 §3.8.2.1.2).
                    if context != PropertiesOf::Publish && !p.subscription_identifiers.is_empty() {
                        return Err(MqttError::DuplicateProperty(id));
                    }
                    p.subscription_identifiers.push(n);
                }
                SessionExpiryInterval => set_once(&mut p.session_expiry_interval, id, b.u32()?)?,
                AssignedClientIdentifier => {
                    set_once(&mut p.assigned_client_identifier, id, b.string()?)?
                }
                ServerKeepAlive => set_once(&mut p.server_keep_alive, id, b.u16()?)?,
                AuthenticationMethod => set_once(&mut p.authentication_method, id, b.string()?)?,
                AuthenticationData => set_once(&mut p.authentication_data, id, b.binary()?)?,
                RequestProblemInformation => {
                    let v = read_bool(b, id)?;
                    set_once(&mut p.request_problem_information, id, v)?;
                }
                WillDelayInterval => set_once(&mut p.will_delay_interval, id, b.u32()?)?,
                RequestResponseInformation => {
                    let v = read_bool(b, id)?;
                    set_once(&mut p.request_response_information, id, v)?;
                }
                ResponseInformation => set_once(&mut p.response_information, id, b.string()?)?,
                ServerReference => set_once(&mut p.server_reference, id, b.string()?)?,
                ReasonString => set_once(&mut p.reason_string, id, b.string()?)?,
                ReceiveMaximum => {
                    let v = read_nonzero_u16(b, id)?;
                    set_once(&mut p.receive_maximum, id, v)?;
                }
                TopicAliasMaximum => set_once(&mut p.topic_alias_maximum, id, b.u16()?)?,
                TopicAlias => {
                    let v = b.u16()?;
                    if v == 0 {
                        return Err(MqttError::TopicAliasZero);
                    }
                    set_once(&mut p.topic_alias, id, v)?;
                }
                MaximumQos => {
                    let qos = if read_bool(b, id)? {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    };
                    set_once(&mut p.maximum_qos, id, qos)?;
                }
                RetainAvailable => {
                    let v = read_bool(b, id)?;
                    set_once(&mut p.retain_available, id, v)?;
                }
                UserProperty => {
                    let name = b.string()?;
                    let value = b.string()?;
                    p.user_properties.push((name, value));
                }
                MaximumPacketSize => {
                    let v = b.u32()?;
                    if v == 0 {
                        return Err(MqttError::InvalidPropertyValue(id));
                    }
                    set_once(&mut p.maximum_packet_size, id, v)?;
                }
                WildcardSubscriptionAvailable => {
                    let v = read_bool(b, id)?;
                    set_once(&mut p.wildcard_subscription_available, id, v)?;
                }
                SubscriptionIdentifierAvailable => {
                    let v = read_bool(b, id)?;
                    set_once(&mut p.subscription_identifier_available, id, v)?;
                }
                SharedSubscriptionAvailable => {
                    let v = read_bool(b, id)?;
                    set_once(&mut p.shared_subscription_available, id, v)?;
                }
            }
        }
        // 5.0 §3.1.2.11.10: data without a method to read it by.
        if context == PropertiesOf::Connect
            && p.authentication_data.is_some()
            && p.authentication_method.is_none()
        {
            return Err(MqttError::AuthenticationDataWithoutMethod);
        }
        Ok(p)
    }

    /// Appends the property block: its length, then every property set, by identifier, user
    /// properties and subscription identifiers in their order.
    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        use PropertyId::*;
        let mut block = BytesMut::new();
        let b = &mut block;
        if let Some(v) = self.payload_format_indicator {
            b.put_u8(PayloadFormatIndicator as u8);
            b.put_u8(u8::from(v));
        }
        if let Some(v) = self.message_expiry_interval {
            b.put_u8(MessageExpiryInterval as u8);
            b.put_u32(v);
        }
        put_string_property(b, ContentType, self.content_type.as_deref())?;
        put_string_property(b, ResponseTopic, self.response_topic.as_deref())?;
        put_binary_property(b, CorrelationData, self.correlation_data.as_deref())?;
        for &id in &self.subscription_identifiers {
            b.put_u8(SubscriptionIdentifier as u8);
            put_variable_byte_integer(b, id)?;
        }
        if let Some(v) = self.session_expiry_interval {
            b.put_u8(SessionExpiryInterval as u8);
            b.put_u32(v);
        }
        put_string_property(
            b,
            AssignedClientIdentifier,
            self.assigned_client_identifier.as_deref(),
        )?;
        if let Some(v) = self.server_keep_alive {
            b.put_u8(ServerKeepAlive as u8);
            b.put_u16(v);
        }
        put_string_property(
            b,
            AuthenticationMethod,
            self.authentication_method.as_deref(),
        )?;
        put_binary_property(b, AuthenticationData, self.authentication_data.as_deref())?;
        put_bool_property(
            b,
            RequestProblemInformation,
            self.request_problem_information,
        );
        if let Some(v) = self.will_delay_interval {
            b.put_u8(WillDelayInterval as u8);
            b.put_u32(v);
        }
        put_bool_property(
            b,
            RequestResponseInformation,
            self.request_response_information,
        );
        put_string_property(b, ResponseInformation, self.response_information.as_deref())?;
        put_string_property(b, ServerReference, self.server_reference.as_deref())?;
        put_string_property(b, ReasonString, self.reason_string.as_deref())?;
        for (id, value) in [
            (ReceiveMaximum, self.receive_maximum),
            (TopicAliasMaximum, self.topic_alias_maximum),
            (TopicAlias, self.topic_alias),
        ] {
            if let Some(v) = value {
                b.put_u8(id as u8);
                b.put_u16(v);
            }
        }
        if let Some(qos) = self.maximum_qos {
            b.put_u8(MaximumQos as u8);
            b.put_u8(qos.as_u8());
        }
        put_bool_property(b, RetainAvailable, self.retain_available);
        for (name, value) in &self.user_properties {
            b.put_u8(UserProperty as u8);
            put_string(b, name)?;
            put_string(b, value)?;
        }
        if let Some(v) = self.maximum_packet_size {
            b.put_u8(MaximumPacketSize as u8);
            b.put_u32(v);
        }
        put_bool_property(
            b,
            WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        put_bool_property(
            b,
            SubscriptionIdentifierAvailable,
            self.subscription_identifier_available,
        );
        put_bool_property(
            b,
            SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
        let len =
            u32::try_from(block.len()).map_err(|_| EncodeError::PacketTooLarge(block.len()))?;
        put_variable_byte_integer(out, len)
            .map_err(|_| EncodeError::PacketTooLarge(block.len()))?;
        out.extend_from_slice(&block);
        Ok(())
    }
}

fn put_string_property(
    out: &mut BytesMut,
    id: PropertyId,
    value: Option<&str>,
) -> Result<(), EncodeError> {
    if let Some(v) = value {
        out.put_u8(id as u8);
        put_string(out, v)?;
    }
    Ok(())
}

fn put_binary_property(
    out: &mut BytesMut,
    id: PropertyId,
    value: Option<&[u8]>,
) -> Result<(), EncodeError> {
    if let Some(v) = value {
        out.put_u8(id as u8);
        put_binary(out, v)?;
    }
    Ok(())
}

fn put_bool_property(out: &mut BytesMut, id: PropertyId, value: Option<bool>) {
    if let Some(v) = value {
        out.put_u8(id as u8);
        out.put_u8(u8::from(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketType;

    fn read(bytes: &[u8], context: PropertiesOf) -> Result<Properties, MqttError> {
        let mut r = Reader::new(Bytes::copy_from_slice(bytes), PacketType::Publish);
        let p = Properties::read(&mut r, context)?;
        r.finish()?;
        Ok(p)
    }

    fn written(p: &Properties) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.write(&mut out).expect("fits");
        out.to_vec()
    }

    #[test]
    fn every_identifier_is_known_and_named() {
        let mut known = 0;
        for byte in 0..=255u8 {
            if let Some(id) = PropertyId::from_u8(byte) {
                assert_eq!(id as u8, byte);
                assert!(!id.name().is_empty());
                known += 1;
            }
        }
        assert_eq!(known, 27);
    }

    #[test]
    fn user_properties_and_publish_subscription_identifiers_repeat_in_order() {
        let p = Properties {
            user_properties: vec![
                ("b".into(), "1".into()),
                ("a".into(), "2".into()),
                ("b".into(), "3".into()),
            ],
            subscription_identifiers: vec![7, 268_435_455, 1],
            ..Properties::default()
        };
        let bytes = written(&p);
        assert_eq!(read(&bytes, PropertiesOf::Publish), Ok(p));
        // A SUBSCRIBE carries one at most.
        assert_eq!(
            read(&bytes, PropertiesOf::Subscribe),
            Err(MqttError::DuplicateProperty(
                PropertyId::SubscriptionIdentifier
            ))
        );
    }

    #[test]
    fn any_other_property_twice_is_a_protocol_error() {
        // Message Expiry Interval 1, then 2.
        let bytes = [10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2];
        assert_eq!(
            read(&bytes, PropertiesOf::Publish),
            Err(MqttError::DuplicateProperty(
                PropertyId::MessageExpiryInterval
            ))
        );
        let bytes = [4, 0x23, 0, 1, 0x23];
        assert_eq!(
            read(&bytes, PropertiesOf::Publish),
            Err(MqttError::Truncated(PacketType::Publish))
        );
    }

    #[test]
    fn a_property_out_of_place_or_unknown_is_malformed() {
        assert_eq!(
            read(&[3, 0x23, 0, 1], PropertiesOf::Connect),
            Err(MqttError::PropertyNotAllowed {
                packet: PacketType::Publish,
                property: PropertyId::TopicAlias
            })
        );
        assert_eq!(
            read(&[2, 0x18, 0], PropertiesOf::Publish),
            Err(MqttError::PropertyNotAllowed {
                packet: PacketType::Publish,
                property: PropertyId::WillDelayInterval
            })
        );
        assert_eq!(
            read(&[2, 0x04, 0], PropertiesOf::Publish),
            Err(MqttError::UnknownProperty(0x04))
        );
        // The length claims more than there is.
        assert_eq!(
            read(&[5, 0x01, 1], PropertiesOf::Publish),
            Err(MqttError::Truncated(PacketType::Publish))
        );
    }

    #[test]
    fn values_the_specification_forbids_are_protocol_errors() {
        for (bytes, context, err) in [
            (
                &[2, 0x01, 2][..],
                PropertiesOf::Publish,
                MqttError::InvalidPropertyValue(PropertyId::PayloadFormatIndicator),
            ),
            (
                &[3, 0x21, 0, 0],
                PropertiesOf::Connect,
                MqttError::InvalidPropertyValue(PropertyId::ReceiveMaximum),
            ),
            (
                &[5, 0x27, 0, 0, 0, 0],
                PropertiesOf::Connect,
                MqttError::InvalidPropertyValue(PropertyId::MaximumPacketSize),
            ),
            (
                &[2, 0x0B, 0],
                PropertiesOf::Subscribe,
                MqttError::InvalidPropertyValue(PropertyId::SubscriptionIdentifier),
            ),
            (
                &[2, 0x24, 2],
                PropertiesOf::ConnAck,
                MqttError::InvalidPropertyValue(PropertyId::MaximumQos),
            ),
            (
                &[2, 0x17, 7],
                PropertiesOf::Connect,
                MqttError::InvalidPropertyValue(PropertyId::RequestProblemInformation),
            ),
            (
                &[4, 0x08, 0, 1, b'#'],
                PropertiesOf::Will,
                MqttError::InvalidPropertyValue(PropertyId::ResponseTopic),
            ),
            (
                &[3, 0x23, 0, 0],
                PropertiesOf::Publish,
                MqttError::TopicAliasZero,
            ),
            (
                &[3, 0x16, 0, 0],
                PropertiesOf::Connect,
                MqttError::AuthenticationDataWithoutMethod,
            ),
        ] {
            assert_eq!(read(bytes, context), Err(err), "{bytes:?}");
        }
    }

    #[test]
    fn no_properties_is_a_zero_length() {
        assert_eq!(written(&Properties::default()), [0]);
        assert_eq!(read(&[0], PropertiesOf::Auth), Ok(Properties::default()));
        assert!(Properties::default().is_empty());
    }
}
