//! A cluster of `warren` processes on loopback: every node with its own AMQP and gRPC ports
//! (picked free) and data directory, formed from the same `--member` list; nodes that join later
//! (`--join`, then `warren member add`), the `warren` command line against a node, wiping a
//! node's data, and a publisher of confirmed persistent messages that survives failovers.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::certs::certs;
use crate::{free_port, fresh_dir, warren_bin, Broker};

pub struct Cluster {
    nodes: Vec<Broker>,
    /// The gRPC port of each node, by index (node id - 1).
    grpc: Vec<u16>,
    /// Started with `--insecure`: the kit's own `warren` commands go plaintext too.
    insecure: bool,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) with `extra` flags each, and waits until one leads and the
    /// others follow it. Retries with other ports if a port picked was taken in the meantime
    /// (as [`Broker::start_own`] does).
    pub fn start(n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        let mut last = None;
        for _ in 0..3 {
            match Cluster::start_once(n, extra) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts were made"))
    }

    fn start_once(n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut members = Vec::new();
        for (i, (amqp, grpc)) in ports.iter().enumerate() {
            members.push("--member".to_string());
            members.push(format!("{}@127.0.0.1:{amqp}@127.0.0.1:{grpc}", i + 1));
        }
        let mut nodes = Vec::new();
        for (i, (amqp, _)) in ports.iter().enumerate() {
            let mut flags = vec![
                "--node-id".to_string(),
                (i + 1).to_string(),
                "--certs-dir".to_string(),
                certs().node_dir(i + 1).display().to_string(),
            ];
            flags.extend(members.iter().cloned());
            flags.extend(extra.iter().map(|s| s.to_string()));
            nodes.push(Broker::spawn_at(*amqp, fresh_dir()?, flags)?);
        }
        let cluster = Cluster {
            nodes,
            grpc: ports.iter().map(|(_, g)| *g).collect(),
            insecure: extra.contains(&"--insecure"),
        };
        cluster.wait_for_leader(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Starts node `len() + 1` with `--join` (it waits to be added with `warren member add`)
    /// and its own `--member` entry, plus `extra`; returns its id.
    pub fn start_joining(&mut self, extra: &[&str]) -> anyhow::Result<usize> {
        let id = self.nodes.len() + 1;
        let (amqp, grpc) = (free_port(), free_port());
        let mut flags = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--join".to_string(),
            "--certs-dir".to_string(),
            certs().node_dir(id).display().to_string(),
            "--member".to_string(),
            format!("{id}@127.0.0.1:{amqp}@127.0.0.1:{grpc}"),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        self.nodes
            .push(Broker::spawn_at(amqp, fresh_dir()?, flags)?);
        self.grpc.push(grpc);
        Ok(id)
    }

    /// Node `i`'s gRPC address (`127.0.0.1:PORT`).
    pub fn grpc_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.grpc[i - 1])
    }

    /// Node `i` as `warren member add` takes it: `ID@AMQP_ADDR@GRPC_ADDR`.
    pub fn member_spec(&self, i: usize) -> String {
        format!("{i}@{}@{}", self.node(i).addr(), self.grpc_addr(i))
    }

    /// `warren status --grpc` of node `i`: its standard output, or an error with its stderr.
    pub fn status(&self, i: usize) -> anyhow::Result<String> {
        let addr = self.grpc_addr(i);
        let mut args = vec!["status", "--grpc", &addr];
        if self.insecure {
            args.push("--insecure");
        }
        let out = warren_cli(&args)?;
        anyhow::ensure!(out.ok, "warren status of node {i} failed: {}", out.stderr);
        Ok(out.stdout)
    }

    /// Kills node `i` with SIGKILL and deletes everything in its data directory but the log
    /// this kit keeps there (`warren.log`): the node's Raft data, incarnation included, is gone.
    /// The node stays down; [`Broker::restart`] starts it again on the same flags.
    pub fn wipe(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.node_mut(i);
        node.kill9()?;
        let dir = node
            .data_dir()
            .context("only a node this kit started is wiped")?
            .to_path_buf();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name() == "warren.log" {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// For a failing test's message: each node's `warren status` (if it answers) and the last
    /// `lines` lines of its log at INFO and above, without openraft's per-heartbeat noise.
    pub fn post_mortem(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 1..=self.len() {
            let status = self.status(i).unwrap_or_else(|e| e.to_string());
            let log = self.node(i).log();
            let kept: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
                .filter(|l| !l.contains("heartbeat") && !l.contains("Unreachable"))
                .collect();
            let tail = &kept[kept.len().saturating_sub(lines)..];
            out.push_str(&format!(
                "\n=== node {i} status:\n{status}\n=== node {i} log (last {} lines):\n{}\n",
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> &Broker {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Broker {
        &mut self.nodes[i - 1]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node whose last route line says it serves clients itself, when every node this kit
    /// has not killed routes to it (read from the nodes' logs).
    pub fn leader(&self) -> Option<usize> {
        let mut leader = None;
        let mut routes = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_up() {
                continue;
            }
            let log = node.log();
            let route = log
                .lines()
                .rev()
                .find(|l| l.contains("client route"))?
                .to_string();
            if route.contains("route=Local") {
                leader = Some(i + 1);
            }
            routes.push(route);
        }
        let l = leader?;
        let agreed = routes
            .iter()
            .all(|r| r.contains("route=Local") || r.contains(&format!("Remote {{ node: {l},")));
        agreed.then_some(l)
    }

    /// The committed log index node `i` reports in `warren status` (0 while it knows none).
    pub fn committed(&self, i: usize) -> u64 {
        let status = self.status(i).expect("warren status");
        status
            .split(", ")
            .find_map(|part| part.strip_prefix("committed "))
            // "-": not known yet (a node that just started), so nothing it knows of.
            .map(|n| n.trim())
            .and_then(|n| if n == "-" { Some(0) } else { n.parse().ok() })
            .unwrap_or_else(|| panic!("no committed index in: {status}"))
    }

    /// The applied log index node `i` reports in `warren status` (0 while it knows none).
    pub fn applied(&self, i: usize) -> u64 {
        let status = self.status(i).expect("warren status");
        status
            .split(", ")
            .find_map(|part| part.strip_prefix("applied "))
            // "-": not known yet (a node that just started), so nothing it knows of.
            .map(|n| n.trim())
            .and_then(|n| if n == "-" { Some(0) } else { n.parse().ok() })
            .unwrap_or_else(|| panic!("no applied index in: {status}"))
    }

    /// Waits until every node up has applied what the leader had committed when this was
    /// called. A change one client made is seen by clients of other nodes once their node has
    /// applied it (within a replication round trip); a test that acts on another node right
    /// after a change, with no message between the two clients, waits for this first.
    pub fn wait_applied_everywhere(&self, timeout: Duration) -> anyhow::Result<()> {
        let leader = self.wait_for_leader(timeout)?;
        let target = self.committed(leader);
        let deadline = Instant::now() + timeout;
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_up() {
                continue;
            }
            while self.applied(i + 1) < target {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "node {} did not apply index {target} within {timeout:?}",
                    i + 1
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Waits until a leader serves and every node up routes to it.
    pub fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.nodes.iter().map(|n| n.log()).collect();
                return Err(anyhow::anyhow!("no leader within {timeout:?}"))
                    .with_context(|| logs.join("\n-----\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What a `warren` command-line run printed, and whether it exited with 0.
#[derive(Debug)]
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `warren` binary with `args` (a client subcommand such as `status` or `member`),
/// with the kit's operator certificate unless `args` name others; fails after 120 s.
pub fn warren_cli(args: &[&str]) -> anyhow::Result<CliOutput> {
    let mut child = Command::new(warren_bin())
        .args(args)
        .env("WARREN_CERTS_DIR", certs().operator_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting warren")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("warren {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    Ok(CliOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A publisher's shared counters: how many messages were confirmed so far, and the flag that
/// stops it.
#[derive(Default)]
pub struct Progress {
    pub confirmed: AtomicUsize,
    pub stop: AtomicBool,
}

impl Progress {
    pub fn confirmed(&self) -> usize {
        self.confirmed.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages are confirmed, failing after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.confirmed() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} messages confirmed within {timeout:?}",
                self.confirmed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// Connects to `uri`, retrying for up to 30 s (a node may be between leaders).
/// Connects, retrying for up to 30 s (a node may still be finding its leader).
pub async fn connect_retrying(uri: &str) -> anyhow::Result<Connection> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(uri, ConnectionProperties::default()),
        )
        .await;
        match attempt {
            Ok(Ok(c)) => return Ok(c),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(e)) => anyhow::bail!("cannot connect to {uri}: {e}"),
            Err(_) => anyhow::bail!("cannot connect to {uri}: timed out"),
        }
    }
}

/// Publishes persistent messages with bodies "0", "1", ... to `queue` (default exchange) through
/// `uri`, with up to `window` confirms outstanding, until `progress.stop` is set; counts
/// confirms in `progress`. A message nacked, or in flight when the connection fails, is
/// published again (on a new connection). Returns the numbers confirmed; fails if publishing
/// stalls for 30 s.
pub async fn publish_until_stopped(
    uri: String,
    queue: String,
    window: usize,
    progress: Arc<Progress>,
) -> anyhow::Result<BTreeSet<u32>> {
    let mut confirmed = BTreeSet::new();
    let mut todo = std::collections::VecDeque::new();
    let mut next = 0u32;
    while !progress.stop.load(Ordering::SeqCst) {
        let conn = connect_retrying(&uri).await?;
        let Ok(Ok(ch)) = tokio::time::timeout(Duration::from_secs(10), async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, lapin::Error>(ch)
        })
        .await
        else {
            continue;
        };
        let mut in_flight = std::collections::VecDeque::new();
        let mut failed = false;
        while !failed {
            let stopping = progress.stop.load(Ordering::SeqCst);
            while !stopping && in_flight.len() < window {
                let id = todo.pop_front().unwrap_or_else(|| {
                    next += 1;
                    next - 1
                });
                let body = id.to_string();
                let publish = ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                );
                match publish.await {
                    Ok(c) => in_flight.push_back((id, c)),
                    Err(_) => {
                        todo.push_front(id);
                        failed = true;
                        break;
                    }
                }
            }
            let Some((id, c)) = in_flight.pop_front() else {
                break;
            };
            match tokio::time::timeout(Duration::from_secs(30), c).await {
                Ok(Ok(conf)) if conf.is_ack() => {
                    confirmed.insert(id);
                    progress.confirmed.store(confirmed.len(), Ordering::SeqCst);
                }
                Ok(Ok(_)) => todo.push_back(id),
                Ok(Err(_)) => {
                    todo.push_front(id);
                    failed = true;
                }
                Err(_) => anyhow::bail!("no confirm for message {id} within 30 s"),
            }
        }
        // Whatever is still in flight has an unknown outcome: publish it again.
        for (id, _) in in_flight.drain(..).rev() {
            todo.push_front(id);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
    }
    Ok(confirmed)
}

/// Consumes (no-ack) from `queue` through `uri` until every number in `expected` has arrived or
/// nothing arrived for 10 s; returns the numbers received (with duplicates removed).
pub async fn consume_numbers(
    uri: &str,
    queue: &str,
    expected: &BTreeSet<u32>,
) -> anyhow::Result<BTreeSet<u32>> {
    let conn = connect_retrying(uri).await?;
    let ch = conn.create_channel().await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut got = BTreeSet::new();
    while !expected.is_subset(&got) {
        match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let body = String::from_utf8_lossy(&d.data).into_owned();
                got.insert(body.parse().context("a numeric body")?);
            }
            Ok(Some(Err(e))) => anyhow::bail!("consuming from {queue}: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(got)
}
