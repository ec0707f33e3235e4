//! The warren processes under test: one per slot, each in its slot's network namespace, with
//! AMQP on 5672 and gRPC on 7100 of the slot's address. Kill -9, SIGSTOP/SIGCONT, restart,
//! power loss (see `synclog.c`), membership changes, and each node's status over gRPC. Nodes
//! talk mutual TLS with certificates made by `warren cert` for the run (CA, one per node id for
//! its slot's address, and the operator's this harness calls with).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use warren_proto::raft::admin_client::AdminClient;
use warren_proto::raft::{StatusReply, StatusRequest};

use crate::{addr, net};

/// The operator's certificates, for [`status`] (set by [`Nodes::new`]).
static OPERATOR: std::sync::OnceLock<warren_tls::ClusterTls> = std::sync::OnceLock::new();

pub struct Node {
    pub slot: usize,
    pub id: u64,
    /// Flags given on every start of this node (members, --join).
    args: Vec<String>,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub paused: bool,
}

impl Node {
    /// Running and not paused.
    pub fn is_up(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

pub struct Nodes {
    bin: PathBuf,
    dir: PathBuf,
    /// The compiled power-loss shim, when there is a C compiler.
    synclog: Option<PathBuf>,
    pub nodes: BTreeMap<usize, Node>,
    next_id: u64,
    /// Logs of nodes removed from the cluster (checked for panics too).
    pub old_logs: Vec<PathBuf>,
}

pub fn member_spec(slot: usize, id: u64) -> String {
    format!("{id}@{}@{}", addr::amqp(slot), addr::grpc(slot))
}

pub fn uri(slot: usize) -> String {
    format!(
        "amqp://guest:guest@{}/%2f?heartbeat=2&connection_timeout=3000",
        addr::amqp(slot)
    )
}

impl Nodes {
    /// The harness for nodes run from `bin` with their data under `dir`; makes the run's CA and
    /// the operator's certificate.
    pub fn new(bin: PathBuf, dir: PathBuf, synclog: Option<PathBuf>) -> anyhow::Result<Nodes> {
        let certs = dir.join("certs");
        run_cert(&bin, &["create-ca", "--certs-dir"], &certs.join("ca"), None)?;
        run_cert(
            &bin,
            &["create-client", "chaos-operator", "--certs-dir"],
            &certs.join("operator"),
            Some(&certs.join("ca")),
        )?;
        let operator = warren_tls::ClusterTls::load_operator(&warren_tls::files::CertsDir::new(
            certs.join("operator"),
        ))?;
        let _ = OPERATOR.set(operator);
        Ok(Nodes {
            bin,
            dir,
            synclog,
            nodes: BTreeMap::new(),
            next_id: 1,
            old_logs: Vec::new(),
        })
    }

    fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    pub fn has_power_loss(&self) -> bool {
        self.synclog.is_some()
    }

    /// Creates and starts the first `n` nodes (slots 1..=n, ids 1..=n) as one cluster.
    pub fn start_cluster(&mut self, n: usize) -> anyhow::Result<()> {
        let members: Vec<String> = (1..=n).map(|s| member_spec(s, s as u64)).collect();
        for slot in 1..=n {
            let mut args = Vec::new();
            for m in &members {
                args.push("--member".to_string());
                args.push(m.clone());
            }
            self.create(slot, slot as u64, args)?;
        }
        self.next_id = n as u64 + 1;
        for slot in 1..=n {
            self.start(slot)?;
        }
        Ok(())
    }

    fn create(&mut self, slot: usize, id: u64, mut args: Vec<String>) -> anyhow::Result<()> {
        let data = self.dir.join(format!("node{id}"));
        std::fs::create_dir_all(&data)?;
        // Its certificate names its id and its slot's address (as the membership records it).
        let node_certs = self.certs().join(format!("node{id}"));
        let id_text = id.to_string();
        let grpc = addr::grpc(slot);
        let host = grpc.rsplit_once(':').map_or(grpc.as_str(), |(h, _)| h);
        run_cert(
            &self.bin,
            &["create-node", &id_text, "--host", host, "--certs-dir"],
            &node_certs,
            Some(&self.certs().join("ca")),
        )?;
        args.push("--certs-dir".into());
        args.push(node_certs.display().to_string());
        let log = self.dir.join(format!("node{id}.log"));
        self.nodes.insert(
            slot,
            Node {
                slot,
                id,
                args,
                data,
                log,
                child: None,
                paused: false,
            },
        );
        Ok(())
    }

    fn node(&mut self, slot: usize) -> anyhow::Result<&mut Node> {
        self.nodes
            .get_mut(&slot)
            .with_context(|| format!("no node in slot {slot}"))
    }

    pub fn start(&mut self, slot: usize) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let synclog = self.synclog.clone();
        let node = self.node(slot)?;
        if node.child.is_some() {
            return Ok(());
        }
        if synclog.is_some() {
            // The files as they are now count as durable; the shim records what is synced
            // from here on.
            write_baseline(&node.data)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = match addr::mode() {
            addr::Mode::Netns => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net::netns(slot)]).arg(&bin);
                c.args(["--port", "5672"]);
                c
            }
            addr::Mode::Loopback => {
                let mut c = Command::new(&bin);
                let amqp = addr::amqp(slot);
                let port = amqp.rsplit(':').next().unwrap_or("5672");
                c.args(["--bind", "127.0.0.1", "--port", port]);
                // Every peer through this node's own proxy for that link.
                for peer in (1..=4).filter(|p| *p != slot) {
                    c.arg("--peer-address").arg(format!(
                        "{}=127.0.0.1:{}",
                        addr::grpc(peer),
                        addr::link_port(slot, peer)
                    ));
                }
                c
            }
        };
        cmd.args(["--node-id", &node.id.to_string()])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--loopback-users", ""])
            .args(["--heartbeat", "10"])
            .args(["--snapshot-every", "5000"])
            .args(&node.args)
            .env(
                "WARREN_LOG",
                std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(shim) = &synclog {
            // The log holds what was synced since this start; the baseline covers the rest.
            let sync_log = sync_log_path(node);
            let _ = std::fs::remove_file(&sync_log);
            cmd.env("LD_PRELOAD", shim)
                .env("WARREN_CHAOS_SYNC_LOG", sync_log);
        }
        node.child = Some(cmd.spawn().context("starting warren")?);
        node.paused = false;
        Ok(())
    }

