//! The newest log entries, decoded, in memory: what openraft reads back right after appending.
//!
//! openraft reads every entry it appended back through the log reader: once per follower to
//! replicate it and once to apply it on the leader, once to apply it on a follower. Read from
//! RocksDB, each read is an iterator seek and a decode of the whole entry, body included (11 %
//! of the leader's CPU and 6 % of a follower's in S1, 2026-12-06). These reads come a few
//! milliseconds after the append, so the newest entries stay here, decoded, and a read inside
//! them is a clone (bodies are shared `Bytes`). Bounded by [`RECENT_BYTES`]; older reads (a
//! follower far behind, a restart's replay) go to RocksDB.
//!
//! Invariant: the entries are contiguous and, when there are any, end at the log's last entry
//! (every append adds here after writing RocksDB and before it returns; a truncation removes
//! here first).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Encoded bytes of the entries kept (plus a fixed overhead each).
pub(crate) const RECENT_BYTES: usize = 8 << 20;
/// What one kept entry costs besides its encoded size.
const OVERHEAD: usize = 128;

#[derive(Debug)]
struct Kept<E> {
    /// Index of the first entry.
    first: u64,
    entries: VecDeque<(E, usize)>,
    bytes: usize,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Recent<E> {
    kept: Mutex<Kept<E>>,
    limit: usize,
}

impl<E: Clone> Recent<E> {
    pub(crate) fn new(limit: usize) -> Recent<E> {
        Recent {
            kept: Mutex::new(Kept {
                first: 0,
                entries: VecDeque::new(),
                bytes: 0,
            }),
            limit,
        }
    }

    /// Entries (index, encoded size, entry) were appended to the log, in order.
    pub(crate) fn appended(&self, entries: impl IntoIterator<Item = (u64, usize, E)>) {
        let Ok(mut k) = self.kept.lock() else {
            return;
        };
        for (index, size, entry) in entries {
            let next = k.first + k.entries.len() as u64;
            if k.entries.is_empty() || index != next {
                // The first, or after a gap (a snapshot installed, a truncation not seen
                // here): start again from this one.
                k.entries.clear();
                k.bytes = 0;
                k.first = index;
            }
            let cost = size + OVERHEAD;
            k.entries.push_back((entry, cost));
            k.bytes += cost;
        }
        while k.bytes > self.limit && k.entries.len() > 1 {
            if let Some((_, c)) = k.entries.pop_front() {
                k.bytes -= c;
                k.first += 1;
            }
        }
    }

    /// The log keeps nothing from index `from` on.
    pub(crate) fn truncated(&self, from: u64) {
        let Ok(mut k) = self.kept.lock() else {
            return;
        };
        while k.first + (k.entries.len() as u64) > from {
            match k.entries.pop_back() {
                Some((_, c)) => k.bytes -= c,
                None => break,
            }
        }
        if k.entries.is_empty() {
            k.bytes = 0;
        }
    }

    /// The log keeps nothing up to index `upto` (inclusive).
    pub(crate) fn purged(&self, upto: u64) {
        let Ok(mut k) = self.kept.lock() else {
            return;
        };
        while k.first <= upto {
            match k.entries.pop_front() {
                Some((_, c)) => {
                    k.bytes -= c;
                    k.first += 1;
                }
                None => break,
            }
        }
    }

    /// The entries from `start` up to `end` (exclusive; `None`: to the last), if `start` is
    /// among those kept: the log has nothing after the last kept one.
    pub(crate) fn read(&self, start: u64, end: Option<u64>) -> Option<Vec<E>> {
        let k = self.kept.lock().ok()?;
        let last = k.first + k.entries.len() as u64;
        if k.entries.is_empty() || start < k.first || start >= last {
            return None;
        }
        let end = end.map_or(last, |e| e.min(last));
        if end <= start {
            return Some(Vec::new());
        }
        let from = (start - k.first) as usize;
        let to = (end - k.first) as usize;
        Some(k.entries.range(from..to).map(|(e, _)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_the_kept_entries_are_served_and_others_are_not() {
        let r = Recent::new(10 * (OVERHEAD + 10));
        for i in 5..=9 {
            r.appended([(i, 10, i)]);
        }
        assert_eq!(r.read(5, Some(8)), Some(vec![5, 6, 7]));
        assert_eq!(r.read(7, None), Some(vec![7, 8, 9]));
        // Past the last entry: the log has nothing there.
        assert_eq!(r.read(8, Some(100)), Some(vec![8, 9]));
        assert_eq!(r.read(4, Some(6)), None, "starts before the kept ones");
        assert_eq!(r.read(10, None), None, "starts after them");
    }

    #[test]
    fn the_oldest_go_beyond_the_limit_and_a_truncation_or_a_gap_is_followed() {
        let r = Recent::new(3 * (OVERHEAD + 10));
        for i in 1..=5 {
            r.appended([(i, 10, i)]);
        }
        assert_eq!(r.read(3, None), Some(vec![3, 4, 5]));
        assert_eq!(r.read(2, None), None);
        // Truncated after 3, then 4 and 5 appended again (another term's entries).
        r.truncated(4);
        assert_eq!(r.read(3, None), Some(vec![3]));
        r.appended([(4, 10, 40)]);
        r.appended([(5, 10, 50)]);
        assert_eq!(r.read(3, None), Some(vec![3, 40, 50]));
        // A gap (a snapshot installed): only what follows it is kept.
        r.appended([(100, 10, 100)]);
        assert_eq!(r.read(5, None), None);
        assert_eq!(r.read(100, None), Some(vec![100]));
        r.appended([(101, 10, 101)]);
        r.purged(100);
        assert_eq!(r.read(100, None), None);
        assert_eq!(r.read(101, None), Some(vec![101]));
        r.truncated(0);
        assert_eq!(r.read(101, None), None);
    }
}
