//! The byte encoding of a broker [`Snapshot`], in the style of the command encoding: explicit,
//! versioned, length-prefixed; properties and tables in their AMQP wire encodings.

use bytes::{BufMut, Bytes, BytesMut};
use warren_core::snapshot::{
    SnapshotBinding, SnapshotEntry, SnapshotExchange, SnapshotLimits, SnapshotMessage,
    SnapshotPermission, SnapshotPolicy, SnapshotPublisher, SnapshotQueue, SnapshotSecurity,
    SnapshotTopicPermission, SnapshotUser, SnapshotVhost,
};
use warren_core::{PackedEntries, Snapshot};
use warren_wire::Reader;

use warren_wire::record::{
    put_bool, put_properties, put_short, put_table, put_text, read_bool, read_properties, read_text,
};

use crate::command_codec::{put_dest, put_limits, read_dest, read_limits};
use crate::CodecError;

const MAGIC: &[u8; 4] = b"WSNP";
/// 1: up to the queues; 2: publishers follow the queues; 3: then users and permissions; 4: then
/// each publisher's skipped confirm numbers; 5: then the home nodes of the queues that have one;
/// 6: then the declaring connection of the queues that have one; 7: then topic permissions, vhost
/// limits and user limits; 8: each queue entry may name the log entry its message rests in
/// instead of a message of the snapshot; 9: a queue's entries are packed (count, length, bytes:
/// see `warren_core::PackedEntries`); 10: a packed entry may carry a priority level and a
/// delivery count; 11: then the policies and operator policies.
const FORMAT: u8 = 11;

fn put_len(w: &mut BytesMut, n: usize) {
    w.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
}

/// Encodes a snapshot.
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    encode_format(s, FORMAT)
}

