//! Three openraft nodes on loopback, talking over Warren's gRPC network, each with its log in
//! RocksDB and Warren's openraft settings: a leader is elected, commands replicate to every node,
//! after the leader stops the other two elect a new one and keep committing, and a leader that
//! lost the unsynced tail of its log in a power loss does not lead again in its old term.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{EntryPayload, OptionalSend, Raft, RaftLogReader};
use warren_core::{Command, Op};
use warren_raft::incarnation::IncarnationBook;
use warren_raft::network::NetworkFactory;
use warren_raft::service::RaftService;
use warren_raft::{
    decode_command, encode_command, LogCommand, TypeConfig, WarrenNode, METADATA_GROUP,
};
use warren_store::{open, RocksLogStore};

/// Records the names of the queues declared by applied commands, in order.
#[derive(Clone, Default)]
struct Recorder {
    inner: Arc<Mutex<State>>,
}

#[derive(Clone, Default)]
struct State {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    queues: Vec<String>,
    snapshot: Option<SnapshotOf<TypeConfig, Vec<u8>>>,
}

impl Recorder {
    fn queues(&self) -> Vec<String> {
        self.inner.lock().unwrap().queues.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Recorder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let mut s = self.inner.lock().unwrap();
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: s.last_applied,
            last_membership: s.membership.clone(),
        };
        let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: s.queues.join("\n").into_bytes(),
        };
        s.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for Recorder {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let s = self.inner.lock().unwrap();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            {
                let mut s = self.inner.lock().unwrap();
                s.last_applied = Some(entry.log_id());
                match &entry.payload {
                    EntryPayload::Membership(m) => {
                        s.membership =
                            StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id()), m.clone())
                    }
                    EntryPayload::Normal(LogCommand(c)) => {
                        if let Op::DeclareQueue { name, .. } = &c.op {
                            s.queues.push(name.to_string());
                        }
                    }
                    EntryPayload::Blank => {}
                }
            }
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let mut s = self.inner.lock().unwrap();
        s.last_applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        s.queues = String::from_utf8_lossy(&snapshot)
            .lines()
            .map(str::to_owned)
            .collect();
        s.snapshot = Some(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        Ok(self.inner.lock().unwrap().snapshot.clone())
    }
}

struct Node {
    raft: Raft<TypeConfig, Recorder>,
    sm: Recorder,
    server: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Stops Raft and the gRPC server; the log's database is closed once this returns.
    async fn stop(self) {
        self.raft.shutdown().await.unwrap();
        self.server.abort();
        let _ = self.server.await;
    }
}

fn declare(name: &str) -> LogCommand {
    let c = Command {
        version: 1,
        origin: None,
        number: None,
        issued_at: 0,
        op: Op::DeclareQueue {
            vhost: "/".into(),
            name: name.into(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: Default::default(),
            nowait: true,
        },
    };
    // What the log carries must survive its own encoding.
    assert_eq!(decode_command(encode_command(&c)).unwrap(), c);
    LogCommand(c)
}

/// Opens the log's database in `dir`, waiting for a stopped node's last tasks to let go of it
/// (`Raft::shutdown` returns before every task holding the store has ended).
async fn open_store(dir: &std::path::Path) -> RocksLogStore<TypeConfig> {
    for _ in 0..100 {
        if let Ok(db) = open(dir) {
            return RocksLogStore::<TypeConfig>::new(db).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    RocksLogStore::<TypeConfig>::new(open(dir).unwrap()).unwrap()
}

async fn start(id: u64, listener: tokio::net::TcpListener, dir: &std::path::Path) -> Node {
    let store = open_store(dir).await;
    let book = Arc::new(IncarnationBook::new(
        id,
        store.incarnation(warren_raft::incarnation::fresh).unwrap(),
    ));
    // Warren's own settings: what this file checks is how they behave.
    let config = Arc::new(warren_raft::node::raft_config(0).unwrap());
    let sm = Recorder::default();
    let raft = Raft::new(
        id,
        config,
        NetworkFactory::new(METADATA_GROUP, book.clone()),
        store,
        sm.clone(),
    )
    .await
    .unwrap();
    let service = RaftService::<Recorder>::new(book);
    service.add_group(METADATA_GROUP, raft.clone());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming)
            .await;
    });
    Node { raft, sm, server }
}

/// Forms the cluster of `members` through node 1 and returns the leader it elects.
async fn form(nodes: &BTreeMap<u64, Node>, members: BTreeMap<u64, WarrenNode>) -> u64 {
    nodes[&1].raft.initialize(members).await.unwrap();
    nodes[&1]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap()
        .current_leader
        .unwrap()
}

