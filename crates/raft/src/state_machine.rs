//! The Raft state machine of a Warren node: committed commands go, in log order and in batches,
//! to the task that owns the broker core, and `apply` returns only once the broker has applied
//! them. The broker's state is rebuilt at start-up by replaying the log (snapshots are not built
//! yet, so the log is never purged: see `docs/architecture.md`).

use std::io;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::{mpsc, oneshot};
use warren_core::Command;

use crate::{LogCommand, TypeConfig};

/// Committed commands for the broker, and how to say they were applied.
#[derive(Debug)]
pub struct AppliedBatch {
    pub commands: Vec<Command>,
    pub done: oneshot::Sender<()>,
}

#[derive(Default)]
struct Applied {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
}

/// Forwards committed commands to the broker task.
#[derive(Clone)]
pub struct BrokerStateMachine {
    to_broker: mpsc::Sender<AppliedBatch>,
    applied: Arc<Mutex<Applied>>,
}

impl BrokerStateMachine {
    /// A state machine that hands committed commands to `to_broker`.
    pub fn new(to_broker: mpsc::Sender<AppliedBatch>) -> BrokerStateMachine {
        BrokerStateMachine {
            to_broker,
            applied: Arc::default(),
        }
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Applied>> {
        self.applied
            .lock()
            .map_err(|_| io::Error::other("state machine lock poisoned"))
    }
}

fn no_snapshots() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Warren does not build snapshots yet; the log is kept whole",
    )
}

impl RaftSnapshotBuilder<TypeConfig> for BrokerStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        Err(no_snapshots())
    }
}

impl RaftStateMachine<TypeConfig> for BrokerStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    /// The broker lives in memory: after a restart nothing is applied yet, so openraft replays
    /// the whole log into it.
    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let a = self.lock()?;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        let mut commands = Vec::new();
        let mut responders = Vec::new();
        let mut last = None;
        let mut membership = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            last = Some(log_id);
            match entry.payload {
                EntryPayload::Normal(LogCommand(command)) => commands.push(command),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembershipOf::<TypeConfig>::new(Some(log_id), m))
                }
                EntryPayload::Blank => {}
            }
            if let Some(r) = responder {
                responders.push(r);
            }
        }
        if !commands.is_empty() {
            let (done, applied) = oneshot::channel();
            self.to_broker
                .send(AppliedBatch { commands, done })
                .await
                .map_err(|_| io::Error::other("the broker task has stopped"))?;
            applied
                .await
                .map_err(|_| io::Error::other("the broker task stopped while applying"))?;
        }
        {
            let mut a = self.lock()?;
            if last.is_some() {
                a.last_applied = last;
            }
            if let Some(m) = membership {
                a.membership = m;
            }
        }
        for r in responders {
            r.send(());
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf<TypeConfig>,
        _snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        Ok(None)
    }
}
