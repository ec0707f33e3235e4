//! The broker as a whole: `/api/overview`, `/api/whoami`, `/api/cluster-name` and
//! `/api/healthchecks/node`.

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::{history_asked, ok, session, ApiResult, Params, Peer, Shared};
use crate::auth::Need;
use crate::shapes;

pub(super) async fn overview(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    let rates = ctx.rates.snapshot();
    let queues: Vec<_> = view
        .queues
        .iter()
        .filter(|q| caller.sees_vhost(&view, &q.vhost))
        .collect();
    let (mut message_stats, mut queue_totals) =
        shapes::totals(&queues, &rates, caller.is_monitoring());
    // Confirms are counted by each node for its clients (not by queues), and RabbitMQ's
    // history of the totals (the console's charts): `msg_rates_age` seconds back, a sample every
    // `msg_rates_incr`; for users who see the whole cluster's totals.
    if caller.is_monitoring() {
        shapes::add_confirms(&mut message_stats, &ctx.rates, &rates);
        if let Some(history) = history_asked(&ctx, &params) {
            shapes::add_samples(&mut message_stats, &mut queue_totals, &history);
        }
    }
    let status = ctx.node.admin.status();
    let exchange_types: Vec<Value> = ["direct", "fanout", "topic", "headers"]
        .iter()
        .map(|t| {
            json!({
                "name": t,
                "description": format!("AMQP {t} exchange, as per the AMQP specification"),
                "enabled": true,
            })
        })
        .collect();
    let visible_conns = view
        .connections
        .iter()
        .filter(|c| caller.sees_user(&c.user))
        .count();
    let visible_channels = view
        .channels
        .iter()
        .filter(|c| caller.sees_user(&c.user))
        .count();
    ok(json!({
        "management_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "disable_stats": false,
        "enable_queue_totals": true,
        "exchange_types": exchange_types,
        "cluster_name": "warren",
        "node": crate::node_name(ctx.node.node_id),
        "message_stats": message_stats,
        "queue_totals": queue_totals,
        "object_totals": {
            "connections": visible_conns,
            "channels": visible_channels,
            "exchanges": view.exchanges.iter().filter(|x| caller.sees_vhost(&view, &x.vhost)).count(),
            "queues": queues.len(),
            "consumers": view.consumers.iter().filter(|k| caller.sees_vhost(&view, &k.vhost)).count(),
        },
        "listeners": ctx.node.listeners.iter().chain(&ctx.http).map(|(protocol, addr)| json!({
            "node": crate::node_name(ctx.node.node_id),
            "protocol": protocol,
            "ip_address": addr.ip().to_string(),
            "port": addr.port(),
        })).collect::<Vec<_>>(),
        // One context per port (RabbitMQ lists its HTTPS context with "ssl": true).
        "contexts": ctx.http.iter().map(|(_, addr)| addr.port()).collect::<std::collections::BTreeSet<_>>().into_iter().map(|port| {
            let tls = ctx.http.iter().any(|(p, a)| *p == "https" && a.port() == port);
            let mut c = json!({
                "node": crate::node_name(ctx.node.node_id),
                "description": "Warren management",
                "path": "/",
                "port": port.to_string(),
            });
            if tls {
                c["ssl"] = json!(true);
            }
            c
        }).collect::<Vec<_>>(),
        "raft": {
            "leader": status.leader.map(crate::node_name),
            "term": status.term,
            "committed_index": status.committed_index,
            "applied_index": status.applied_index,
        },
    }))
}

pub(super) async fn whoami(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> ApiResult {
    let (caller, _) = session(&ctx, &headers, peer, Need::Management).await?;
    ok(json!({"name": caller.name, "tags": caller.tags}))
}

pub(super) async fn cluster_name(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> ApiResult {
    session(&ctx, &headers, peer, Need::Management).await?;
    ok(json!({"name": "warren"}))
}

/// RabbitMQ's `/api/healthchecks/node`: ok when this node's broker answers and a leader is known.
pub(super) async fn healthcheck(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> ApiResult {
    session(&ctx, &headers, peer, Need::Management).await?;
    let status = ctx.node.admin.status();
    if status.leader.is_none() {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "no Raft leader is known"})),
        )
            .into_response());
    }
    ok(json!({"status": "ok"}))
}
