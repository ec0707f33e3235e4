//! The metrics of RabbitMQ's Prometheus plugin (`rabbitmq_prometheus`) under its names, types
//! and labels, so that its official Grafana dashboards ("RabbitMQ-Overview",
//! "RabbitMQ-Quorum-Queues-Raft") work unchanged. A figure Warren does not have is a family
//! with no sample (its panel shows "no data"), never a number made up; a count of something
//! Warren never does is 0. `docs/compatibility.md` says which is which.
//!
//! The dashboards add every node's samples up, so each figure is served once in the cluster: a
//! node serves its own clients (connections, channels, consumers), the queues it hosts (the
//! transient queues homed on it; the replicated ones when it leads, as RabbitMQ reports a quorum
//! queue on its leader's node) and its own process and Raft figures.
//!
//! What a client does is counted as RabbitMQ's channels and readers count it: on the node that
//! holds the client's socket, from the frames its connection reads and writes
//! (`warren_server::counters`), so every node serves its own clients' figures since it started:
//! messages received (and in confirm or tx mode), confirmed, returned as unroutable, delivered
//! to consumers and to `basic.get` with manual or automatic acks, empty gets, acks, connections
//! and channels opened and closed, login attempts and the message size histogram. RabbitMQ
//! labels the delivery and ack counters by queue type too; a socket does not know the queue's
//! type, so Warren serves one sample labelled `protocol` only (the dashboards sum them anyway).
//! Routing, enqueueing and redelivery are the deciding broker's counters (the Raft leader's,
//! transient queues' numbers merged in), so the leader serves them and the other nodes serve the
//! families without a sample; a new leader's counters then start a new series instead of
//! jumping in an old one. Messages dropped as unroutable and queues created and deleted are the
//! core's counts for this node's clients (`warren_core::Churn`: queues its clients declared,
//! dropped publishes of its clients); queues declared are counted at the socket (non-passive
//! `queue.declare`s).

use std::time::Duration;

use warren_core::view::{BrokerView, QueueView};
use warren_proto::raft::StatusReply;
use warren_server::counters::{ClientFigures, MESSAGE_SIZE_BUCKETS};
use warren_server::management::ViewSource;

use crate::metrics::Exposition;
use crate::shapes::{conn_node, queue_type};

/// The version of RabbitMQ whose metrics these are (as `/api/overview` says).
const RABBITMQ_VERSION: &str = "3.10.8";
/// The cluster name the dashboards select (as `/api/cluster-name` says).
const CLUSTER_NAME: &str = "warren";

/// Which of RabbitMQ's endpoints is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/metrics`: queue figures added up per node.
    Aggregated,
    /// `/metrics/per-object`: one sample per queue, labelled `vhost` and `queue`.
    PerObject,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Aggregated => "aggregated",
            Endpoint::PerObject => "per-object",
        }
    }
}

/// What this node knows, read once per scrape.
pub(crate) struct Figures<'a> {
    pub(crate) node_id: u64,
    /// The deciding broker's view and where it came from (`None`: no broker answered).
    pub(crate) view: Option<(&'a BrokerView, ViewSource)>,
    pub(crate) status: &'a StatusReply,
    /// The last log index in this node's latest Raft snapshot.
    pub(crate) snapshot_index: Option<u64>,
    pub(crate) uptime: Duration,
    /// What this node's AMQP clients did.
    pub(crate) clients: ClientFigures,
    /// How long this node's log entries took from append to apply.
    pub(crate) commit: warren_store::CommitLatencyReading,
}

impl Figures<'_> {
    /// Whether this node's broker decided the view (it leads, or runs alone).
    fn decides(&self) -> bool {
        matches!(self.view, Some((_, ViewSource::Leader { node_id })) if node_id == self.node_id)
    }

    /// Whether this node hosts `q` (see the module docs).
    fn hosts(&self, q: &QueueView) -> bool {
        match q.home {
            Some(home) if home != 0 => home == self.node_id,
            _ => self.decides(),
        }
    }
}

