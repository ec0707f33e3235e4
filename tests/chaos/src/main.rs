//! `warren-chaos`: a Jepsen-style run against three warren nodes, each in its own network
//! namespace. A workload of real AMQP clients (lapin) publishes with confirms, consumes and
//! changes metadata on every node while a seeded nemesis injects faults — kill -9, pauses,
//! partitions, one-way drops, packet loss, slow links, whole-cluster restarts, power loss
//! (unsynced writes lost) and membership changes — then heals, drains through every node and
//! checks that nothing confirmed was lost (`checker.rs`). Needs root (namespaces, iptables).
//!
//! `warren-chaos --seconds 150` is the short profile CI runs; `--minutes 60` a long one;
//! `--backlog 1000000` adds a standing backlog (`backlog.rs`) that the faults hit. Output
//! in `--out`: `summary.txt` (what a person reads), `report.json`, `history.jsonl`, node logs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use warren_chaos::backlog::{self, DrainReport, FillReport};
use warren_chaos::history::{Event, History, Outcome};
use warren_chaos::nodes::{self, Nodes};
use warren_chaos::{addr, checker, net, workload};

#[derive(Parser, Debug)]
#[command(name = "warren-chaos", about)]
struct Args {
    /// How long faults are injected, in seconds (the heal, drain and checks come after).
    #[arg(long, default_value_t = 150)]
    seconds: u64,
    /// Instead of --seconds: minutes (the long profile: `--minutes 60`).
    #[arg(long)]
    minutes: Option<u64>,
    /// Seed of the nemesis and the metadata workload [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Fail unless at least this many faults were injected.
    #[arg(long, default_value_t = 20)]
    min_faults: usize,
    /// Output directory (summary, report, history, node logs).
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// The warren binary [default: $WARREN_BIN, else $CARGO_TARGET_DIR/debug/warren].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Messages per second per publisher (one publisher per node).
    #[arg(long, default_value_t = 60)]
    rate: u32,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Keep the nodes' data directories after a run that passed.
    #[arg(long)]
    keep: bool,
    /// Run on loopback with a TCP proxy per link instead of network namespaces (the fallback
    /// used automatically where namespaces are not available).
    #[arg(long)]
    loopback: bool,
    /// Only these fault kinds (comma-separated; see KINDS in src/main.rs) [default: all].
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Before the faults, fill the durable quorum queue `chaos-backlog` with this many
    /// persistent, confirmed messages, consumed by nobody until the heal, then drained and
    /// checked (0: no backlog).
    #[arg(long, default_value_t = 0)]
    backlog: u64,
    /// Body bytes of each backlog message (at least 16).
    #[arg(long, default_value_t = 1024)]
    backlog_size: usize,
}

