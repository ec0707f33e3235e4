//! `GET /metrics`: this node's metrics in Prometheus' text format (unauthenticated, like
//! RabbitMQ's `rabbitmq_prometheus` endpoint). Broker figures come from the deciding broker's
//! view: queues and messages for the whole cluster, connections and channels for the clients
//! whose sockets are on this node. Raft figures and the WAL fsync latency are this node's own.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use openraft::async_runtime::WatchReceiver;

use crate::shapes::conn_node;
use crate::Ctx;

pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
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

struct Out(String);

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    ctx.asked();
    let mut out = Out(String::new());
    let me = ctx.node.node_id;
    if let Ok((view, _)) = ctx.node.management.view().await {
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
    let fsync = warren_store::fsync_latency();
    let name = "warren_wal_fsync_seconds";
    let _ = writeln!(
        out.0,
        "# HELP {name} Duration of the Raft log's WAL fsyncs (one per group commit).\n# TYPE {name} histogram"
    );
    for (i, count) in fsync.cumulative.iter().enumerate() {
        let le = warren_store::FSYNC_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(out.0, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out.0, "{name}_sum {}", fsync.sum_seconds);
    let _ = writeln!(
        out.0,
        "{name}_count {}",
        fsync.cumulative.last().copied().unwrap_or(0)
    );
    // Memory (measured each second by the resource monitor, `warren_server::alarm`) and the
    // resource alarms, under RabbitMQ's names too (rabbitmq_prometheus), so its dashboards'
    // "memory/disk available before publishers blocked" panels work.
    out.metric(
        "warren_process_resident_memory_bytes",
        "gauge",
        "Resident set size of the warren process.",
        status.mem_used,
    );
    out.metric(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        status.mem_used,
    );
    out.metric(
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
        status.mem_limit,
    );
    if let Some(free) = status.disk_free {
        out.metric(
            "rabbitmq_disk_space_available_bytes",
            "gauge",
            "Disk space available in bytes",
            free,
        );
    }
    out.metric(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        status.disk_free_limit,
    );
    out.metric(
        "rabbitmq_alarms_memory_used_watermark",
        "untyped",
        "is the vm_memory_high_watermark threshold reached",
        u8::from(status.mem_alarm),
    );
    out.metric(
        "rabbitmq_alarms_free_disk_space_watermark",
        "untyped",
        "is the disk_free_limit threshold reached",
        u8::from(status.disk_free_alarm),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.0,
    )
}
