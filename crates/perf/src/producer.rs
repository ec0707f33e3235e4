//! One producer: its own connection and channel, publishing stamped bodies to one queue through
//! the default exchange, with a bounded number of unconfirmed messages and an optional rate
//! limit. Confirms are awaited by a second task, in publish order, and timed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Connection, PublisherConfirm};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::properties::MessageProperties;
use crate::stats::{stamp, Stats};

/// What a producer is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ProducerPlan {
    pub(crate) queue: String,
    pub(crate) size: usize,
    /// Unconfirmed messages allowed (0: no publisher confirms).
    pub(crate) confirm: usize,
    /// The properties of each message (delivery mode, priority, headers…).
    pub(crate) properties: MessageProperties,
    pub(crate) mandatory: bool,
    /// Messages per second (0: unlimited).
    pub(crate) rate: f64,
    /// Messages to publish before stopping (0: until told to stop).
    pub(crate) count: u64,
}

/// Publishes on `conn` until `plan.count` messages are sent or `stop` turns true, then waits (at
/// most `grace`) for the outstanding confirms. `start` is the run's time origin.
pub(crate) async fn run(
    conn: Connection,
    plan: ProducerPlan,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: Instant,
    grace: Duration,
) -> anyhow::Result<()> {
    let ch = conn.create_channel().await.context("channel.open")?;
    let confirming = plan.confirm > 0;
    if confirming {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .context("confirm.select")?;
    }
    let window = Arc::new(Semaphore::new(plan.confirm.max(1)));
    let (to_confirm, pending) = mpsc::channel(plan.confirm.max(1));
    let confirmer = tokio::spawn(await_confirms(pending, stats.clone()));

    let mut properties = plan.properties.clone();
    let options = BasicPublishOptions {
        mandatory: plan.mandatory,
        immediate: false,
    };
    let mut body = vec![0u8; plan.size];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let outcome: anyhow::Result<()> = async {
        while plan.count == 0 || sent < plan.count {
            if *stop.borrow() {
                break;
            }
            if !paced(started, sent, plan.rate, &mut stop).await {
                continue;
            }
            let permit = if confirming {
                tokio::select! {
                    p = window.clone().acquire_owned() => Some(p.context("the confirm window closed")?),
                    _ = stop.changed() => continue,
                }
            } else {
                None
            };
            stamp(&mut body);
            let t0 = Instant::now();
            let confirm = ch
                .basic_publish(
                    "".into(),
                    plan.queue.as_str().into(),
                    options,
                    &body,
                    properties.next(),
                )
                .await
                .with_context(|| format!("basic.publish to {}", plan.queue))?;
            sent += 1;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            Stats::mark(&stats.last_sent_us, start.elapsed());
            if let Some(permit) = permit {
                if to_confirm.send((t0, confirm, permit)).await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    drop(to_confirm);
    let confirmed = tokio::time::timeout(grace, confirmer).await;
    outcome?;
    match confirmed {
        Ok(joined) => joined.context("the confirm task panicked")??,
        Err(_) => {
            tracing::warn!(queue = %plan.queue, "confirms still outstanding after the grace period")
        }
    }
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Waits until the `sent`-th message of a producer that started at `started` is due at `rate`
/// messages per second (at once without a rate); false if `stop` changed meanwhile (the caller
/// looks at it again before publishing).
pub(crate) async fn paced(
    started: Instant,
    sent: u64,
    rate: f64,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    if rate > 0.0 {
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        if due > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stop.changed() => return false,
            }
        }
    }
    true
}

/// A published message waiting for its confirm: when it was sent, the confirm, and its place in
/// the window.
type Pending = (Instant, PublisherConfirm, OwnedSemaphorePermit);

/// Awaits confirms in publish order (the broker confirms in order on a channel, possibly many at
/// once with multiple=true), timing each and freeing its window slot.
async fn await_confirms(
    mut pending: mpsc::Receiver<Pending>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    while let Some((t0, confirm, permit)) = pending.recv().await {
        let confirmation = confirm.await.context("publisher confirm")?;
        stats.confirm_latency(t0.elapsed());
        if confirmation.is_nack() {
            stats.nacked.fetch_add(1, Ordering::Relaxed);
        } else {
            if confirmation.take_message().is_some() {
                stats.returned.fetch_add(1, Ordering::Relaxed);
            }
            stats.confirmed.fetch_add(1, Ordering::Relaxed);
        }
        drop(permit);
    }
    Ok(())
}