/// The standing backlog of a run: what its fill and its drain did.
struct Backlog {
    fill: FillReport,
    drain: DrainReport,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHAOS_LOG")
                .unwrap_or_else(|_| "info,lapin=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let passed = runtime.block_on(run(args))?;
    std::process::exit(if passed { 0 } else { 1 });
}

fn warren_bin(args: &Args) -> PathBuf {
    if let Some(b) = &args.bin {
        return b.clone();
    }
    if let Ok(b) = std::env::var("WARREN_BIN") {
        return PathBuf::from(b);
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    Path::new(&target).join("debug").join("warren")
}

/// Compiles the power-loss shim (`synclog.c`) with the system's C compiler.
fn build_synclog(out: &Path) -> Result<PathBuf, String> {
    let src = out.join("synclog.c");
    std::fs::write(&src, include_str!("../synclog.c")).map_err(|e| e.to_string())?;
    let lib = out.join("libsynclog.so");
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .map_err(|e| format!("no C compiler ({e})"))?;
    if !st.status.success() {
        return Err(String::from_utf8_lossy(&st.stderr).into_owned());
    }
    Ok(lib)
}

/// The fault kinds, in the order the rotation starts from.
const KINDS: &[&str] = &[
    "kill",
    "kill-leader",
    "pause",
    "partition-isolate",
    "pause-leader",
    "partition-bridge",
    "one-way",
    "power-loss",
    "loss",
    "kill-all",
    "partition-leader",
    "slow-link",
    "membership",
    "power-loss-all",
];

struct Chaos {
    history: History,
    nodes: Nodes,
    net: net::Network,
    rng: StdRng,
    slots: Arc<Mutex<Vec<usize>>>,
    /// Faults injected, by kind.
    injected: BTreeMap<String, usize>,
    recoveries: Vec<(String, Option<u64>)>,
    /// Membership changes that failed. Each runs alone, the faults before it healed and the
    /// cluster stable: a failure is a violation (a learner that never caught up, found so).
    membership_failures: Vec<String>,
}

impl Chaos {
    fn fault(&mut self, kind: &str, detail: String) {
        tracing::info!("fault: {kind} {detail}");
        *self.injected.entry(kind.to_string()).or_insert(0) += 1;
        self.history.push(Event::Fault {
            t: self.history.now(),
            kind: kind.to_string(),
            detail,
        });
    }

    async fn leader(&self) -> Option<usize> {
        for slot in self.nodes.running_slots() {
            if self.nodes.nodes.get(&slot).is_some_and(|n| n.paused) {
                continue;
            }
            if let Ok(s) = nodes::status(slot, false).await {
                if let Some(l) = s.leader {
                    if let Some(n) = self.nodes.nodes.values().find(|n| n.id == l) {
                        return Some(n.slot);
                    }
                }
            }
        }
        None
    }

    /// Waits until every running node names the same running leader; the milliseconds it
    /// took, or None after `limit`.
    async fn wait_stable(&self, limit: Duration) -> Option<u64> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let running = self.nodes.running_slots();
            let mut leaders = Vec::new();
            for slot in &running {
                match nodes::status(*slot, false).await {
                    Ok(s) if s.refused.is_empty() => leaders.push(s.leader),
                    _ => leaders.push(None),
                }
            }
            let first = leaders.first().copied().flatten();
            if let Some(l) = first {
                let leader_runs = self.nodes.nodes.values().any(|n| n.id == l && n.is_up());
                if leader_runs && leaders.iter().all(|x| *x == Some(l)) {
                    return Some(start.elapsed().as_millis() as u64);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    fn random_running(&mut self) -> Option<usize> {
        let running = self.nodes.running_slots();
        running.choose(&mut self.rng).copied()
    }

    fn others(&self, slot: usize) -> Vec<usize> {
        self.nodes
            .nodes
            .keys()
            .copied()
            .filter(|s| *s != slot)
            .collect()
    }

    fn publish_slots(&self) {
        if let Ok(mut s) = self.slots.lock() {
            *s = self.nodes.nodes.keys().copied().collect();
        }
    }

    /// Injects one fault of `kind`, holds it for `hold`, heals it. Returns false when the
    /// fault could not be applied in the cluster's current shape (nothing injected).
    async fn one(&mut self, kind: &str, hold: Duration) -> anyhow::Result<bool> {
        let leader = self.leader().await;
        match kind {
            "kill" | "kill-leader" | "power-loss" => {
                let target = if kind == "kill-leader" {
                    leader
                } else {
                    self.random_running()
                };
                let Some(t) = target else { return Ok(false) };
                if kind == "power-loss" {
                    if !self.nodes.has_power_loss() {
                        return Ok(false);
                    }
                    let loss = self.nodes.power_loss(t)?;
                    self.fault(
                        kind,
                        format!("node in slot {t}: kill -9, unsynced writes lost ({loss:?})"),
                    );
                } else {
                    self.nodes.kill9(t)?;
                    self.fault(kind, format!("kill -9 node in slot {t}"));
                }
                tokio::time::sleep(hold).await;
                self.nodes.start(t)?;
            }
            "kill-all" | "power-loss-all" => {
                if kind == "power-loss-all" && !self.nodes.has_power_loss() {
                    return Ok(false);
                }
                let running = self.nodes.running_slots();
                let mut losses = Vec::new();
                for s in &running {
                    if kind == "power-loss-all" {
                        losses.push(format!("slot {s}: {:?}", self.nodes.power_loss(*s)?));
                    } else {
                        self.nodes.kill9(*s)?;
                    }
                }
                self.fault(kind, format!("every node at once {}", losses.join(", ")));
                tokio::time::sleep(Duration::from_millis(500)).await;
                for s in running {
                    self.nodes.start(s)?;
                }
            }
            "pause" | "pause-leader" => {
                let target = if kind == "pause-leader" {
                    leader
                } else {
                    self.random_running()
                };
                let Some(t) = target else { return Ok(false) };
                self.nodes.signal(t, "-STOP")?;
                self.fault(
                    kind,
                    format!("SIGSTOP node in slot {t} for {} ms", hold.as_millis()),
                );
                tokio::time::sleep(hold).await;
                self.nodes.signal(t, "-CONT")?;
            }
            "partition-isolate" | "partition-leader" => {
                let target = if kind == "partition-leader" {
                    leader
                } else {
                    self.random_running()
                };
                let Some(t) = target else { return Ok(false) };
                for o in self.others(t) {
                    self.net.cut(t, o)?;
                }
                self.fault(kind, format!("node in slot {t} cut off from its peers"));
                tokio::time::sleep(hold).await;
                self.net.heal()?;
            }
            "partition-bridge" => {
                let mut all: Vec<usize> = self.nodes.nodes.keys().copied().collect();
                if all.len() < 3 {
                    return Ok(false);
                }
                all.shuffle(&mut self.rng);
                let (bridge, rest) = (all[0], &all[1..]);
                for (i, a) in rest.iter().enumerate() {
                    for b in &rest[i + 1..] {
                        self.net.cut(*a, *b)?;
                    }
                }
                self.fault(
                    kind,
                    format!(
                        "only slot {bridge} reaches every other node; {rest:?} cut from each other"
                    ),
                );
                tokio::time::sleep(hold).await;
                self.net.heal()?;
            }
            "one-way" => {
                let Some(from) = leader.or_else(|| self.random_running()) else {
                    return Ok(false);
                };
                let others = self.others(from);
                let Some(to) = others.choose(&mut self.rng).copied() else {
                    return Ok(false);
                };
                self.net.drop_packets(from, to)?;
                self.fault(
                    kind,
                    format!("packets from slot {from} to slot {to} dropped"),
                );
                tokio::time::sleep(hold).await;
                self.net.heal()?;
            }
            "loss" => {
                let Some(t) = self.random_running() else {
                    return Ok(false);
                };
                let p = self.rng.gen_range(0.1..0.3);
                self.net.lose(t, p)?;
                self.fault(
                    kind,
                    format!("node in slot {t} loses {:.0}% of its input", p * 100.0),
                );
                tokio::time::sleep(hold).await;
                self.net.heal()?;
            }
            "slow-link" => {
                let Some(t) = leader.or_else(|| self.random_running()) else {
                    return Ok(false);
                };
                self.net.slow(t, 1024)?;
                self.fault(kind, format!("node in slot {t} sends at 1 Mbit/s (tbf)"));
                tokio::time::sleep(hold).await;
                self.net.heal()?;
            }
            "membership" => {
                let Some(via) = leader else { return Ok(false) };
                if self.nodes.nodes.len() <= 3 {
                    let free = (1..=4).find(|s| !self.nodes.nodes.contains_key(s));
                    let Some(slot) = free else { return Ok(false) };
                    self.fault(
                        kind,
                        format!("adding a node in slot {slot} (learner, then voter)"),
                    );
                    match self.nodes.add(slot, via) {
                        Ok(id) => self.history.note(format!("node {id} added in slot {slot}")),
                        Err(e) => {
                            self.history.note(format!("adding a node failed: {e:#}"));
                            self.membership_failures
                                .push(format!("adding a node in slot {slot} failed: {e:#}"));
                        }
                    }
                } else {
                    let mut slots: Vec<usize> = self.nodes.nodes.keys().copied().collect();
                    slots.shuffle(&mut self.rng);
                    let slot = slots[0];
                    self.fault(kind, format!("removing the node in slot {slot}"));
                    match self.nodes.remove(slot, via) {
                        Ok(id) => self
                            .history
                            .note(format!("node {id} removed from slot {slot}")),
                        Err(e) => {
                            self.history.note(format!("removing a node failed: {e:#}"));
                            self.membership_failures
                                .push(format!("removing the node in slot {slot} failed: {e:#}"));
                        }
                    }
                }
                self.publish_slots();
            }
            _ => return Ok(false),
        }
        let recovered = self.wait_stable(Duration::from_secs(60)).await;
        self.history.push(Event::Heal {
            t: self.history.now(),
            kind: kind.to_string(),
            recovered_ms: recovered,
        });
        self.recoveries.push((kind.to_string(), recovered));
        Ok(true)
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let seconds = args.minutes.map_or(args.seconds, |m| m * 60);
    std::fs::create_dir_all(&args.out)?;
    let out = std::fs::canonicalize(&args.out)?;
    let data = out.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let bin = std::fs::canonicalize(warren_bin(&args)).context("the warren binary")?;
    let loopback = args.loopback
        || match net::Netns::available() {
            Ok(()) => false,
            Err(why) => {
                tracing::warn!(
                    "network namespaces are not available here ({why}): falling back to loopback, \
                     with a TCP proxy per link between nodes"
                );
                true
            }
        };
    if loopback {
        addr::set_mode(addr::Mode::Loopback);
    }
    let synclog = match build_synclog(&out) {
        Ok(lib) => Some(lib),
        Err(why) => {
            tracing::warn!("power-loss faults disabled: cannot build the sync-log shim: {why}");
            None
        }
    };
    let history = History::new();
    history.note(format!(
        "seed {seed}, {seconds} s of faults, binary {}, network {}, power loss {}",
        bin.display(),
        if loopback {
            "loopback with per-link proxies"
        } else {
            "namespaces"
        },
        if synclog.is_some() { "on" } else { "off" }
    ));
    let net = if loopback {
        net::Network::Loopback(warren_chaos::proxy::Proxies::start(4).await?)
    } else {
        net::Network::Netns(net::Netns::setup(4)?)
    };
    let mut nodes = Nodes::new(bin, data.clone(), synclog)?;
    nodes.start_cluster(3)?;
    let slots = Arc::new(Mutex::new(vec![1, 2, 3]));
    let mut chaos = Chaos {
        history: history.clone(),
        nodes,
        net,
        rng: StdRng::seed_from_u64(seed),
        slots: Arc::clone(&slots),
        injected: BTreeMap::new(),
        recoveries: Vec::new(),
        membership_failures: Vec::new(),
    };
    let formed = chaos.wait_stable(Duration::from_secs(60)).await;
    anyhow::ensure!(formed.is_some(), "the cluster did not form within 60 s");
    history.note("the cluster formed");

    // The standing backlog: filled before any client or fault, so its rate is the broker's.
    let filled = if args.backlog > 0 {
        history.note(format!(
            "filling {} with {} messages of {} bytes",
            backlog::QUEUE,
            args.backlog,
            args.backlog_size.max(backlog::MIN_SIZE)
        ));
        let limit = Duration::from_secs(600.max(args.backlog / 500));
        let (fill, attempts, confirmed) = backlog::fill(
            &chaos.nodes.running_slots(),
            args.backlog,
            args.backlog_size,
            limit,
        )
        .await;
        history.note(format!(
            "backlog filled: {} of {} confirmed in {:.1} s ({:.0} msg/s), {} publishes, {} nacked, {} returned, {} unknown",
            fill.confirmed,
            fill.messages,
            fill.elapsed_ms as f64 / 1000.0,
            fill.rate(),
            fill.publishes,
            fill.nacked,
            fill.returned,
            fill.unknown
        ));
        Some((fill, attempts, confirmed))
    } else {
        None
    };

    let ctx = workload::Ctx {
        history: history.clone(),
        slots,
        stop_publishing: Arc::new(AtomicBool::new(false)),
        stop_consuming: Arc::new(AtomicBool::new(false)),
        stop_meta: Arc::new(AtomicBool::new(false)),
        rate: args.rate,
        size: args.size,
    };
    let mut publishers = Vec::new();
    let mut consumers = Vec::new();
    for slot in 1..=3usize {
        publishers.push(tokio::spawn(workload::publisher(
            slot as u64,
            slot,
            ctx.clone(),
        )));
        consumers.push(tokio::spawn(workload::consumer(slot, slot, ctx.clone())));
        consumers.push(tokio::spawn(workload::getter(slot, ctx.clone())));
        publishers.push(tokio::spawn(workload::transient(
            100 + slot as u64,
            slot,
            ctx.clone(),
        )));
    }
    let meta = tokio::spawn(workload::metadata(seed ^ 0x5eed, ctx.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The nemesis: a seeded rotation; each round picks the next kind, or at random.
    let started = Instant::now();
    let mut round = 0usize;
    let kinds: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| args.kinds.is_empty() || args.kinds.iter().any(|a| a == k))
        .collect();
    anyhow::ensure!(
        !kinds.is_empty(),
        "no such fault kind: {:?} (kinds: {KINDS:?})",
        args.kinds
    );
    while started.elapsed() < Duration::from_secs(seconds) {
        let kind = if round < kinds.len() {
            kinds[round]
        } else {
            kinds[chaos.rng.gen_range(0..kinds.len())]
        };
        round += 1;
        let hold = Duration::from_millis(chaos.rng.gen_range(2000..5000));
        match chaos.one(kind, hold).await {
            Ok(_) => {}
            Err(e) => chaos
                .history
                .note(format!("fault {kind} could not be applied: {e:#}")),
        }
        tokio::time::sleep(Duration::from_millis(chaos.rng.gen_range(1000..3000))).await;
    }

    // Heal everything, bring every node back, then drain.
    history.note("healing: every node running, no network faults");
    chaos.net.heal()?;
    for slot in chaos.nodes.nodes.keys().copied().collect::<Vec<_>>() {
        let _ = chaos.nodes.signal(slot, "-CONT");
        if !chaos.nodes.running(slot) {
            chaos.nodes.start(slot)?;
        }
    }
    let stable = chaos.wait_stable(Duration::from_secs(120)).await;
    history.note(format!("stable after the heal: {stable:?} ms"));
    ctx.stop_publishing.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(90), p).await;
    }
    ctx.stop_meta.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(30), meta).await;
    history.note("publishers stopped; draining");
    let drain_start = Instant::now();
    let mut last_count = 0;
    let mut quiet_since = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = history
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Deliver { .. }))
            .count();
        if n != last_count {
            last_count = n;
            quiet_since = Instant::now();
        }
        if quiet_since.elapsed() > Duration::from_secs(5) {
            let mut empty = true;
            for slot in chaos.nodes.running_slots() {
                match workload::depths(slot).await {
                    Ok(d) if d.iter().all(|x| *x == 0) => {}
                    _ => empty = false,
                }
            }
            if empty {
                break;
            }
        }
    }
    ctx.stop_consuming.store(true, Ordering::Relaxed);
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    let mut view = checker::FinalView::default();
    for slot in chaos.nodes.running_slots() {
        match workload::sweep(slot, &history).await {
            Ok(n) if n > 0 => history.note(format!(
                "the last sweep through slot {slot} took {n} messages"
            )),
            Ok(_) => {}
            Err(e) => history.note(format!("the last sweep through slot {slot} failed: {e:#}")),
        }
    }
    for slot in chaos.nodes.running_slots() {
        if let Ok(d) = workload::depths(slot).await {
            view.left_in_queues.insert(slot, d);
        }
    }
    let mut standing = None;
    let mut backlog_check = None;
    if let Some((fill, attempts, confirmed)) = filled {
        history.note(format!("draining {}", backlog::QUEUE));
        let limit = Duration::from_secs(300.max(args.backlog / 500));
        let (drain, deliveries) =
            backlog::drain(&chaos.nodes.running_slots(), fill.size, limit).await;
        history.note(format!(
            "backlog drained: {} deliveries in {:.1} s, left in the queue: {}",
            drain.deliveries,
            drain.elapsed_ms as f64 / 1000.0,
            show_left(&drain.left)
        ));
        backlog_check = Some(checker::check_backlog(
            &attempts,
            &confirmed,
            &deliveries,
            &drain.left,
        ));
        standing = Some(Backlog { fill, drain });
    }
    history.note("checking metadata through every node");
    let expected = checker::expected_entities(&history.events());
    for entity in expected.keys() {
        let mut per = BTreeMap::new();
        for slot in chaos.nodes.running_slots() {
            let answer = if let Some(q) = entity.strip_prefix("queue ") {
                workload::exists(slot, workload::Kind::Queue, q).await
            } else if let Some(x) = entity.strip_prefix("exchange ") {
                workload::exists(slot, workload::Kind::Exchange, x).await
            } else if let Some(b) = entity.strip_prefix("binding ") {
                let (x, q) = b.split_once("->").unwrap_or_default();
                workload::binding_exists(slot, x, q).await
            } else {
                None
            };
            per.insert(slot, answer);
        }
        view.entities.insert(entity.clone(), per);
    }
    // The same applied state everywhere: wait for equal applied indexes, then compare digests.
    let digest_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut digests = BTreeMap::new();
        for slot in chaos.nodes.running_slots() {
            let d = nodes::status(slot, true)
                .await
                .map(|s| (s.digest_applied_index, s.state_digest))
                .unwrap_or((None, String::new()));
            digests.insert(slot, d);
        }
        let equal = digests
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 1;
        view.digests = digests;
        if equal || Instant::now() > digest_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for log in chaos.nodes.logs() {
        if let Ok(text) = std::fs::read_to_string(&log) {
            for line in text.lines().filter(|l| l.contains("panicked")) {
                view.panics.push(format!(
                    "{}: {}",
                    log.display(),
                    line.chars().take(300).collect::<String>()
                ));
            }
        }
    }
    let events = history.events();
    let mut report = checker::check(&events, &view);
    if let Some(b) = backlog_check {
        report.add_backlog(b);
    }
    report
        .violations
        .extend(chaos.membership_failures.iter().cloned());
    let faults: usize = chaos.injected.values().sum();
    let filled_whole = standing.as_ref().is_none_or(|b| b.fill.complete);
    let passed = report.violations.is_empty() && faults >= args.min_faults && filled_whole;
    chaos.nodes.stop_all();
    // Node logs next to the report.
    let summary = summary(
        seed,
        seconds,
        &chaos,
        &report,
        &events,
        standing.as_ref(),
        faults,
        args.min_faults,
        passed,
    );
    std::fs::write(out.join("summary.txt"), &summary)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "seed": seed,
            "seconds": seconds,
            "passed": passed,
            "faults": chaos.injected,
            "recoveries_ms": chaos.recoveries,
            "report": report,
            "backlog": standing.as_ref().map(|b| serde_json::json!({
                "fill": b.fill,
                "fill_rate_msg_per_s": b.fill.rate(),
                "drain": b.drain,
            })),
            "final_view": view,
        }))?,
    )?;
    let mut hist = std::io::BufWriter::new(std::fs::File::create(out.join("history.jsonl"))?);
    for e in &events {
        serde_json::to_writer(&mut hist, e)?;
        hist.write_all(b"\n")?;
    }
    hist.flush()?;
    {
        let mut err = std::io::stderr().lock();
        writeln!(err, "{summary}")?;
    }
    drop(chaos);
    if passed && !args.keep {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(passed)
}

