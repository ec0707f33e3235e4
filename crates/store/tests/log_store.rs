//! `RocksLogStore` against openraft's storage test suite, plus restart durability.
//!
//! The suite needs a state machine beside the log; `MemStateMachine` below is the smallest correct
//! one (it remembers the last applied log id and membership, and snapshots exactly that).

use std::io;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, OptionalSend, RaftLogReader, StorageError};
use warren_store::{open, RocksLogStore};

openraft::declare_raft_types!(pub Config: D = u64, R = u64);

#[derive(Clone, Default)]
struct MemStateMachine {
    inner: Arc<Mutex<Applied>>,
}

#[derive(Clone, Default)]
struct Applied {
    last_applied: Option<LogIdOf<Config>>,
    membership: StoredMembershipOf<Config>,
    snapshot: Option<SnapshotOf<Config, Vec<u8>>>,
}

impl RaftSnapshotBuilder<Config> for MemStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Config, Vec<u8>>, io::Error> {
        let mut a = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        let meta = SnapshotMetaOf::<Config> {
            last_log_id: a.last_applied,
            last_membership: a.membership.clone(),
        };
        let snapshot = SnapshotOf::<Config, Vec<u8>> {
            meta,
            snapshot: Vec::new(),
        };
        a.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl RaftStateMachine<Config> for MemStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Config>>, StoredMembershipOf<Config>), io::Error> {
        let a = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<
                Item = Result<openraft::storage::EntryResponder<Config>, io::Error>,
            > + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut a = self
                .inner
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?;
            a.last_applied = Some(entry.log_id());
            if let EntryPayload::Membership(m) = &entry.payload {
                a.membership = StoredMembershipOf::<Config>::new(Some(entry.log_id()), m.clone());
            }
            let response = match entry.payload {
                EntryPayload::Normal(n) => n,
                _ => 0,
            };
            drop(a);
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Config>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let mut a = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        a.last_applied = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        a.snapshot = Some(SnapshotOf::<Config, Vec<u8>> {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<Config, Vec<u8>>>, io::Error> {
        let a = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Ok(a.snapshot.clone())
    }
}

struct Builder;

impl StoreBuilder<Config, RocksLogStore<Config>, MemStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RocksLogStore<Config>, MemStateMachine), StorageError<Config>>
    {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::read(Config::err_from_error(&e)))?;
        let db = open(dir.path()).map_err(|e| StorageError::read(Config::err_from_error(&e)))?;
        let store =
            RocksLogStore::new(db).map_err(|e| StorageError::read(Config::err_from_error(&e)))?;
        Ok((dir, store, MemStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passes_openraft_storage_suite() {
    Suite::test_all(Builder)
        .await
        .expect("openraft's storage suite");
}

#[tokio::test(flavor = "multi_thread")]
async fn flushed_entries_and_the_vote_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let vote =
        openraft::impls::Vote::<openraft::impls::leader_id_adv::LeaderId<u64, u64>>::new(7, 1);
    {
        let mut store = RocksLogStore::<Config>::new(open(dir.path()).unwrap()).unwrap();
        store.save_vote(&vote).await.unwrap();
        let entries: Vec<_> = (1..=100u64)
            .map(|i| {
                openraft::Entry::<_, _>::new_normal(
                    openraft::testing::log_id::<Config>(7, 1, i),
                    i * 10,
                )
            })
            .collect();
        let (tx, flushed) = Config::oneshot();
        let callback = IOFlushed::<Config>::signal(tx);
        store.append(entries, callback).await.unwrap();
        flushed.await.unwrap().unwrap();
    }
    let mut store = RocksLogStore::<Config>::new(open(dir.path()).unwrap()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index()), Some(100));
    let got = store.try_get_log_entries(40..43).await.unwrap();
    let payloads: Vec<u64> = got
        .iter()
        .map(|e| match e.payload {
            EntryPayload::Normal(n) => n,
            _ => 0,
        })
        .collect();
    assert_eq!(payloads, [400, 410, 420]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_incarnation_is_kept_across_reopening_and_lost_with_a_wipe() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = RocksLogStore::<Config>::new(open(dir.path()).unwrap()).unwrap();
        let id = store.incarnation(|| 0xfeed).unwrap();
        assert_eq!(store.incarnation(|| 1).unwrap(), id, "asked twice, one id");
        id
    };
    assert_eq!(first, 0xfeed);
    {
        let store = RocksLogStore::<Config>::new(open(dir.path()).unwrap()).unwrap();
        assert_eq!(
            store.incarnation(|| 2).unwrap(),
            first,
            "kept across a reopen"
        );
    }
    std::fs::remove_dir_all(dir.path()).unwrap();
    let store = RocksLogStore::<Config>::new(open(dir.path()).unwrap()).unwrap();
    assert_eq!(
        store.incarnation(|| 3).unwrap(),
        3,
        "a wiped store is a new incarnation"
    );
}

/// A node that installed a snapshot and was killed before appending after it keeps, below the
/// purge point, only the entries queued messages rest in: its log ends at the purge point
/// (seen in CI: openraft refused to start with "inverted log order", 2026-12-06).
#[tokio::test(flavor = "multi_thread")]
async fn entries_kept_below_the_purge_point_for_messages_do_not_end_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).unwrap();
    let messages = warren_store::MessageStore::new(db.clone());
    let mut store = RocksLogStore::<Config>::new(db)
        .unwrap()
        .with_messages(messages.clone());
    let entries: Vec<_> = (1..=5u64)
        .map(|i| {
            openraft::Entry::<_, _>::new_normal(openraft::testing::log_id::<Config>(2, 1, i), i)
        })
        .collect();
    let (tx, flushed) = Config::oneshot();
    store
        .append(entries, IOFlushed::<Config>::signal(tx))
        .await
        .unwrap();
    flushed.await.unwrap().unwrap();
    // A queued message rests in entry 3; a snapshot up to 20 000 (another leader's) purges.
    messages.keep_from(3);
    let purged = openraft::testing::log_id::<Config>(3, 3, 20_000);
    store.purge(purged).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(purged));
    assert_eq!(state.last_log_id, Some(purged));
    // Reopened, the same.
    drop((store, messages));
    let mut store = RocksLogStore::<Config>::new(open(dir.path()).unwrap()).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(purged));
}