    pub fn running(&self, slot: usize) -> bool {
        self.nodes.get(&slot).is_some_and(|n| n.child.is_some())
    }

    pub fn running_slots(&self) -> Vec<usize> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.slot)
            .collect()
    }

    pub fn kill9(&mut self, slot: usize) -> anyhow::Result<()> {
        let node = self.node(slot)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    pub fn signal(&mut self, slot: usize, sig: &str) -> anyhow::Result<()> {
        let node = self.node(slot)?;
        let Some(child) = &node.child else {
            return Ok(());
        };
        let st = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?;
        if !st.success() {
            bail!("kill {sig} failed");
        }
        node.paused = sig == "-STOP";
        Ok(())
    }

    /// kill -9, then every file of the node cut back to what had been fsynced (power loss).
    pub fn power_loss(&mut self, slot: usize) -> anyhow::Result<PowerLoss> {
        self.kill9(slot)?;
        let node = self.node(slot)?;
        cut_to_synced(&node.data, &sync_log_path(node))
    }

    /// A new node in `slot` (a new id), started with --join and added to the cluster through
    /// `via`'s gRPC service: learner, caught up, then voter.
    pub fn add(&mut self, slot: usize, via: usize) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let spec = member_spec(slot, id);
        self.create(
            slot,
            id,
            vec!["--member".into(), spec.clone(), "--join".into()],
        )?;
        self.start(slot)?;
        let grpc = addr::grpc(via);
        let added = self
            .wait_serving_grpc(slot)
            .and_then(|_| self.cli(&["member", "add", &spec, "--grpc", &grpc, "--timeout", "60"]))
            .and_then(|_| self.promote(id, &grpc));
        if let Err(e) = added {
            // Not a member (or a learner at most): take it away again.
            let _ = self.cli(&["member", "remove", &id.to_string(), "--grpc", &grpc]);
            self.kill9(slot)?;
            if let Some(node) = self.nodes.remove(&slot) {
                self.old_logs.push(node.log);
            }
            return Err(e);
        }
        Ok(id)
    }

    /// Promotes learner `id` through `grpc`, asking again for up to 30 s while the leader says
    /// it is too far behind, as an operator told "wait until it has caught up" would. `member
    /// add` returns once the learner has what the leader had when it was added; with a deep
    /// backlog that catch-up takes seconds, and the workload's entries of those seconds can put
    /// it past the promote's limit of lag.
    fn promote(&self, id: u64, grpc: &str) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.cli(&["member", "promote", &id.to_string(), "--grpc", grpc]) {
                Err(e)
                    if format!("{e:#}").contains("entries behind")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
                r => return r,
            }
        }
    }

    /// Waits (up to 20 s) until the node in `slot` answers on its gRPC port.
    fn wait_serving_grpc(&self, slot: usize) -> anyhow::Result<()> {
        let addr: std::net::SocketAddr = addr::grpc(slot).parse().context("node address")?;
        for _ in 0..200 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the new node did not listen on {addr} within 20 s")
    }

    /// Removes the node in `slot` from the cluster through `via`, stops it, and frees the slot.
    pub fn remove(&mut self, slot: usize, via: usize) -> anyhow::Result<u64> {
        let id = self.node(slot)?.id;
        let grpc = addr::grpc(via);
        self.cli(&["member", "remove", &id.to_string(), "--grpc", &grpc])?;
        self.kill9(slot)?;
        if let Some(node) = self.nodes.remove(&slot) {
            self.old_logs.push(node.log);
        }
        Ok(id)
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--certs-dir")
            .arg(self.certs().join("operator"))
            .output()
            .context("running warren")?;
        if !out.status.success() {
            bail!(
                "warren {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self.nodes.values().map(|n| n.log.clone()).collect();
        logs.extend(self.old_logs.iter().cloned());
        logs
    }

    pub fn stop_all(&mut self) {
        let slots: Vec<usize> = self.nodes.keys().copied().collect();
        for slot in slots {
            let _ = self.signal(slot, "-CONT");
            if let Some(node) = self.nodes.get_mut(&slot) {
                if let Some(mut child) = node.child.take() {
                    let _ = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status();
                    for _ in 0..50 {
                        if let Ok(Some(_)) = child.try_wait() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn sync_log_path(node: &Node) -> PathBuf {
    node.data
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("sync-{}.log", node.id))
}

/// A node's status over gRPC, within a second.
pub async fn status(slot: usize, digest: bool) -> anyhow::Result<StatusReply> {
    let addr = addr::grpc(slot);
    let fut = async {
        let channel = warren_tls::config::grpc_endpoint(OPERATOR.get(), &addr, &addr)?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await?;
        let reply = AdminClient::new(channel)
            .status(StatusRequest {
                group_id: 0,
                digest,
            })
            .await?;
        Ok::<_, anyhow::Error>(reply.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(if digest { 10 } else { 1 }), fut)
        .await
        .context("status timed out")?
}

/// What a power loss took away.
#[derive(Debug, Default)]
pub struct PowerLoss {
    pub files_cut: usize,
    pub bytes_lost: u64,
    pub files_deleted: usize,
}

const BASELINE: &str = ".chaos-baseline";

/// Records every file of `dir` and its size (they count as durable: they were there when the
/// node started).
fn write_baseline(dir: &Path) -> anyhow::Result<()> {
    let mut lines = String::new();
    for (path, size) in files(dir)? {
        lines.push_str(&format!("S {size} {}\n", path.display()));
    }
    std::fs::write(
        dir.join("..").join(format!("{}{BASELINE}", dir_name(dir))),
        lines,
    )?;
    Ok(())
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let path = std::fs::canonicalize(entry.path())?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.push((path, meta.len()));
            }
        }
    }
    Ok(out)
}

/// The durable size of every file: the baseline, then the shim's log in order (a synced size
/// replaces the last one; a rename moves the durable size to the new name).
fn durable_sizes(baseline: &str, sync_log: &str) -> HashMap<PathBuf, u64> {
    let mut sizes = HashMap::new();
    for line in baseline.lines().chain(sync_log.lines()) {
        if let Some(rest) = line.strip_prefix("S ") {
            if let Some((size, path)) = rest.split_once(' ') {
                if let Ok(size) = size.parse::<u64>() {
                    sizes.insert(PathBuf::from(path), size);
                }
            }
        } else if let Some(rest) = line.strip_prefix("R ") {
            if let Some((old, new)) = rest.split_once('\t') {
                if let Some(size) = sizes.remove(Path::new(old)) {
                    sizes.insert(PathBuf::from(new), size);
                } else {
                    sizes.remove(Path::new(new));
                }
            }
        }
    }
    sizes
}

fn cut_to_synced(dir: &Path, sync_log: &Path) -> anyhow::Result<PowerLoss> {
    let baseline_path = dir.join("..").join(format!("{}{BASELINE}", dir_name(dir)));
    let baseline = std::fs::read_to_string(&baseline_path).unwrap_or_default();
    let log = std::fs::read_to_string(sync_log).unwrap_or_default();
    let durable = durable_sizes(&baseline, &log);
    let mut loss = PowerLoss::default();
    let mut seen = HashSet::new();
    for (path, size) in files(dir)? {
        seen.insert(path.clone());
        match durable.get(&path) {
            Some(&d) if d < size => {
                File::options().write(true).open(&path)?.set_len(d)?;
                loss.files_cut += 1;
                loss.bytes_lost += size - d;
            }
            Some(_) => {}
            None => {
                std::fs::remove_file(&path)?;
                loss.files_deleted += 1;
                loss.bytes_lost += size;
            }
        }
    }
    Ok(loss)
}

/// `warren cert ARGS DIR [--ca-cert CA/ca.crt --ca-key CA/ca.key]`.
fn run_cert(bin: &Path, args: &[&str], dir: &Path, ca: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("cert").args(args).arg(dir).arg("--overwrite");
    if let Some(ca) = ca {
        cmd.arg("--ca-cert")
            .arg(ca.join("ca.crt"))
            .arg("--ca-key")
            .arg(ca.join("ca.key"));
    }
    let out = cmd.output().context("running warren cert")?;
    if !out.status.success() {
        bail!(
            "warren cert {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_sizes_follow_syncs_and_renames() {
        let base = "S 10 /d/a\nS 5 /d/CURRENT\n";
        let log = "S 20 /d/a\nS 7 /d/tmp\nR /d/tmp\t/d/CURRENT\nS 3 /d/b\nR /d/c\t/d/b\n";
        let s = durable_sizes(base, log);
        assert_eq!(s.get(Path::new("/d/a")), Some(&20));
        assert_eq!(s.get(Path::new("/d/CURRENT")), Some(&7));
        assert_eq!(s.get(Path::new("/d/tmp")), None);
        // /d/b was replaced by a rename of a file never synced: not durable.
        assert_eq!(s.get(Path::new("/d/b")), None);
    }
}
