//! A snapshot sent to another node carries the log entries its queues name: the snapshot itself
//! only names them (see `warren_store::MessageStore`), and the receiver's log may not hold them
//! (it is behind, which is why it gets a snapshot). On disk a snapshot never holds them.
//!
//! Shipped form: `WSHIP1`, the snapshot's length (u64) and bytes, the number of entries (u64),
//! then per entry its index (u64), length (u32) and the raw log entry. Big-endian.

use std::collections::BTreeSet;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use warren_store::MessageStore;

use crate::{decode_snapshot, METADATA_GROUP};

const SHIPPED: &[u8] = b"WSHIP1";

/// The log indices a snapshot's queues name (an index twice if two queues hold its message).
fn named(snapshot: &warren_core::Snapshot) -> impl Iterator<Item = u64> + '_ {
    snapshot
        .queues
        .iter()
        .flat_map(|q| q.entries.iter())
        // Packed entries are checked when they are decoded: none is an error here.
        .filter_map(|e| e.ok()?.stored.map(|r| r.index))
}

/// The log indices a snapshot's queues name, each once.
pub fn named_entries(snapshot: &warren_core::Snapshot) -> BTreeSet<u64> {
    named(snapshot).collect()
}

/// The oldest log index a snapshot's queues name (no allocation: a snapshot may name millions).
pub fn oldest_named_entry(snapshot: &warren_core::Snapshot) -> Option<u64> {
    named(snapshot).min()
}

/// `snapshot` (as saved) with the log entries it names, read from `store`.
pub fn ship(store: &MessageStore, snapshot: Vec<u8>) -> io::Result<Vec<u8>> {
    let data = Bytes::from(snapshot);
    let decoded = decode_snapshot(data.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let named = named_entries(&decoded);
    let mut w = BytesMut::with_capacity(data.len() + 32 + named.len() * 1100);
    w.put_slice(SHIPPED);
    w.put_u64(data.len() as u64);
    w.put_slice(&data);
    w.put_u64(named.len() as u64);
    for index in named {
        let raw = store.entry(METADATA_GROUP, index)?.ok_or_else(|| {
            io::Error::other(format!(
                "log entry {index}, named by the snapshot, is missing on this node"
            ))
        })?;
        w.put_u64(index);
        w.put_u32(u32::try_from(raw.len()).map_err(io::Error::other)?);
        w.put_slice(&raw);
    }
    Ok(w.to_vec())
}

/// The snapshot and the shipped log entries of `data`; a snapshot that was not shipped (this
/// node's own, at a restart) comes back whole with no entries.
pub fn unship(data: Bytes) -> io::Result<(Bytes, Vec<(u64, Bytes)>)> {
    if !data.starts_with(SHIPPED) {
        return Ok((data, Vec::new()));
    }
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "truncated shipped snapshot");
    let mut r = data.slice(SHIPPED.len()..);
    if r.remaining() < 8 {
        return Err(bad());
    }
    let len = usize::try_from(r.get_u64()).map_err(|_| bad())?;
    if r.remaining() < len + 8 {
        return Err(bad());
    }
    let snapshot = r.split_to(len);
    let count = r.get_u64();
    let mut entries = Vec::new();
    for _ in 0..count {
        if r.remaining() < 12 {
            return Err(bad());
        }
        let index = r.get_u64();
        let n = r.get_u32() as usize;
        if r.remaining() < n {
            return Err(bad());
        }
        entries.push((index, r.split_to(n)));
    }
    Ok((snapshot, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_that_was_not_shipped_comes_back_whole() {
        let data = Bytes::from_static(b"WRNS\x08rest");
        let (snapshot, entries) = unship(data.clone()).expect("unship");
        assert_eq!(snapshot, data);
        assert!(entries.is_empty());
    }

    #[test]
    fn truncated_shipped_data_is_refused_without_panicking() {
        let mut full = Vec::new();
        full.extend_from_slice(SHIPPED);
        full.extend_from_slice(&3u64.to_be_bytes());
        full.extend_from_slice(b"abc");
        full.extend_from_slice(&1u64.to_be_bytes());
        full.extend_from_slice(&7u64.to_be_bytes());
        full.extend_from_slice(&2u32.to_be_bytes());
        full.extend_from_slice(b"xy");
        let (snapshot, entries) = unship(Bytes::from(full.clone())).expect("whole");
        assert_eq!(snapshot.as_ref(), b"abc");
        assert_eq!(entries, vec![(7, Bytes::from_static(b"xy"))]);
        for cut in SHIPPED.len()..full.len() {
            assert!(
                unship(Bytes::from(full[..cut].to_vec())).is_err(),
                "cut at {cut}"
            );
        }
    }
}