/// Writes every family to `out`.
pub(crate) fn write(out: &mut Exposition, f: &Figures, endpoint: Endpoint) {
    identity(out, f, endpoint);
    clients(out, f);
    queues(out, f, endpoint);
    global_counters(out, f);
    churn(out, f);
    resources(out, f);
    raft(out, f);
}

fn identity(out: &mut Exposition, f: &Figures, endpoint: Endpoint) {
    let node = crate::node_name(f.node_id);
    out.family(
        "rabbitmq_identity_info",
        "gauge",
        "RabbitMQ node & cluster identity info",
    );
    out.sample(
        "rabbitmq_identity_info",
        &[
            ("rabbitmq_node", &node),
            ("rabbitmq_cluster", CLUSTER_NAME),
            ("rabbitmq_endpoint", endpoint.label()),
        ],
        1,
    );
    out.family(
        "rabbitmq_build_info",
        "gauge",
        "RabbitMQ & Erlang/OTP version info",
    );
    out.sample(
        "rabbitmq_build_info",
        &[
            ("rabbitmq_version", RABBITMQ_VERSION),
            ("prometheus_plugin_version", RABBITMQ_VERSION),
            // Warren is not an Erlang program.
            ("erlang_version", "none"),
            ("product_name", "Warren"),
            ("product_version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    out.metric(
        "rabbitmq_erlang_uptime_seconds",
        "gauge",
        "Node uptime",
        format!("{:.3}", f.uptime.as_secs_f64()),
    );
}

/// Connections, channels and consumers whose socket is on this node.
fn clients(out: &mut Exposition, f: &Figures) {
    let Some((view, _)) = f.view else {
        for (name, help) in [
            ("rabbitmq_connections", "Connections currently open"),
            ("rabbitmq_channels", "Channels currently open"),
        ] {
            out.family(name, "gauge", help);
        }
        out.family(
            "rabbitmq_global_consumers",
            "gauge",
            "Current number of consumers",
        );
        global_publishers(out);
        return;
    };
    let here = |conn: u64| conn_node(conn) == f.node_id;
    out.metric(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        view.connections.iter().filter(|c| here(c.conn)).count(),
    );
    out.metric(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        view.channels.iter().filter(|c| here(c.conn)).count(),
    );
    out.family(
        "rabbitmq_global_consumers",
        "gauge",
        "Current number of consumers",
    );
    out.sample(
        "rabbitmq_global_consumers",
        &[("protocol", "amqp091")],
        view.consumers.iter().filter(|c| here(c.conn)).count(),
    );
    global_publishers(out);
}

/// AMQP 0-9-1 has no publisher objects: RabbitMQ counts publishers of streams, AMQP 1.0 and
/// MQTT only, and reports 0 for `amqp091`; so does Warren.
fn global_publishers(out: &mut Exposition) {
    out.family(
        "rabbitmq_global_publishers",
        "gauge",
        "Current number of publishers",
    );
    out.sample("rabbitmq_global_publishers", &[("protocol", "amqp091")], 0);
}

/// The depth and consumers of the queues this node hosts.
fn queues(out: &mut Exposition, f: &Figures, endpoint: Endpoint) {
    type Figure = fn(&QueueView) -> u64;
    let gauges: [(&str, &str, Figure); 5] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |q| q.messages_ready,
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |q| q.messages_unacknowledged,
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |q| q.messages_ready + q.messages_unacknowledged,
        ),
        // Warren's view has the bytes of ready messages only: unacknowledged ones are not
        // counted here.
        (
            "rabbitmq_queue_messages_bytes",
            "Size in bytes of ready messages (Warren does not count the bytes of unacknowledged ones)",
            |q| q.message_bytes_ready,
        ),
        (
            "rabbitmq_queue_consumers",
            "Consumers on a queue",
            |q| u64::from(q.consumers),
        ),
    ];
    let hosted: Option<Vec<&QueueView>> = f
        .view
        .map(|(view, _)| view.queues.iter().filter(|q| f.hosts(q)).collect());
    out.family("rabbitmq_queues", "gauge", "Queues available");
    if let Some(hosted) = &hosted {
        out.sample("rabbitmq_queues", &[], hosted.len());
    }
    for (name, help, figure) in gauges {
        per_queue(
            out,
            (name, "gauge", help),
            hosted.as_deref(),
            figure,
            endpoint,
        );
    }
    // A counter, so the deciding broker's only (see the module docs).
    let counted: Option<Vec<&QueueView>> = f
        .view
        .filter(|_| f.decides())
        .map(|(view, _)| view.queues.iter().collect());
    per_queue(
        out,
        (
            "rabbitmq_queue_messages_published_total",
            "counter",
            "Total number of messages published to queues",
        ),
        counted.as_deref(),
        |q| q.counters.published,
        endpoint,
    );
}

