//! The log encoding of a [`Command`]: compact, explicit and versioned, so logs and snapshots
//! written today decode after an upgrade. Field tables and basic properties use their AMQP wire
//! encodings; everything else is fixed-width big-endian or length-prefixed.
//!
//! Op tags are append-only, like [`Op`] itself.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use warren_core::{Command, Destination, Op, Origin};
use warren_wire::{BasicProperties, ContentHeader, FieldTable, Reader, ShortStr, WireError};

/// Version of this byte format (not of the state machine: that is `Command::version`).
const FORMAT: u8 = 1;

/// Why bytes from the log did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable command in the log: {0}")]
pub struct CodecError(pub(crate) &'static str);

impl CodecError {
    /// An error saying what did not decode.
    pub fn new(what: &'static str) -> CodecError {
        CodecError(what)
    }
}

/// A command as the Raft log carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogCommand(pub Command);

impl fmt::Display for LogCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.0.op {
            Op::DeclareExchange { .. } => "declare-exchange",
            Op::DeleteExchange { .. } => "delete-exchange",
            Op::DeclareQueue { .. } => "declare-queue",
            Op::DeleteQueue { .. } => "delete-queue",
            Op::PurgeQueue { .. } => "purge-queue",
            Op::Bind { .. } => "bind",
            Op::Unbind { .. } => "unbind",
            Op::Publish { .. } => "publish",
            Op::Settle { .. } => "settle",
            Op::Reject { .. } => "reject",
            Op::Recover => "recover",
            Op::RemoveQueue { .. } => "remove-queue",
            Op::Expire { .. } => "expire",
            Op::TakeOver => "take-over",
            Op::ConfirmSelect => "confirm-select",
            Op::ForgetPublishers { .. } => "forget-publishers",
            Op::PutVhost { .. } => "put-vhost",
            Op::DeleteVhost { .. } => "delete-vhost",
            Op::PutUser { .. } => "put-user",
            Op::DeleteUser { .. } => "delete-user",
            Op::SetPermission { .. } => "set-permission",
            Op::ClearPermission { .. } => "clear-permission",
            Op::SetTopicPermission { .. } => "set-topic-permission",
            Op::ClearTopicPermission { .. } => "clear-topic-permission",
            Op::SetVhostLimits { .. } => "set-vhost-limits",
            Op::ClearVhostLimits { .. } => "clear-vhost-limits",
            Op::SetUserLimits { .. } => "set-user-limits",
            Op::ClearUserLimits { .. } => "clear-user-limits",
            Op::Return { .. } => "return",
            Op::SetPolicy { .. } => "set-policy",
            Op::ClearPolicy { .. } => "clear-policy",
        };
        f.write_str(name)
    }
}

impl Serialize for LogCommand {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_command(&self.0))
    }
}

impl<'de> Deserialize<'de> for LogCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LogCommand, D::Error> {
        let bytes = d.deserialize_byte_buf(BytesVisitor)?;
        decode_command(Bytes::from(bytes))
            .map(LogCommand)
            .map_err(serde::de::Error::custom)
    }
}

/// Accepts what `serialize_bytes` wrote, whichever way the format hands it back.
struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an encoded command")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut v = Vec::new();
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(v)
    }
}

pub fn put_str(w: &mut BytesMut, s: &ShortStr) {
    let b = s.as_bytes();
    w.put_u8(b.len().min(255) as u8);
    w.put_slice(&b[..b.len().min(255)]);
}

/// A string of any length (user names, password hashes, permission regexes): u32 length, UTF-8.
pub(crate) fn put_text(w: &mut BytesMut, s: &str) {
    w.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    w.put_slice(s.as_bytes());
}

pub(crate) fn read_text(r: &mut Reader) -> Result<String, CodecError> {
    let n = r.u32()? as usize;
    if r.remaining() < n {
        return Err(CodecError("text longer than its record"));
    }
    String::from_utf8(r.bytes(n)?.to_vec()).map_err(|_| CodecError("text is not UTF-8"))
}

pub fn put_bool(w: &mut BytesMut, b: bool) {
    w.put_u8(u8::from(b));
}

