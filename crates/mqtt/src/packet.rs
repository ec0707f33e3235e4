//! The MQTT control packets as values: one struct per packet, the [`Packet`] enum over them, and
//! the small types their fields use (QoS, subscription options). Reading and writing them is
//! the decoder's and the encoder's; what they mean to a broker is the session's.
//!
//! Fields that only MQTT 5 has (properties, reason codes of acknowledgements, subscription
//! options other than QoS) are empty or default in packets read from an older version, and left
//! out when a packet is written in one.

use std::fmt;

use bytes::Bytes;

use crate::properties::Properties;
use crate::reason_code::ReasonCode;
use crate::version::Version;

/// A control packet's type, the high nibble of its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Client request to connect to the server.
    Connect = 1,
    /// Connect acknowledgement.
    ConnAck = 2,
    /// Publish an application message.
    Publish = 3,
    /// Publish acknowledgement (QoS 1).
    PubAck = 4,
    /// Publish received (QoS 2, first step).
    PubRec = 5,
    /// Publish release (QoS 2, second step).
    PubRel = 6,
    /// Publish complete (QoS 2, third step).
    PubComp = 7,
    /// Subscribe request.
    Subscribe = 8,
    /// Subscribe acknowledgement.
    SubAck = 9,
    /// Unsubscribe request.
    Unsubscribe = 10,
    /// Unsubscribe acknowledgement.
    UnsubAck = 11,
    /// Ping request.
    PingReq = 12,
    /// Ping response.
    PingResp = 13,
    /// Disconnect notification.
    Disconnect = 14,
    /// Authentication exchange (MQTT 5 only; reserved before).
    Auth = 15,
}

