//! The standing backlog (`--backlog N`): one durable quorum queue filled with N persistent,
//! confirmed messages before the nemesis starts, consumed by nobody during the faults, then
//! drained after the heal. This file owns the fill and the drain; the verdict on what they saw
//! is `checker::check_backlog`, a pure function.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::stream::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;

use crate::checker::BacklogDelivery;
use crate::history::Outcome;
use crate::workload::{close, connect, within};

/// The backlog's queue (durable, `x-queue-type: quorum`).
pub const QUEUE: &str = "chaos-backlog";
/// Fill workers, one per node of the initial cluster, each with its own connection.
const WORKERS: usize = 3;
/// Unconfirmed publishes per fill worker.
const WINDOW: usize = 2000;
/// The drain's prefetch, and how many deliveries one multiple ack settles.
const PREFETCH: u16 = 1000;
const ACK_EVERY: usize = 500;
/// The smallest body: the id (8 bytes) and at least 8 bytes of pattern.
pub const MIN_SIZE: usize = 16;

/// Bodies of `size` bytes: the id (8 bytes, big-endian), then a cyclic byte pattern that starts
/// at an offset derived from the id, so a body damaged or swapped for another's is caught.
pub struct Body {
    size: usize,
    pattern: Vec<u8>,
}

const CYCLE: usize = 251;

impl Body {
    pub fn new(size: usize) -> Body {
        let size = size.max(MIN_SIZE);
        Body {
            size,
            pattern: (0..size + CYCLE).map(|i| (i % CYCLE) as u8).collect(),
        }
    }

    fn tail(&self, id: u64) -> &[u8] {
        let off = (id % CYCLE as u64) as usize;
        &self.pattern[off..off + self.size - 8]
    }

    pub fn make(&self, id: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.size);
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(self.tail(id));
        b
    }

    /// The id a body names and whether it is the body published with that id (`message_id`,
    /// the property it was published with, must name the same id).
    pub fn parse(&self, body: &[u8], message_id: Option<&str>) -> (Option<u64>, bool) {
        let Some(head) = body.get(..8) else {
            return (None, false);
        };
        let id = u64::from_be_bytes(head.try_into().expect("a slice of 8 bytes"));
        let named = message_id.and_then(|m| m.parse::<u64>().ok()) == Some(id);
        (
            Some(id),
            named && body.len() == self.size && &body[8..] == self.tail(id),
        )
    }
}

/// What the fill did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FillReport {
    pub messages: u64,
    pub size: usize,
    /// basic.publish calls (an id whose publish was nacked, returned or of unknown outcome is
    /// published again).
    pub publishes: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub unknown: u64,
    pub elapsed_ms: u64,
    /// Every id confirmed before the fill's time limit.
    pub complete: bool,
    /// Connections that failed during the fill.
    pub connection_failures: u64,
}

impl FillReport {
    /// Confirmed messages per second.
    pub fn rate(&self) -> f64 {
        self.confirmed as f64 * 1000.0 / self.elapsed_ms.max(1) as f64
    }
}

/// The fill's per-id record, shared by its workers: ids wait in `pending` until a worker takes
/// one; an id whose publish was not confirmed goes back to `pending`.
struct Ledger {
    pending: VecDeque<u64>,
    attempts: Vec<u32>,
    confirmed: Vec<bool>,
    report: FillReport,
    started: Instant,
    deadline: Instant,
}

impl Ledger {
    fn take(&mut self) -> Option<u64> {
        if Instant::now() > self.deadline {
            return None;
        }
        let id = self.pending.pop_front()?;
        self.attempts[id as usize] += 1;
        self.report.publishes += 1;
        Some(id)
    }

    fn settle(&mut self, id: u64, outcome: Outcome) {
        match outcome {
            Outcome::Acked => {
                self.confirmed[id as usize] = true;
                self.report.confirmed += 1;
                if self.report.confirmed.is_multiple_of(100_000) {
                    tracing::info!(
                        "backlog: {} confirmed after {:.1} s",
                        self.report.confirmed,
                        self.started.elapsed().as_secs_f64()
                    );
                }
                return;
            }
            Outcome::Returned => self.report.returned += 1,
            Outcome::Nacked => self.report.nacked += 1,
            Outcome::Unknown => self.report.unknown += 1,
        }
        self.pending.push_back(id);
    }

    fn done(&self) -> bool {
        self.report.confirmed == self.report.messages || Instant::now() > self.deadline
    }
}

