//! The ids of nodes this node has seen leave the cluster's membership, kept beside the log (not
//! replicated: each node records the removals it sees). `warren_raft::trust` refuses their
//! certificates; any other node certificate of the cluster's CA may speak Raft to this node,
//! because a node whose membership is behind cannot know the members added since.

use std::collections::BTreeSet;
use std::io;

use rocksdb::{WriteOptions, DB};

use crate::db::CF_META;

const KEY_RETIRED: &[u8] = b"retired_nodes";

fn missing_cf() -> io::Error {
    io::Error::other(format!("column family {CF_META} is missing"))
}

/// The retired node ids recorded so far (none on a new store).
pub fn retired_nodes(db: &DB) -> io::Result<BTreeSet<u64>> {
    let cf = db.cf_handle(CF_META).ok_or_else(missing_cf)?;
    match db.get_cf(cf, KEY_RETIRED).map_err(io::Error::other)? {
        None => Ok(BTreeSet::new()),
        Some(bytes) => postcard::from_bytes::<Vec<u64>>(&bytes)
            .map(|ids| ids.into_iter().collect())
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the retired node ids: {e}"),
                )
            }),
    }
}

/// Records `ids` as the retired node ids, with a synced write.
pub fn save_retired_nodes(db: &DB, ids: &BTreeSet<u64>) -> io::Result<()> {
    let cf = db.cf_handle(CF_META).ok_or_else(missing_cf)?;
    let bytes = postcard::to_stdvec(&ids.iter().copied().collect::<Vec<u64>>())
        .map_err(io::Error::other)?;
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(cf, KEY_RETIRED, bytes, &opts)
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_ids_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        {
            let db = crate::open(dir.path()).expect("open");
            assert!(retired_nodes(&db).expect("read").is_empty());
            save_retired_nodes(&db, &BTreeSet::from([2, 7])).expect("save");
        }
        let db = crate::open(dir.path()).expect("reopen");
        assert_eq!(retired_nodes(&db).expect("read"), BTreeSet::from([2, 7]));
    }
}