/// Encodes a snapshot in `format` (older formats only in tests; entries that name a log entry
/// need format 8).
fn encode_format(s: &Snapshot, format: u8) -> Vec<u8> {
    let bodies: usize = s.messages.iter().map(|m| m.body.len() + 64).sum();
    let entries: usize = s.queues.iter().map(|q| q.entries.raw().1.len() + 64).sum();
    let mut w = BytesMut::with_capacity(1024 + bodies + entries);
    w.put_slice(MAGIC);
    w.put_u8(format);
    w.put_u32(s.version);
    w.put_u64(s.next_queue_id);
    put_len(&mut w, s.vhosts.len());
    for v in &s.vhosts {
        put_short(&mut w, &v.name);
        put_len(&mut w, v.exchanges.len());
        for x in &v.exchanges {
            put_short(&mut w, &x.name);
            put_short(&mut w, &x.kind);
            put_bool(&mut w, x.durable);
            put_bool(&mut w, x.auto_delete);
            put_bool(&mut w, x.internal);
            put_table(&mut w, &x.arguments);
            put_len(&mut w, x.bindings.len());
            for b in &x.bindings {
                put_dest(&mut w, &b.destination);
                put_short(&mut w, &b.routing_key);
                put_table(&mut w, &b.arguments);
            }
        }
    }
    put_len(&mut w, s.messages.len());
    for m in &s.messages {
        put_short(&mut w, &m.exchange);
        put_short(&mut w, &m.routing_key);
        put_properties(&mut w, &m.properties, m.body.len());
        put_len(&mut w, m.body.len());
        w.put_slice(&m.body);
    }
    put_len(&mut w, s.queues.len());
    for q in &s.queues {
        w.put_u64(q.id);
        put_short(&mut w, &q.vhost);
        put_short(&mut w, &q.name);
        put_bool(&mut w, q.durable);
        match q.exclusive_owner {
            Some(c) => {
                w.put_u8(1);
                w.put_u64(c);
            }
            None => w.put_u8(0),
        }
        put_bool(&mut w, q.auto_delete);
        put_table(&mut w, &q.arguments);
        w.put_u64(q.next_seq);
        put_bool(&mut w, q.had_consumer);
        w.put_u64(q.last_used);
        if format >= 9 {
            let (count, packed) = q.entries.raw();
            put_len(&mut w, count);
            put_len(&mut w, packed.len());
            w.put_slice(packed);
            continue;
        }
        put_len(&mut w, q.entries.len());
        for e in q.entries.iter().flatten() {
            w.put_u64(e.seq);
            w.put_u32(e.message);
            match e.stored {
                _ if format < 8 => {}
                Some(r) => {
                    w.put_u8(1);
                    w.put_u64(r.index);
                    w.put_u32(r.len);
                    put_bool(&mut w, r.persistent);
                }
                None => w.put_u8(0),
            }
            put_bool(&mut w, e.redelivered);
            match e.expires_at {
                Some(t) => {
                    w.put_u8(1);
                    w.put_u64(t);
                }
                None => w.put_u8(0),
            }
        }
    }
    put_len(&mut w, s.publishers.len());
    for p in &s.publishers {
        w.put_u64(p.conn);
        w.put_u16(p.channel);
        w.put_u64(p.seq);
        w.put_u64(p.at);
    }
    // Format 3 always writes the section; a broker always has one.
    let empty = SnapshotSecurity::default();
    let security = s.security.as_ref().unwrap_or(&empty);
    put_len(&mut w, security.users.len());
    for u in &security.users {
        put_text(&mut w, &u.name);
        put_text(&mut w, &u.password_hash);
        put_len(&mut w, u.tags.len());
        for t in &u.tags {
            put_text(&mut w, t);
        }
    }
    put_len(&mut w, security.permissions.len());
    for p in &security.permissions {
        put_text(&mut w, &p.user);
        put_short(&mut w, &p.vhost);
        put_text(&mut w, &p.configure);
        put_text(&mut w, &p.write);
        put_text(&mut w, &p.read);
    }
    // Format 4: the skipped confirm numbers of the publishers that have any.
    let gaps: Vec<_> = s
        .publishers
        .iter()
        .filter(|p| !p.missing.is_empty())
        .collect();
    put_len(&mut w, gaps.len());
    for p in gaps {
        w.put_u64(p.conn);
        w.put_u16(p.channel);
        put_len(&mut w, p.missing.len());
        for m in &p.missing {
            w.put_u64(*m);
        }
    }
    // Format 5: the homes of the (local) queues that have one.
    let homes: Vec<_> = s.queues.iter().filter(|q| q.home != 0).collect();
    put_len(&mut w, homes.len());
    for q in homes {
        w.put_u64(q.id);
        w.put_u64(q.home);
    }
    // Format 6: the connection that declared each queue, where known.
    let declarers: Vec<_> = s.queues.iter().filter(|q| q.declared_by != 0).collect();
    put_len(&mut w, declarers.len());
    for q in declarers {
        w.put_u64(q.id);
        w.put_u64(q.declared_by);
    }
    // Format 7: topic permissions, then the limits of vhosts and of users.
    put_len(&mut w, security.topic_permissions.len());
    for p in &security.topic_permissions {
        put_text(&mut w, &p.user);
        put_short(&mut w, &p.vhost);
        put_short(&mut w, &p.exchange);
        put_text(&mut w, &p.write);
        put_text(&mut w, &p.read);
    }
    for owners in [&security.vhost_limits, &security.user_limits] {
        put_len(&mut w, owners.len());
        for l in owners {
            put_text(&mut w, &l.owner);
            put_limits(&mut w, &l.limits);
        }
    }
    if format >= 11 {
        put_len(&mut w, s.policies.len());
        for p in &s.policies {
            put_short(&mut w, &p.vhost);
            put_text(&mut w, &p.name);
            put_bool(&mut w, p.operator);
            put_text(&mut w, &p.pattern);
            put_text(&mut w, &p.apply_to);
            w.put_i64(p.priority);
            put_table(&mut w, &p.definition);
        }
    }
    w.to_vec()
}