pub fn put_table(w: &mut BytesMut, t: &FieldTable) {
    warren_wire::encode_table(w, t);
}

pub fn put_dest(w: &mut BytesMut, d: &Destination) {
    match d {
        Destination::Queue(q) => {
            w.put_u8(0);
            put_str(w, q);
        }
        Destination::Exchange(x) => {
            w.put_u8(1);
            put_str(w, x);
        }
    }
}

/// Basic properties in their AMQP content-header encoding, length-prefixed.
pub fn put_properties(w: &mut BytesMut, properties: &BasicProperties, body_len: usize) {
    let header = ContentHeader {
        class_id: 60,
        weight: 0,
        body_size: body_len as u64,
        properties: properties.clone(),
    };
    let mut h = BytesMut::new();
    header.encode(&mut h);
    w.put_u32(h.len() as u32);
    w.put_slice(&h);
}

pub fn read_properties(r: &mut Reader) -> Result<BasicProperties, CodecError> {
    let n = r.u32()? as usize;
    let header = ContentHeader::decode(r.bytes(n)?).map_err(|_| CodecError("bad properties"))?;
    Ok(header.properties)
}

/// Encodes a command for the log.
pub fn encode_command(c: &Command) -> Bytes {
    let mut w = BytesMut::with_capacity(64);
    w.put_u8(FORMAT);
    w.put_u32(c.version);
    match c.origin {
        Some(o) => {
            w.put_u8(1);
            w.put_u64(o.conn);
            w.put_u16(o.channel);
        }
        None => w.put_u8(0),
    }
    w.put_u64(c.issued_at);
    match &c.op {
        Op::DeclareExchange {
            vhost,
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            nowait,
        } => {
            w.put_u8(0);
            put_str(&mut w, vhost);
            put_str(&mut w, name);
            put_str(&mut w, kind);
            for b in [*durable, *auto_delete, *internal, *nowait] {
                put_bool(&mut w, b);
            }
            put_table(&mut w, arguments);
        }
        Op::DeleteExchange {
            vhost,
            name,
            if_unused,
            nowait,
        } => {
            w.put_u8(1);
            put_str(&mut w, vhost);
            put_str(&mut w, name);
            put_bool(&mut w, *if_unused);
            put_bool(&mut w, *nowait);
        }
        Op::DeclareQueue {
            vhost,
            name,
            durable,
            exclusive,
            auto_delete,
            arguments,
            nowait,
        } => {
            w.put_u8(2);
            put_str(&mut w, vhost);
            put_str(&mut w, name);
            for b in [*durable, *exclusive, *auto_delete, *nowait] {
                put_bool(&mut w, b);
            }
            put_table(&mut w, arguments);
        }
        Op::DeleteQueue {
            vhost,
            name,
            if_unused,
            if_empty,
            nowait,
        } => {
            w.put_u8(3);
            put_str(&mut w, vhost);
            put_str(&mut w, name);
            for b in [*if_unused, *if_empty, *nowait] {
                put_bool(&mut w, b);
            }
        }
        Op::PurgeQueue {
            vhost,
            name,
            nowait,
        } => {
            w.put_u8(4);
            put_str(&mut w, vhost);
            put_str(&mut w, name);
            put_bool(&mut w, *nowait);
        }
        Op::Bind {
            vhost,
            source,
            destination,
            routing_key,
            arguments,
            nowait,
        }
        | Op::Unbind {
            vhost,
            source,
            destination,
            routing_key,
            arguments,
            nowait,
        } => {
            w.put_u8(if matches!(c.op, Op::Bind { .. }) {
                5
            } else {
                6
            });
            put_str(&mut w, vhost);
            put_str(&mut w, source);
            put_dest(&mut w, destination);
            put_str(&mut w, routing_key);
            put_table(&mut w, arguments);
            put_bool(&mut w, *nowait);
        }
        Op::Publish {
            vhost,
            exchange,
            routing_key,
            mandatory,
            confirm,
            properties,
            body,
        } => {
            w.put_u8(7);
            put_str(&mut w, vhost);
            put_str(&mut w, exchange);
            put_str(&mut w, routing_key);
            put_bool(&mut w, *mandatory);
            match confirm {
                Some(seq) => {
                    w.put_u8(1);
                    w.put_u64(*seq);
                }
                None => w.put_u8(0),
            }
            put_properties(&mut w, properties, body.len());
            w.put_u32(body.len() as u32);
            w.put_slice(body);
        }
        Op::Settle { queue, seqs } | Op::Reject { queue, seqs } | Op::Return { queue, seqs } => {
            w.put_u8(match c.op {
                Op::Settle { .. } => 8,
                Op::Reject { .. } => 9,
                _ => 28,
            });
            w.put_u64(*queue);
            w.put_u32(seqs.len() as u32);
            for seq in seqs {
                w.put_u64(*seq);
            }
        }
        Op::Recover => w.put_u8(10),
        Op::RemoveQueue { queue } => {
            w.put_u8(11);
            w.put_u64(*queue);
        }
        Op::Expire { queue } => {
            w.put_u8(12);
            w.put_u64(*queue);
        }
        Op::TakeOver => w.put_u8(13),
        Op::ConfirmSelect => w.put_u8(14),
        Op::ForgetPublishers { before } => {
            w.put_u8(15);
            w.put_u64(*before);
        }
        Op::PutVhost { name } => {
            w.put_u8(16);
            put_str(&mut w, name);
        }
        Op::DeleteVhost { name } => {
            w.put_u8(17);
            put_str(&mut w, name);
        }
        Op::PutUser {
            name,
            password_hash,
            tags,
        } => {
            w.put_u8(18);
            put_text(&mut w, name);
            put_text(&mut w, password_hash);
            w.put_u32(u32::try_from(tags.len()).unwrap_or(u32::MAX));
            for t in tags {
                put_text(&mut w, t);
            }
        }
        Op::DeleteUser { name } => {
            w.put_u8(19);
            put_text(&mut w, name);
        }
        Op::SetPermission {
            user,
            vhost,
            configure,
            write,
            read,
        } => {
            w.put_u8(20);
            put_text(&mut w, user);
            put_str(&mut w, vhost);
            put_text(&mut w, configure);
            put_text(&mut w, write);
            put_text(&mut w, read);
        }
        Op::ClearPermission { user, vhost } => {
            w.put_u8(21);
            put_text(&mut w, user);
            put_str(&mut w, vhost);
        }
        Op::SetTopicPermission {
            user,
            vhost,
            exchange,
            write,
            read,
        } => {
            w.put_u8(22);
            put_text(&mut w, user);
            put_str(&mut w, vhost);
            put_str(&mut w, exchange);
            put_text(&mut w, write);
            put_text(&mut w, read);
        }
        Op::ClearTopicPermission {
            user,
            vhost,
            exchange,
        } => {
            w.put_u8(23);
            put_text(&mut w, user);
            put_str(&mut w, vhost);
            match exchange {
                Some(x) => {
                    w.put_u8(1);
                    put_str(&mut w, x);
                }
                None => w.put_u8(0),
            }
        }
        Op::SetVhostLimits {
            vhost,
            limits,
            replace,
        } => {
            w.put_u8(24);
            put_str(&mut w, vhost);
            put_limits(&mut w, limits);
            put_bool(&mut w, *replace);
        }
        Op::ClearVhostLimits { vhost, names } => {
            w.put_u8(25);
            put_str(&mut w, vhost);
            put_texts(&mut w, names);
        }
        Op::SetUserLimits {
            user,
            limits,
            replace,
        } => {
            w.put_u8(26);
            put_text(&mut w, user);
            put_limits(&mut w, limits);
            put_bool(&mut w, *replace);
        }
        Op::ClearUserLimits { user, names } => {
            w.put_u8(27);
            put_text(&mut w, user);
            put_texts(&mut w, names);
        }
        Op::SetPolicy {
            vhost,
            name,
            operator,
            pattern,
            apply_to,
            priority,
            definition,
        } => {
            w.put_u8(29);
            put_str(&mut w, vhost);
            put_text(&mut w, name);
            put_bool(&mut w, *operator);
            put_text(&mut w, pattern);
            put_text(&mut w, apply_to);
            w.put_i64(*priority);
            put_table(&mut w, definition);
        }
        Op::ClearPolicy {
            vhost,
            name,
            operator,
        } => {
            w.put_u8(30);
            put_str(&mut w, vhost);
            put_text(&mut w, name);
            put_bool(&mut w, *operator);
        }
    }
    w.freeze()
}

