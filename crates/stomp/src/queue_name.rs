//! The names and arguments of the queues a STOMP session declares, as RabbitMQ's STOMP plugin
//! makes them, so that a client that moves from RabbitMQ (or whose definitions were imported
//! from it) finds its durable subscription's queue under the same name.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use md5::{Digest, Md5};
use warren_wire::{FieldTable, FieldValue};

use crate::Frame;

/// The queue of durable subscription `id` with binding key `key`: `stomp-subscription-` and
/// the unpadded URL-safe base64 of the MD5 of Erlang's `term_to_binary({Key, Id})` with both
/// as strings — RabbitMQ's name, the same on every connection and every broker.
pub(crate) fn durable_subscription(key: &str, id: &str) -> String {
    let mut term = vec![131, 104, 2];
    erlang_string(&mut term, key.as_bytes());
    erlang_string(&mut term, id.as_bytes());
    let digest = Md5::digest(&term);
    format!("stomp-subscription-{}", URL_SAFE_NO_PAD.encode(digest))
}

/// Erlang's external term format of a string (a list of bytes): `NIL_EXT` when empty,
/// `STRING_EXT` up to 65 535 bytes, else a `LIST_EXT` of `SMALL_INTEGER_EXT`s.
fn erlang_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.is_empty() {
        out.push(106);
    } else if let Ok(len) = u16::try_from(s.len()) {
        out.push(107);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s);
    } else {
        out.push(108);
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        for &b in s {
            out.extend_from_slice(&[97, b]);
        }
        out.push(106);
    }
}

/// `stomp-subscription-` and 16 random bytes (unpadded URL-safe base64): the queue of a
/// subscription that is not durable.
pub(crate) fn random_subscription(random: [u8; 16]) -> String {
    format!("stomp-subscription-{}", URL_SAFE_NO_PAD.encode(random))
}

/// A session's stream of random bytes (SplitMix64 from the seed the caller gives the session):
/// for queue names only, which must not collide, not resist guessing.
#[derive(Clone, Debug)]
pub(crate) struct NameSource(u64);

impl NameSource {
    pub(crate) fn new(seed: u64) -> NameSource {
        NameSource(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn bytes(&mut self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        out
    }
}

/// Queue arguments from a SEND's or SUBSCRIBE's headers: the ones RabbitMQ's STOMP plugin
/// takes (other `x-` headers are not queue arguments), numbers as longs.
pub(crate) fn queue_arguments(frame: &Frame) -> FieldTable {
    const LONGS: &[&str] = &[
        "x-expires",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-priority",
        "x-message-ttl",
    ];
    const STRINGS: &[&str] = &[
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-queue-type",
    ];
    let mut args = FieldTable::default();
    for (name, value) in &frame.headers {
        let name = name.as_str();
        if args.get(name).is_some() {
            continue;
        }
        if LONGS.contains(&name) {
            if let Ok(n) = value.trim().parse::<i64>() {
                args.insert(name, FieldValue::I64(n));
            }
        } else if STRINGS.contains(&name) {
            args.insert(name, FieldValue::LongStr(value.as_str().into()));
        }
    }
    args
}

/// Consumer arguments from a SUBSCRIBE's headers: `x-stream-offset` (a number, or a name such
/// as `first`) and `x-priority`.
pub(crate) fn consumer_arguments(frame: &Frame) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(offset) = frame.header("x-stream-offset") {
        let value = match offset.trim().parse::<i64>() {
            Ok(n) => FieldValue::I64(n),
            Err(_) => FieldValue::LongStr(offset.into()),
        };
        args.insert("x-stream-offset", value);
    }
    if let Some(priority) = frame.header("x-priority") {
        if let Ok(n) = priority.trim().parse::<i64>() {
            args.insert("x-priority", FieldValue::I64(n));
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    #[test]
    fn a_durable_subscription_has_rabbitmq_s_name() {
        // Observed from RabbitMQ 3.10.8: SUBSCRIBE /topic/dt-4be551, id c, durable:true.
        assert_eq!(
            durable_subscription("dt-4be551", "c"),
            "stomp-subscription-puhv7MLnh4kSv6Sq7wrsnw"
        );
        assert_ne!(durable_subscription("", "c"), durable_subscription("c", ""));
    }

    #[test]
    fn random_names_differ() {
        let mut names = NameSource::new(7);
        let a = random_subscription(names.bytes());
        let b = random_subscription(names.bytes());
        assert_ne!(a, b);
        assert_eq!(a.len(), "stomp-subscription-".len() + 22);
    }

    #[test]
    fn only_rabbitmq_s_queue_arguments_are_taken_typed() {
        let frame = Frame::new(Command::Subscribe)
            .with_header("x-max-length", "10")
            .with_header("x-queue-type", "quorum")
            .with_header("x-overflow", "reject-publish")
            .with_header("x-max-length", "11");
        let mut expected = FieldTable::default();
        expected.insert("x-max-length", FieldValue::I64(10));
        expected.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
        assert_eq!(queue_arguments(&frame), expected);
    }
}
