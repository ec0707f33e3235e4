//! A cluster of `warren` processes on loopback: every node with its own AMQP and gRPC ports
//! (picked free) and data directory, formed from the same `--member` list.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{free_port, fresh_dir, Broker};

pub struct Cluster {
    nodes: Vec<Broker>,
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
            let mut flags = vec!["--node-id".to_string(), (i + 1).to_string()];
            flags.extend(members.iter().cloned());
            flags.extend(extra.iter().map(|s| s.to_string()));
            nodes.push(Broker::spawn_at(*amqp, fresh_dir()?, flags)?);
        }
        let cluster = Cluster { nodes };
        cluster.wait_for_leader(Duration::from_secs(30))?;
        Ok(cluster)
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