/// How a publish ended, from its confirm.
fn outcome(r: lapin::Result<lapin::Confirmation>) -> Outcome {
    match r {
        Ok(lapin::Confirmation::Ack(None)) => Outcome::Acked,
        Ok(lapin::Confirmation::Ack(Some(_))) => Outcome::Returned,
        Ok(lapin::Confirmation::Nack(_)) => Outcome::Nacked,
        Ok(lapin::Confirmation::NotRequested) | Err(_) => Outcome::Unknown,
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // A worker that panicked holding the lock leaves counts that are still consistent.
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Declares the backlog queue (idempotent), or only checks that it exists (`passive`); returns
/// its ready messages.
async fn declare(ch: &Channel, passive: bool) -> anyhow::Result<u32> {
    let mut args = FieldTable::default();
    if !passive {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    let q = within(
        5,
        ch.queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                passive,
                ..Default::default()
            },
            args,
        ),
    )
    .await?;
    Ok(q.message_count())
}

/// Publishes ids `0..messages` to the backlog queue through the default exchange (persistent,
/// mandatory, confirms) from one worker per slot of `slots`, each with up to `WINDOW`
/// unconfirmed, until every id is confirmed or `limit` has passed. Returns the report, how many
/// times each id was published, and which ids were confirmed.
pub async fn fill(
    slots: &[usize],
    messages: u64,
    size: usize,
    limit: Duration,
) -> (FillReport, Vec<u32>, Vec<bool>) {
    let body = Arc::new(Body::new(size));
    let started = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger {
        pending: (0..messages).collect(),
        attempts: vec![0; messages as usize],
        confirmed: vec![false; messages as usize],
        report: FillReport {
            messages,
            size: body.size,
            ..Default::default()
        },
        started,
        deadline: started + limit,
    }));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (ledger, body, slots) = (Arc::clone(&ledger), Arc::clone(&body), slots.to_vec());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !lock(&ledger).done() {
                let slot = slots[i % slots.len()];
                let failed = match connect(slot).await {
                    Ok(conn) => {
                        let r = fill_on(&conn, &ledger, &body).await;
                        close(conn).await;
                        r.is_err()
                    }
                    Err(_) => true,
                };
                if failed {
                    lock(&ledger).report.connection_failures += 1;
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let mut l = lock(&ledger);
    l.report.elapsed_ms = started.elapsed().as_millis() as u64;
    l.report.complete = l.report.confirmed == messages;
    (
        l.report.clone(),
        std::mem::take(&mut l.attempts),
        std::mem::take(&mut l.confirmed),
    )
}

/// One fill worker's life on one connection; an error when the connection failed (whatever
/// was unconfirmed on it goes back to the ledger as of unknown outcome).
async fn fill_on(conn: &Connection, ledger: &Mutex<Ledger>, body: &Body) -> anyhow::Result<()> {
    let ch = within(5, conn.create_channel()).await?;
    within(5, ch.confirm_select(ConfirmSelectOptions::default())).await?;
    declare(&ch, false).await?;
    let mut in_flight: VecDeque<(u64, lapin::PublisherConfirm)> = VecDeque::new();
    let result = loop {
        while let Some((_, fut)) = in_flight.front_mut() {
            match futures_lite::future::poll_once(fut).await {
                Some(r) => {
                    let (id, _) = in_flight.pop_front().expect("the front exists");
                    lock(ledger).settle(id, outcome(r));
                }
                None => break,
            }
        }
        let next = if in_flight.len() < WINDOW {
            lock(ledger).take()
        } else {
            None
        };
        let Some(id) = next else {
            // The window is full, or nothing is left to take: wait for the oldest confirm.
            if let Some((id, fut)) = in_flight.pop_front() {
                match tokio::time::timeout(Duration::from_secs(30), fut).await {
                    Ok(r) => lock(ledger).settle(id, outcome(r)),
                    Err(_) => {
                        lock(ledger).settle(id, Outcome::Unknown);
                        break Err(anyhow::anyhow!("no confirm for 30 s"));
                    }
                }
            } else if lock(ledger).done() {
                break Ok(());
            } else {
                // Other workers hold the last ids; one may come back.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            ch.basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body.make(id),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.to_string().as_str().into()),
            ),
        )
        .await;
        match sent {
            Ok(Ok(confirm)) => in_flight.push_back((id, confirm)),
            _ => {
                lock(ledger).settle(id, Outcome::Unknown);
                break Err(anyhow::anyhow!("publish failed"));
            }
        }
    };
    // After a failure: take the confirms that already came, the rest is of unknown outcome.
    for (id, mut fut) in in_flight {
        let o = futures_lite::future::poll_once(&mut fut)
            .await
            .map_or(Outcome::Unknown, outcome);
        lock(ledger).settle(id, o);
    }
    result
}

/// What the drain did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DrainReport {
    pub deliveries: u64,
    pub elapsed_ms: u64,
    /// Ready messages left in the backlog queue, through each running node (None: no answer).
    pub left: BTreeMap<usize, Option<u32>>,
    /// Connections that failed during the drain.
    pub connection_failures: u64,
    /// Stopped by its time limit rather than by an empty queue.
    pub timed_out: bool,
}

