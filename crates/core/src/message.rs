//! A published message as the broker stores it: immutable once routed, shared by every queue it
//! was routed to (an `Arc`), with the body as shared `Bytes` so it is never copied.

use bytes::Bytes;
use warren_wire::{BasicProperties, ShortStr};

/// A message as published: where it was published to, its properties and its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub properties: BasicProperties,
    pub body: Bytes,
}

impl Message {
    /// Bytes counted against `x-max-length-bytes` (the body, as RabbitMQ counts).
    pub(crate) fn body_len(&self) -> u64 {
        self.body.len() as u64
    }

    /// The per-message TTL from the `expiration` property, in milliseconds, if valid.
    pub(crate) fn expiration_ms(&self) -> Option<u64> {
        self.properties
            .expiration
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok())
    }
}
