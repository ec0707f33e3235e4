//! The `warren-perf` binary: declares the queues, connects every producer and consumer, runs
//! them until the time or the message counts are reached, prints progress each second and the
//! summary at the end. Speaks AMQP through lapin, STOMP through its own small client and MQTT
//! through rumqttc, never through Warren's crates, so it measures RabbitMQ the same way.

mod arguments;
mod consumer;
mod mqtt;
mod options;
mod producer;
mod properties;
mod report;
mod stats;
mod stomp;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::consumer::{ConsumerPlan, Drain};
use crate::options::{ExitWhen, Options, Protocol, ProtocolUri};
use crate::producer::ProducerPlan;
use crate::report::{progress_line, Snapshot, Summary};
use crate::stats::Stats;

/// How long connecting and declaring may take before the run is given up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = Options::parse();
    if opts.man_page {
        let page = clap_mangen::Man::new(<Options as clap::CommandFactory>::command());
        return match page.render(&mut std::io::stdout().lock()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(_) => std::process::ExitCode::FAILURE,
        };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn")),
        )
        .init();
    let summary = match run(&opts).await {
        Ok(s) => s,
        Err(e) => Summary::of(&Stats::default(), Duration::ZERO, vec![format!("{e:#}")]),
    };
    let failed = !summary.errors.is_empty();
    let mut out = std::io::stdout().lock();
    let written = if opts.json {
        serde_json::to_string(&summary)
            .map_err(std::io::Error::from)
            .and_then(|j| writeln!(out, "{j}"))
    } else {
        write!(out, "{}", summary.text())
    };
    if written.is_err() || failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Runs the whole test and returns its summary (errors of producers or consumers are in it).
async fn run(opts: &Options) -> anyhow::Result<Summary> {
    opts.validate()?;
    let queues = opts.queues()?;
    let tls = opts.tls()?;
    let protocol = opts.protocol()?;
    let protocol_uris = opts.protocol_uris()?;
    let setup = connect(&opts.uris[0], &tls).await?;
    let setup_ch = setup.create_channel().await.context("channel.open")?;
    // MQTT consumers subscribe to topics: the broker makes their queues.
    let drains = if protocol == Protocol::Mqtt {
        HashMap::new()
    } else {
        declare(opts, &setup_ch, &queues).await?
    };
    let consumer_arguments = opts.consumer_arguments()?;
    let properties = opts.message_properties()?;

    let stats = Arc::new(Stats::default());
    let (stop_tx, stop) = watch::channel(false);
    let grace = Duration::from_secs_f64(opts.grace);

    // Connect everyone first, so connecting is not part of the measured run (an MQTT consumer
    // also subscribes: its queue must exist before the first publish).
    let mut connecting = JoinSet::new();
    for i in 0..opts.consumers + opts.producers {
        let consumer = i < opts.consumers;
        let queue = queues[if consumer { i } else { i - opts.consumers } % queues.len()].clone();
        let how = match protocol_uris.get(i % protocol_uris.len().max(1)) {
            Some(uri) => Dial::Protocol(uri.clone()),
            None => Dial::Amqp(opts.uris[i % opts.uris.len()].clone(), tls.clone()),
        };
        let (autoack, window) = (opts.autoack, opts.confirm);
        connecting.spawn(async move {
            let client = match how {
                Dial::Amqp(uri, tls) => connect(&uri, &tls).await.map(Client::Amqp),
                Dial::Protocol(uri) => match uri.protocol {
                    Protocol::Stomp => stomp::connect(&uri).await.map(Client::Stomp),
                    Protocol::Mqtt if consumer => mqtt::connect_consumer(&uri, i, &queue, autoack)
                        .await
                        .map(|c| Client::Mqtt(Box::new(c))),
                    _ => mqtt::connect_producer(&uri, i, window)
                        .await
                        .map(|c| Client::Mqtt(Box::new(c))),
                },
            };
            (i, client)
        });
    }
    let mut conns: HashMap<usize, Client> = HashMap::new();
    while let Some(joined) = connecting.join_next().await {
        let (i, conn) = joined.context("a connecting task panicked")?;
        conns.insert(i, conn?);
    }

    let start = Instant::now();
    let mut consumers = JoinSet::new();
    for j in 0..opts.consumers {
        let queue = queues[j % queues.len()].clone();
        let plan = ConsumerPlan {
            queue: queue.clone(),
            qos: opts.qos,
            autoack: opts.autoack,
            multi_ack_every: opts.multi_ack_every,
            count: opts.cmessages,
            rate: opts.consumer_rate,
            arguments: consumer_arguments.clone(),
        };
        let conn = conns.remove(&j).context("every consumer was connected")?;
        let drain = drains.get(&queue).cloned();
        let (stats, stop) = (stats.clone(), stop.clone());
        match conn {
            Client::Amqp(c) => consumers.spawn(consumer::run(c, plan, drain, stats, stop, start)),
            Client::Stomp(c) => consumers.spawn(stomp::consume(c, plan, drain, stats, stop, start)),
            Client::Mqtt(c) => consumers.spawn(mqtt::consume(*c, plan, drain, stats, stop, start)),
        };
    }
    let mut producers = JoinSet::new();
    for i in 0..opts.producers {
        let plan = ProducerPlan {
            queue: queues[i % queues.len()].clone(),
            size: opts.size,
            confirm: opts.confirm,
            properties: properties.for_producer(i),
            mandatory: opts.mandatory(),
            rate: opts.rate,
            count: opts.pmessages,
        };
        let conn = conns
            .remove(&(opts.consumers + i))
            .context("every producer was connected")?;
        let (stats, stop) = (stats.clone(), stop.clone());
        match conn {
            Client::Amqp(c) => producers.spawn(producer::run(c, plan, stats, stop, start, grace)),
            Client::Stomp(c) => producers.spawn(stomp::produce(
                c,
                plan,
                opts.persistent(),
                stats,
                stop,
                start,
                grace,
            )),
            Client::Mqtt(c) => producers.spawn(mqtt::produce(*c, plan, stats, stop, start, grace)),
        };
    }

    let consumers_stop_themselves = opts.cmessages > 0 || opts.exit_when == ExitWhen::Empty;
    let deadline = opts.duration().map(|d| start + d);
    let mut errors = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut before = Snapshot::default();
    let mut last_tick = start;
    let mut producers_done_at: Option<Instant> = None;
    let stderr_line = |line: String| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    let ended = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                let (line, snap) = progress_line(&stats, before, now - start, now - last_tick);
                stderr_line(line);
                before = snap;
                last_tick = now;
            }
            Some(joined) = producers.join_next() => {
                collect(joined, "producer", &mut errors);
                if producers.is_empty() {
                    producers_done_at = Some(Instant::now());
                }
            }
            Some(joined) = consumers.join_next() => collect(joined, "consumer", &mut errors),
            _ = tokio::signal::ctrl_c() => break Instant::now(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let now = Instant::now();
        if !errors.is_empty() || deadline.is_some_and(|d| now >= d) {
            break now;
        }
        let producers_done = opts.producers == 0 || producers_done_at.is_some();
        let consumers_done = if opts.consumers == 0 || consumers_stop_themselves {
            consumers.is_empty()
        } else if let Some(at) = producers_done_at {
            // Consumers with no limit of their own follow counted producers: done once every
            // message sent was received, or nothing arrived for the grace period.
            let received = stats.received.load(Ordering::Relaxed);
            received >= stats.sent.load(Ordering::Relaxed)
                || (now - at > grace
                    && Duration::from_micros(stats.last_received_us.load(Ordering::Relaxed))
                        < at - start)
        } else {
            false
        };
        if producers_done && consumers_done && (opts.pmessages > 0 || opts.producers == 0) {
            break now;
        }
    };
    let _ = stop_tx.send(true);
    let duration = ended - start;
    let wind_down = grace + Duration::from_secs(5);
    for (set, role) in [(&mut producers, "producer"), (&mut consumers, "consumer")] {
        let waited = tokio::time::timeout(wind_down, async {
            while let Some(joined) = set.join_next().await {
                collect(joined, role, &mut errors);
            }
        })
        .await;
        if waited.is_err() {
            errors.push(format!("a {role} did not stop within {wind_down:?}"));
            set.abort_all();
        }
    }
    if opts.delete_queues && protocol != Protocol::Mqtt {
        for q in &queues {
            if let Err(e) = setup_ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                errors.push(format!("queue.delete {q}: {e}"));
            }
        }
    }
    let _ = setup.close(200, "done".into()).await;
    Ok(Summary::of(&stats, duration, errors))
}