/// One family (name, type, help) of queue figures: summed on `/metrics`, one sample per queue
/// on `/metrics/per-object`; no sample at all without `queues`.
fn per_queue(
    out: &mut Exposition,
    (name, kind, help): (&str, &str, &str),
    queues: Option<&[&QueueView]>,
    figure: fn(&QueueView) -> u64,
    endpoint: Endpoint,
) {
    out.family(name, kind, help);
    let Some(queues) = queues else {
        return;
    };
    match endpoint {
        Endpoint::Aggregated => {
            out.sample(name, &[], queues.iter().map(|q| figure(q)).sum::<u64>());
        }
        Endpoint::PerObject => {
            for q in queues {
                out.sample(name, &[("vhost", &q.vhost), ("queue", &q.name)], figure(q));
            }
        }
    }
}

/// RabbitMQ's global message counters (`rabbit_global_counters`): what this node's clients did,
/// and what the deciding broker routed and delivered (see the module docs).
fn global_counters(out: &mut Exposition, f: &Figures) {
    let view = f.view.filter(|_| f.decides()).map(|(view, _)| view);
    let protocol = [("protocol", "amqp091")];
    let c = &f.clients;
    // Counted at the client's socket, on every node.
    for (name, help, value) in [
        (
            "rabbitmq_global_messages_received_total",
            "Total number of messages received from publishers",
            c.messages_received,
        ),
        (
            "rabbitmq_global_messages_received_confirm_total",
            "Total number of messages received from publishers expecting confirmations",
            c.messages_received_confirm,
        ),
        (
            "rabbitmq_global_messages_confirmed_total",
            "Total number of messages confirmed to publishers",
            c.messages_confirmed,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned_total",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            c.messages_unroutable_returned,
        ),
        // RabbitMQ labels these by queue type too (see the module docs).
        (
            "rabbitmq_global_messages_delivered_consume_manual_ack_total",
            "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
            c.delivered_consume_manual_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_consume_auto_ack_total",
            "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
            c.delivered_consume_auto_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_manual_ack_total",
            "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
            c.delivered_get_manual_ack,
        ),
        (
            "rabbitmq_global_messages_delivered_get_auto_ack_total",
            "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
            c.delivered_get_auto_ack,
        ),
        (
            "rabbitmq_global_messages_get_empty_total",
            "Total number of times basic.get operations fetched no message",
            c.get_empty,
        ),
        (
            "rabbitmq_global_messages_acknowledged_total",
            "Total number of messages acknowledged by consumers",
            c.acknowledged,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &protocol, value);
    }
    // The deciding broker's: one per queue reached, as RabbitMQ counts.
    let name = "rabbitmq_global_messages_routed_total";
    out.family(
        name,
        "counter",
        "Total number of messages routed to queues or streams",
    );
    if let Some(view) = view {
        let routed: u64 = view.exchanges.iter().map(|x| x.publish_out).sum();
        out.sample(name, &protocol, routed);
    }
    let name = "rabbitmq_global_messages_unroutable_dropped_total";
    out.family(
        name,
        "counter",
        "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
    );
    out.sample(name, &protocol, c.messages_unroutable_dropped);
    // Deliveries per queue type, as RabbitMQ labels them.
    type Figure = fn(&QueueView) -> u64;
    let per_type: [(&str, &str, Figure); 2] = [
        (
            "rabbitmq_global_messages_delivered_total",
            "Total number of messages delivered to consumers",
            |q| q.counters.delivered,
        ),
        (
            "rabbitmq_global_messages_redelivered_total",
            "Total number of messages redelivered to consumers",
            |q| q.counters.redelivered,
        ),
    ];
    for (name, help, figure) in per_type {
        out.family(name, "counter", help);
        let Some(view) = view else { continue };
        for (kind, label) in [
            ("classic", "rabbit_classic_queue"),
            ("quorum", "rabbit_quorum_queue"),
        ] {
            let n: u64 = view
                .queues
                .iter()
                .filter(|q| queue_type(q) == kind)
                .map(figure)
                .sum();
            out.sample(name, &[("protocol", "amqp091"), ("queue_type", label)], n);
        }
    }
}

