//! Queues: `/api/queues`, `/api/queues/{vhost}`, `/api/queues/{vhost}/{name}`, purging
//! (`.../contents`) and getting messages (`.../get`). Their bindings are in `bindings`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use warren_core::view::BrokerView;
use warren_server::direct::DirectConnection;
use warren_wire::{BasicProperties, Method, ShortStr};

use super::{
    body_json, bool_field, call_direct, check_vhost, direct, field_table, history_asked, list,
    no_content, ok, put_declared, query_flag, session, str_field, ApiResult, Declared, Params,
    Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::shapes::{self, Cluster};
use crate::Ctx;

fn cluster(ctx: &Ctx) -> Cluster {
    let status = ctx.node.admin.status();
    Cluster {
        leader: status.leader,
        members: status.members.iter().map(|m| m.id).collect(),
    }
}

pub(super) async fn queues(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_queues(ctx, peer, headers, None, params).await
}

pub(super) async fn queues_in(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    Query(params): Params,
) -> ApiResult {
    list_queues(ctx, peer, headers, Some(vhost), params).await
}

async fn list_queues(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    headers: HeaderMap,
    vhost: Option<String>,
    params: Vec<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    check_vhost(&caller, &view, vhost.as_deref())?;
    let rates = ctx.rates.snapshot();
    let cluster = cluster(&ctx);
    list(
        view.queues
            .iter()
            .filter(|q| vhost.as_deref().is_none_or(|v| q.vhost == v))
            .filter(|q| caller.sees_vhost(&view, &q.vhost))
            .map(|q| shapes::queue(q, &rates, &cluster))
            .collect(),
        &params,
        listing::BY_VHOST_AND_NAME,
    )
}

pub(super) async fn queue(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    let Some(q) = view
        .queues
        .iter()
        .find(|q| q.vhost == vhost && q.name == name && caller.sees_vhost(&view, &vhost))
    else {
        return Err(ApiError::not_found());
    };
    let mut obj = shapes::queue(q, &ctx.rates.snapshot(), &cluster(&ctx));
    let consumers: Vec<Value> = view
        .consumers
        .iter()
        .filter(|k| k.vhost == vhost && k.queue == name)
        .filter_map(|k| {
            let c = view.connections.iter().find(|c| c.conn == k.conn)?;
            Some(shapes::consumer(k, c, shapes::is_single_active(q)))
        })
        .collect();
    obj["consumer_details"] = Value::from(consumers);
    // Its history (the console's queue page), as for /api/overview.
    if let Some(history) = history_asked(&ctx, &params) {
        shapes::add_queue_samples(&mut obj, &vhost, &name, &history);
    }
    ok(obj)
}

pub(crate) async fn declare_queue(
    conn: &mut DirectConnection,
    name: &str,
    body: &Value,
) -> Result<(), ApiError> {
    conn.call(Method::QueueDeclare(warren_wire::QueueDeclare {
        queue: ShortStr::from(name),
        durable: bool_field(body, "durable", true),
        auto_delete: bool_field(body, "auto_delete", false),
        arguments: field_table(body.get("arguments")),
        ..Default::default()
    }))
    .await?;
    Ok(())
}

pub(super) async fn put_queue(
    ctx: Shared,
    peer: Peer,
    headers: HeaderMap,
    path: Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put_declared(ctx, peer, headers, path, body, Declared::Queue).await
}

/// `DELETE /api/queues/{vhost}/{name}`, with RabbitMQ's `if-empty=true` and `if-unused=true`
/// (a queue with messages, or with consumers, is then not deleted: 400 with the AMQP reason).
pub(super) async fn delete_queue(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    if !queue_exists(&view, &vhost, &name) {
        return Err(ApiError::not_found());
    }
    call_direct(
        &ctx,
        &caller,
        &vhost,
        Method::QueueDelete(warren_wire::QueueDelete {
            queue: ShortStr::from(name.as_str()),
            if_unused: query_flag(&params, "if-unused"),
            if_empty: query_flag(&params, "if-empty"),
            ..Default::default()
        }),
    )
    .await?;
    no_content()
}

pub(super) async fn purge_queue(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    if !queue_exists(&view, &vhost, &name) {
        return Err(ApiError::not_found());
    }
    call_direct(
        &ctx,
        &caller,
        &vhost,
        Method::QueuePurge(warren_wire::QueuePurge {
            queue: ShortStr::from(name.as_str()),
            ..Default::default()
        }),
    )
    .await?;
    no_content()
}

/// Queue `name` of `vhost` exists in the broker's view.
pub(crate) fn queue_exists(view: &BrokerView, vhost: &str, name: &str) -> bool {
    view.queues
        .iter()
        .any(|q| q.vhost == vhost && q.name == name)
}

fn properties_json(p: &BasicProperties) -> Value {
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.to_owned(), v);
        }
    };
    put(
        "content_type",
        p.content_type.as_ref().map(|s| s.as_str().into()),
    );
    put(
        "content_encoding",
        p.content_encoding.as_ref().map(|s| s.as_str().into()),
    );
    put("delivery_mode", p.delivery_mode.map(Value::from));
    put("priority", p.priority.map(Value::from));
    put(
        "correlation_id",
        p.correlation_id.as_ref().map(|s| s.as_str().into()),
    );
    put("reply_to", p.reply_to.as_ref().map(|s| s.as_str().into()));
    put(
        "expiration",
        p.expiration.as_ref().map(|s| s.as_str().into()),
    );
    put(
        "message_id",
        p.message_id.as_ref().map(|s| s.as_str().into()),
    );
    put("timestamp", p.timestamp.map(Value::from));
    put("type", p.kind.as_ref().map(|s| s.as_str().into()));
    put(
        "headers",
        p.headers
            .as_ref()
            .map(|h| shapes::args(&warren_core::view::table_args(h))),
    );
    Value::Object(o)
}

