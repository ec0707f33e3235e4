//! The clients, through lapin (an independent AMQP client): publishers with confirms
//! (persistent, mandatory, a unique id and a checksum in every body), push consumers with
//! prefetch and manual acks, basic.get pollers, and a metadata workload. Every client starts on
//! its own node and, when its connection fails, moves to the next node of the cluster, as real
//! clients configured with a list of hosts do. Everything it learns goes into the history.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::stream::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use rand::{Rng, SeedableRng};

use crate::history::{self, Event, History, MetaOp, MetaOutcome, Outcome};
use crate::nodes;

/// The replicated queues the message workload uses, each bound to `EXCHANGE` with key `qN`.
pub const QUEUES: usize = 3;
pub const EXCHANGE: &str = "chaos-x";
const WINDOW: usize = 50;
const PREFETCH: u16 = 20;
/// Metadata entities: queues `meta-qN`, direct exchanges `meta-xN`; a binding of `meta-xA` to
/// `meta-qB` uses the routing key `qB`.
pub const META_QUEUES: usize = 5;
pub const META_EXCHANGES: usize = 3;

pub fn queue_name(n: usize) -> String {
    format!("chaos-q{n}")
}

/// Settings and shared switches of the workload.
#[derive(Clone)]
pub struct Ctx {
    pub history: History,
    /// The slots a client may connect to (the cluster's nodes, running or not).
    pub slots: Arc<Mutex<Vec<usize>>>,
    pub stop_publishing: Arc<AtomicBool>,
    pub stop_consuming: Arc<AtomicBool>,
    pub stop_meta: Arc<AtomicBool>,
    /// Messages per second per publisher.
    pub rate: u32,
    pub size: usize,
}

impl Ctx {
    fn next_slot(&self, after: usize) -> usize {
        let slots = self.slots.lock().map(|s| s.clone()).unwrap_or_default();
        slots
            .iter()
            .copied()
            .find(|s| *s > after)
            .or_else(|| slots.first().copied())
            .unwrap_or(after)
    }
}

pub(crate) async fn within<T>(
    secs: u64,
    f: impl std::future::Future<Output = lapin::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("timed out after {secs} s"),
    }
}

pub(crate) async fn connect(slot: usize) -> anyhow::Result<Connection> {
    within(
        4,
        Connection::connect(&nodes::uri(slot), ConnectionProperties::default()),
    )
    .await
}

/// A connection to `slot`, or (it failed) None after moving `slot` to the next node and a
/// pause.
async fn connect_or_move(slot: &mut usize, ctx: &Ctx) -> Option<Connection> {
    match connect(*slot).await {
        Ok(c) => Some(c),
        Err(_) => {
            *slot = ctx.next_slot(*slot);
            tokio::time::sleep(Duration::from_millis(300)).await;
            None
        }
    }
}

pub(crate) async fn close(conn: Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
}