/// Churn of this node's connections, channels and queues, its login attempts and the sizes of
/// the messages its clients published.
fn churn(out: &mut Exposition, f: &Figures) {
    let c = &f.clients;
    for (name, help, value) in [
        (
            "rabbitmq_connections_opened_total",
            "Total number of connections opened",
            c.connections_opened,
        ),
        (
            "rabbitmq_connections_closed_total",
            "Total number of connections closed or terminated",
            c.connections_closed,
        ),
        (
            "rabbitmq_channels_opened_total",
            "Total number of channels opened",
            c.channels_opened,
        ),
        (
            "rabbitmq_channels_closed_total",
            "Total number of channels closed",
            c.channels_closed,
        ),
    ] {
        out.metric(name, "counter", help, value);
    }
    for (name, help, value) in [
        (
            "rabbitmq_queues_declared_total",
            "Total number of queues declared",
            c.queues_declared,
        ),
        (
            "rabbitmq_queues_created_total",
            "Total number of queues created",
            c.queues_created,
        ),
        (
            "rabbitmq_queues_deleted_total",
            "Total number of queues deleted",
            c.queues_deleted,
        ),
    ] {
        out.metric(name, "counter", help, value);
    }
    let protocol = [("protocol", "amqp091")];
    for (name, help, value) in [
        (
            "rabbitmq_auth_attempts_total",
            "Total number of authentication attempts",
            c.auth_attempts_succeeded + c.auth_attempts_failed,
        ),
        (
            "rabbitmq_auth_attempts_succeeded_total",
            "Total number of successful authentication attempts",
            c.auth_attempts_succeeded,
        ),
        (
            "rabbitmq_auth_attempts_failed_total",
            "Total number of failed authentication attempts",
            c.auth_attempts_failed,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &protocol, value);
    }
    out.metric(
        "warren_connections_flow_paused_total",
        "counter",
        "Times a client connection of this node was paused by credit flow (its publishes filled the log's pipeline, so its socket was not read until half of them were applied)",
        c.flow_pauses,
    );
    message_sizes(out, f);
}

/// `rabbitmq_message_size_bytes`: RabbitMQ's histogram of the body sizes of the messages
/// received (`rabbit_msg_size_metrics`), with its buckets.
fn message_sizes(out: &mut Exposition, f: &Figures) {
    let name = "rabbitmq_message_size_bytes";
    let sizes = &f.clients.message_sizes;
    out.family(
        name,
        "histogram",
        "Size of messages received from publishers",
    );
    let bucket = format!("{name}_bucket");
    for (i, count) in sizes.cumulative.iter().enumerate() {
        let le = MESSAGE_SIZE_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        out.sample(&bucket, &[("protocol", "amqp091"), ("le", &le)], count);
    }
    let total = sizes.cumulative.last().copied().unwrap_or(0);
    out.sample(&format!("{name}_count"), &[("protocol", "amqp091")], total);
    out.sample(
        &format!("{name}_sum"),
        &[("protocol", "amqp091")],
        sizes.sum,
    );
}