/// `POST /api/queues/{vhost}/{name}/get`: `count`, `ackmode` (`ack_requeue_true`,
/// `ack_requeue_false`, `reject_requeue_true`, `reject_requeue_false`), `encoding` (`auto` or
/// `base64`), as RabbitMQ's.
pub(super) async fn get_messages(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (caller, _) = session(&ctx, &headers, peer, Need::Management).await?;
    let body = body_json(&body)?;
    let count = body.get("count").and_then(Value::as_u64).unwrap_or(1);
    let requeue = match str_field(&body, "ackmode").unwrap_or("ack_requeue_true") {
        "ack_requeue_false" => None,
        "ack_requeue_true" | "reject_requeue_true" => Some(true),
        "reject_requeue_false" => Some(false),
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let base64_only = str_field(&body, "encoding") == Some("base64");
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let mut out = Vec::new();
    let mut tags = Vec::new();
    let mut result = Ok(());
    for _ in 0..count {
        match conn.get(&name).await {
            Ok(Some(m)) => {
                let (payload, encoding) = match std::str::from_utf8(&m.body) {
                    Ok(s) if !base64_only => (s.to_owned(), "string"),
                    _ => (
                        base64::engine::general_purpose::STANDARD.encode(&m.body),
                        "base64",
                    ),
                };
                out.push(json!({
                    "payload_bytes": m.body.len(),
                    "redelivered": m.redelivered,
                    "exchange": m.exchange,
                    "routing_key": m.routing_key,
                    "message_count": m.message_count,
                    "properties": properties_json(&m.properties),
                    "payload": payload,
                    "payload_encoding": encoding,
                }));
                tags.push(m.delivery_tag);
            }
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // Settled once all are taken, so a requeued message is not taken twice.
    for tag in tags {
        if let Err(e) = conn.settle(tag, requeue).await {
            result = result.and(Err(e));
        }
    }
    conn.close().await;
    result?;
    ok(Value::from(out))
}
