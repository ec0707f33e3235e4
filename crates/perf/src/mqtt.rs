//! MQTT producers and consumers (`--protocol-uri mqtt://…`), over rumqttc (MQTT 3.1.1): a client
//! that shares no code with Warren's MQTT adapter, so it measures RabbitMQ's plugin and Warren's
//! alike.
//!
//! MQTT has no queues of its own: a producer publishes to topic `perf/NAME` (routing key
//! `perf.NAME` on `amq.topic` on both brokers), QoS 1 with confirms (-c N: at most N PUBACKs
//! outstanding, each timed as the confirm latency), QoS 0 without. A consumer subscribes to that
//! topic before any producer starts, with a persistent session (clean session off), QoS 1 (or 0
//! with -a), so the broker keeps its messages in a durable queue of its own
//! (`mqtt-subscription-ID qos1`); the session is ended (a clean reconnect) when the run ends.
//! rumqttc acknowledges each delivery as it is read, so -A has no effect; the broker's prefetch
//! for MQTT is its own setting, so -q has none either.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;

use crate::consumer::{keep_pace, ConsumerPlan, Drain};
use crate::options::ProtocolUri;
use crate::producer::{paced, ProducerPlan};
use crate::stats::{stamp, Stats};

/// How long connecting, subscribing and ending a session may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest packet either way (S6's 64 KiB bodies and more).
const MAX_PACKET: usize = 16 << 20;

/// The topic a queue name stands for.
pub(crate) fn topic(queue: &str) -> String {
    format!("perf/{queue}")
}

/// An MQTT connection after CONNACK (and SUBACK, for a consumer).
pub(crate) struct MqttConnection {
    client: AsyncClient,
    events: EventLoop,
    uri: ProtocolUri,
    id: String,
}

fn options(uri: &ProtocolUri, id: &str, clean: bool, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, uri.host.clone(), uri.port);
    // RabbitMQ's (and Warren's) MQTT user names carry the vhost as `vhost:user`.
    let user = if uri.vhost == "/" {
        uri.user.clone()
    } else {
        format!("{}:{}", uri.vhost, uri.user)
    };
    o.set_credentials(user, uri.password.clone())
        .set_keep_alive(Duration::from_secs(60))
        .set_clean_session(clean)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(inflight.max(1));
    o
}

/// Polls `events` until `want` accepts an event, within [`SETUP_TIMEOUT`].
async fn until(
    events: &mut EventLoop,
    what: &str,
    mut want: impl FnMut(&Event) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    tokio::time::timeout(SETUP_TIMEOUT, async {
        loop {
            let event = events
                .poll()
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if want(&event)? {
                return Ok(());
            }
        }
    })
    .await
    .with_context(|| format!("{what} timed out"))?
}

/// Connects as client `id` (a persistent session when `clean` is false), with at most
/// `inflight` unacknowledged QoS 1 publishes.
async fn connect(
    uri: &ProtocolUri,
    id: String,
    clean: bool,
    inflight: u16,
) -> anyhow::Result<MqttConnection> {
    let (client, mut events) = AsyncClient::new(options(uri, &id, clean, inflight), 64);
    until(&mut events, "CONNACK", |e| match e {
        Event::Incoming(Packet::ConnAck(ack)) => match ack.code {
            rumqttc::ConnectReturnCode::Success => Ok(true),
            code => bail!("CONNACK {code:?}"),
        },
        _ => Ok(false),
    })
    .await
    .with_context(|| format!("connecting to {}:{} over MQTT", uri.host, uri.port))?;
    Ok(MqttConnection {
        client,
        events,
        uri: uri.clone(),
        id,
    })
}

/// A producer's connection: a clean session.
pub(crate) async fn connect_producer(
    uri: &ProtocolUri,
    index: usize,
    inflight: usize,
) -> anyhow::Result<MqttConnection> {
    let id = format!("warren-perf-{}-p{index}", std::process::id());
    connect(uri, id, true, u16::try_from(inflight).unwrap_or(u16::MAX)).await
}

