//! RabbitMQ's resource alarms. Each node measures itself every second (resident memory against
//! its high watermark, free space of its data directory's filesystem against its limit) and
//! learns the other members' alarms from their Admin.Status; while any node of the cluster has
//! an alarm on, every connection that publishes is blocked (see `Session::set_alarm`), and
//! consumers go on. What the limits are is `warren_raft::resources`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};
use warren_proto::raft::admin_client::AdminClient;
use warren_proto::raft::StatusRequest;
use warren_raft::resources::{NodeResources, ResourceLimits};
use warren_raft::METADATA_GROUP;

/// How often resources are measured and the other members asked.
const PERIOD: Duration = Duration::from_secs(1);

/// The alarms on anywhere in the cluster: the nodes with each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterAlarms {
    pub memory: BTreeSet<u64>,
    pub disk: BTreeSet<u64>,
}

impl ClusterAlarms {
    /// RabbitMQ's `connection.blocked` reason (`low on memory`, `low on disk`, `low on memory &
    /// disk`), or `None` when no alarm is on.
    pub fn reason(&self) -> Option<String> {
        match (self.memory.is_empty(), self.disk.is_empty()) {
            (true, true) => None,
            (false, true) => Some("low on memory".into()),
            (true, false) => Some("low on disk".into()),
            (false, false) => Some("low on memory & disk".into()),
        }
    }
}

/// Resident memory of this process, bytes.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory available to this process: the machine's, or its cgroup's limit if lower.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let total = line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// Free bytes (for unprivileged users) of the filesystem holding `path`.
fn disk_free(path: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Measures this node against `limits`.
fn measure(data_dir: &std::path::Path, limits: &ResourceLimits) -> NodeResources {
    let mem_used = resident_memory().unwrap_or(0);
    let mem_limit = limits.memory.bytes(available_memory().unwrap_or(u64::MAX));
    let disk_free = disk_free(data_dir);
    NodeResources {
        mem_used,
        mem_limit,
        disk_free,
        disk_free_limit: limits.disk_free,
        mem_alarm: mem_used > mem_limit,
        disk_free_alarm: disk_free.is_some_and(|free| free < limits.disk_free),
    }
}

/// Measures this node every second, and at once when its limits change; logs each alarm as it
/// goes on and off (as RabbitMQ does).
pub fn spawn_monitor(
    node: u64,
    data_dir: PathBuf,
    mut limits: watch::Receiver<ResourceLimits>,
) -> watch::Receiver<NodeResources> {
    let first = measure(&data_dir, &limits.borrow_and_update());
    log_changes(node, &NodeResources::default(), &first);
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = limits.changed() => if changed.is_err() { return },
            }
            let now = measure(&data_dir, &limits.borrow_and_update());
            let before = *tx.borrow();
            log_changes(node, &before, &now);
            if tx.send(now).is_err() {
                return;
            }
        }
    });
    rx
}

fn log_changes(node: u64, before: &NodeResources, now: &NodeResources) {
    if now.mem_alarm != before.mem_alarm {
        if now.mem_alarm {
            warn!(
                node,
                mem_used = now.mem_used,
                mem_limit = now.mem_limit,
                "memory resource limit alarm set: publishers are blocked"
            );
        } else {
            info!(
                node,
                mem_used = now.mem_used,
                mem_limit = now.mem_limit,
                "memory resource limit alarm cleared"
            );
        }
    }
    if now.disk_free_alarm != before.disk_free_alarm {
        if now.disk_free_alarm {
            warn!(node, disk_free = ?now.disk_free, disk_free_limit = now.disk_free_limit, "disk resource limit alarm set: publishers are blocked");
        } else {
            info!(node, disk_free = ?now.disk_free, disk_free_limit = now.disk_free_limit, "disk resource limit alarm cleared");
        }
    }
}