/// The exchange, the queues and their bindings (idempotent).
pub async fn declare_topology(ch: &Channel) -> anyhow::Result<()> {
    within(
        5,
        ch.exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    for q in 0..QUEUES {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        within(
            5,
            ch.queue_declare(
                queue_name(q).as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            ),
        )
        .await?;
        within(
            5,
            ch.queue_bind(
                queue_name(q).as_str().into(),
                EXCHANGE.into(),
                format!("q{q}").as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    Ok(())
}

/// Publisher `p`: ids are `p << 40 | seq`, seq from 1, never reused.
pub async fn publisher(p: u64, home: usize, ctx: Ctx) {
    let mut seq = 0u64;
    let mut slot = home;
    while !ctx.stop_publishing.load(Ordering::Relaxed) {
        let Some(conn) = connect_or_move(&mut slot, &ctx).await else {
            continue;
        };
        let failed = publish_on(&conn, p, slot, &mut seq, &ctx).await.is_err();
        close(conn).await;
        if failed {
            slot = ctx.next_slot(slot);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn publish_on(
    conn: &Connection,
    p: u64,
    slot: usize,
    seq: &mut u64,
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let ch = within(5, conn.create_channel()).await?;
    within(5, ch.confirm_select(ConfirmSelectOptions::default())).await?;
    declare_topology(&ch).await?;
    let h = &ctx.history;
    let interval = Duration::from_micros(1_000_000 / u64::from(ctx.rate.max(1)));
    let mut in_flight = VecDeque::new();
    let record = |id: u64, r: lapin::Result<lapin::Confirmation>| {
        let outcome = match r {
            Ok(lapin::Confirmation::Ack(None)) => Outcome::Acked,
            Ok(lapin::Confirmation::Ack(Some(_))) => Outcome::Returned,
            Ok(lapin::Confirmation::Nack(_)) => Outcome::Nacked,
            Ok(lapin::Confirmation::NotRequested) | Err(_) => Outcome::Unknown,
        };
        h.push(Event::Outcome {
            t: h.now(),
            id,
            outcome,
        });
    };
    let result = loop {
        if ctx.stop_publishing.load(Ordering::Relaxed) {
            break Ok(());
        }
        while let Some((_, fut)) = in_flight.front_mut() {
            match futures_lite::future::poll_once(fut).await {
                Some(r) => {
                    let (id, _) = in_flight.pop_front().expect("front exists");
                    record(id, r);
                }
                None => break,
            }
        }
        if in_flight.len() >= WINDOW {
            let Some((id, fut)) = in_flight.pop_front() else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(20), fut).await {
                Ok(r) => record(id, r),
                Err(_) => {
                    record(
                        id,
                        Err(lapin::ErrorKind::InvalidConnectionState(
                            lapin::ConnectionState::Error,
                        )
                        .into()),
                    );
                    break Err(anyhow::anyhow!("no confirm for 20 s"));
                }
            }
            continue;
        }
        *seq += 1;
        let id = p << 40 | *seq;
        let queue = (*seq as usize) % QUEUES;
        h.push(Event::Publish {
            t: h.now(),
            id,
            node: slot,
            queue,
        });
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            ch.basic_publish(
                EXCHANGE.into(),
                format!("q{queue}").as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &history::body(id, ctx.size),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.to_string().as_str().into()),
            ),
        )
        .await;
        match sent {
            Ok(Ok(confirm)) => in_flight.push_back((id, confirm)),
            _ => {
                h.push(Event::Outcome {
                    t: h.now(),
                    id,
                    outcome: Outcome::Unknown,
                });
                break Err(anyhow::anyhow!("publish failed"));
            }
        }
        tokio::time::sleep(interval).await;
    };
    // What is still in flight: wait for it when stopping; after a failure take what already
    // came and call the rest unknown (the connection is being abandoned).
    let wait = Duration::from_secs(if result.is_ok() { 30 } else { 0 });
    while let Some((id, mut fut)) = in_flight.pop_front() {
        if let Some(r) = futures_lite::future::poll_once(&mut fut).await {
            record(id, r);
            continue;
        }
        match tokio::time::timeout(wait, fut).await {
            Ok(r) => record(id, r),
            Err(_) => h.push(Event::Outcome {
                t: h.now(),
                id,
                outcome: Outcome::Unknown,
            }),
        }
    }
    result
}

fn record_delivery(h: &History, slot: usize, get: bool, d: &lapin::message::Delivery) {
    let (id, intact) = history::parse(&d.data);
    h.push(Event::Deliver {
        t: h.now(),
        id,
        node: slot,
        get,
        redelivered: d.redelivered,
        intact,
    });
}

/// Transient worker `w` (ids `w << 40 | seq`): the RPC pattern's private reply queue. On each
/// connection it declares a server-named auto-delete queue (which lives on that connection's
/// node), consumes it (prefetch `PREFETCH`, manual acks) and publishes to it through the default
/// exchange with confirms, at half the publishers' rate, ten confirms outstanding at most. By
/// `w % 4`: 1 publishes from a second connection on the next node (the message is forwarded
/// from node to node, as an RPC server's reply is); 3 consumes from one (a consumer of another
/// node's queue: queue commands between the nodes, so its queue is not exclusive); the others
/// do everything on one connection with an exclusive queue. The queue's messages are not
/// replicated (its node's death takes them: counted, not a violation); the queue goes with
/// the connection or its consumer, and the worker starts again on the next node.
pub async fn transient(w: u64, home: usize, ctx: Ctx) {
    let mut seq = 0u64;
    let mut slot = home;
    while !ctx.stop_publishing.load(Ordering::Relaxed) {
        let Some(conn) = connect_or_move(&mut slot, &ctx).await else {
            continue;
        };
        let elsewhere = if w % 2 == 1 {
            connect(ctx.next_slot(slot)).await.ok()
        } else {
            None
        };
        let other = elsewhere.as_ref().unwrap_or(&conn);
        let roles = if w % 4 == 3 {
            Roles {
                consumer: other,
                publisher: &conn,
                exclusive: false,
            }
        } else {
            Roles {
                consumer: &conn,
                publisher: other,
                exclusive: true,
            }
        };
        let _ = transient_on(&conn, roles, w, slot, &mut seq, &ctx).await;
        if let Some(e) = elsewhere {
            close(e).await;
        }
        close(conn).await;
        slot = ctx.next_slot(slot);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Who consumes and who publishes a transient worker's queue, and whether it is exclusive.
struct Roles<'a> {
    consumer: &'a Connection,
    publisher: &'a Connection,
    exclusive: bool,
}

async fn transient_on(
    conn: &Connection,
    roles: Roles<'_>,
    w: u64,
    slot: usize,
    seq: &mut u64,
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let h = &ctx.history;
    let declarer = within(5, conn.create_channel()).await?;
    let queue = within(
        5,
        declarer.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: roles.exclusive,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    let ch = within(5, roles.consumer.create_channel()).await?;
    within(5, ch.basic_qos(PREFETCH, BasicQosOptions::default())).await?;
    let mut stream = within(
        5,
        ch.basic_consume(
            queue.name().clone(),
            format!("t{w}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let reader = {
        let h = h.clone();
        tokio::spawn(async move {
            while let Some(d) = stream.next().await {
                let Ok(d) = d else { break };
                let (id, intact) = history::parse(&d.data);
                h.push(Event::TransientDeliver {
                    t: h.now(),
                    id,
                    node: slot,
                    redelivered: d.redelivered,
                    intact,
                });
                let acked =
                    tokio::time::timeout(Duration::from_secs(5), d.ack(BasicAckOptions::default()))
                        .await;
                if !matches!(acked, Ok(Ok(_))) {
                    break;
                }
            }
        })
    };
    let publisher = within(5, roles.publisher.create_channel()).await?;
    within(5, publisher.confirm_select(ConfirmSelectOptions::default())).await?;
    let interval = Duration::from_micros(2_000_000 / u64::from(ctx.rate.max(1)));
    let mut in_flight: VecDeque<(u64, lapin::PublisherConfirm)> = VecDeque::new();
    let result = loop {
        if ctx.stop_publishing.load(Ordering::Relaxed) || reader.is_finished() {
            break Ok(());
        }
        if in_flight.len() >= 10 {
            let Some((id, fut)) = in_flight.pop_front() else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(20), fut).await {
                Ok(Ok(c)) if c.is_ack() => h.push(Event::TransientAcked { t: h.now(), id }),
                Ok(Ok(_)) => {}
                _ => break Err(anyhow::anyhow!("no confirm")),
            }
            continue;
        }
        *seq += 1;
        let id = w << 40 | *seq;
        h.push(Event::TransientPublish {
            t: h.now(),
            id,
            node: slot,
        });
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            publisher.basic_publish(
                "".into(),
                queue.name().as_str().into(),
                BasicPublishOptions::default(),
                &history::body(id, ctx.size),
                BasicProperties::default(),
            ),
        )
        .await;
        match sent {
            Ok(Ok(confirm)) => in_flight.push_back((id, confirm)),
            _ => break Err(anyhow::anyhow!("publish failed")),
        }
        tokio::time::sleep(interval).await;
    };
    // Confirms already in; then the consumer has a moment for what is on its way.
    for (id, mut fut) in in_flight {
        if let Some(Ok(c)) = futures_lite::future::poll_once(&mut fut).await {
            if c.is_ack() {
                h.push(Event::TransientAcked { t: h.now(), id });
            }
        }
    }
    if result.is_ok() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    reader.abort();
    result
}

/// A push consumer on every queue, on one connection, prefetch `PREFETCH`, manual acks.
pub async fn consumer(c: usize, home: usize, ctx: Ctx) {
    let mut slot = home;
    while !ctx.stop_consuming.load(Ordering::Relaxed) {
        let Some(conn) = connect_or_move(&mut slot, &ctx).await else {
            continue;
        };
        let _ = consume_on(&conn, c, slot, &ctx).await;
        close(conn).await;
        slot = ctx.next_slot(slot);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn consume_on(conn: &Connection, c: usize, slot: usize, ctx: &Ctx) -> anyhow::Result<()> {
    let ch = within(5, conn.create_channel()).await?;
    within(5, ch.basic_qos(PREFETCH, BasicQosOptions::default())).await?;
    declare_topology(&ch).await?;
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<()>(QUEUES);
    let mut readers = Vec::new();
    for q in 0..QUEUES {
        let mut stream = within(
            5,
            ch.basic_consume(
                queue_name(q).as_str().into(),
                format!("c{c}-q{q}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let (h, fail) = (ctx.history.clone(), fail_tx.clone());
        readers.push(tokio::spawn(async move {
            while let Some(d) = stream.next().await {
                let Ok(d) = d else { break };
                record_delivery(&h, slot, false, &d);
                let acked =
                    tokio::time::timeout(Duration::from_secs(5), d.ack(BasicAckOptions::default()))
                        .await;
                if !matches!(acked, Ok(Ok(_))) {
                    break;
                }
            }
            let _ = fail.send(()).await;
        }));
    }
    loop {
        if ctx.stop_consuming.load(Ordering::Relaxed) {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), fail_rx.recv()).await {
            Ok(_) => break,
            Err(_) => continue,
        }
    }
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// basic.get on the queues in turn, manual acks.
pub async fn getter(home: usize, ctx: Ctx) {
    let mut slot = home;
    while !ctx.stop_consuming.load(Ordering::Relaxed) {
        let Some(conn) = connect_or_move(&mut slot, &ctx).await else {
            continue;
        };
        let _ = get_on(&conn, slot, &ctx).await;
        close(conn).await;
        slot = ctx.next_slot(slot);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_on(conn: &Connection, slot: usize, ctx: &Ctx) -> anyhow::Result<()> {
    let ch = within(5, conn.create_channel()).await?;
    declare_topology(&ch).await?;
    let mut q = 0;
    while !ctx.stop_consuming.load(Ordering::Relaxed) {
        q = (q + 1) % QUEUES;
        let got = within(
            5,
            ch.basic_get(queue_name(q).as_str().into(), BasicGetOptions::default()),
        )
        .await?;
        match got {
            Some(m) => {
                record_delivery(&ctx.history, slot, true, &m.delivery);
                within(5, m.delivery.ack(BasicAckOptions::default())).await?;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

/// How a failed AMQP call ended: refused by the broker (a channel error), or unknown.
fn meta_outcome<T>(r: &anyhow::Result<T>) -> MetaOutcome {
    match r {
        Ok(_) => MetaOutcome::Ok,
        Err(e) => match e.downcast_ref::<lapin::Error>().map(|e| e.kind()) {
            Some(lapin::ErrorKind::ProtocolError(amqp)) if matches!(amqp.get_id(), 403..=406) => {
                MetaOutcome::Refused
            }
            _ => MetaOutcome::Unknown,
        },
    }
}

/// Declares and deletes queues and exchanges, binds and unbinds them, at random.
pub async fn metadata(seed: u64, ctx: Ctx) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut slot = 1;
    let h = ctx.history.clone();
    while !ctx.stop_meta.load(Ordering::Relaxed) {
        let Some(conn) = connect_or_move(&mut slot, &ctx).await else {
            continue;
        };
        let mut ch: Option<Channel> = None;
        while !ctx.stop_meta.load(Ordering::Relaxed) {
            let c = match &ch {
                Some(c) => c.clone(),
                None => match within(5, conn.create_channel()).await {
                    Ok(c) => {
                        ch = Some(c.clone());
                        c
                    }
                    Err(_) => break,
                },
            };
            let q = format!("meta-q{}", rng.gen_range(0..META_QUEUES));
            let x = format!("meta-x{}", rng.gen_range(0..META_EXCHANGES));
            let op = match rng.gen_range(0..6) {
                0 => MetaOp::DeclareQueue { queue: q },
                1 => MetaOp::DeleteQueue { queue: q },
                2 => MetaOp::DeclareExchange { exchange: x },
                3 => MetaOp::DeleteExchange { exchange: x },
                4 => MetaOp::Bind {
                    exchange: x,
                    queue: q,
                },
                _ => MetaOp::Unbind {
                    exchange: x,
                    queue: q,
                },
            };
            let sent = h.now();
            let r = run_meta(&c, &op).await;
            let outcome = meta_outcome(&r);
            h.push(Event::Meta {
                t: h.now(),
                node: slot,
                op,
                outcome,
                sent,
            });
            match outcome {
                MetaOutcome::Ok => {}
                MetaOutcome::Refused => ch = None,
                MetaOutcome::Unknown => break,
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(50..250))).await;
        }
        close(conn).await;
        slot = ctx.next_slot(slot);
    }
}

fn routing_key(queue: &str) -> String {
    queue.trim_start_matches("meta-").to_string()
}

/// Declares a durable queue or direct exchange (`passive`: only checks that it exists).
async fn declare(ch: &Channel, kind: Kind, name: &str, passive: bool) -> anyhow::Result<()> {
    match kind {
        Kind::Queue => {
            within(
                5,
                ch.queue_declare(
                    name.into(),
                    QueueDeclareOptions {
                        durable: true,
                        passive,
                        ..Default::default()
                    },
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Kind::Exchange => {
            within(
                5,
                ch.exchange_declare(
                    name.into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        durable: true,
                        passive,
                        ..Default::default()
                    },
                    FieldTable::default(),
                ),
            )
            .await?;
        }
    }
    Ok(())
}

async fn run_meta(ch: &Channel, op: &MetaOp) -> anyhow::Result<()> {
    match op {
        MetaOp::DeclareQueue { queue } => declare(ch, Kind::Queue, queue, false).await?,
        MetaOp::DeleteQueue { queue } => {
            within(
                5,
                ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
            )
            .await?;
        }
        MetaOp::DeclareExchange { exchange } => {
            declare(ch, Kind::Exchange, exchange, false).await?
        }
        MetaOp::DeleteExchange { exchange } => {
            within(
                5,
                ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()),
            )
            .await?;
        }
        MetaOp::Bind { exchange, queue } => {
            within(
                5,
                ch.queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    routing_key(queue).as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        MetaOp::Unbind { exchange, queue } => {
            within(
                5,
                ch.queue_unbind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    routing_key(queue).as_str().into(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
    }
    Ok(())
}

/// A queue or an exchange.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Queue,
    Exchange,
}

/// Whether the queue or exchange `name` exists, asked through `slot` with a passive declare:
/// Some(true/false), or None when the node did not answer.
pub async fn exists(slot: usize, kind: Kind, name: &str) -> Option<bool> {
    let conn = connect(slot).await.ok()?;
    let ch = within(5, conn.create_channel()).await.ok()?;
    let r = declare(&ch, kind, name, true).await;
    let answer = match meta_outcome(&r) {
        MetaOutcome::Ok => Some(true),
        MetaOutcome::Refused => Some(false),
        MetaOutcome::Unknown => None,
    };
    close(conn).await;
    answer
}

/// Whether a binding of `exchange` to `queue` exists, through `slot`: a mandatory publish with
/// the binding's key is routed (confirmed without a return) only if it does. The probe message
/// is then purged away with the rest of the queue's content only if the queue is a metadata
/// queue (it is).
pub async fn binding_exists(slot: usize, exchange: &str, queue: &str) -> Option<bool> {
    let conn = connect(slot).await.ok()?;
    let ch = within(5, conn.create_channel()).await.ok()?;
    within(5, ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .ok()?;
    let confirm = within(
        5,
        ch.basic_publish(
            exchange.into(),
            routing_key(queue).as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"probe",
            BasicProperties::default(),
        ),
    )
    .await
    .ok()?;
    let c = within(5, confirm).await;
    let answer = match c {
        Ok(lapin::Confirmation::Ack(None)) => Some(true),
        Ok(lapin::Confirmation::Ack(Some(_))) => Some(false),
        // No such exchange: no binding either.
        Err(_) if meta_outcome(&c) == MetaOutcome::Refused => Some(false),
        _ => None,
    };
    if answer == Some(true) {
        let _ = within(
            5,
            ch.queue_purge(queue.into(), QueuePurgeOptions::default()),
        )
        .await;
    }
    close(conn).await;
    answer
}

/// Everything still in the message queues, read through `slot` with basic.get (the final
/// drain's last sweep); returns how many messages it took.
pub async fn sweep(slot: usize, h: &History) -> anyhow::Result<usize> {
    let conn = connect(slot).await?;
    let ch = within(5, conn.create_channel()).await?;
    let mut n = 0;
    for q in 0..QUEUES {
        while let Some(m) = within(
            5,
            ch.basic_get(queue_name(q).as_str().into(), BasicGetOptions::default()),
        )
        .await?
        {
            record_delivery(h, slot, true, &m.delivery);
            within(5, m.delivery.ack(BasicAckOptions::default())).await?;
            n += 1;
        }
    }
    close(conn).await;
    Ok(n)
}

/// Messages ready in each message queue, through `slot`.
pub async fn depths(slot: usize) -> anyhow::Result<Vec<u32>> {
    let conn = connect(slot).await?;
    let ch = within(5, conn.create_channel()).await?;
    let mut out = Vec::new();
    for q in 0..QUEUES {
        let d = within(
            5,
            ch.queue_declare(
                queue_name(q).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        out.push(d.message_count());
    }
    close(conn).await;
    Ok(out)
}