/// A consumer's connection: a persistent session subscribed to `queue`'s topic (SUBACK awaited,
/// so no message a producer sends later misses the subscription).
pub(crate) async fn connect_consumer(
    uri: &ProtocolUri,
    index: usize,
    queue: &str,
    autoack: bool,
) -> anyhow::Result<MqttConnection> {
    let id = format!("warren-perf-{}-c{index}", std::process::id());
    let mut conn = connect(uri, id, false, 1).await?;
    let qos = if autoack {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    conn.client.subscribe(topic(queue), qos).await?;
    until(&mut conn.events, "SUBACK", |e| match e {
        Event::Incoming(Packet::SubAck(ack)) => {
            if ack
                .return_codes
                .iter()
                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
            {
                bail!("the broker refused the subscription to {}", topic(queue));
            }
            Ok(true)
        }
        _ => Ok(false),
    })
    .await?;
    Ok(conn)
}

/// Sends DISCONNECT and waits for the connection to end (at most five seconds).
async fn disconnect(conn: &mut MqttConnection) {
    if conn.client.disconnect().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match conn.events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Publishes as [`crate::producer::run`] does, to `queue`'s topic.
pub(crate) async fn produce(
    mut conn: MqttConnection,
    plan: ProducerPlan,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: Instant,
    grace: Duration,
) -> anyhow::Result<()> {
    let qos = if plan.confirm > 0 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let topic = topic(&plan.queue);
    let client = conn.client.clone();
    let (done_tx, mut done) = watch::channel(false);
    // The event loop runs beside the publishing loop: it sends what `publish` queued (no more
    // than the inflight window unacknowledged) and times each PUBACK against its PUBLISH.
    let mut events = conn.events;
    let loop_stats = stats.clone();
    let driver = tokio::spawn(async move {
        let mut sent_at: HashMap<u16, Instant> = HashMap::new();
        let mut published: u64 = 0;
        let mut acked: u64 = 0;
        let mut publishing_done = false;
        loop {
            if publishing_done && (qos == QoS::AtMostOnce || acked >= published) {
                return Ok::<_, anyhow::Error>(events);
            }
            let event = tokio::select! {
                e = events.poll() => e.context("MQTT connection")?,
                _ = done.changed() => {
                    publishing_done = true;
                    continue;
                }
            };
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    published += 1;
                    if qos == QoS::AtLeastOnce {
                        sent_at.insert(pkid, Instant::now());
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    if let Some(t0) = sent_at.remove(&ack.pkid) {
                        loop_stats.confirm_latency(t0.elapsed());
                        loop_stats.confirmed.fetch_add(1, Ordering::Relaxed);
                        acked += 1;
                    }
                }
                _ => {}
            }
        }
    });
    let mut body = vec![0u8; plan.size];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let outcome: anyhow::Result<()> = async {
        while plan.count == 0 || sent < plan.count {
            if *stop.borrow() || driver.is_finished() {
                break;
            }
            if !paced(started, sent, plan.rate, &mut stop).await {
                continue;
            }
            stamp(&mut body);
            tokio::select! {
                r = client.publish(topic.as_str(), qos, false, body.clone()) => r.context("PUBLISH")?,
                _ = stop.changed() => continue,
            }
            sent += 1;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            Stats::mark(&stats.last_sent_us, start.elapsed());
        }
        Ok(())
    }
    .await;
    let _ = done_tx.send(true);
    let mut driver = driver;
    match tokio::time::timeout(grace, &mut driver).await {
        Ok(joined) => {
            conn.events = joined.context("the MQTT event loop panicked")??;
            outcome?;
            disconnect(&mut conn).await;
        }
        Err(_) => {
            driver.abort();
            outcome?;
            tracing::warn!(queue = %plan.queue, "PUBACKs still outstanding after the grace period");
        }
    }
    Ok(())
}

/// Consumes as [`crate::consumer::run`] does, from the subscription made when connecting; then
/// ends the persistent session, so that its queue goes.
pub(crate) async fn consume(
    mut conn: MqttConnection,
    plan: ConsumerPlan,
    drain: Option<Arc<Drain>>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: Instant,
) -> anyhow::Result<()> {
    let mut taken: u64 = 0;
    let drained = || drain.as_ref().is_some_and(|d| d.done());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if *stop.borrow() || (plan.count > 0 && taken >= plan.count) || drained() {
            break;
        }
        let event = tokio::select! {
            e = conn.events.poll() => e.context("MQTT connection")?,
            _ = stop.changed() => continue,
            _ = tick.tick() => continue,
        };
        let Event::Incoming(Packet::Publish(publish)) = event else {
            continue;
        };
        stats.e2e_latency(&publish.payload);
        stats.received.fetch_add(1, Ordering::Relaxed);
        Stats::mark(&stats.last_received_us, start.elapsed());
        if let Some(d) = &drain {
            d.taken.fetch_add(1, Ordering::Relaxed);
        }
        taken += 1;
        keep_pace(start, taken, plan.rate).await;
    }
    disconnect(&mut conn).await;
    // A clean session of the same client id discards the persistent one and its queue.
    let mut ending = connect(&conn.uri, conn.id.clone(), true, 1)
        .await
        .context("ending the persistent MQTT session")?;
    disconnect(&mut ending).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vhost_goes_before_the_user_name_as_rabbitmq_reads_it() {
        let mut uri = ProtocolUri::parse("mqtt://bob:secret@127.0.0.1:1883").unwrap();
        let login = |uri: &ProtocolUri| {
            options(uri, "c", true, 10)
                .credentials()
                .map(|l| (l.username, l.password))
        };
        assert_eq!(login(&uri), Some(("bob".into(), "secret".into())));
        uri.vhost = "perf".into();
        assert_eq!(login(&uri), Some(("perf:bob".into(), "secret".into())));
        assert_eq!(topic("s1-q"), "perf/s1-q");
    }
}