/// Named limits: u32 count, then (text name, i64 value) each.
pub(crate) fn put_limits(w: &mut BytesMut, limits: &[(String, i64)]) {
    w.put_u32(u32::try_from(limits.len()).unwrap_or(u32::MAX));
    for (name, value) in limits {
        put_text(w, name);
        w.put_i64(*value);
    }
}

pub(crate) fn read_limits(r: &mut Reader) -> Result<Vec<(String, i64)>, CodecError> {
    let n = r.u32()? as usize;
    // Each takes at least 12 bytes: refuse a count the payload cannot hold before allocating.
    if r.remaining() < n.saturating_mul(12) {
        return Err(CodecError("too short"));
    }
    (0..n)
        .map(|_| Ok((read_text(r)?, i64::from_be_bytes(r.u64()?.to_be_bytes()))))
        .collect()
}

/// A list of texts: u32 count, then each text.
fn put_texts(w: &mut BytesMut, texts: &[String]) {
    w.put_u32(u32::try_from(texts.len()).unwrap_or(u32::MAX));
    for t in texts {
        put_text(w, t);
    }
}

fn read_texts(r: &mut Reader) -> Result<Vec<String>, CodecError> {
    let n = r.u32()? as usize;
    if r.remaining() < n.saturating_mul(4) {
        return Err(CodecError("too short"));
    }
    (0..n).map(|_| read_text(r)).collect()
}