/// The standing backlog's lines of the summary.
fn backlog_summary(b: &Backlog, c: &checker::BacklogReport) -> String {
    let (f, d) = (&b.fill, &b.drain);
    let secs = |ms: u64| ms as f64 / 1000.0;
    let mut s = format!(
        "\nbacklog ({}, {} messages of {} B, filled before the faults, not consumed until the heal):\n",
        backlog::QUEUE,
        f.messages,
        f.size
    );
    s.push_str(&format!(
        "  fill: {} confirmed in {:.1} s ({:.0} msg/s, {:.1} MiB/s); {} publishes (nacked {}, returned {}, unknown {}), {} connection failures{}\n",
        f.confirmed,
        secs(f.elapsed_ms),
        f.rate(),
        f.rate() * f.size as f64 / (1024.0 * 1024.0),
        f.publishes,
        f.nacked,
        f.returned,
        f.unknown,
        f.connection_failures,
        if f.complete { "" } else { " -- INCOMPLETE: the fill ran out of time (the run fails)" }
    ));
    s.push_str(&format!(
        "  drain: {} deliveries in {:.1} s ({:.0} msg/s), distinct {}, duplicates {} ({} redelivered), as new more often than published {}, phantoms {}, damaged {}, {} connection failures{}; left in the queue: {}\n",
        d.deliveries,
        secs(d.elapsed_ms),
        d.deliveries as f64 / secs(d.elapsed_ms).max(0.001),
        c.delivered_distinct,
        c.duplicates,
        c.duplicates_redelivered,
        c.twice_not_redelivered,
        c.phantom,
        c.corrupt,
        d.connection_failures,
        if d.timed_out { ", stopped by its time limit" } else { "" },
        show_left(&d.left)
    ));
    s.push_str(&format!(
        "  backlog LOST (confirmed, never drained): {}{}\n",
        c.lost,
        if c.lost > 0 {
            format!(" ids {}", c.lost_ids)
        } else {
            String::new()
        }
    ));
    s
}

