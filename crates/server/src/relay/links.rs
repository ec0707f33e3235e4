//! The sending side of home streams: one `Relay.Attach` stream from this node to each other node
//! whose transient queues it uses, opened when first needed. It carries the messages this
//! node's broker forwards to the local queues homed there (bringing back their
//! acknowledgements), this node's logged publishes for the leader (`Up::Propose`), the queue
//! commands of this node's channels for queues owned there and the events of this node's queues
//! for channels there (`Effect::ToOwner`/`ToChannel`, issue 19), and this node's client counts
//! (for the limits): each node sends on its own stream, so each direction is ordered.
//!
//! When a stream breaks, the broker task learns which forwards went unacknowledged
//! ([`ToBroker::LinkLost`]) and that what
//! the two brokers shared is gone ([`ToBroker::PeerLost`], handled before the link goes on);
//! the next use opens a new stream. Queue commands and events made before the broker handled
//! a `PeerLost` for that node (from this side or the receiver's) and not sent yet are dropped:
//! they speak of consumers and deliveries both sides have dropped (each link's *epoch*).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info};
use warren_core::{ClientCounts, Message};
use warren_proto::raft::relay_client::RelayClient;
use warren_proto::raft::RelayBatch;
use warren_raft::METADATA_GROUP;

use super::codec::{decode_downs, encode_up, Down, Up};
use crate::broker_task::ToBroker;

enum LinkMsg {
    Up(Up),
    Forward {
        seq: u64,
        queue: u64,
        message: Message,
    },
    /// A queue command or event (`Up::QueueCommand`/`Up::QueueEvent`), made in the link's
    /// `epoch`.
    Queue {
        epoch: u64,
        up: Up,
    },
    /// This node's client counts as they are when it is sent (`Inner::counts`): at most one
    /// is queued per link (`Inner::counts_queued`), however often they change meanwhile.
    Counts,
}

/// This node's links to the other nodes (cheap to clone).
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

struct Inner {
    node: u64,
    /// The members' gRPC addresses, by node id.
    addresses: watch::Receiver<BTreeMap<u64, String>>,
    broker: OnceLock<mpsc::Sender<ToBroker>>,
    tasks: Mutex<HashMap<u64, mpsc::UnboundedSender<LinkMsg>>>,
    /// Per node, how many times the broker dropped what it shared with that node
    /// ([`Links::peer_lost`]): queue messages of an older epoch are not sent.
    epochs: Mutex<HashMap<u64, Arc<AtomicU64>>>,
    /// The number the next stream's hello carries: it starts from this process's start time
    /// (milliseconds, shifted left 16 bits), so that it grows across restarts too.
    incarnation: AtomicU64,
    /// This node's client counts as last shared ([`Links::share_counts`]): every new stream
    /// starts with them (the receiver dropped the earlier stream's).
    counts: Mutex<Option<ClientCounts>>,
    /// The nodes whose link has a [`LinkMsg::Counts`] queued.
    counts_queued: Mutex<HashSet<u64>>,
}

impl Inner {
    /// This node's client counts as last shared.
    fn counts(&self) -> Option<ClientCounts> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The link to `node` takes its queued [`LinkMsg::Counts`]: the counts to send now.
    fn take_counts(&self, node: u64) -> Option<ClientCounts> {
        self.counts_queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
        self.counts()
    }

    /// The epoch of the link to `node` (see [`Links::peer_lost`]).
    fn epoch(&self, node: u64) -> Arc<AtomicU64> {
        let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        epochs.entry(node).or_default().clone()
    }
}

