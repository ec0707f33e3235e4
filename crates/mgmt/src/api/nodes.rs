//! The cluster's members as RabbitMQ's nodes: `/api/nodes` and `/api/nodes/{name}`, with Raft's
//! view of each member.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use serde_json::{json, Value};

use super::{history_asked, ok, session, ApiResult, Params, Peer, Shared};
use crate::auth::Need;
use crate::error::ApiError;
use crate::shapes;
use crate::Ctx;

/// Every member as RabbitMQ's node object, with Raft's view of it under `raft` (asked of the
/// leader, which knows every member's replication progress).
async fn node_list(ctx: &Ctx, history: Option<&[crate::rates::HistoryPoint]>) -> Vec<Value> {
    // Every other member's own status (its resources and alarms; the leader's also says how far
    // each member has replicated).
    let (me, statuses) = crate::members::statuses(ctx).await;
    let rates = ctx.rates.snapshot();
    // The messages of the queues each node serves, counted once for every node.
    let queued = ctx
        .node
        .management
        .view()
        .await
        .ok()
        .map(|(v, _)| crate::rates::queued_by_node(&v, me.leader));
    let leader_status = me.leader.and_then(|l| statuses.get(&l));
    let last = leader_status.and_then(|s| s.last_log_index);
    me.members
        .iter()
        .map(|m| {
            let matched = leader_status.and_then(|s| {
                s.members
                    .iter()
                    .find(|x| x.id == m.id)
                    .and_then(|x| x.matched_index)
            });
            let is_me = m.id == me.node_id;
            let own = statuses.get(&m.id);
            let running = own.is_some();
            let role = if me.leader == Some(m.id) {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            json!({
                "name": crate::node_name(m.id),
                "type": "disc",
                "running": running,
                // Mutual TLS between nodes (false: started with --insecure).
                "inter_node_tls": own.map(|s| !s.insecure),
                "uptime": if is_me { Some(ctx.started.elapsed().as_millis() as u64) } else { None },
                // RabbitMQ's names, for every node that answered.
                "mem_used": own.map(|s| s.mem_used),
                "mem_limit": own.map(|s| s.mem_limit),
                "mem_alarm": own.map(|s| s.mem_alarm),
                "disk_free": own.and_then(|s| s.disk_free),
                "disk_free_limit": own.map(|s| s.disk_free_limit),
                "disk_free_alarm": own.map(|s| s.disk_free_alarm),
                "fd_used": own.and_then(|s| s.fd_used),
                "fd_total": own.and_then(|s| s.fd_total),
                // What this node's clients did (rates; samples with `msg_rates_age`).
                "message_stats": shapes::node_stats(m.id, own.and_then(|s| s.clients.as_ref()), &rates, history),
                "mem_used_details": shapes::node_memory_details(m.id, &rates, history),
                // The messages in the queues it serves (its transient queues; the replicated
                // ones if it leads).
                "queue_totals": queued.as_ref().map(|q| shapes::node_queue_totals(m.id, q, &rates, history)),
                "raft": {
                    "id": m.id,
                    "role": role,
                    "amqp_address": m.amqp_addr,
                    "grpc_address": m.grpc_addr,
                    "term": me.term,
                    "matched_index": matched,
                    "lag": match (last, matched) { (Some(l), Some(x)) => Some(l.saturating_sub(x)), _ => None },
                },
            })
        })
        .collect()
}

pub(super) async fn nodes(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    session(&ctx, &headers, peer, Need::Monitoring).await?;
    let history = history_asked(&ctx, &params);
    ok(Value::from(node_list(&ctx, history.as_deref()).await))
}

pub(super) async fn node(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    session(&ctx, &headers, peer, Need::Monitoring).await?;
    node_list(&ctx, None)
        .await
        .into_iter()
        .find(|n| n["name"] == name.as_str())
        .map_or_else(|| Err(ApiError::not_found()), ok)
}