/// "node 1: 0, node 2: no answer".
fn show_left(left: &BTreeMap<usize, Option<u32>>) -> String {
    left.iter()
        .map(|(node, n)| match n {
            Some(n) => format!("node {node}: {n}"),
            None => format!("node {node}: no answer"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// This run's command line, with its seed.
fn reproduce(seed: u64) -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if !args
        .iter()
        .any(|a| a == "--seed" || a.starts_with("--seed="))
    {
        args.push("--seed".into());
        args.push(seed.to_string());
    }
    args.join(" ")
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[allow(clippy::too_many_arguments)]
fn summary(
    seed: u64,
    seconds: u64,
    chaos: &Chaos,
    r: &checker::Report,
    events: &[Event],
    standing: Option<&Backlog>,
    faults: usize,
    min_faults: usize,
    passed: bool,
) -> String {
    let mut s = String::new();
    let verdict = if passed { "PASSED" } else { "FAILED" };
    s.push_str(&format!(
        "warren-chaos {verdict}: seed {seed}, {seconds} s of faults\nreproduce: {}\n\n",
        reproduce(seed)
    ));
    s.push_str(&format!(
        "faults injected: {faults} (at least {min_faults} required)\n"
    ));
    for (k, n) in &chaos.injected {
        let mut rec: Vec<u64> = chaos
            .recoveries
            .iter()
            .filter(|(kind, _)| kind == k)
            .filter_map(|(_, ms)| *ms)
            .collect();
        rec.sort_unstable();
        let never = chaos
            .recoveries
            .iter()
            .filter(|(kind, ms)| kind == k && ms.is_none())
            .count();
        s.push_str(&format!(
            "  {k:<18} {n:>4}   stable again after the heal: median {} ms, max {} ms{}\n",
            percentile(&rec, 0.5),
            rec.last().copied().unwrap_or(0),
            if never > 0 {
                format!(", {never} never within 60 s")
            } else {
                String::new()
            }
        ));
    }
    // The longest wait for a confirm: between two consecutive acks.
    let mut ack_times: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Outcome {
                t,
                outcome: Outcome::Acked,
                ..
            } => Some(*t),
            _ => None,
        })
        .collect();
    ack_times.sort_unstable();
    let gap = ack_times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    s.push_str(&format!(
        "\nmessages: published {}, acked {}, nacked {}, returned {}, unknown {} (of which no outcome {})\n",
        r.published, r.acked, r.nacked, r.returned, r.unknown, r.no_outcome
    ));
    s.push_str(&format!(
        "deliveries: {} ({} by basic.get), distinct {}, duplicates {} (each message at most once with redelivered=false unless listed below)\n",
        r.deliveries, r.deliveries_by_get, r.delivered_distinct, r.duplicates
    ));
    if !r.late_first_deliveries.is_empty() {
        s.push_str(&format!(
            "late first deliveries (redelivered=false arriving after a redelivered copy; held up in transit across a failover): {} (in report.json)\n",
            r.late_first_deliveries.len()
        ));
    }
    s.push_str(&format!(
        "unknown outcome: {} delivered, {} not delivered\n",
        r.unknown_delivered, r.unknown_not_delivered
    ));
    s.push_str(&format!(
        "LOST (acked, never delivered): {}\nlongest gap between two confirms: {gap} ms\n",
        r.lost.len()
    ));
    let t = &r.transient;
    s.push_str(&format!(
        "transient (queues of one node, not replicated): published {}, confirmed {}, deliveries {}, distinct {}, duplicates {}, confirmed and not delivered {} (allowed: gone with their home node or their connection)\n",
        t.published, t.confirmed, t.deliveries, t.delivered_distinct, t.duplicates, t.confirmed_not_delivered
    ));
    if let (Some(b), Some(c)) = (standing, &r.backlog) {
        s.push_str(&backlog_summary(b, c));
    }
    s.push_str(&format!(
        "\nmetadata: {} operations ({} ok, {} refused, {} unknown), {} entities with a determined final state checked through every node\n",
        r.meta_ops, r.meta_ok, r.meta_refused, r.meta_unknown, r.entities_determined
    ));
    s.push_str(&format!(
        "applied state equal on every node: {}\npanics in node logs: {}\n",
        if r.digests_equal { "yes" } else { "NO" },
        r.panics.len()
    ));
    if r.violations.is_empty() {
        s.push_str("\nevery invariant held\n");
    } else {
        s.push_str(&format!("\n{} VIOLATIONS:\n", r.violations.len()));
        for v in r.violations.iter().take(50) {
            s.push_str(&format!("  - {v}\n"));
        }
        if r.violations.len() > 50 {
            s.push_str(&format!(
                "  ... and {} more in report.json\n",
                r.violations.len() - 50
            ));
        }
    }
    s
}