/// The limits of vhosts or users, as format 7 writes them.
fn read_owner_limits(r: &mut Reader) -> Result<Vec<SnapshotLimits>, CodecError> {
    let mut owners = Vec::new();
    for _ in 0..read_count(r, 8)? {
        owners.push(SnapshotLimits {
            owner: read_text(r)?,
            limits: read_limits(r)?,
        });
    }
    Ok(owners)
}

/// A count read from the snapshot, refused if the bytes left cannot hold that many items of at
/// least `min_size` bytes (so a corrupt count cannot make us allocate).
fn read_count(r: &mut Reader, min_size: usize) -> Result<usize, CodecError> {
    let n = r.u32()? as usize;
    if r.remaining() < n.saturating_mul(min_size) {
        return Err(CodecError("count larger than the snapshot"));
    }
    Ok(n)
}

fn read_opt_u64(r: &mut Reader) -> Result<Option<u64>, CodecError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        _ => Err(CodecError("bad option flag")),
    }
}

/// Decodes a snapshot written by [`encode_snapshot`].
pub fn decode_snapshot(bytes: Bytes) -> Result<Snapshot, CodecError> {
    let mut r = Reader::new(bytes);
    if r.bytes(4)?.as_ref() != MAGIC {
        return Err(CodecError("not a Warren snapshot"));
    }
    let format = r.u8()?;
    if format == 0 || format > FORMAT {
        return Err(CodecError("unknown snapshot format version"));
    }
    let version = r.u32()?;
    let next_queue_id = r.u64()?;
    let mut vhosts = Vec::new();
    for _ in 0..read_count(&mut r, 5)? {
        let name = r.short_str()?;
        let mut exchanges = Vec::new();
        for _ in 0..read_count(&mut r, 13)? {
            let (name, kind) = (r.short_str()?, r.short_str()?);
            let (durable, auto_delete, internal) =
                (read_bool(&mut r)?, read_bool(&mut r)?, read_bool(&mut r)?);
            let arguments = r.table()?;
            let mut bindings = Vec::new();
            for _ in 0..read_count(&mut r, 7)? {
                bindings.push(SnapshotBinding {
                    destination: read_dest(&mut r)?,
                    routing_key: r.short_str()?,
                    arguments: r.table()?,
                });
            }
            exchanges.push(SnapshotExchange {
                name,
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
                bindings,
            });
        }
        vhosts.push(SnapshotVhost { name, exchanges });
    }
    let mut messages = Vec::new();
    for _ in 0..read_count(&mut r, 10)? {
        let (exchange, routing_key) = (r.short_str()?, r.short_str()?);
        let properties = read_properties(&mut r)?;
        let n = r.u32()? as usize;
        messages.push(SnapshotMessage {
            exchange,
            routing_key,
            properties,
            body: r.bytes(n)?,
        });
    }
    let mut queues = Vec::new();
    for _ in 0..read_count(&mut r, 40)? {
        let id = r.u64()?;
        let (vhost, name) = (r.short_str()?, r.short_str()?);
        let durable = read_bool(&mut r)?;
        let exclusive_owner = read_opt_u64(&mut r)?;
        let auto_delete = read_bool(&mut r)?;
        let arguments = r.table()?;
        let next_seq = r.u64()?;
        let had_consumer = read_bool(&mut r)?;
        let last_used = r.u64()?;
        let entries = if format >= 9 {
            let count = r.u32()? as usize;
            let len = read_count(&mut r, 1)?;
            // An entry packs into at least two bytes.
            if count > len / 2 {
                return Err(CodecError("more queue entries than their bytes hold"));
            }
            let packed = r.bytes(len)?.to_vec();
            PackedEntries::from_raw(count, packed)
                .map_err(|_| CodecError("a queue's packed entries do not decode"))?
        } else {
            let mut entries = PackedEntries::default();
            for _ in 0..read_count(&mut r, 14)? {
                let seq = r.u64()?;
                let message = r.u32()?;
                let stored = if format >= 8 && read_bool(&mut r)? {
                    Some(warren_core::StoredRef {
                        index: r.u64()?,
                        len: r.u32()?,
                        persistent: read_bool(&mut r)?,
                    })
                } else {
                    None
                };
                entries.push(&SnapshotEntry {
                    seq,
                    message,
                    stored,
                    redelivered: read_bool(&mut r)?,
                    expires_at: read_opt_u64(&mut r)?,
                    priority: 0,
                    delivery_count: 0,
                });
            }
            entries
        };
        queues.push(SnapshotQueue {
            id,
            vhost,
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            next_seq,
            had_consumer,
            last_used,
            home: 0,
            declared_by: 0,
            entries,
        });
    }
    let mut publishers = Vec::new();
    if format >= 2 {
        for _ in 0..read_count(&mut r, 26)? {
            publishers.push(SnapshotPublisher {
                conn: r.u64()?,
                channel: r.u16()?,
                seq: r.u64()?,
                at: r.u64()?,
                missing: Vec::new(),
            });
        }
    }
    let mut security = None;
    if format >= 3 {
        let mut users = Vec::new();
        for _ in 0..read_count(&mut r, 12)? {
            let name = read_text(&mut r)?;
            let password_hash = read_text(&mut r)?;
            let mut tags = Vec::new();
            for _ in 0..read_count(&mut r, 4)? {
                tags.push(read_text(&mut r)?);
            }
            users.push(SnapshotUser {
                name,
                password_hash,
                tags,
            });
        }
        let mut permissions = Vec::new();
        for _ in 0..read_count(&mut r, 17)? {
            permissions.push(SnapshotPermission {
                user: read_text(&mut r)?,
                vhost: r.short_str()?,
                configure: read_text(&mut r)?,
                write: read_text(&mut r)?,
                read: read_text(&mut r)?,
            });
        }
        security = Some(SnapshotSecurity {
            users,
            permissions,
            ..SnapshotSecurity::default()
        });
    }
    if format >= 4 {
        for _ in 0..read_count(&mut r, 14)? {
            let (conn, channel) = (r.u64()?, r.u16()?);
            let mut missing = Vec::new();
            for _ in 0..read_count(&mut r, 8)? {
                missing.push(r.u64()?);
            }
            match publishers
                .iter_mut()
                .find(|p| p.conn == conn && p.channel == channel)
            {
                Some(p) => p.missing = missing,
                None => {
                    return Err(CodecError(
                        "skipped confirm numbers of an unknown publisher",
                    ))
                }
            }
        }
    }
    if format >= 5 {
        for _ in 0..read_count(&mut r, 16)? {
            let (id, home) = (r.u64()?, r.u64()?);
            match queues.iter_mut().find(|q| q.id == id) {
                Some(q) => q.home = home,
                None => return Err(CodecError("the home of an unknown queue")),
            }
        }
    }
    if format >= 6 {
        for _ in 0..read_count(&mut r, 16)? {
            let (id, conn) = (r.u64()?, r.u64()?);
            match queues.iter_mut().find(|q| q.id == id) {
                Some(q) => q.declared_by = conn,
                None => return Err(CodecError("the declarer of an unknown queue")),
            }
        }
    }
    if format >= 7 {
        let mut topic_permissions = Vec::new();
        for _ in 0..read_count(&mut r, 14)? {
            topic_permissions.push(SnapshotTopicPermission {
                user: read_text(&mut r)?,
                vhost: r.short_str()?,
                exchange: r.short_str()?,
                write: read_text(&mut r)?,
                read: read_text(&mut r)?,
            });
        }
        let vhost_limits = read_owner_limits(&mut r)?;
        let user_limits = read_owner_limits(&mut r)?;
        if let Some(security) = &mut security {
            security.topic_permissions = topic_permissions;
            security.vhost_limits = vhost_limits;
            security.user_limits = user_limits;
        }
    }
    let mut policies = Vec::new();
    if format >= 11 {
        for _ in 0..read_count(&mut r, 24)? {
            policies.push(SnapshotPolicy {
                vhost: r.short_str()?,
                name: read_text(&mut r)?,
                operator: read_bool(&mut r)?,
                pattern: read_text(&mut r)?,
                apply_to: read_text(&mut r)?,
                priority: i64::from_be_bytes(r.u64()?.to_be_bytes()),
                definition: r.table()?,
            });
        }
    }
    if r.remaining() != 0 {
        return Err(CodecError("trailing bytes"));
    }
    Ok(Snapshot {
        version,
        next_queue_id,
        vhosts,
        messages,
        queues,
        publishers,
        security,
        policies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::{Broker, BrokerConfig, Effect};
    use warren_core::{Destination, Input};
    use warren_wire::{BasicProperties, FieldTable, FieldValue, ShortStr};

    fn sample() -> Snapshot {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl", FieldValue::I32(60_000));
        Snapshot {
            version: 1,
            next_queue_id: 9,
            vhosts: vec![SnapshotVhost {
                name: ShortStr::from("/"),
                exchanges: vec![SnapshotExchange {
                    name: ShortStr::from("logs"),
                    kind: ShortStr::from("topic"),
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::default(),
                    bindings: vec![SnapshotBinding {
                        destination: Destination::Queue(ShortStr::from("q")),
                        routing_key: ShortStr::from("a.#"),
                        arguments: FieldTable::default(),
                    }],
                }],
            }],
            messages: vec![SnapshotMessage {
                exchange: ShortStr::from("logs"),
                routing_key: ShortStr::from("a.b"),
                properties: BasicProperties {
                    delivery_mode: Some(2),
                    correlation_id: Some(ShortStr::from("c1")),
                    ..Default::default()
                },
                body: Bytes::from_static(b"hello"),
            }],
            queues: vec![SnapshotQueue {
                id: 8,
                vhost: ShortStr::from("/"),
                name: ShortStr::from("q"),
                durable: true,
                exclusive_owner: Some(77),
                auto_delete: false,
                arguments: args.clone(),
                next_seq: 4,
                had_consumer: true,
                last_used: 1234,
                home: 3,
                declared_by: (3 << 52) | 5,
                entries: PackedEntries::from_entries([
                    SnapshotEntry {
                        seq: 3,
                        message: 0,
                        stored: None,
                        redelivered: true,
                        expires_at: Some(99),
                        priority: 0,
                        delivery_count: 0,
                    },
                    SnapshotEntry {
                        seq: 4,
                        message: 0,
                        stored: Some(warren_core::StoredRef {
                            index: 1 << 40,
                            len: 1024,
                            persistent: true,
                        }),
                        redelivered: false,
                        expires_at: None,
                        priority: 7,
                        delivery_count: 3,
                    },
                ]),
            }],
            publishers: vec![SnapshotPublisher {
                conn: 1 << 52,
                channel: 3,
                seq: 41,
                at: 1234,
                missing: vec![38, 40],
            }],
            security: Some(SnapshotSecurity {
                users: vec![SnapshotUser {
                    name: "alice".into(),
                    password_hash: "c2FsdA==".into(),
                    tags: vec!["administrator".into(), "monitoring".into()],
                }],
                permissions: vec![SnapshotPermission {
                    user: "alice".into(),
                    vhost: ShortStr::from("/"),
                    configure: "^amq\\.gen.*".into(),
                    write: ".*".into(),
                    read: "".into(),
                }],
                topic_permissions: vec![SnapshotTopicPermission {
                    user: "alice".into(),
                    vhost: ShortStr::from("/"),
                    exchange: ShortStr::from("amq.topic"),
                    write: "^{username}\\.".into(),
                    read: "".into(),
                }],
                vhost_limits: vec![SnapshotLimits {
                    owner: "/".into(),
                    limits: vec![("max-connections".into(), -1), ("max-queues".into(), 10)],
                }],
                user_limits: vec![SnapshotLimits {
                    owner: "alice".into(),
                    limits: vec![("max-channels".into(), 0)],
                }],
            }),
            policies: vec![
                SnapshotPolicy {
                    vhost: "/".into(),
                    name: "limits".into(),
                    operator: false,
                    pattern: "^orders\\.".into(),
                    apply_to: "queues".into(),
                    priority: -3,
                    definition: args.clone(),
                },
                SnapshotPolicy {
                    vhost: "/".into(),
                    name: "cap".into(),
                    operator: true,
                    pattern: ".*".into(),
                    apply_to: "all".into(),
                    priority: 7,
                    definition: FieldTable::default(),
                },
            ],
        }
    }

    #[test]
    fn older_formats_still_decode() {
        let mut s = sample();
        s.security = Some(SnapshotSecurity::default());
        // Before format 11 there were no policies.
        s.policies.clear();
        // Before format 8 an entry could not name a log entry.
        let kept = s.queues[0].entries.iter().flatten();
        let kept = kept.filter(|e| e.stored.is_none()).collect::<Vec<_>>();
        s.queues[0].entries = PackedEntries::from_entries(kept);
        // Before format 9 entries were not packed.
        let bytes = encode_format(&s, 8);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(s.clone()));
        let encode_snapshot = |s: &Snapshot| encode_format(s, 7);
        assert_eq!(
            decode_snapshot(Bytes::from(encode_snapshot(&s))),
            Ok(s.clone())
        );
        // Format 6 ends after the declarers: drop the (empty) counts of format 7.
        let mut bytes = encode_snapshot(&s);
        bytes[4] = 6;
        bytes.truncate(bytes.len() - 12);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(s.clone()));
        let with_declarer = s.clone();
        s.queues[0].declared_by = 0;
        let with_home = s.clone();
        // Format 5 ends after the homes: drop the (empty) counts of formats 6 and 7.
        let mut bytes = encode_snapshot(&s);
        bytes[4] = 5;
        bytes.truncate(bytes.len() - 16);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(s.clone()));
        let bytes = encode_snapshot(&with_declarer);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(with_declarer));
        s.queues[0].home = 0;
        let with_gaps = s.clone();
        // Format 4 ends after the skipped confirm numbers: drop the (empty) counts of 5 to 7.
        let mut bytes = encode_snapshot(&s);
        bytes[4] = 4;
        bytes.truncate(bytes.len() - 20);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(s.clone()));
        let bytes = encode_snapshot(&with_home);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(with_home));
        s.publishers[0].missing.clear();
        // Format 3 ends after the permissions: drop the (empty) counts of formats 4 to 7.
        let mut bytes = encode_snapshot(&s);
        bytes[4] = 3;
        bytes.truncate(bytes.len() - 24);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(s.clone()));
        let mut bytes = encode_snapshot(&with_gaps);
        assert_eq!(decode_snapshot(Bytes::from(bytes.clone())), Ok(with_gaps));
        // Format 2 ends after the publishers: drop the counts of formats 3 to 7.
        bytes = encode_snapshot(&s);
        bytes[4] = 2;
        bytes.truncate(bytes.len() - 32);
        s.security = None;
        assert_eq!(decode_snapshot(Bytes::from(bytes.clone())), Ok(s.clone()));
        // Format 1 ends after the queues.
        s.publishers.clear();
        let mut bytes = encode_snapshot(&s);
        bytes[4] = 1;
        bytes.truncate(bytes.len() - 36);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(s));
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let bytes = encode_snapshot(&s);
        assert_eq!(decode_snapshot(Bytes::from(bytes)), Ok(s));
    }

    #[test]
    fn a_fresh_brokers_snapshot_round_trips() {
        let mut b = Broker::new(BrokerConfig::default());
        let mut out: Vec<Effect> = Vec::new();
        b.handle(0, Input::Tick, &mut out);
        let s = b.snapshot();
        assert_eq!(decode_snapshot(Bytes::from(encode_snapshot(&s))), Ok(s));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode_snapshot(&sample());
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(Bytes::copy_from_slice(&bytes[..cut])).is_err());
        }
    }
}