/// Writes through whichever node leads, retrying while leadership settles (as a client would).
async fn write(nodes: &BTreeMap<u64, Node>, cmd: LogCommand) {
    for _ in 0..100 {
        for node in nodes.values() {
            let leader = node.raft.metrics().borrow_watched().current_leader;
            if let Some(l) = leader {
                if let Some(n) = nodes.get(&l) {
                    if n.raft.client_write(cmd.clone()).await.is_ok() {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader accepted {cmd}");
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_survive_the_loss_of_the_leader() {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        members.insert(
            id,
            WarrenNode {
                grpc_addr: addr.to_string(),
                amqp_addr: String::new(),
                incarnation: 0,
            },
        );
        listeners.push((id, l));
    }
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = BTreeMap::new();
    for ((id, l), dir) in listeners.into_iter().zip(&dirs) {
        nodes.insert(id, start(id, l, dir.path()).await);
    }
    let leader = form(&nodes, members).await;
    for i in 0..20 {
        write(&nodes, declare(&format!("q{i}"))).await;
    }
    let expected: Vec<String> = (0..20).map(|i| format!("q{i}")).collect();
    for node in nodes.values() {
        let sm = node.sm.clone();
        let e = expected.clone();
        wait_for("replication to every node", move || sm.queues() == e).await;
    }
    // Stop the leader: the other two elect a new one and keep committing.
    nodes.remove(&leader).unwrap().stop().await;
    let survivor = *nodes.keys().next().unwrap();
    nodes[&survivor]
        .raft
        .wait(Some(Duration::from_secs(15)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != leader),
            "a new leader",
        )
        .await
        .unwrap();
    write(&nodes, declare("after-failover")).await;
    let mut expected = expected;
    expected.push("after-failover".into());
    for node in nodes.values() {
        let sm = node.sm.clone();
        let e = expected.clone();
        wait_for("replication after failover", move || sm.queues() == e).await;
    }
    for node in nodes.into_values() {
        node.stop().await;
    }
}

/// A power loss of every node at once, in which the leader loses the last entries of its log: it
/// had sent them to its followers, which synced them, before its own group fsync ran. The
/// committed entries the followers hold must survive, and every node must go on applying the
/// same commands. With openraft's leader restore (on by default in 0.10) the old leader came back
/// as leader of its old term and wrote a new command under a log id its followers already held
/// with another command: they kept theirs, and the replicas diverged (the chaos suite's "applied
/// state equal on every node: NO").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_lost_its_unsynced_tail_does_not_lead_again_in_its_term() {
    let mut addrs = BTreeMap::new();
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        listeners.insert(id, l);
    }
    let members: BTreeMap<u64, WarrenNode> = addrs
        .iter()
        .map(|(id, a)| {
            (
                *id,
                WarrenNode {
                    grpc_addr: a.to_string(),
                    amqp_addr: String::new(),
                    incarnation: 0,
                },
            )
        })
        .collect();
    let dirs: BTreeMap<u64, tempfile::TempDir> = (1..=3u64)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(id, start(id, l, dirs[&id].path()).await);
    }
    let leader = form(&nodes, members).await;
    let before: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    for q in &before {
        write(&nodes, declare(q)).await;
    }
    for node in nodes.values() {
        let sm = node.sm.clone();
        let e = before.clone();
        wait_for("replication to every node", move || sm.queues() == e).await;
    }
    // Every node loses power; the leader's last three entries (committed on the followers) were
    // not synced on its own disk yet.
    for node in std::mem::take(&mut nodes).into_values() {
        node.stop().await;
    }
    {
        let mut store = open_store(dirs[&leader].path()).await;
        let last = store.get_log_state().await.unwrap().last_log_id.unwrap();
        let keep = last.index - 3;
        let kept = store
            .get_log_reader()
            .await
            .try_get_log_entries(keep..keep + 1)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .log_id();
        store.truncate_after(Some(kept)).await.unwrap();
        store.save_committed(Some(kept)).await.unwrap();
    }
    for (id, addr) in &addrs {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        nodes.insert(*id, start(*id, l, dirs[id].path()).await);
    }
    write(&nodes, declare("after-power-loss")).await;
    let mut expected = before;
    expected.push("after-power-loss".into());
    let mut applied = BTreeMap::new();
    for _ in 0..200 {
        applied = nodes.iter().map(|(id, n)| (*id, n.sm.queues())).collect();
        if applied.values().all(|q| *q == expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, queues) in &applied {
        assert_eq!(
            *queues, expected,
            "node {id} (the old leader was {leader}) applied other commands: {applied:?}"
        );
    }
    for node in nodes.into_values() {
        node.stop().await;
    }
}