/// How one producer or consumer connects.
enum Dial {
    Amqp(String, OwnedTLSConfig),
    Protocol(ProtocolUri),
}

/// One producer's or consumer's connection.
enum Client {
    Amqp(Connection),
    Stomp(stomp::StompConnection),
    /// Boxed: rumqttc's event loop is several times the size of the others.
    Mqtt(Box<mqtt::MqttConnection>),
}

/// Connects to `uri` (TLS as `tls` says for `amqps://`), within [`SETUP_TIMEOUT`].
async fn connect(uri: &str, tls: &OwnedTLSConfig) -> anyhow::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    tokio::time::timeout(
        SETUP_TIMEOUT,
        Connection::connect_with_config(uri, ConnectionProperties::default(), tls.clone(), runtime),
    )
    .await
    .with_context(|| format!("connecting to {uri} timed out"))?
    .with_context(|| format!("connecting to {uri}"))
}

/// Declares every queue; returns, with `--exit-when empty`, each queue's drain target (the
/// message count in its declare-ok).
async fn declare(
    opts: &Options,
    ch: &Channel,
    queues: &[String],
) -> anyhow::Result<HashMap<String, Arc<Drain>>> {
    let args = opts.queue_arguments()?;
    let options = QueueDeclareOptions {
        durable: opts.durable || opts.replicated()?,
        auto_delete: opts.auto_delete,
        ..Default::default()
    };
    let mut drains = HashMap::new();
    for q in queues {
        let declared = tokio::time::timeout(
            SETUP_TIMEOUT,
            ch.queue_declare(q.as_str().into(), options, args.clone()),
        )
        .await
        .with_context(|| format!("queue.declare {q} timed out"))?
        .with_context(|| format!("queue.declare {q}"))?;
        if opts.exit_when == ExitWhen::Empty {
            let target = u64::from(declared.message_count());
            tracing::info!(queue = %q, messages = target, "draining");
            drains.insert(
                q.clone(),
                Arc::new(Drain {
                    target,
                    ..Default::default()
                }),
            );
        }
    }
    Ok(drains)
}

/// Records the error of a finished producer or consumer task.
fn collect(
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
    role: &str,
    errors: &mut Vec<String>,
) {
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(format!("{role}: {e:#}")),
        Err(e) => errors.push(format!("{role} task: {e}")),
    }
}