impl PacketType {
    /// The packet type a first byte's high nibble names; `None` for 0 (reserved) and above 15.
    pub fn from_u8(n: u8) -> Option<PacketType> {
        Some(match n {
            1 => PacketType::Connect,
            2 => PacketType::ConnAck,
            3 => PacketType::Publish,
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }

    /// The packet's name as the specification writes it (`PUBLISH`).
    pub fn as_str(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::ConnAck => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::PubAck => "PUBACK",
            PacketType::PubRec => "PUBREC",
            PacketType::PubRel => "PUBREL",
            PacketType::PubComp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::SubAck => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::UnsubAck => "UNSUBACK",
            PacketType::PingReq => "PINGREQ",
            PacketType::PingResp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery guarantee: of a PUBLISH, a will, a subscription, or granted in a SUBACK.
/// Ordered, so the QoS a subscriber gets is the `min` of the published and the granted one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: delivered at most once, never acknowledged.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: delivered at least once, acknowledged by PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: delivered exactly once, by PUBREC, PUBREL and PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS a two-bit field holds; `None` for 3, which no packet may carry.
    pub fn from_u8(n: u8) -> Option<QoS> {
        match n {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The QoS as its wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A control packet, either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT, boxed: the largest packet by far, and read once per connection.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK, the answer to a QoS 1 PUBLISH.
    PubAck(PubResponse),
    /// PUBREC, the first answer to a QoS 2 PUBLISH.
    PubRec(PubResponse),
    /// PUBREL, the answer to a PUBREC.
    PubRel(PubResponse),
    /// PUBCOMP, the answer to a PUBREL.
    PubComp(PubResponse),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ: the client is alive and asks whether the server is.
    PingReq,
    /// PINGRESP: the server's answer to PINGREQ.
    PingResp,
    /// DISCONNECT (from the server too, in MQTT 5).
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT: the first packet of a connection, naming the protocol version, the client and its
/// session, credentials and the will.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The version the protocol name and level ask for; a CONNECT is always written in it.
    pub version: Version,
    /// Clean session (3.1, 3.1.1) or clean start (5.0): begin without any state kept for the
    /// client id.
    pub clean_start: bool,
    /// Seconds between two packets from the client before the server may close; 0 disables it.
    pub keep_alive: u16,
    /// The client identifier; may be empty (3.1.1 with clean session, 5.0).
    pub client_id: String,
    /// The message published for the client if it goes away without a DISCONNECT.
    pub will: Option<Will>,
    /// The user name, if the user name flag is set.
    pub username: Option<String>,
    /// The password, if the password flag is set: binary data, not a string.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0).
    pub properties: Properties,
}

/// A CONNECT's will: what the server publishes when the connection ends without a DISCONNECT
/// (or, in 5.0, with reason code 0x04).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Will {
    /// The topic name it is published to.
    pub topic: String,
    /// Its payload, sharing the buffer it was read from.
    pub payload: Bytes,
    /// The QoS it is published with.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
    /// Will properties (5.0): delay interval, expiry, content type, response topic, …
    pub properties: Properties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server kept a session for the client id (always false in 3.1, which has no
    /// such flag).
    pub session_present: bool,
    /// The outcome, as an MQTT 5 reason code in every version: before 5.0 the connect return
    /// code is written from it as RabbitMQ does ([`ReasonCode::to_v3_connack`]) and read back
    /// into it ([`ReasonCode::from_v3_connack`]).
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

/// PUBLISH: an application message, either direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publish {
    /// A retransmission of a PUBLISH sent before (never set with QoS 0).
    pub dup: bool,
    /// The QoS the message is sent with.
    pub qos: QoS,
    /// Whether the message is retained (client to server), or was (server to client).
    pub retain: bool,
    /// The topic name; empty in 5.0 only with a topic alias, which then names the topic.
    pub topic: String,
    /// The packet identifier: present (and not 0) exactly when QoS is 1 or 2.
    pub packet_id: Option<u16>,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
    /// The application message, sharing the buffer it was read from: never copied.
    pub payload: Bytes,
}

/// The body of PUBACK, PUBREC, PUBREL and PUBCOMP, which all answer a packet by its packet
/// identifier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PubResponse {
    /// The packet identifier of the packet answered.
    pub packet_id: u16,
    /// The outcome (5.0; success before).
    pub reason_code: ReasonCode,
    /// Properties (5.0): a reason string and user properties.
    pub properties: Properties,
}

/// SUBSCRIBE: topic filters to subscribe to, each with its options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// The packet identifier the SUBACK answers.
    pub packet_id: u16,
    /// The subscriptions, at least one, in the order the SUBACK answers them.
    pub subscriptions: Vec<Subscription>,
    /// SUBSCRIBE properties (5.0): at most one subscription identifier, user properties.
    pub properties: Properties,
}

impl Subscribe {
    /// The subscription identifier (5.0) the client gave these subscriptions, if any.
    pub fn subscription_identifier(&self) -> Option<u32> {
        self.properties.subscription_identifiers.first().copied()
    }
}

/// One topic filter of a SUBSCRIBE and its options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The topic filter, wildcards allowed (and in 5.0 perhaps `$share/{name}/{filter}`).
    pub filter: String,
    /// How messages matching it are delivered.
    pub options: SubscriptionOptions,
}

/// The options byte of a subscription: its maximum QoS, and from 5.0 on three more options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// The highest QoS the client accepts messages with.
    pub qos: QoS,
    /// 5.0: never deliver to this connection the messages it published itself.
    pub no_local: bool,
    /// 5.0: keep the retain flag of forwarded messages as they were published.
    pub retain_as_published: bool,
    /// 5.0: when to send retained messages on subscribing.
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent for a new subscription (5.0 subscription option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe (the only behaviour before 5.0).
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist already.
    SendAtNewSubscribe = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

impl RetainHandling {
    /// The retain handling a two-bit field holds; `None` for 3, a protocol error.
    pub fn from_u8(n: u8) -> Option<RetainHandling> {
        match n {
            0 => Some(RetainHandling::SendAtSubscribe),
            1 => Some(RetainHandling::SendAtNewSubscribe),
            2 => Some(RetainHandling::DoNotSend),
            _ => None,
        }
    }
}

/// SUBACK: the answer to a SUBSCRIBE, one code per subscription in its order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE answered.
    pub packet_id: u16,
    /// Granted QoS 0, 1, 2 or a failure, per subscription. Before 5.0 every failure is written
    /// 0x80 (3.1.1) or granted QoS 0 (3.1, which has no failure code; as RabbitMQ).
    pub reason_codes: Vec<ReasonCode>,
    /// SUBACK properties (5.0).
    pub properties: Properties,
}

/// UNSUBSCRIBE: topic filters to unsubscribe from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The packet identifier the UNSUBACK answers.
    pub packet_id: u16,
    /// The topic filters, at least one, exactly as they were subscribed.
    pub filters: Vec<String>,
    /// UNSUBSCRIBE properties (5.0): user properties.
    pub properties: Properties,
}

/// UNSUBACK: the answer to an UNSUBSCRIBE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnsubAck {
    /// The packet identifier of the UNSUBSCRIBE answered.
    pub packet_id: u16,
    /// One code per topic filter (5.0); empty before, where UNSUBACK has no payload.
    pub reason_codes: Vec<ReasonCode>,
    /// UNSUBACK properties (5.0).
    pub properties: Properties,
}

/// DISCONNECT: the end of a connection, from the client or (5.0) the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// Why (5.0; normal disconnection before).
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0).
    pub properties: Properties,
}

/// AUTH (5.0): a step of an extended authentication exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// Success, continue authentication or re-authenticate.
    pub reason_code: ReasonCode,
    /// AUTH properties: authentication method and data, reason string, user properties.
    pub properties: Properties,
}
