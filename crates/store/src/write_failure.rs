//! The first failed write to a store, after which nothing is written to it again.

use std::io;
use std::sync::{Arc, OnceLock};

use tracing::error;

/// Remembers the first RocksDB write or WAL fsync that failed (a full disk, an I/O error) and
/// refuses every later write of the store without touching RocksDB.
///
/// Two reasons: a Raft log that lost a write cannot go on (openraft stops on the error and the
/// node exits, see `warren_raft::node::stopped`), and RocksDB's WAL writer must not be used
/// again after a failed write: the bundled RocksDB is built with assertions and aborts the
/// process on the next sync (`sync_without_flush_called_`), before Warren could say why.
#[derive(Clone, Default)]
pub(crate) struct WriteFailure(Arc<OnceLock<String>>);

impl WriteFailure {
    /// `Err` once a write has failed.
    pub(crate) fn check(&self) -> io::Result<()> {
        match self.0.get() {
            Some(e) => Err(io::Error::other(format!(
                "refused: an earlier write to the Raft log failed ({e})"
            ))),
            None => Ok(()),
        }
    }

    /// Passes a RocksDB result through, recording (and logging, once) the first error.
    pub(crate) fn guard<T, E: std::fmt::Display>(
        &self,
        what: &str,
        result: Result<T, E>,
    ) -> io::Result<T> {
        result.map_err(|e| {
            let message = e.to_string();
            if self.0.set(message.clone()).is_ok() {
                error!(error = %message, what, "a write to the Raft log failed (is the disk full?); this store takes no more writes");
            }
            io::Error::other(message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_refuses_what_follows() {
        let f = WriteFailure::default();
        assert!(f.check().is_ok());
        assert_eq!(f.guard("append", Ok::<_, String>(7)).ok(), Some(7));
        assert!(f.check().is_ok(), "a success records nothing");
        let err = f
            .guard::<(), _>("append", Err("IO error: No space left on device"))
            .unwrap_err();
        assert!(err.to_string().contains("No space left"));
        let _ = f.guard::<(), _>("fsync", Err("second"));
        let refused = f.check().unwrap_err().to_string();
        assert!(
            refused.contains("No space left"),
            "the first error is kept: {refused}"
        );
    }
}