impl Links {
    /// Links of node `node`, dialling the addresses `addresses` gives.
    pub fn new(node: u64, addresses: watch::Receiver<BTreeMap<u64, String>>) -> Links {
        Links {
            inner: Arc::new(Inner {
                node,
                addresses,
                broker: OnceLock::new(),
                tasks: Mutex::new(HashMap::new()),
                epochs: Mutex::new(HashMap::new()),
                incarnation: AtomicU64::new(first_incarnation()),
                counts: Mutex::new(None),
                counts_queued: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// No other nodes (a single node without Raft): every forward fails.
    pub fn none() -> Links {
        Links::new(0, watch::channel(BTreeMap::new()).1)
    }

    /// The members' gRPC addresses, as they change.
    pub(crate) fn addresses(&self) -> watch::Receiver<BTreeMap<u64, String>> {
        self.inner.addresses.clone()
    }

    /// The broker task the links report forwards' fates to.
    pub(crate) fn attach_broker(&self, broker: mpsc::Sender<ToBroker>) {
        let _ = self.inner.broker.set(broker);
    }

    /// The link task for `node`, started if need be; `None` for this node or an unknown one.
    fn task(&self, node: u64) -> Option<mpsc::UnboundedSender<LinkMsg>> {
        if node == self.inner.node || !self.inner.addresses.borrow().contains_key(&node) {
            return None;
        }
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tasks.get(&node) {
            if !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::clone(&self.inner), node, rx));
        tasks.insert(node, tx.clone());
        Some(tx)
    }

    /// Sends a message to local queue `queue` homed on `home` (forward `seq`); false if there
    /// is no way there.
    pub(crate) fn forward(&self, home: u64, seq: u64, queue: u64, message: &Message) -> bool {
        match self.task(home) {
            Some(tx) => tx
                .send(LinkMsg::Forward {
                    seq,
                    queue,
                    message: message.clone(),
                })
                .is_ok(),
            None => false,
        }
    }

    /// The broker dropped what it shared with `node` (`Input::PeerLost`): queue commands and
    /// events for it made before now and not sent yet are dropped.
    pub(crate) fn peer_lost(&self, node: u64) {
        self.inner.epoch(node).fetch_add(1, Ordering::SeqCst);
    }

    /// Sends a queue command or event to `node`'s broker (`up` is `Up::QueueCommand` or
    /// `Up::QueueEvent`); false if there is no way there (the caller treats it as lost).
    pub(crate) fn queue(&self, node: u64, up: Up) -> bool {
        let epoch = self.inner.epoch(node).load(Ordering::SeqCst);
        match self.task(node) {
            Some(tx) => tx.send(LinkMsg::Queue { epoch, up }).is_ok(),
            None => false,
        }
    }

    /// Sends this node's client counts to every other member (see `warren_core::ClientCounts`):
    /// a link that has counts queued already sends these instead.
    pub(crate) fn share_counts(&self, counts: ClientCounts) {
        *self.inner.counts.lock().unwrap_or_else(|e| e.into_inner()) = Some(counts);
        let members: Vec<u64> = self.inner.addresses.borrow().keys().copied().collect();
        for node in members.into_iter().filter(|&n| n != self.inner.node) {
            let mut queued = self
                .inner
                .counts_queued
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !queued.insert(node) {
                continue;
            }
            let sent = self
                .task(node)
                .is_some_and(|tx| tx.send(LinkMsg::Counts).is_ok());
            if !sent {
                queued.remove(&node);
            }
        }
    }

    /// Sends a message to `node` (a logged publish for the leader there).
    pub(crate) fn send(&self, node: u64, up: Up) -> bool {
        match self.task(node) {
            Some(tx) => tx.send(LinkMsg::Up(up)).is_ok(),
            None => false,
        }
    }
}

/// One stream's bookkeeping.
#[derive(Default)]
struct Open {
    /// The link's epoch (see [`Links::peer_lost`]).
    epoch: Arc<AtomicU64>,
    /// The broker's numbers of the forwards sent on this stream, in order (the stream numbers
    /// them from 1).
    forwards: VecDeque<u64>,
    /// How many forwards the stream has acknowledged (its own numbering).
    acked: u64,
}

impl Open {
    /// The broker's number of the stream's `n`-th forward.
    fn seq_of(&self, n: u64) -> Option<u64> {
        let first = self.acked + 1;
        n.checked_sub(first)
            .and_then(|i| self.forwards.get(usize::try_from(i).ok()?).copied())
    }
}

async fn run(inner: Arc<Inner>, node: u64, mut rx: mpsc::UnboundedReceiver<LinkMsg>) {
    let report = |msg: ToBroker| {
        if let Some(b) = inner.broker.get() {
            let _ = b.try_send(msg);
        }
    };
    let epoch = inner.epoch(node);
    while let Some(first) = rx.recv().await {
        let addr = inner.addresses.borrow().get(&node).cloned();
        let incarnation = inner.incarnation.fetch_add(1, Ordering::SeqCst);
        let stream = match addr {
            Some(addr) if !addr.is_empty() => connect(&addr, inner.node, incarnation).await,
            _ => None,
        };
        let Some((up, mut down)) = stream else {
            // Nowhere to go: what was asked of this node fails now.
            let mut shared = false;
            for m in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                shared |= matches!(&m, LinkMsg::Queue { epoch: e, .. } if *e >= epoch.load(Ordering::SeqCst));
                if matches!(m, LinkMsg::Counts) {
                    inner.take_counts(node);
                }
                fail(&report, node, m);
            }
            if shared {
                // Queue commands or events were lost: both brokers drop what they share.
                peer_lost(&inner, node).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        };
        debug!(node, incarnation, "home stream open");
        let mut open = Open {
            epoch: epoch.clone(),
            ..Open::default()
        };
        let mut pending = Some(first);
        let mut w = BytesMut::new();
        if let Some(counts) = inner.counts() {
            encode_up(&mut w, &Up::Counts(counts));
        }
        let ended = loop {
            if let Some(m) = pending.take() {
                take(&inner, node, &mut open, m, &mut w);
            }
            while let Ok(m) = rx.try_recv() {
                take(&inner, node, &mut open, m, &mut w);
            }
            if !w.is_empty() {
                let batch = RelayBatch {
                    group_id: METADATA_GROUP,
                    batch: std::mem::take(&mut w).freeze(),
                    applied: 0,
                };
                if up.send(batch).await.is_err() {
                    break "sending failed";
                }
            }
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => pending = Some(m),
                    None => return,
                },
                d = down.message() => match d {
                    Ok(Some(b)) => match decode_downs(b.batch) {
                        Ok(downs) => deliver(&mut open, node, downs, &report),
                        Err(_) => break "undecodable batch",
                    },
                    Ok(None) => break "closed",
                    Err(_) => break "broken",
                },
            }
        };
        info!(node, why = ended, "home stream to node ended");
        if let Some(&upto) = open.forwards.back() {
            report(ToBroker::LinkLost { home: node, upto });
        }
        peer_lost(&inner, node).await;
    }
}

/// Tells the broker task that what it shares with `node` is gone, and waits until it has
/// handled that (and raised the link's epoch): nothing of the old epoch goes out after.
async fn peer_lost(inner: &Inner, node: u64) {
    let Some(broker) = inner.broker.get() else {
        return;
    };
    let (done, handled) = oneshot::channel();
    let lost = ToBroker::PeerLost {
        node,
        done: Some(done),
    };
    if broker.send(lost).await.is_ok() {
        let _ = handled.await;
    }
}

/// The first stream number of this process (see `Inner::incarnation`).
fn first_incarnation() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms << 16
}

