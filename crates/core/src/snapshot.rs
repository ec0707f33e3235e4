//! The replicated state of a broker as plain data, for Raft snapshots: everything the log's
//! commands build (exchanges, bindings, queues, their messages with sequence numbers, the next
//! queue id), and nothing that is local to one node (connections, channels, consumers).
//!
//! [`crate::Broker::snapshot`] takes one (cheap: message bodies are shared `Bytes`);
//! [`crate::Broker::restore`] replaces a broker's replicated state with one. Encoding it to bytes
//! is the Raft layer's business. A message routed to several queues appears once in
//! [`Snapshot::messages`] and is referenced by index, so its body is written once.

use bytes::Bytes;
use warren_wire::record::put_varint;
use warren_wire::{BasicProperties, FieldTable, ShortStr};

use crate::command::Destination;
use crate::Millis;

/// The replicated state at one point of the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// [`crate::STATE_MACHINE_VERSION`] of the broker that took it.
    pub version: u32,
    pub next_queue_id: u64,
    pub vhosts: Vec<SnapshotVhost>,
    pub messages: Vec<SnapshotMessage>,
    pub queues: Vec<SnapshotQueue>,
    /// Per publishing channel, the last confirm number applied (see [`crate::Op::Publish`]),
    /// sorted by connection and channel.
    pub publishers: Vec<SnapshotPublisher>,
    /// Users, permissions, topic permissions and limits (vhosts are in [`Snapshot::vhosts`]).
    /// `None` in snapshots written before they were replicated: a restore then keeps the
    /// broker's own.
    pub security: Option<SnapshotSecurity>,
    /// Policies and operator policies, sorted by (operator, vhost, name). Format 11 on.
    pub policies: Vec<SnapshotPolicy>,
}