/// Memory, disk, file descriptors and the resource alarms of this process (memory and disk as
/// measured each second by `warren_server::alarm`).
fn resources(out: &mut Exposition, f: &Figures) {
    let s = f.status;
    out.metric(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        s.mem_used,
    );
    out.metric(
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
        s.mem_limit,
    );
    out.family(
        "rabbitmq_disk_space_available_bytes",
        "gauge",
        "Disk space available in bytes",
    );
    if let Some(free) = s.disk_free {
        out.sample("rabbitmq_disk_space_available_bytes", &[], free);
    }
    out.metric(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        s.disk_free_limit,
    );
    out.family(
        "rabbitmq_process_open_fds",
        "gauge",
        "Open file descriptors",
    );
    if let Some(n) = warren_raft::resources::open_fds() {
        out.sample("rabbitmq_process_open_fds", &[], n);
    }
    out.family(
        "rabbitmq_process_max_fds",
        "gauge",
        "Open file descriptors limit",
    );
    if let Some(n) = warren_raft::resources::max_fds() {
        out.sample("rabbitmq_process_max_fds", &[], n);
    }
    out.metric(
        "rabbitmq_alarms_memory_used_watermark",
        "untyped",
        "is the vm_memory_high_watermark threshold reached",
        u8::from(s.mem_alarm),
    );
    out.metric(
        "rabbitmq_alarms_free_disk_space_watermark",
        "untyped",
        "is the disk_free_limit threshold reached",
        u8::from(s.disk_free_alarm),
    );
    // Warren has no Erlang processes or ETS tables: nothing of its memory is theirs.
    out.metric(
        "rabbitmq_memory_quorum_queue_erlang_process_bytes",
        "gauge",
        "Memory in bytes used by quorum queue Erlang processes (none in Warren)",
        0,
    );
    out.metric(
        "rabbitmq_memory_quorum_queue_ets_table_bytes",
        "gauge",
        "Memory in bytes used by quorum queue ETS tables (none in Warren)",
        0,
    );
}

/// This node's Raft figures. Warren replicates every queue through one Raft group, so these are
/// one sample per node (RabbitMQ has one per quorum queue on `/metrics/per-object`); each
/// family is served under its RabbitMQ 4.2 name and its earlier one.
fn raft(out: &mut Exposition, f: &Figures) {
    let s = f.status;
    let counters = [
        (
            ["rabbitmq_raft_term", "rabbitmq_raft_term_total"],
            "Current Raft term number",
            s.term,
        ),
        (
            [
                "rabbitmq_raft_commit_index",
                "rabbitmq_raft_log_commit_index",
            ],
            "Raft log commit index",
            s.committed_index.unwrap_or(0),
        ),
        (
            [
                "rabbitmq_raft_last_written_index",
                "rabbitmq_raft_log_last_written_index",
            ],
            "Raft log last written index",
            s.last_log_index.unwrap_or(0),
        ),
        (
            [
                "rabbitmq_raft_snapshot_index",
                "rabbitmq_raft_log_snapshot_index",
            ],
            "Raft log snapshot index",
            f.snapshot_index.unwrap_or(0),
        ),
    ];
    for (names, help, value) in counters {
        for name in names {
            out.metric(name, "counter", help, value);
        }
    }
    out.metric(
        "rabbitmq_raft_last_applied",
        "gauge",
        "Raft last applied index",
        s.applied_index.unwrap_or(0),
    );
    // Warren's Raft log is in RocksDB: it has no segment files.
    out.metric(
        "rabbitmq_raft_num_segments",
        "gauge",
        "Number of Raft log segment files (none: Warren's log is in RocksDB)",
        0,
    );
    out.metric(
        "rabbitmq_raft_max_num_segments",
        "gauge",
        "Largest number of Raft log segment files (none: Warren's log is in RocksDB)",
        0,
    );
    // From this node's append of an entry to its apply here (`warren_store::commit_latency`):
    // the latest entry's, and the largest of the last 5 to 10 seconds. No sample before the
    // node has applied an entry it appended.
    for name in [
        "rabbitmq_raft_commit_latency_seconds",
        "rabbitmq_raft_entry_commit_latency_seconds",
    ] {
        out.family(name, "gauge", "Time taken for a log entry to be committed");
        if let Some(last) = f.commit.last_seconds {
            out.sample(name, &[], last);
        }
    }
    out.family(
        "rabbitmq_raft_max_commit_latency_seconds",
        "gauge",
        "Largest time taken for a log entry to be committed",
    );
    if let Some(max) = f.commit.max_seconds {
        out.sample("rabbitmq_raft_max_commit_latency_seconds", &[], max);
    }
}