/// The cluster's alarms: this node's from `local`, the other members' (by gRPC address in
/// `members`) from their Admin.Status every second. A member that does not answer counts
/// without alarms, as RabbitMQ forgets the alarms of a node that is down.
pub fn spawn_cluster_alarms(
    node: u64,
    mut local: watch::Receiver<NodeResources>,
    members: watch::Receiver<BTreeMap<u64, String>>,
) -> watch::Receiver<ClusterAlarms> {
    let (tx, rx) = watch::channel(ClusterAlarms::default());
    tokio::spawn(async move {
        let mut remote: BTreeMap<u64, NodeResources> = BTreeMap::new();
        let mut clients: HashMap<String, AdminClient<tonic::transport::Channel>> = HashMap::new();
        let mut ticker = tokio::time::interval(PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = ticker.tick() => true,
                changed = local.changed() => if changed.is_err() { return } else { false },
            };
            if asked {
                let others: Vec<(u64, String)> = members
                    .borrow()
                    .iter()
                    .filter(|(id, addr)| **id != node && !addr.is_empty())
                    .map(|(id, addr)| (*id, addr.clone()))
                    .collect();
                remote.retain(|id, _| others.iter().any(|(o, _)| o == id));
                for (id, addr) in others {
                    match ask(&mut clients, &addr).await {
                        Some(r) => remote.insert(id, r),
                        None => remote.remove(&id),
                    };
                }
            }
            let mut alarms = ClusterAlarms::default();
            let own = *local.borrow_and_update();
            for (id, r) in std::iter::once((node, own)).chain(remote.iter().map(|(i, r)| (*i, *r)))
            {
                if r.mem_alarm {
                    alarms.memory.insert(id);
                }
                if r.disk_free_alarm {
                    alarms.disk.insert(id);
                }
            }
            tx.send_if_modified(|current| {
                let changed = *current != alarms;
                if changed {
                    info!(?alarms, "the cluster's resource alarms changed");
                    *current = alarms;
                }
                changed
            });
        }
    });
    rx
}

/// A member's resources and alarms, from its Admin.Status within a second.
async fn ask(
    clients: &mut HashMap<String, AdminClient<tonic::transport::Channel>>,
    addr: &str,
) -> Option<NodeResources> {
    if !clients.contains_key(addr) {
        let endpoint = warren_raft::dial::endpoint(addr)
            .ok()?
            .connect_timeout(PERIOD)
            .timeout(PERIOD);
        clients.insert(addr.to_owned(), AdminClient::new(endpoint.connect_lazy()));
    }
    let client = clients.get_mut(addr)?;
    let request = StatusRequest {
        group_id: METADATA_GROUP,
        digest: false,
    };
    match client.status(request).await {
        Ok(reply) => {
            let r = reply.into_inner();
            Some(NodeResources {
                mem_used: r.mem_used,
                mem_limit: r.mem_limit,
                disk_free: r.disk_free,
                disk_free_limit: r.disk_free_limit,
                mem_alarm: r.mem_alarm,
                disk_free_alarm: r.disk_free_alarm,
            })
        }
        Err(_) => {
            clients.remove(addr);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_raft::resources::MemoryLimit;

    #[test]
    fn the_blocked_reason_is_rabbitmqs() {
        let mut a = ClusterAlarms::default();
        assert_eq!(a.reason(), None);
        a.memory.insert(2);
        assert_eq!(a.reason().as_deref(), Some("low on memory"));
        a.disk.insert(1);
        assert_eq!(a.reason().as_deref(), Some("low on memory & disk"));
        a.memory.clear();
        assert_eq!(a.reason().as_deref(), Some("low on disk"));
    }

    #[test]
    fn a_node_measures_itself_against_its_limits() {
        let dir = std::env::temp_dir();
        let tiny = ResourceLimits {
            memory: MemoryLimit::Absolute(1),
            disk_free: u64::MAX,
        };
        let r = measure(&dir, &tiny);
        assert!(r.mem_used > 1 && r.mem_alarm, "{r:?}");
        assert!(r.disk_free.is_some() && r.disk_free_alarm, "{r:?}");
        let roomy = ResourceLimits {
            memory: MemoryLimit::Fraction(1.0),
            disk_free: 1,
        };
        let r = measure(&dir, &roomy);
        assert!(!r.mem_alarm && !r.disk_free_alarm, "{r:?}");
        assert!(r.mem_limit > r.mem_used, "{r:?}");
    }
}