/// A policy as a snapshot holds it (see [`crate::Op::SetPolicy`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotPolicy {
    pub vhost: ShortStr,
    pub name: String,
    pub operator: bool,
    pub pattern: String,
    pub apply_to: String,
    pub priority: i64,
    pub definition: FieldTable,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotSecurity {
    /// Sorted by name.
    pub users: Vec<SnapshotUser>,
    /// Sorted by user, then vhost.
    pub permissions: Vec<SnapshotPermission>,
    /// Sorted by user, vhost, exchange. Format 7 on (empty before).
    pub topic_permissions: Vec<SnapshotTopicPermission>,
    /// The vhosts that have limits, sorted by vhost. Format 7 on.
    pub vhost_limits: Vec<SnapshotLimits>,
    /// The users that have limits, sorted by user. Format 7 on.
    pub user_limits: Vec<SnapshotLimits>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotTopicPermission {
    pub user: String,
    pub vhost: ShortStr,
    pub exchange: ShortStr,
    pub write: String,
    pub read: String,
}

/// The limits of one vhost or user (`owner`), sorted by name.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotLimits {
    pub owner: String,
    pub limits: Vec<(String, i64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotUser {
    pub name: String,
    pub password_hash: String,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotPermission {
    pub user: String,
    pub vhost: ShortStr,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPublisher {
    pub conn: u64,
    pub channel: u16,
    pub seq: u64,
    pub at: Millis,
    /// Confirm numbers below `seq` never applied (state machine version 3).
    pub missing: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotVhost {
    pub name: ShortStr,
    pub exchanges: Vec<SnapshotExchange>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotExchange {
    pub name: ShortStr,
    /// `direct`, `fanout`, `topic` or `headers`.
    pub kind: ShortStr,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    pub bindings: Vec<SnapshotBinding>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotBinding {
    pub destination: Destination,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotMessage {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub properties: BasicProperties,
    pub body: Bytes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotQueue {
    pub id: u64,
    pub vhost: ShortStr,
    pub name: ShortStr,
    pub durable: bool,
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub next_seq: u64,
    pub had_consumer: bool,
    pub last_used: Millis,
    /// A local queue's home node, whose broker decides it; 0 for none. Format 5 on.
    pub home: u64,
    /// The connection whose declare created the queue; 0 if unknown. Format 6 on.
    pub declared_by: u64,
    /// Every message still in the queue (ready or checked out), in sequence order.
    pub entries: PackedEntries,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub seq: u64,
    /// Index into [`Snapshot::messages`] (unused when `stored` is set).
    pub message: u32,
    /// The message rests in this log entry (format 8 on): the snapshot names it instead of
    /// holding it.
    pub stored: Option<crate::StoredRef>,
    pub redelivered: bool,
    pub expires_at: Option<Millis>,
    /// The priority level it waits at (0 unless its queue has `x-max-priority`; format 10 on).
    pub priority: u8,
    /// How many times a consumer gave it back (a quorum queue's delivery count; format 10 on).
    pub delivery_count: u32,
}

/// A queue's entries, packed as they are taken: a snapshot of a queue holding a million
/// messages costs about 6 bytes per message, in memory and in the file, instead of an
/// [`SnapshotEntry`] each. Per entry: a flags byte (bit 0 names a log entry, 1 persistent,
/// 2 redelivered, 3 has an expiry, 4 has a priority level, 5 has a delivery count), then LEB128
/// varints: the sequence
/// number's difference from the previous entry's (zigzag), the log index's difference from the
/// previous named entry's (zigzag) and the body's length, or the index into
/// [`Snapshot::messages`], then the expiry's difference from the previous expiry (zigzag), then
/// the priority level as one byte, then the delivery count (varint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedEntries {
    bytes: Vec<u8>,
    count: usize,
    last: PackState,
    /// The smallest log index an entry names (kept as entries are packed or checked, so that
    /// the log's keep point needs no second pass over millions of entries).
    oldest_index: Option<u64>,
}

/// What the next packed entry is a difference from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PackState {
    seq: u64,
    index: u64,
    expires_at: u64,
}

const NAMES_ENTRY: u8 = 1;
const PERSISTENT: u8 = 2;
const REDELIVERED: u8 = 4;
const EXPIRES: u8 = 8;
const PRIORITY: u8 = 16;
const DELIVERY_COUNT: u8 = 32;

fn zigzag(from: u64, to: u64) -> u64 {
    let d = to.wrapping_sub(from) as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(from: u64, z: u64) -> u64 {
    let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
    from.wrapping_add(d as u64)
}

impl PackedEntries {
    /// Packs `entries` (any order; sequence order packs smallest).
    pub fn from_entries(entries: impl IntoIterator<Item = SnapshotEntry>) -> PackedEntries {
        let mut packed = PackedEntries::default();
        for e in entries {
            packed.push(&e);
        }
        packed
    }

    /// Appends one entry.
    pub fn push(&mut self, e: &SnapshotEntry) {
        let mut flags = 0;
        if let Some(r) = e.stored {
            flags |= NAMES_ENTRY;
            if r.persistent {
                flags |= PERSISTENT;
            }
        }
        if e.redelivered {
            flags |= REDELIVERED;
        }
        if e.expires_at.is_some() {
            flags |= EXPIRES;
        }
        if e.priority != 0 {
            flags |= PRIORITY;
        }
        if e.delivery_count != 0 {
            flags |= DELIVERY_COUNT;
        }
        self.bytes.push(flags);
        put_varint(&mut self.bytes, zigzag(self.last.seq, e.seq));
        self.last.seq = e.seq;
        match e.stored {
            Some(r) => {
                put_varint(&mut self.bytes, zigzag(self.last.index, r.index));
                self.last.index = r.index;
                self.oldest_index = Some(self.oldest_index.map_or(r.index, |o| o.min(r.index)));
                put_varint(&mut self.bytes, u64::from(r.len));
            }
            None => put_varint(&mut self.bytes, u64::from(e.message)),
        }
        if let Some(at) = e.expires_at {
            put_varint(&mut self.bytes, zigzag(self.last.expires_at, at));
            self.last.expires_at = at;
        }
        if e.priority != 0 {
            self.bytes.push(e.priority);
        }
        if e.delivery_count != 0 {
            put_varint(&mut self.bytes, u64::from(e.delivery_count));
        }
        self.count += 1;
    }

    /// The packed form (for encoding a snapshot), and how many entries it holds.
    pub fn raw(&self) -> (usize, &[u8]) {
        (self.count, &self.bytes)
    }

    /// Entries from their packed form, checked whole.
    pub fn from_raw(count: usize, bytes: Vec<u8>) -> Result<PackedEntries, SnapshotError> {
        let mut reader = Unpack {
            bytes: &bytes,
            at: 0,
            last: PackState::default(),
            left: count,
        };
        let mut oldest_index: Option<u64> = None;
        for e in reader.by_ref() {
            if let Some(r) = e?.stored {
                oldest_index = Some(oldest_index.map_or(r.index, |o| o.min(r.index)));
            }
        }
        if reader.at != bytes.len() {
            return Err(SnapshotError(format!(
                "{} bytes after a queue's {count} entries",
                bytes.len() - reader.at
            )));
        }
        let last = reader.last;
        Ok(PackedEntries {
            bytes,
            count,
            last,
            oldest_index,
        })
    }

    /// The smallest log index the entries name, if any names one.
    pub fn oldest_index(&self) -> Option<u64> {
        self.oldest_index
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries in the order they were packed.
    pub fn iter(&self) -> impl Iterator<Item = Result<SnapshotEntry, SnapshotError>> + '_ {
        Unpack {
            bytes: &self.bytes,
            at: 0,
            last: PackState::default(),
            left: self.count,
        }
    }

    /// The entries in the order they were packed, all of them or an error.
    pub fn to_vec(&self) -> Result<Vec<SnapshotEntry>, SnapshotError> {
        self.iter().collect()
    }
}

struct Unpack<'a> {
    bytes: &'a [u8],
    at: usize,
    last: PackState,
    left: usize,
}

impl Unpack<'_> {
    fn byte(&mut self) -> Result<u8, SnapshotError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| SnapshotError("a queue's entries end early".into()))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SnapshotError(
            "a varint in a queue's entries is too long".into(),
        ))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        u32::try_from(self.varint()?)
            .map_err(|_| SnapshotError("a queue entry's length is out of range".into()))
    }

    fn entry(&mut self) -> Result<SnapshotEntry, SnapshotError> {
        let flags = self.byte()?;
        if flags & !(NAMES_ENTRY | PERSISTENT | REDELIVERED | EXPIRES | PRIORITY | DELIVERY_COUNT)
            != 0
        {
            return Err(SnapshotError(format!(
                "unknown queue entry flags {flags:#x}"
            )));
        }
        let seq = unzigzag(self.last.seq, self.varint()?);
        self.last.seq = seq;
        let (message, stored) = if flags & NAMES_ENTRY != 0 {
            let index = unzigzag(self.last.index, self.varint()?);
            self.last.index = index;
            let len = self.u32()?;
            let persistent = flags & PERSISTENT != 0;
            (
                0,
                Some(crate::StoredRef {
                    index,
                    len,
                    persistent,
                }),
            )
        } else {
            (self.u32()?, None)
        };
        let expires_at = if flags & EXPIRES != 0 {
            let at = unzigzag(self.last.expires_at, self.varint()?);
            self.last.expires_at = at;
            Some(at)
        } else {
            None
        };
        let priority = if flags & PRIORITY != 0 {
            self.byte()?
        } else {
            0
        };
        let delivery_count = if flags & DELIVERY_COUNT != 0 {
            self.u32()?
        } else {
            0
        };
        Ok(SnapshotEntry {
            seq,
            message,
            stored,
            redelivered: flags & REDELIVERED != 0,
            expires_at,
            priority,
            delivery_count,
        })
    }
}

impl Iterator for Unpack<'_> {
    type Item = Result<SnapshotEntry, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let e = self.entry();
        // After an error the rest cannot be read.
        self.left = if e.is_ok() { self.left - 1 } else { 0 };
        Some(e)
    }
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad snapshot: {0}")]
pub struct SnapshotError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredRef;

    #[test]
    fn packed_entries_round_trip_whatever_their_order_and_values() {
        let stored = |index, len, persistent| {
            Some(StoredRef {
                index,
                len,
                persistent,
            })
        };
        let entries = vec![
            SnapshotEntry {
                seq: 7,
                message: 0,
                stored: stored(1 << 40, 1024, true),
                redelivered: false,
                expires_at: None,
                priority: 0,
                delivery_count: 0,
            },
            SnapshotEntry {
                seq: 8,
                message: 0,
                stored: stored(5, u32::MAX, false),
                redelivered: true,
                expires_at: Some(u64::MAX),
                priority: 200,
                delivery_count: 70_000,
            },
            SnapshotEntry {
                seq: 3,
                message: 41,
                stored: None,
                redelivered: false,
                expires_at: Some(0),
                priority: 0,
                delivery_count: 0,
            },
            SnapshotEntry {
                seq: u64::MAX,
                message: u32::MAX,
                stored: None,
                redelivered: true,
                expires_at: Some(1_700_000_000_000),
                priority: 0,
                delivery_count: 0,
            },
        ];
        let packed = PackedEntries::from_entries(entries.clone());
        assert_eq!(packed.len(), 4);
        assert_eq!(packed.to_vec(), Ok(entries.clone()));
        // The oldest named index is the smallest, not the first packed.
        assert_eq!(packed.oldest_index(), Some(5));
        assert_eq!(
            PackedEntries::from_entries(entries[2..].to_vec()).oldest_index(),
            None
        );
        let (count, raw) = packed.raw();
        let again = PackedEntries::from_raw(count, raw.to_vec()).expect("decodes");
        assert_eq!(again, packed);
        assert_eq!(again.oldest_index(), Some(5));
        // Appending after a decode continues from where the packer left off.
        let mut more = again;
        more.push(&entries[0]);
        let mut expected = entries.clone();
        expected.push(entries[0]);
        assert_eq!(more.to_vec(), Ok(expected));
    }

    #[test]
    fn consecutive_stored_entries_pack_into_a_few_bytes_each() {
        let entries = (0..1000u64).map(|i| SnapshotEntry {
            seq: 100 + i,
            message: 0,
            stored: Some(StoredRef {
                index: 5000 + 2 * i,
                len: 1000,
                persistent: true,
            }),
            redelivered: false,
            expires_at: None,
            priority: 0,
            delivery_count: 0,
        });
        let packed = PackedEntries::from_entries(entries);
        let (count, raw) = packed.raw();
        assert_eq!(count, 1000);
        // Flags, seq delta, index delta: a byte each; the length: two.
        assert!(raw.len() <= 5 * 1000 + 4, "{} bytes", raw.len());
    }

    #[test]
    fn damaged_packed_entries_are_errors() {
        let packed = PackedEntries::from_entries([SnapshotEntry {
            seq: 1,
            message: 0,
            stored: Some(StoredRef {
                index: 300,
                len: 1000,
                persistent: true,
            }),
            redelivered: false,
            expires_at: Some(5),
            priority: 0,
            delivery_count: 0,
        }]);
        let (count, raw) = packed.raw();
        for cut in 0..raw.len() {
            assert!(PackedEntries::from_raw(count, raw[..cut].to_vec()).is_err());
        }
        assert!(
            PackedEntries::from_raw(count + 1, raw.to_vec()).is_err(),
            "too few"
        );
        assert!(
            PackedEntries::from_raw(0, raw.to_vec()).is_err(),
            "bytes left over"
        );
        let mut bad_flags = raw.to_vec();
        bad_flags[0] |= 0x80;
        assert!(PackedEntries::from_raw(count, bad_flags).is_err());
        let overlong = vec![
            0u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(PackedEntries::from_raw(1, overlong).is_err());
    }
}