/// Consumes the backlog queue (prefetch `PREFETCH`, a multiple ack every `ACK_EVERY`) through
/// the first of `slots` that serves it, moving to the next on a failure, until it is empty as
/// seen through every slot or `limit` has passed. Returns every delivery, in arrival order.
pub async fn drain(
    slots: &[usize],
    size: usize,
    limit: Duration,
) -> (DrainReport, Vec<BacklogDelivery>) {
    let body = Body::new(size);
    let started = Instant::now();
    let deadline = started + limit;
    let mut report = DrainReport::default();
    let mut seen = Vec::new();
    let mut i = 0;
    while Instant::now() < deadline {
        let slot = slots[i % slots.len()];
        let emptied = match connect(slot).await {
            Ok(conn) => {
                let r = drain_on(&conn, &body, &mut seen, deadline).await;
                close(conn).await;
                r
            }
            Err(e) => Err(e),
        };
        match emptied {
            Ok(true) => {
                report.left = left(slots).await;
                if report.left.values().all(|n| *n == Some(0)) {
                    break;
                }
                // A node not yet caught up, or messages back from a consumer: go on.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::info!("backlog drain through slot {slot}: {e:#}");
                report.connection_failures += 1;
                i += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    report.timed_out = Instant::now() >= deadline;
    if report.timed_out {
        report.left = left(slots).await;
    }
    report.deliveries = seen.len() as u64;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    (report, seen)
}

/// Drains through one connection; Ok(true) once the queue reported no ready message with
/// nothing left unacknowledged, Ok(false) at the deadline.
async fn drain_on(
    conn: &Connection,
    body: &Body,
    seen: &mut Vec<BacklogDelivery>,
    deadline: Instant,
) -> anyhow::Result<bool> {
    let ch = within(5, conn.create_channel()).await?;
    within(5, ch.basic_qos(PREFETCH, BasicQosOptions::default())).await?;
    declare(&ch, true).await?;
    let mut stream = within(
        5,
        ch.basic_consume(
            QUEUE.into(),
            "backlog-drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut unacked: Option<(u64, usize)> = None;
    let ack = |tag: u64| within(5, ch.basic_ack(tag, BasicAckOptions { multiple: true }));
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
            Ok(Some(Ok(d))) => {
                let message_id = d.properties.message_id().as_ref().map(|m| m.as_str());
                let (id, intact) = body.parse(&d.data, message_id);
                seen.push(BacklogDelivery {
                    id,
                    redelivered: d.redelivered,
                    intact,
                });
                let n = unacked.map_or(0, |(_, n)| n) + 1;
                unacked = Some((d.delivery_tag, n));
                if n >= ACK_EVERY {
                    ack(d.delivery_tag).await?;
                    unacked = None;
                }
            }
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => anyhow::bail!("the consumer was cancelled"),
            Err(_) => {
                if let Some((tag, _)) = unacked.take() {
                    ack(tag).await?;
                }
                if declare(&ch, true).await? == 0 {
                    return Ok(true);
                }
            }
        }
    }
    if let Some((tag, _)) = unacked {
        ack(tag).await?;
    }
    Ok(false)
}

/// Ready messages in the backlog queue through each slot.
async fn left(slots: &[usize]) -> BTreeMap<usize, Option<u32>> {
    let mut out = BTreeMap::new();
    for slot in slots {
        let n = match connect(*slot).await {
            Ok(conn) => {
                let n = match within(5, conn.create_channel()).await {
                    Ok(ch) => declare(&ch, true).await.ok(),
                    Err(_) => None,
                };
                close(conn).await;
                n
            }
            Err(_) => None,
        };
        out.insert(*slot, n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_parses_back_to_its_id_and_a_changed_or_swapped_body_is_caught() {
        let b = Body::new(1024);
        let m = b.make(123_456);
        assert_eq!(m.len(), 1024);
        assert_eq!(b.parse(&m, Some("123456")), (Some(123_456), true));
        assert_eq!(b.parse(&m, Some("7")), (Some(123_456), false));
        let mut bad = m.clone();
        bad[900] ^= 1;
        assert_eq!(b.parse(&bad, Some("123456")), (Some(123_456), false));
        // Another id's tail under this id.
        let mut swapped = b.make(123_457);
        swapped[..8].copy_from_slice(&123_456u64.to_be_bytes());
        assert_eq!(b.parse(&swapped, Some("123456")), (Some(123_456), false));
        assert_eq!(b.parse(b"short", None), (None, false));
    }
}
