//! `GET /metrics` and `GET /metrics/per-object`: this node's metrics in Prometheus' text format
//! (unauthenticated, like RabbitMQ's `rabbitmq_prometheus` endpoints). Warren's own `warren_*`
//! figures come from the deciding broker's view: queues and messages for the whole cluster,
//! connections and channels for the clients whose sockets are on this node; Raft figures and
//! the WAL fsync latency are this node's own. RabbitMQ's `rabbitmq_*` metrics are written by
//! [`crate::prometheus_plugin`].

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use openraft::async_runtime::WatchReceiver;

use crate::prometheus_plugin::{self, Endpoint, Figures};
use crate::shapes::conn_node;
use crate::Ctx;

pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .with_state(ctx)
}

/// Counts leader changes seen by this node, for `warren_raft_leader_changes_total`.
pub(crate) fn spawn_leader_watch(ctx: Arc<Ctx>) {
    tokio::spawn(async move {
        // The server metrics change with the vote, state, leader and membership only (not with
        // every appended entry, as the full metrics do), so this task wakes rarely.
        let mut metrics = ctx.node.raft.server_metrics();
        // The first leader known counts too: it was elected since this node started.
        let mut leader = None;
        loop {
            let now = metrics.borrow_and_update().current_leader;
            if now != leader {
                if now.is_some() {
                    ctx.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                leader = now;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Prometheus' text exposition format being written.
#[derive(Default)]
pub(crate) struct Exposition(String);

impl Exposition {
    /// A family's HELP and TYPE lines; its samples follow.
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the family last begun, with its labels (values escaped).
    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A latency histogram over [`warren_store::LATENCY_BUCKETS`].
    pub(crate) fn histogram(&mut self, name: &str, help: &str, h: &warren_store::LatencyHistogram) {
        self.family(name, "histogram", help);
        let cumulative = &h.cumulative;
        for (i, count) in cumulative.iter().enumerate() {
            let le = warren_store::LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let _ = writeln!(self.0, "{name}_sum {}", h.sum_seconds);
        let _ = writeln!(
            self.0,
            "{name}_count {}",
            cumulative.last().copied().unwrap_or(0)
        );
    }

    /// A family with one sample and no labels.
    pub(crate) fn metric(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl std::fmt::Display,
    ) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

async fn aggregated(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    metrics(ctx, Endpoint::Aggregated).await
}

async fn per_object(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    metrics(ctx, Endpoint::PerObject).await
}

async fn metrics(ctx: Arc<Ctx>, endpoint: Endpoint) -> impl IntoResponse {
    ctx.asked();
    let mut out = Exposition::default();
    let me = ctx.node.node_id;
    let view = ctx.node.management.view().await.ok();
    if let Some((view, _)) = &view {
        let here = |conn: u64| conn_node(conn) == me;
        out.metric(
            "warren_connections",
            "gauge",
            "Client connections whose socket is on this node.",
            view.connections.iter().filter(|c| here(c.conn)).count(),
        );
        out.metric(
            "warren_channels",
            "gauge",
            "Channels of the client connections on this node.",
            view.channels.iter().filter(|c| here(c.conn)).count(),
        );
        out.metric(
            "warren_consumers",
            "gauge",
            "Consumers of the client connections on this node.",
            view.consumers.iter().filter(|c| here(c.conn)).count(),
        );
        out.metric(
            "warren_queues",
            "gauge",
            "Queues in the cluster.",
            view.queues.len(),
        );
        let sum =
            |f: fn(&warren_core::view::QueueView) -> u64| view.queues.iter().map(f).sum::<u64>();
        out.metric(
            "warren_queue_messages_ready",
            "gauge",
            "Messages ready for delivery, all queues.",
            sum(|q| q.messages_ready),
        );
        out.metric(
            "warren_queue_messages_unacked",
            "gauge",
            "Messages delivered and not yet acknowledged, all queues.",
            sum(|q| q.messages_unacknowledged),
        );
        out.metric(
            "warren_messages_published_total",
            "counter",
            "Messages enqueued (one per queue reached), counted by the deciding broker.",
            sum(|q| q.counters.published),
        );
        out.metric(
            "warren_messages_delivered_total",
            "counter",
            "Messages delivered to consumers or basic.get, counted by the deciding broker.",
            sum(|q| q.counters.delivered),
        );
        out.metric(
            "warren_messages_acked_total",
            "counter",
            "Messages acknowledged (settled), counted by the deciding broker.",
            sum(|q| q.counters.acked),
        );
    }
    let status = ctx.node.admin.status();
    out.metric(
        "warren_raft_term",
        "gauge",
        "Current Raft term.",
        status.term,
    );
    out.metric(
        "warren_raft_is_leader",
        "gauge",
        "1 if this node leads the Raft group.",
        u8::from(status.leader == Some(me)),
    );
    out.metric(
        "warren_raft_last_log_index",
        "gauge",
        "Last Raft log index on this node.",
        status.last_log_index.unwrap_or(0),
    );
    out.metric(
        "warren_raft_commit_index",
        "gauge",
        "Highest Raft log index known committed by this node.",
        status.committed_index.unwrap_or(0),
    );
    out.metric(
        "warren_raft_applied_index",
        "gauge",
        "Highest Raft log index applied by this node.",
        status.applied_index.unwrap_or(0),
    );
    out.metric(
        "warren_raft_leader_changes_total",
        "counter",
        "Leaders this node has seen elected since it started.",
        ctx.leader_changes.load(Ordering::Relaxed),
    );
    out.histogram(
        "warren_wal_fsync_seconds",
        "Duration of the Raft log's WAL fsyncs (one per group commit).",
        &warren_store::fsync_latency(),
    );
    let commit = warren_store::commit_latency();
    out.histogram(
        "warren_raft_commit_seconds",
        "Time from this node's append of a log entry to its application here (on the leader: its commit latency).",
        &commit.histogram,
    );
    out.metric(
        "warren_process_resident_memory_bytes",
        "gauge",
        "Resident set size of the warren process.",
        status.mem_used,
    );
    let figures = Figures {
        node_id: me,
        view: view.as_ref().map(|(v, source)| (v, *source)),
        status: &status,
        snapshot_index: ctx
            .node
            .raft
            .metrics()
            .borrow_watched()
            .snapshot
            .as_ref()
            .map(|l| l.index),
        uptime: ctx.started.elapsed(),
        clients: ctx.node.client_counters.read(),
        commit,
    };
    prometheus_plugin::write(&mut out, &figures, endpoint);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.0,
    )
}
