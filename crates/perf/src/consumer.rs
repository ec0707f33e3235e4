//! One consumer: its own connection and channel, basic.qos and basic.consume on one queue,
//! timing each delivery from the stamp in its body, noting whether its priority rose above the
//! previous delivery's, and acknowledging every delivery or every N-th with multiple=true (or
//! not at all with no-ack).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Connection};
use tokio::sync::watch;

use crate::stats::Stats;

/// What a consumer is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerPlan {
    pub(crate) queue: String,
    pub(crate) qos: u16,
    pub(crate) autoack: bool,
    /// Acknowledge with multiple=true every this many deliveries (0 or 1: each on its own).
    pub(crate) multi_ack_every: u64,
    /// Messages to take before stopping (0: no limit of its own).
    pub(crate) count: u64,
    /// Messages per second at most (0: as fast as they come).
    pub(crate) rate: f64,
    /// The arguments of basic.consume (`x-stream-offset`, `x-priority`…).
    pub(crate) arguments: FieldTable,
}

/// A queue's drain target shared by the consumers of that queue (`--exit-when empty`): how many
/// messages it held when the run started, and how many its consumers have taken.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    pub(crate) target: u64,
    pub(crate) taken: AtomicU64,
}

impl Drain {
    pub(crate) fn done(&self) -> bool {
        self.taken.load(Ordering::Relaxed) >= self.target
    }
}

/// A consumer limited to `rate` messages per second (0: none) waits until its `taken`-th
/// message is due, `taken / rate` seconds after `start`.
pub(crate) async fn keep_pace(start: Instant, taken: u64, rate: f64) {
    if rate > 0.0 {
        let due = start + std::time::Duration::from_secs_f64(taken as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Consumes on `conn` until `plan.count` deliveries are taken, the queue's `drain` target is
/// reached, or `stop` turns true; acknowledges what it took before returning.
pub(crate) async fn run(
    conn: Connection,
    plan: ConsumerPlan,
    drain: Option<Arc<Drain>>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: Instant,
) -> anyhow::Result<()> {
    let ch = conn.create_channel().await.context("channel.open")?;
    if plan.qos > 0 {
        ch.basic_qos(plan.qos, BasicQosOptions::default())
            .await
            .context("basic.qos")?;
    }
    let mut deliveries = ch
        .basic_consume(
            plan.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: plan.autoack,
                ..Default::default()
            },
            plan.arguments.clone(),
        )
        .await
        .with_context(|| format!("basic.consume on {}", plan.queue))?;
    let every = plan.multi_ack_every.max(1);
    let mut taken: u64 = 0;
    let mut unacked: u64 = 0;
    // The acker of the newest delivery not yet acknowledged (multiple=true acks it and all before).
    let mut newest: Option<Acker> = None;
    // The priority of the previous delivery (a message without one counts as 0, as a priority
    // queue ranks it).
    let mut previous_priority: Option<u8> = None;
    let drained = || drain.as_ref().is_some_and(|d| d.done());
    // Checks the drain target of a queue whose other consumer took the last message.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        if *stop.borrow() || (plan.count > 0 && taken >= plan.count) || drained() {
            break;
        }
        let delivery = tokio::select! {
            d = deliveries.next() => d,
            _ = stop.changed() => continue,
            _ = tick.tick() => continue,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e).context(format!("consuming from {}", plan.queue)),
            None => bail!("the broker cancelled the consumer on {}", plan.queue),
        };
        stats.e2e_latency(&delivery.data);
        stats.received.fetch_add(1, Ordering::Relaxed);
        let priority = *delivery.properties.priority();
        if priority.is_some() {
            stats.priority_deliveries.fetch_add(1, Ordering::Relaxed);
        }
        let priority = priority.unwrap_or(0);
        if previous_priority.is_some_and(|p| priority > p) {
            stats.priority_rises.fetch_add(1, Ordering::Relaxed);
        }
        previous_priority = Some(priority);
        Stats::mark(&stats.last_received_us, start.elapsed());
        if let Some(d) = &drain {
            d.taken.fetch_add(1, Ordering::Relaxed);
        }
        taken += 1;
        keep_pace(start, taken, plan.rate).await;
        if plan.autoack {
            continue;
        }
        unacked += 1;
        if every == 1 || unacked >= every {
            let options = BasicAckOptions {
                multiple: every > 1,
            };
            delivery.acker.ack(options).await.context("basic.ack")?;
            unacked = 0;
            newest = None;
        } else {
            newest = Some(delivery.acker);
        }
    }
    if let Some(acker) = newest {
        acker
            .ack(BasicAckOptions { multiple: true })
            .await
            .context("basic.ack")?;
    }
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
