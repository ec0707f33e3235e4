//! The network the nodes run on: one network namespace per node slot (`wchN`), each with a veth
//! pair whose outer end hangs on a bridge (`wchbr0`) in the harness's namespace. Node N is
//! 10.231.77.(10+N); the harness (the clients) is 10.231.77.1. Faults hit real sockets:
//! - partitions and one-way drops: `iptables -A INPUT -s <peer> -j DROP` inside the receiving
//!   node's namespace (packets from that peer vanish; TCP sees silence, not resets);
//! - packet loss: `iptables -m statistic --mode random --probability P -j DROP` on a node's input;
//! - a slow link: a token bucket (`tc ... tbf`) on a node's interface. This kernel has no netem,
//!   so "added latency" is the queueing delay of a rate-limited link, not a fixed delay.
//!
//! Client traffic (from 10.231.77.1) is never dropped by partitions: a partitioned node keeps
//! its clients, as a node cut off from its peers but not from its clients would.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

const BRIDGE: &str = "wchbr0";
const PREFIX: &str = "10.231.77";

pub fn host_ip() -> String {
    format!("{PREFIX}.1")
}

pub fn node_ip(slot: usize) -> String {
    format!("{PREFIX}.{}", 10 + slot)
}

pub fn netns(slot: usize) -> String {
    format!("wch{slot}")
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

fn in_ns(slot: usize, args: &[&str]) -> anyhow::Result<()> {
    let ns = netns(slot);
    let mut all = vec!["ip", "netns", "exec", ns.as_str()];
    all.extend_from_slice(args);
    run(&all)
}

/// The namespaces and the bridge, created on `setup` and removed on drop. Their names are
/// fixed, so one run at a time: `setup` takes a lock file and refuses while another live run
/// holds it.
pub struct Netns {
    slots: usize,
}

const LOCK: &str = "/run/warren-chaos.lock";

fn lock() -> anyhow::Result<()> {
    if let Ok(pid) = std::fs::read_to_string(LOCK) {
        let pid = pid.trim();
        if !pid.is_empty()
            && Path::new("/proc").join(pid).exists()
            && pid != std::process::id().to_string()
        {
            bail!("another warren-chaos run (pid {pid}) is using the network namespaces ({LOCK})");
        }
    }
    std::fs::write(LOCK, std::process::id().to_string()).context("writing the lock file")?;
    Ok(())
}

impl Netns {
    /// Whether this machine can run the harness's network: root, `ip netns`, veth, a bridge
    /// and iptables. The reason when it cannot.
    pub fn available() -> Result<(), String> {
        let probe = "wchprobe";
        run_quiet(&["ip", "netns", "del", probe]);
        if let Err(e) = run(&["ip", "netns", "add", probe]) {
            return Err(format!("no network namespaces ({e})"));
        }
        let ipt = in_ns_named(probe, &["iptables", "-L", "INPUT", "-n"]);
        run_quiet(&["ip", "netns", "del", probe]);
        ipt.map_err(|e| format!("iptables does not work in a namespace ({e})"))
    }

    pub fn setup(slots: usize) -> anyhow::Result<Netns> {
        lock()?;
        let net = Netns { slots };
        net.remove();
        run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", host_ip()),
            "dev",
            BRIDGE,
        ])?;
        run(&["ip", "link", "set", BRIDGE, "up"])?;
        for slot in 1..=slots {
            let ns = netns(slot);
            let (outer, inner) = (format!("wchv{slot}"), format!("wchp{slot}"));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "link", "set", &outer, "master", BRIDGE])?;
            run(&["ip", "link", "set", &outer, "up"])?;
            in_ns(slot, &["ip", "link", "set", "lo", "up"])?;
            in_ns(
                slot,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", node_ip(slot)),
                    "dev",
                    &inner,
                ],
            )?;
            in_ns(slot, &["ip", "link", "set", &inner, "up"])?;
        }
        Ok(net)
    }

    fn remove(&self) {
        for slot in 1..=self.slots.max(8) {
            run_quiet(&["ip", "netns", "del", &netns(slot)]);
            run_quiet(&["ip", "link", "del", &format!("wchv{slot}")]);
        }
        run_quiet(&["ip", "link", "del", BRIDGE]);
    }

    /// Packets from `from` to `to` are dropped (at `to`).
    pub fn drop_packets(&self, from: usize, to: usize) -> anyhow::Result<()> {
        in_ns(
            to,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &node_ip(from),
                "-j",
                "DROP",
            ],
        )
    }

    /// Nodes `a` and `b` cannot reach each other.
    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        self.drop_packets(a, b)?;
        self.drop_packets(b, a)
    }

    /// A share `p` of the packets a node receives is dropped.
    pub fn lose(&self, slot: usize, p: f64) -> anyhow::Result<()> {
        in_ns(
            slot,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &format!("{p:.3}"),
                "-j",
                "DROP",
            ],
        )
    }

    /// The node's outgoing link is limited to `kbit` kbit/s with up to 400 ms of queue.
    pub fn slow(&self, slot: usize, kbit: u32) -> anyhow::Result<()> {
        in_ns(
            slot,
            &[
                "tc",
                "qdisc",
                "add",
                "dev",
                &format!("wchp{slot}"),
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                "32kbit",
                "latency",
                "400ms",
            ],
        )
    }

    /// Every drop, loss and slow link removed.
    pub fn heal(&self) -> anyhow::Result<()> {
        for slot in 1..=self.slots {
            in_ns(slot, &["iptables", "-F", "INPUT"])?;
            let dev = format!("wchp{slot}");
            let ns = netns(slot);
            run_quiet(&[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", &dev, "root",
            ]);
        }
        Ok(())
    }
}

fn in_ns_named(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
        let _ = std::fs::remove_file(LOCK);
    }
}

/// The network of a run: namespaces, or the loopback fallback's per-link proxies.
pub enum Network {
    Netns(Netns),
    Loopback(crate::proxy::Proxies),
}

impl Network {
    /// Packets (bytes, on loopback) from `from` to `to` are dropped (held).
    pub fn drop_packets(&self, from: usize, to: usize) -> anyhow::Result<()> {
        match self {
            Network::Netns(n) => n.drop_packets(from, to),
            Network::Loopback(p) => {
                p.drop_packets(from, to);
                Ok(())
            }
        }
    }

    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        self.drop_packets(a, b)?;
        self.drop_packets(b, a)
    }

    pub fn lose(&self, slot: usize, p: f64) -> anyhow::Result<()> {
        match self {
            Network::Netns(n) => n.lose(slot, p),
            Network::Loopback(x) => {
                x.lose(slot, p);
                Ok(())
            }
        }
    }

    pub fn slow(&self, slot: usize, kbit: u32) -> anyhow::Result<()> {
        match self {
            Network::Netns(n) => n.slow(slot, kbit),
            Network::Loopback(p) => {
                p.slow(slot, kbit);
                Ok(())
            }
        }
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        match self {
            Network::Netns(n) => n.heal(),
            Network::Loopback(p) => {
                p.heal();
                Ok(())
            }
        }
    }
}
