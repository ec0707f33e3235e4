//! A snapshot sent to another node carries the log entries its queues name: the snapshot itself
//! only names them (see `warren_store::MessageStore`), and the receiver's log may not hold them
//! (it is behind, which is why it gets a snapshot). On disk a snapshot never holds them.
//!
//! Shipped form: `WSHIP1`, the snapshot's length (u64) and bytes, the number of entries (u64),
//! then per entry its index (u64), length (u32) and the raw log entry. Big-endian.
//!
//! Both ends stream it: the sender reads the named entries as the chunks go out
//! ([`ship_chunks`]), and the receiver writes them to its message store as they arrive
//! ([`Receiver`]), keeping only the snapshot itself in memory; a backlog of any depth is shipped
//! in a few megabytes of memory on either side.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use warren_store::{MessageStore, ShippedWriter};

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

/// The oldest log index a snapshot's queues name (kept by each queue's packed entries: a
/// snapshot may name millions, and this runs between two applies).
pub fn oldest_named_entry(snapshot: &warren_core::Snapshot) -> Option<u64> {
    snapshot
        .queues
        .iter()
        .filter_map(|q| q.entries.oldest_index())
        .min()
}

/// Sends `snapshot` (as saved) in the shipped form, with the log entries it names read from
/// `store`, as chunks of about `chunk` bytes into `tx` (blocking: run it on a blocking thread).
/// Returns early without error if the receiving side went away.
pub fn ship_chunks(
    store: &MessageStore,
    snapshot: Vec<u8>,
    chunk: usize,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> io::Result<()> {
    let data = Bytes::from(snapshot);
    let decoded = decode_snapshot(data.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    // Each index once (two queues may hold the same message), in log order.
    let mut indices: Vec<u64> = named(&decoded).collect();
    drop(decoded);
    indices.sort_unstable();
    indices.dedup();
    let mut w = BytesMut::with_capacity(chunk + 64 * 1024);
    w.put_slice(SHIPPED);
    w.put_u64(data.len() as u64);
    w.put_slice(&data);
    w.put_u64(indices.len() as u64);
    let send = |w: &mut BytesMut| tx.blocking_send(w.split().freeze()).is_ok();
    for index in indices {
        let raw = store.entry(METADATA_GROUP, index)?.ok_or_else(|| {
            io::Error::other(format!(
                "log entry {index}, named by the snapshot, is missing on this node"
            ))
        })?;
        w.put_u64(index);
        w.put_u32(u32::try_from(raw.len()).map_err(io::Error::other)?);
        w.put_slice(&raw);
        if w.len() >= chunk && !send(&mut w) {
            return Ok(());
        }
    }
    if !w.is_empty() {
        send(&mut w);
    }
    Ok(())
}

/// Takes a shipped snapshot chunk by chunk: the log entries go to the message store as they
/// arrive, the snapshot is kept. Data that is not in the shipped form (or arrives with no store
/// to keep entries in) is kept whole, for [`unship`].
pub struct Receiver {
    writer: Option<ShippedWriter>,
    /// Bytes not parsed yet.
    pending: BytesMut,
    state: ReceiveState,
    kept: u64,
}

enum ReceiveState {
    /// Not known yet whether the data is shipped.
    Start,
    /// Not shipped, or no store: everything is kept.
    Whole,
    /// The snapshot's `len` bytes are next.
    Snapshot { len: usize },
    /// `left` entries to come after the snapshot.
    Entries { snapshot: Bytes, left: u64 },
}

impl Receiver {
    pub fn new(store: Option<MessageStore>) -> Receiver {
        Receiver {
            writer: store.map(|s| s.shipped_writer(METADATA_GROUP)),
            pending: BytesMut::new(),
            state: ReceiveState::Start,
            kept: 0,
        }
    }

    /// Takes the next chunk.
    pub fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(data);
        loop {
            match &mut self.state {
                ReceiveState::Start => {
                    if self.pending.len() < SHIPPED.len() + 8 {
                        // Shorter than a shipped header: could be either.
                        if !SHIPPED.starts_with(&self.pending[..self.pending.len().min(6)]) {
                            self.state = ReceiveState::Whole;
                        }
                        return Ok(());
                    }
                    if !self.pending.starts_with(SHIPPED) || self.writer.is_none() {
                        self.state = ReceiveState::Whole;
                        return Ok(());
                    }
                    self.pending.advance(SHIPPED.len());
                    let len = usize::try_from(self.pending.get_u64()).map_err(|_| truncated())?;
                    self.state = ReceiveState::Snapshot { len };
                }
                ReceiveState::Whole => return Ok(()),
                ReceiveState::Snapshot { len } => {
                    if self.pending.len() < *len + 8 {
                        return Ok(());
                    }
                    let snapshot = self.pending.split_to(*len).freeze();
                    let left = self.pending.get_u64();
                    self.state = ReceiveState::Entries { snapshot, left };
                }
                ReceiveState::Entries { left, .. } => {
                    if *left == 0 {
                        if !self.pending.is_empty() {
                            return Err(bad("bytes after the shipped log entries"));
                        }
                        return Ok(());
                    }
                    if self.pending.len() < 12 {
                        return Ok(());
                    }
                    let n = u32::from_be_bytes(
                        self.pending[8..12].try_into().map_err(|_| truncated())?,
                    ) as usize;
                    if self.pending.len() < 12 + n {
                        return Ok(());
                    }
                    *left -= 1;
                    let index = self.pending.get_u64();
                    self.pending.advance(4);
                    let raw = self.pending.split_to(n);
                    self.keep(index, &raw)?;
                }
            }
        }
    }

    fn keep(&mut self, index: u64, raw: &[u8]) -> io::Result<()> {
        let Some(writer) = &mut self.writer else {
            return Err(bad("no message store for shipped log entries"));
        };
        writer.add(index, raw)?;
        self.kept += 1;
        Ok(())
    }

    /// After the last chunk: the log entries received are synced to disk, and the snapshot to
    /// install comes back (whole, shipped form included, if it was not taken apart here), with
    /// how many entries were kept.
    pub fn finish(mut self) -> io::Result<(Vec<u8>, u64)> {
        match std::mem::replace(&mut self.state, ReceiveState::Whole) {
            // A start of the shipped header and nothing more: cut short.
            ReceiveState::Start
                if !self.pending.is_empty()
                    && SHIPPED.starts_with(&self.pending[..self.pending.len().min(6)]) =>
            {
                Err(truncated())
            }
            ReceiveState::Start | ReceiveState::Whole => Ok((self.pending.to_vec(), 0)),
            ReceiveState::Snapshot { .. } => Err(truncated()),
            ReceiveState::Entries { left: 0, snapshot } if self.pending.is_empty() => {
                if let Some(writer) = self.writer.take() {
                    writer.finish()?;
                }
                Ok((snapshot.to_vec(), self.kept))
            }
            ReceiveState::Entries { .. } => Err(truncated()),
        }
    }
}

fn bad(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn truncated() -> io::Error {
    bad("truncated shipped snapshot")
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
    use crate::records::testing::put_entry;
    use warren_core::snapshot::{SnapshotEntry, SnapshotQueue};
    use warren_core::{PackedEntries, Snapshot, StoredRef};

    fn store() -> (tempfile::TempDir, MessageStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = warren_store::open(dir.path()).expect("open");
        (dir, MessageStore::new(db))
    }

    #[test]
    fn a_shipped_snapshot_streams_its_entries_to_the_receivers_store() {
        let (_dir, here) = store();
        let named: Vec<u64> = (10..400).step_by(3).collect();
        for &i in &named {
            put_entry(&here, i, &format!("body-{i}-{}", "x".repeat(i as usize)));
        }
        let entries = named.iter().enumerate().map(|(n, &index)| SnapshotEntry {
            seq: n as u64 + 1,
            message: 0,
            stored: Some(StoredRef {
                index,
                len: 10,
                persistent: true,
            }),
            redelivered: false,
            priority: 0,
            delivery_count: 0,
            expires_at: None,
        });
        let snapshot = Snapshot {
            queues: vec![SnapshotQueue {
                id: 1,
                vhost: "/".into(),
                name: "q".into(),
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments: Default::default(),
                next_seq: named.len() as u64 + 1,
                had_consumer: false,
                last_used: 0,
                home: 0,
                declared_by: 0,
                entries: PackedEntries::from_entries(entries),
            }],
            ..Default::default()
        };
        let saved = crate::encode_snapshot(&snapshot);
        // Small chunks, so that entries straddle them; two in flight at most.
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let (sender_store, sent) = (here.clone(), saved.clone());
        let sender = std::thread::spawn(move || ship_chunks(&sender_store, sent, 1000, &tx));
        let (_other_dir, there) = store();
        let mut receiver = Receiver::new(Some(there.clone()));
        let mut chunks = 0;
        while let Some(chunk) = rx.blocking_recv() {
            assert!(
                chunk.len() < 1000 + 2000,
                "chunks stay small: {}",
                chunk.len()
            );
            // Fed in odd pieces: the receiver parses across any boundary.
            for piece in chunk.chunks(333) {
                receiver.feed(piece).expect("feed");
            }
            chunks += 1;
        }
        sender.join().expect("sender").expect("shipped");
        assert!(chunks > 10, "streamed in {chunks} chunks");
        let (snapshot_bytes, kept) = receiver.finish().expect("finish");
        assert_eq!(
            snapshot_bytes, saved,
            "the snapshot itself, without the entries"
        );
        assert_eq!(kept, named.len() as u64);
        for &i in &named {
            assert_eq!(
                there.entry(METADATA_GROUP, i).expect("read"),
                here.entry(METADATA_GROUP, i).expect("read")
            );
        }
        assert_eq!(
            there.entry(METADATA_GROUP, 11).expect("read"),
            None,
            "only named ones"
        );

        // Cut anywhere, the stream is an error at the end, never a snapshot.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        ship_chunks(&here, saved.clone(), 1 << 20, &tx).expect("shipped");
        drop(tx);
        let whole = rx.blocking_recv().expect("one chunk");
        for cut in [3, 20, saved.len(), whole.len() - 5] {
            let (_d, s) = store();
            let mut r = Receiver::new(Some(s));
            r.feed(&whole[..cut]).expect("feed");
            assert!(r.finish().is_err(), "cut at {cut}");
        }
        // A snapshot that was not shipped comes back whole.
        let mut r = Receiver::new(Some(there));
        r.feed(&saved).expect("feed");
        assert_eq!(r.finish().expect("whole"), (saved, 0));
    }

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