impl From<WireError> for CodecError {
    fn from(e: WireError) -> CodecError {
        match e {
            WireError::Syntax { what } => CodecError(what),
            _ => CodecError("bad field"),
        }
    }
}

pub fn read_bool(r: &mut Reader) -> Result<bool, CodecError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(CodecError("bad bool")),
    }
}

pub fn read_dest(r: &mut Reader) -> Result<Destination, CodecError> {
    match r.u8()? {
        0 => Ok(Destination::Queue(r.short_str()?)),
        1 => Ok(Destination::Exchange(r.short_str()?)),
        _ => Err(CodecError("bad destination kind")),
    }
}

/// Decodes a command written by [`encode_command`].
pub fn decode_command(bytes: Bytes) -> Result<Command, CodecError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != FORMAT {
        return Err(CodecError("unknown format version"));
    }
    let version = r.u32()?;
    let origin = match r.u8()? {
        0 => None,
        1 => Some(Origin {
            conn: r.u64()?,
            channel: r.u16()?,
        }),
        _ => return Err(CodecError("bad origin flag")),
    };
    let issued_at = r.u64()?;
    let op = match r.u8()? {
        0 => {
            let (vhost, name, kind) = (r.short_str()?, r.short_str()?, r.short_str()?);
            let (durable, auto_delete, internal, nowait) = (
                read_bool(&mut r)?,
                read_bool(&mut r)?,
                read_bool(&mut r)?,
                read_bool(&mut r)?,
            );
            Op::DeclareExchange {
                vhost,
                name,
                kind,
                durable,
                auto_delete,
                internal,
                arguments: r.table()?,
                nowait,
            }
        }
        1 => Op::DeleteExchange {
            vhost: r.short_str()?,
            name: r.short_str()?,
            if_unused: read_bool(&mut r)?,
            nowait: read_bool(&mut r)?,
        },
        2 => {
            let (vhost, name) = (r.short_str()?, r.short_str()?);
            let (durable, exclusive, auto_delete, nowait) = (
                read_bool(&mut r)?,
                read_bool(&mut r)?,
                read_bool(&mut r)?,
                read_bool(&mut r)?,
            );
            Op::DeclareQueue {
                vhost,
                name,
                durable,
                exclusive,
                auto_delete,
                arguments: r.table()?,
                nowait,
            }
        }
        3 => Op::DeleteQueue {
            vhost: r.short_str()?,
            name: r.short_str()?,
            if_unused: read_bool(&mut r)?,
            if_empty: read_bool(&mut r)?,
            nowait: read_bool(&mut r)?,
        },
        4 => Op::PurgeQueue {
            vhost: r.short_str()?,
            name: r.short_str()?,
            nowait: read_bool(&mut r)?,
        },
        tag @ (5 | 6) => {
            let (vhost, source, destination, routing_key) = (
                r.short_str()?,
                r.short_str()?,
                read_dest(&mut r)?,
                r.short_str()?,
            );
            let (arguments, nowait) = (r.table()?, read_bool(&mut r)?);
            if tag == 5 {
                Op::Bind {
                    vhost,
                    source,
                    destination,
                    routing_key,
                    arguments,
                    nowait,
                }
            } else {
                Op::Unbind {
                    vhost,
                    source,
                    destination,
                    routing_key,
                    arguments,
                    nowait,
                }
            }
        }
        7 => {
            let (vhost, exchange, routing_key, mandatory) = (
                r.short_str()?,
                r.short_str()?,
                r.short_str()?,
                read_bool(&mut r)?,
            );
            let confirm = match r.u8()? {
                0 => None,
                1 => Some(r.u64()?),
                _ => return Err(CodecError("bad confirm flag")),
            };
            let properties = read_properties(&mut r)?;
            let n = r.u32()? as usize;
            let body = r.bytes(n)?;
            Op::Publish {
                vhost,
                exchange,
                routing_key,
                mandatory,
                confirm,
                properties,
                body,
            }
        }
        tag @ (8 | 9 | 28) => {
            let queue = r.u64()?;
            let n = r.u32()? as usize;
            // Each seq takes 8 bytes: refuse a count the payload cannot hold before allocating.
            if r.remaining() < n.saturating_mul(8) {
                return Err(CodecError("too short"));
            }
            let seqs = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            match tag {
                8 => Op::Settle { queue, seqs },
                9 => Op::Reject { queue, seqs },
                _ => Op::Return { queue, seqs },
            }
        }
        10 => Op::Recover,
        11 => Op::RemoveQueue { queue: r.u64()? },
        12 => Op::Expire { queue: r.u64()? },
        13 => Op::TakeOver,
        14 => Op::ConfirmSelect,
        15 => Op::ForgetPublishers { before: r.u64()? },
        16 => Op::PutVhost {
            name: r.short_str()?,
        },
        17 => Op::DeleteVhost {
            name: r.short_str()?,
        },
        18 => {
            let name = read_text(&mut r)?;
            let password_hash = read_text(&mut r)?;
            let n = r.u32()? as usize;
            if r.remaining() < n.saturating_mul(4) {
                return Err(CodecError("too short"));
            }
            let tags = (0..n)
                .map(|_| read_text(&mut r))
                .collect::<Result<Vec<_>, _>>()?;
            Op::PutUser {
                name,
                password_hash,
                tags,
            }
        }
        19 => Op::DeleteUser {
            name: read_text(&mut r)?,
        },
        20 => Op::SetPermission {
            user: read_text(&mut r)?,
            vhost: r.short_str()?,
            configure: read_text(&mut r)?,
            write: read_text(&mut r)?,
            read: read_text(&mut r)?,
        },
        21 => Op::ClearPermission {
            user: read_text(&mut r)?,
            vhost: r.short_str()?,
        },
        22 => Op::SetTopicPermission {
            user: read_text(&mut r)?,
            vhost: r.short_str()?,
            exchange: r.short_str()?,
            write: read_text(&mut r)?,
            read: read_text(&mut r)?,
        },
        23 => Op::ClearTopicPermission {
            user: read_text(&mut r)?,
            vhost: r.short_str()?,
            exchange: match r.u8()? {
                0 => None,
                1 => Some(r.short_str()?),
                _ => return Err(CodecError("bad exchange flag")),
            },
        },
        24 => Op::SetVhostLimits {
            vhost: r.short_str()?,
            limits: read_limits(&mut r)?,
            replace: read_bool(&mut r)?,
        },
        25 => Op::ClearVhostLimits {
            vhost: r.short_str()?,
            names: read_texts(&mut r)?,
        },
        26 => Op::SetUserLimits {
            user: read_text(&mut r)?,
            limits: read_limits(&mut r)?,
            replace: read_bool(&mut r)?,
        },
        27 => Op::ClearUserLimits {
            user: read_text(&mut r)?,
            names: read_texts(&mut r)?,
        },
        29 => Op::SetPolicy {
            vhost: r.short_str()?,
            name: read_text(&mut r)?,
            operator: read_bool(&mut r)?,
            pattern: read_text(&mut r)?,
            apply_to: read_text(&mut r)?,
            priority: i64::from_be_bytes(r.u64()?.to_be_bytes()),
            definition: r.table()?,
        },
        30 => Op::ClearPolicy {
            vhost: r.short_str()?,
            name: read_text(&mut r)?,
            operator: read_bool(&mut r)?,
        },
        _ => return Err(CodecError("unknown op tag")),
    };
    if r.remaining() != 0 {
        return Err(CodecError("trailing bytes"));
    }
    Ok(Command {
        version,
        origin,
        issued_at,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warren_wire::FieldValue;

    fn s() -> impl Strategy<Value = ShortStr> {
        "[a-z.#*-]{0,20}".prop_map(ShortStr::from)
    }

    fn table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::vec(("[a-z-]{1,8}", any::<i32>()), 0..3).prop_map(|kv| {
            kv.into_iter()
                .map(|(k, v)| (k, FieldValue::I32(v)))
                .collect()
        })
    }

    fn limits() -> impl Strategy<Value = Vec<(String, i64)>> {
        proptest::collection::vec(("[a-z-]{0,15}", any::<i64>()), 0..3)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Recover),
            Just(Op::TakeOver),
            Just(Op::ConfirmSelect),
            any::<u64>().prop_map(|before| Op::ForgetPublishers { before }),
            s().prop_map(|name| Op::PutVhost { name }),
            s().prop_map(|name| Op::DeleteVhost { name }),
            (
                ".{0,12}",
                ".{0,50}",
                proptest::collection::vec(".{0,10}", 0..3)
            )
                .prop_map(|(name, password_hash, tags)| Op::PutUser {
                    name,
                    password_hash,
                    tags
                }),
            ".{0,12}".prop_map(|name| Op::DeleteUser { name }),
            (".{0,12}", s(), ".{0,8}", ".{0,8}", ".{0,8}").prop_map(
                |(user, vhost, configure, write, read)| Op::SetPermission {
                    user,
                    vhost,
                    configure,
                    write,
                    read
                }
            ),
            (".{0,12}", s()).prop_map(|(user, vhost)| Op::ClearPermission { user, vhost }),
            (".{0,12}", s(), s(), ".{0,8}", ".{0,8}").prop_map(
                |(user, vhost, exchange, write, read)| Op::SetTopicPermission {
                    user,
                    vhost,
                    exchange,
                    write,
                    read
                }
            ),
            (".{0,12}", s(), proptest::option::of(s())).prop_map(|(user, vhost, exchange)| {
                Op::ClearTopicPermission {
                    user,
                    vhost,
                    exchange,
                }
            }),
            (s(), limits(), any::<bool>()).prop_map(|(vhost, limits, replace)| {
                Op::SetVhostLimits {
                    vhost,
                    limits,
                    replace,
                }
            }),
            (s(), proptest::collection::vec(".{0,12}", 0..3))
                .prop_map(|(vhost, names)| Op::ClearVhostLimits { vhost, names }),
            (".{0,12}", limits(), any::<bool>()).prop_map(|(user, limits, replace)| {
                Op::SetUserLimits {
                    user,
                    limits,
                    replace,
                }
            }),
            (".{0,12}", proptest::collection::vec(".{0,12}", 0..3))
                .prop_map(|(user, names)| Op::ClearUserLimits { user, names }),
            (
                s(),
                ".{0,12}",
                any::<bool>(),
                ".{0,12}",
                any::<i64>(),
                table()
            )
                .prop_map(|(vhost, name, operator, pattern, priority, definition)| {
                    Op::SetPolicy {
                        vhost,
                        name,
                        operator,
                        pattern,
                        apply_to: "queues".into(),
                        priority,
                        definition,
                    }
                }),
            (s(), ".{0,12}", any::<bool>()).prop_map(|(vhost, name, operator)| {
                Op::ClearPolicy {
                    vhost,
                    name,
                    operator,
                }
            }),
            any::<u64>().prop_map(|queue| Op::RemoveQueue { queue }),
            any::<u64>().prop_map(|queue| Op::Expire { queue }),
            (s(), s(), s(), any::<[bool; 4]>(), table()).prop_map(
                |(vhost, name, kind, b, arguments)| Op::DeclareExchange {
                    vhost,
                    name,
                    kind,
                    durable: b[0],
                    auto_delete: b[1],
                    internal: b[2],
                    arguments,
                    nowait: b[3]
                }
            ),
            (s(), s(), any::<[bool; 2]>()).prop_map(|(vhost, name, b)| Op::DeleteExchange {
                vhost,
                name,
                if_unused: b[0],
                nowait: b[1]
            }),
            (s(), s(), any::<[bool; 4]>(), table()).prop_map(|(vhost, name, b, arguments)| {
                Op::DeclareQueue {
                    vhost,
                    name,
                    durable: b[0],
                    exclusive: b[1],
                    auto_delete: b[2],
                    arguments,
                    nowait: b[3],
                }
            }),
            (s(), s(), any::<[bool; 3]>()).prop_map(|(vhost, name, b)| Op::DeleteQueue {
                vhost,
                name,
                if_unused: b[0],
                if_empty: b[1],
                nowait: b[2]
            }),
            (s(), s(), any::<bool>()).prop_map(|(vhost, name, nowait)| Op::PurgeQueue {
                vhost,
                name,
                nowait
            }),
            (s(), s(), s(), s(), table(), any::<[bool; 3]>()).prop_map(
                |(vhost, source, d, routing_key, arguments, b)| {
                    let destination = if b[0] {
                        Destination::Queue(d)
                    } else {
                        Destination::Exchange(d)
                    };
                    if b[1] {
                        Op::Bind {
                            vhost,
                            source,
                            destination,
                            routing_key,
                            arguments,
                            nowait: b[2],
                        }
                    } else {
                        Op::Unbind {
                            vhost,
                            source,
                            destination,
                            routing_key,
                            arguments,
                            nowait: b[2],
                        }
                    }
                }
            ),
            (
                s(),
                s(),
                s(),
                any::<bool>(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(s()),
                proptest::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(
                    |(vhost, exchange, routing_key, mandatory, confirm, reply_to, body)| {
                        Op::Publish {
                            vhost,
                            exchange,
                            routing_key,
                            mandatory,
                            confirm,
                            properties: BasicProperties {
                                reply_to,
                                delivery_mode: Some(2),
                                ..Default::default()
                            },
                            body: Bytes::from(body),
                        }
                    }
                ),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u64>(), 0..10),
                0..3u8
            )
                .prop_map(|(queue, seqs, kind)| match kind {
                    0 => Op::Settle { queue, seqs },
                    1 => Op::Reject { queue, seqs },
                    _ => Op::Return { queue, seqs },
                }),
        ]
    }

    proptest! {
        #[test]
        fn commands_round_trip(op in op(), conn in proptest::option::of(any::<(u64, u16)>()), at in any::<u64>()) {
            let c = Command { version: 1, origin: conn.map(|(conn, channel)| Origin { conn, channel }), issued_at: at, op };
            let bytes = encode_command(&c);
            prop_assert_eq!(decode_command(bytes.clone()).unwrap(), c.clone());
            // And through serde/postcard, as the log store writes it.
            let log = postcard::to_stdvec(&LogCommand(c.clone())).unwrap();
            prop_assert_eq!(postcard::from_bytes::<LogCommand>(&log).unwrap(), LogCommand(c));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_command(Bytes::from(bytes));
        }
    }
}
