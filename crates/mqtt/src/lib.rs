//! MQTT 3.1, 3.1.1 (<https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html>) and
//! 5.0 (<https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html>) as RabbitMQ's MQTT
//! plugin serves them, knowing nothing of sockets, time or the broker: control packets decoded
//! from and encoded to bytes, and the mapping between MQTT topics and the routing keys of
//! `amq.topic`. The session built on it turns one MQTT client into one AMQP connection; the
//! server crate moves the bytes.
//!
//! A packet is a fixed header (type, flags, remaining length as a variable byte integer) and
//! that many bytes of variable header and payload. [`Decoder`] refuses a remaining length above
//! its maximum packet size as soon as it reads it (RabbitMQ's
//! `mqtt.max_packet_size_unauthenticated` until CONNECT succeeded,
//! `mqtt.max_packet_size_authenticated` after), so a client costs bounded memory; it learns
//! the protocol version from the CONNECT it reads. Every refusal is an [`MqttError`] that names
//! the MQTT 5 reason code (and for an unsupported version the 3.1.1 connect return code) the
//! session answers with before closing.
//!
//! Left to the session, because they need its state: packet identifiers in use, topic alias
//! resolution and maxima, receive maximum, the client's maximum packet size, the client id
//! rules of 3.1 (1 to 23 characters) and 3.1.1 (empty only with a clean session), a subscription
//! identifier in a PUBLISH from a client, a second CONNECT, extended authentication, whether
//! a payload said to be UTF-8 is (the specification lets the receiver choose).
//!
//! [`topic`] validates topic names and filters, matches them, and maps them to `amq.topic`'s
//! routing and binding keys as RabbitMQ maps them: `/` is `.`, `+` is `*`, `#` stays `#`.

mod data;
mod decoder;
mod encoder;
mod error;
mod packet;
mod properties;
mod reason_code;
pub mod session;
pub mod topic;
mod version;

#[cfg(test)]
mod arbitrary;

pub use decoder::{Decoder, MAX_PACKET_SIZE_AUTHENTICATED, MAX_PACKET_SIZE_UNAUTHENTICATED};
pub use encoder::{encode, EncodeError};
pub use error::MqttError;
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, PubResponse, Publish, QoS,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};
pub use properties::{Properties, PropertyId};
pub use reason_code::ReasonCode;
pub use session::{Config, Retained, RetainedStore, Session};
pub use version::Version;