/// Adds a message to the batch being written, keeping the stream's books.
fn take(inner: &Inner, node: u64, open: &mut Open, m: LinkMsg, w: &mut BytesMut) {
    match m {
        LinkMsg::Up(up) => encode_up(w, &up),
        LinkMsg::Counts => {
            if let Some(counts) = inner.take_counts(node) {
                encode_up(w, &Up::Counts(counts));
            }
        }
        LinkMsg::Forward {
            seq,
            queue,
            message,
        } => {
            open.forwards.push_back(seq);
            encode_up(w, &Up::Forward { queue, message });
        }
        LinkMsg::Queue { epoch, up } => {
            if epoch >= open.epoch.load(Ordering::SeqCst) {
                encode_up(w, &up);
            }
        }
    }
}

/// A message that cannot be sent: a forward is lost.
fn fail(report: &impl Fn(ToBroker), node: u64, m: LinkMsg) {
    match m {
        LinkMsg::Forward { seq, .. } => report(ToBroker::LinkLost {
            home: node,
            upto: seq,
        }),
        LinkMsg::Up(_) | LinkMsg::Queue { .. } | LinkMsg::Counts => {}
    }
}

/// Hands the forwards' acknowledgements and refusals to the broker task.
fn deliver(open: &mut Open, node: u64, downs: Vec<Down>, report: &impl Fn(ToBroker)) {
    for d in downs {
        match d {
            Down::Refused { seq, .. } => {
                if let Some(seq) = open.seq_of(seq) {
                    report(ToBroker::LinkRefused { home: node, seq });
                }
            }
            Down::Forwarded { upto } => {
                let mut last = None;
                while open.acked < upto {
                    open.acked += 1;
                    last = open.forwards.pop_front().or(last);
                }
                if let Some(upto) = last {
                    report(ToBroker::LinkAcked { home: node, upto });
                }
            }
        }
    }
}

type UpSender = mpsc::Sender<RelayBatch>;

/// Opens a home stream to `addr` and says hello.
async fn connect(
    addr: &str,
    me: u64,
    incarnation: u64,
) -> Option<(UpSender, tonic::Streaming<RelayBatch>)> {
    let mut client = RelayClient::new(warren_raft::dial::connect(addr).await.ok()?)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel(256);
    let mut w = BytesMut::new();
    encode_up(
        &mut w,
        &Up::Hello {
            node: me,
            incarnation,
        },
    );
    tx.send(RelayBatch {
        group_id: METADATA_GROUP,
        batch: w.freeze(),
        applied: 0,
    })
    .await
    .ok()?;
    let down = client
        .attach(ReceiverStream::new(rx))
        .await
        .ok()?
        .into_inner();
    Some((tx, down))
}
