//! The `/api` routes: RabbitMQ's management HTTP API paths, answered from the deciding broker's
//! view, the Access service and direct connections (see the crate docs).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use tonic::Request;
use warren_core::view::{BindingView, BrokerView};
use warren_proto::access::access_change::Change;
use warren_proto::access::access_server::Access;
use warren_proto::access::{self as pb, AccessChange};
use warren_server::direct::DirectConnection;
use warren_wire::{BasicProperties, FieldTable, FieldValue, Method, ShortStr};

use crate::auth::{self, Caller, Need};
use crate::error::ApiError;
use crate::listing::{self, ListQuery, Listing};
use crate::names;
use crate::shapes::{self, Cluster};
use crate::Ctx;

pub(crate) type Shared = State<Arc<Ctx>>;
pub(crate) type Peer = ConnectInfo<SocketAddr>;
pub(crate) type ApiResult = Result<Response, ApiError>;
/// A request's query parameters, decoded, in order.
pub(crate) type Params = Query<Vec<(String, String)>>;

pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/cluster-name", get(cluster_name))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
        .route("/api/healthchecks/node", get(healthcheck))
        .route(
            "/api/aliveness-test/{vhost}",
            get(crate::aliveness::aliveness_test),
        )
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(exchange_source_bindings),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(exchange_destination_bindings),
        )
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            post(add_binding),
        )
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(close_connection),
        )
        .route("/api/channels", get(channels))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(consumers_in))
        .route("/api/users", get(users))
        .route(
            "/api/users/{name}",
            get(user).put(put_user).delete(delete_user),
        )
        .route("/api/permissions", get(permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route(
            "/api/topic-permissions",
            get(crate::topic_permissions::list),
        )
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(crate::topic_permissions::of_user_in_vhost)
                .put(crate::topic_permissions::put)
                .delete(crate::topic_permissions::delete),
        )
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(crate::topic_permissions::in_vhost),
        )
        .route(
            "/api/users/{user}/topic-permissions",
            get(crate::topic_permissions::of_user),
        )
        .route("/api/vhost-limits", get(crate::limits::vhost_limits))
        .route(
            "/api/vhost-limits/{vhost}",
            get(crate::limits::vhost_limits_of),
        )
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(crate::limits::put_vhost_limit)
                .delete(crate::limits::delete_vhost_limit),
        )
        .route("/api/user-limits", get(crate::limits::user_limits))
        .route(
            "/api/user-limits/{user}",
            get(crate::limits::user_limits_of),
        )
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(crate::limits::put_user_limit)
                .delete(crate::limits::delete_user_limit),
        )
        .route("/api/policies", get(crate::policies::policies))
        .route("/api/policies/{vhost}", get(crate::policies::policies_in))
        .route(
            "/api/policies/{vhost}/{name}",
            get(crate::policies::policy)
                .put(crate::policies::put_policy)
                .delete(crate::policies::delete_policy),
        )
        .route(
            "/api/operator-policies",
            get(crate::policies::operator_policies),
        )
        .route(
            "/api/operator-policies/{vhost}",
            get(crate::policies::operator_policies_in),
        )
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(crate::policies::operator_policy)
                .put(crate::policies::put_operator_policy)
                .delete(crate::policies::delete_operator_policy),
        )
        .route(
            "/api/definitions",
            get(crate::definitions::export).post(crate::definitions::import),
        )
        .with_state(ctx)
}

/// The view and the authenticated caller of a request.
pub(crate) async fn session(
    ctx: &Ctx,
    headers: &HeaderMap,
    peer: SocketAddr,
    need: Need,
) -> Result<(Caller, BrokerView), ApiError> {
    ctx.asked();
    let (view, _) = ctx.node.management.view().await?;
    let caller = auth::check(
        headers,
        peer.ip().is_loopback(),
        &ctx.node.loopback_users,
        &view,
        need,
    )?;
    Ok((caller, view))
}

fn cluster(ctx: &Ctx) -> Cluster {
    let status = ctx.node.admin.status();
    Cluster {
        leader: status.leader,
        members: status.members.iter().map(|m| m.id).collect(),
    }
}

pub(crate) fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// A list as RabbitMQ answers it: sorted, cut to columns and paged as the query asks.
pub(crate) fn list(items: Vec<Value>, params: &[(String, String)], listing: Listing) -> ApiResult {
    ok(ListQuery::new(params).reply(items, listing)?)
}

pub(crate) fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) fn created() -> ApiResult {
    Ok(StatusCode::CREATED.into_response())
}

async fn overview(
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

async fn whoami(State(ctx): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> ApiResult {
    let (caller, _) = session(&ctx, &headers, peer, Need::Management).await?;
    ok(json!({"name": caller.name, "tags": caller.tags}))
}

async fn cluster_name(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> ApiResult {
    session(&ctx, &headers, peer, Need::Management).await?;
    ok(json!({"name": "warren"}))
}

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

async fn nodes(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    session(&ctx, &headers, peer, Need::Monitoring).await?;
    let history = history_asked(&ctx, &params);
    ok(Value::from(node_list(&ctx, history.as_deref()).await))
}

/// The rates' history RabbitMQ's `msg_rates_age` and `msg_rates_incr` (default 5 s) ask for.
fn history_asked(
    ctx: &Ctx,
    params: &[(String, String)],
) -> Option<Vec<crate::rates::HistoryPoint>> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let age = param("msg_rates_age")?;
    let incr = param("msg_rates_incr").unwrap_or(5).max(1);
    Some(ctx.rates.history(age, incr))
}

async fn node(
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

/// RabbitMQ's `/api/healthchecks/node`: ok when this node's broker answers and a leader is known.
async fn healthcheck(State(ctx): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> ApiResult {
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

async fn vhosts(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    list(
        view.vhosts
            .iter()
            .filter(|v| caller.sees_vhost(&view, v))
            .map(|v| shapes::vhost(v, &view))
            .collect(),
        &params,
        listing::BY_NAME,
    )
}

async fn vhost(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    if !view.vhosts.contains(&name) || !caller.sees_vhost(&view, &name) {
        return Err(ApiError::not_found());
    }
    ok(shapes::vhost(&name, &view))
}

/// How long a change waits for a leader (an election, a node just started) before it is refused.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Commits a user/vhost/permission change through the Access service (any node forwards it to
/// the leader). While no leader is known it retries, as AMQP clients' input waits for one.
pub(crate) async fn access_change(ctx: &Ctx, change: Change) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let result = ctx
            .node
            .access
            .change(Request::new(AccessChange {
                group_id: warren_raft::METADATA_GROUP,
                change: Some(change.clone()),
            }))
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn put_vhost(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    names::check("vhost name", &name)?;
    let existed = view.vhosts.contains(&name);
    access_change(&ctx, Change::PutVhost(pb::VhostName { name })).await?;
    if existed {
        no_content()
    } else {
        created()
    }
}

async fn delete_vhost(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.vhosts.contains(&name) {
        return Err(ApiError::not_found());
    }
    access_change(&ctx, Change::DeleteVhost(pb::VhostName { name })).await?;
    no_content()
}

/// A listing restricted to `vhost` needs the vhost to exist and be visible to the caller.
pub(crate) fn check_vhost(
    caller: &Caller,
    view: &BrokerView,
    vhost: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(v) = vhost {
        if !view.vhosts.iter().any(|x| x == v) || !caller.sees_vhost(view, v) {
            return Err(ApiError::not_found());
        }
    }
    Ok(())
}

async fn exchanges(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_exchanges(ctx, peer, headers, None, params).await
}

async fn exchanges_in(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    Query(params): Params,
) -> ApiResult {
    list_exchanges(ctx, peer, headers, Some(vhost), params).await
}

async fn list_exchanges(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    headers: HeaderMap,
    vhost: Option<String>,
    params: Vec<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    check_vhost(&caller, &view, vhost.as_deref())?;
    let rates = ctx.rates.snapshot();
    list(
        view.exchanges
            .iter()
            .filter(|x| vhost.as_deref().is_none_or(|v| x.vhost == v))
            .filter(|x| caller.sees_vhost(&view, &x.vhost))
            .map(|x| shapes::exchange(x, &rates))
            .collect(),
        &params,
        listing::BY_VHOST_AND_NAME,
    )
}

/// RabbitMQ names the default exchange `amq.default` in URLs.
fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

async fn exchange(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    let name = exchange_name(&name);
    view.exchanges
        .iter()
        .find(|x| x.vhost == vhost && x.name == name && caller.sees_vhost(&view, &vhost))
        .map_or_else(
            || Err(ApiError::not_found()),
            |x| ok(shapes::exchange(x, &ctx.rates.snapshot())),
        )
}

/// Opens a direct connection for the caller on `vhost`.
pub(crate) async fn direct(
    ctx: &Ctx,
    caller: &Caller,
    vhost: &str,
) -> Result<DirectConnection, ApiError> {
    Ok(ctx
        .node
        .direct
        .open(&caller.name, &caller.password, caller.loopback, vhost)
        .await?)
}

pub(crate) fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

fn bool_field(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A JSON value as an AMQP field value (integers as signed 64-bit, as RabbitMQ's JSON decoder).
fn field_value(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(s.as_str().into()),
        Value::Array(a) => FieldValue::Array(a.iter().map(field_value).collect()),
        Value::Object(_) => FieldValue::Table(field_table(Some(v))),
    }
}

pub(crate) fn field_table(v: Option<&Value>) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(Value::Object(map)) = v {
        for (k, v) in map {
            t.insert(k.as_str(), field_value(v));
        }
    }
    t
}

pub(crate) async fn declare_exchange(
    conn: &mut DirectConnection,
    name: &str,
    body: &Value,
) -> Result<(), ApiError> {
    conn.call(Method::ExchangeDeclare(warren_wire::ExchangeDeclare {
        exchange: ShortStr::from(name),
        kind: ShortStr::from(str_field(body, "type").unwrap_or("direct")),
        durable: bool_field(body, "durable", true),
        auto_delete: bool_field(body, "auto_delete", false),
        internal: bool_field(body, "internal", false),
        arguments: field_table(body.get("arguments")),
        ..Default::default()
    }))
    .await?;
    Ok(())
}

async fn put_exchange(
    ctx: Shared,
    peer: Peer,
    headers: HeaderMap,
    path: Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put_declared(ctx, peer, headers, path, body, Declared::Exchange).await
}

/// What a PUT declares.
#[derive(Clone, Copy)]
enum Declared {
    Exchange,
    Queue,
}

/// PUT of an exchange or a queue: declared through a direct connection as the caller (so the
/// caller's AMQP permissions apply); 201 if it is new, 204 if it existed.
async fn put_declared(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
    what: Declared,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    match what {
        Declared::Exchange => names::check("exchange name", &name)?,
        Declared::Queue => names::check("queue name", &name)?,
    }
    let body = body_json(&body)?;
    let existed = match what {
        Declared::Exchange => view
            .exchanges
            .iter()
            .any(|x| x.vhost == vhost && x.name == name),
        Declared::Queue => view
            .queues
            .iter()
            .any(|q| q.vhost == vhost && q.name == name),
    };
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let r = match what {
        Declared::Exchange => declare_exchange(&mut conn, &name, &body).await,
        Declared::Queue => declare_queue(&mut conn, &name, &body).await,
    };
    conn.close().await;
    r?;
    if existed {
        no_content()
    } else {
        created()
    }
}

async fn delete_exchange(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, _) = session(&ctx, &headers, peer, Need::Management).await?;
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let r = conn
        .call(Method::ExchangeDelete(warren_wire::ExchangeDelete {
            exchange: ShortStr::from(name.as_str()),
            ..Default::default()
        }))
        .await;
    conn.close().await;
    r?;
    no_content()
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: `{"routed": bool}`.
async fn publish(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (caller, _) = session(&ctx, &headers, peer, Need::Management).await?;
    let body = body_json(&body)?;
    let routing_key = str_field(&body, "routing_key").unwrap_or_default();
    names::check("routing key", routing_key)?;
    let payload = str_field(&body, "payload").unwrap_or_default();
    let payload = match str_field(&body, "payload_encoding").unwrap_or("string") {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        _ => payload.as_bytes().to_vec(),
    };
    let props = body.get("properties").cloned().unwrap_or(json!({}));
    let properties = BasicProperties {
        content_type: str_field(&props, "content_type").map(ShortStr::from),
        content_encoding: str_field(&props, "content_encoding").map(ShortStr::from),
        headers: props.get("headers").map(|h| field_table(Some(h))),
        delivery_mode: props
            .get("delivery_mode")
            .and_then(Value::as_u64)
            .and_then(|d| u8::try_from(d).ok()),
        priority: props
            .get("priority")
            .and_then(Value::as_u64)
            .and_then(|d| u8::try_from(d).ok()),
        correlation_id: str_field(&props, "correlation_id").map(ShortStr::from),
        reply_to: str_field(&props, "reply_to").map(ShortStr::from),
        expiration: str_field(&props, "expiration").map(ShortStr::from),
        message_id: str_field(&props, "message_id").map(ShortStr::from),
        timestamp: props.get("timestamp").and_then(Value::as_u64),
        kind: str_field(&props, "type").map(ShortStr::from),
        ..Default::default()
    };
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let r = conn
        .publish(
            exchange_name(&name),
            routing_key,
            properties,
            Bytes::from(payload),
        )
        .await;
    conn.close().await;
    ok(json!({ "routed": r? }))
}

async fn queues(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_queues(ctx, peer, headers, None, params).await
}

async fn queues_in(
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

async fn queue(
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

async fn put_queue(
    ctx: Shared,
    peer: Peer,
    headers: HeaderMap,
    path: Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put_declared(ctx, peer, headers, path, body, Declared::Queue).await
}

async fn delete_queue(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    if !view
        .queues
        .iter()
        .any(|q| q.vhost == vhost && q.name == name)
    {
        return Err(ApiError::not_found());
    }
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let r = conn
        .call(Method::QueueDelete(warren_wire::QueueDelete {
            queue: ShortStr::from(name.as_str()),
            ..Default::default()
        }))
        .await;
    conn.close().await;
    r?;
    no_content()
}

async fn purge_queue(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    if !view
        .queues
        .iter()
        .any(|q| q.vhost == vhost && q.name == name)
    {
        return Err(ApiError::not_found());
    }
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let r = conn
        .call(Method::QueuePurge(warren_wire::QueuePurge {
            queue: ShortStr::from(name.as_str()),
            ..Default::default()
        }))
        .await;
    conn.close().await;
    r?;
    no_content()
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
async fn get_messages(
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

async fn bindings(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_bindings(ctx, peer, headers, None, Bound::Any, params).await
}

async fn bindings_in(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    Query(params): Params,
) -> ApiResult {
    list_bindings(ctx, peer, headers, Some(vhost), Bound::Any, params).await
}

/// `GET /api/queues/{vhost}/{name}/bindings`: the queue's bindings, the default exchange's
/// implicit one first. As RabbitMQ's (`rabbit_binding:list_for_destination`), a queue that does
/// not exist is not refused: it has its implicit binding only.
async fn queue_bindings(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    list_bindings(
        ctx,
        peer,
        headers,
        Some(vhost),
        Bound::ToQueue(name),
        params,
    )
    .await
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/source`: the bindings from the exchange (the
/// default exchange's, `amq.default`, are the implicit ones of every queue in the vhost).
async fn exchange_source_bindings(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let source = exchange_name(&name).to_owned();
    list_bindings(ctx, peer, headers, Some(vhost), Bound::From(source), params).await
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/destination`: the exchange-to-exchange bindings
/// to the exchange.
async fn exchange_destination_bindings(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    list_bindings(
        ctx,
        peer,
        headers,
        Some(vhost),
        Bound::ToExchange(name),
        params,
    )
    .await
}

/// Which bindings a listing shows.
enum Bound {
    Any,
    From(String),
    ToQueue(String),
    ToExchange(String),
}

impl Bound {
    fn holds(&self, b: &BindingView) -> bool {
        match self {
            Bound::Any => true,
            Bound::From(x) => b.source == *x,
            Bound::ToQueue(q) => b.destination_type == "queue" && b.destination == *q,
            Bound::ToExchange(x) => b.destination_type == "exchange" && b.destination == *x,
        }
    }
}

async fn list_bindings(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    headers: HeaderMap,
    vhost: Option<String>,
    bound: Bound,
    params: Vec<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    check_vhost(&caller, &view, vhost.as_deref())?;
    let mut items: Vec<BindingView> = shapes::bindings(&view)
        .filter(|b| vhost.as_deref().is_none_or(|v| b.vhost == v))
        .filter(|b| caller.sees_vhost(&view, &b.vhost))
        .filter(|b| bound.holds(b))
        .collect();
    // RabbitMQ's `implicit_for_destination`: a queue has its default binding, listed even when
    // the queue does not exist.
    if let (Bound::ToQueue(queue), Some(vhost)) = (&bound, &vhost) {
        if items.is_empty() {
            items.push(BindingView {
                vhost: vhost.clone(),
                source: String::new(),
                destination: queue.clone(),
                destination_type: "queue".into(),
                routing_key: queue.clone(),
                arguments: vec![],
            });
        }
    }
    list(
        items.iter().map(shapes::binding).collect(),
        &params,
        listing::BINDINGS,
    )
}

/// The names of a binding fit AMQP's short strings (see [`names`]).
pub(crate) fn check_binding_names(
    source: &str,
    destination: &str,
    body: &Value,
) -> Result<(), ApiError> {
    names::check("source name", source)?;
    names::check("destination name", destination)?;
    names::check(
        "routing key",
        str_field(body, "routing_key").unwrap_or_default(),
    )
}

pub(crate) async fn bind(
    conn: &mut DirectConnection,
    source: &str,
    destination_type: &str,
    destination: &str,
    body: &Value,
) -> Result<(), ApiError> {
    let routing_key = ShortStr::from(str_field(body, "routing_key").unwrap_or_default());
    let arguments = field_table(body.get("arguments"));
    let method = if destination_type.starts_with('q') {
        Method::QueueBind(warren_wire::QueueBind {
            queue: ShortStr::from(destination),
            exchange: ShortStr::from(source),
            routing_key,
            arguments,
            ..Default::default()
        })
    } else {
        Method::ExchangeBind(warren_wire::ExchangeBind {
            destination: ShortStr::from(destination),
            source: ShortStr::from(source),
            routing_key,
            arguments,
            ..Default::default()
        })
    };
    conn.call(method).await?;
    Ok(())
}

async fn add_binding(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let (caller, _) = session(&ctx, &headers, peer, Need::Management).await?;
    if kind != "q" && kind != "e" {
        return Err(ApiError::not_found());
    }
    let body = body_json(&body)?;
    check_binding_names(&source, &destination, &body)?;
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let r = bind(&mut conn, &source, &kind, &destination, &body).await;
    conn.close().await;
    r?;
    created()
}

async fn connections(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    list(
        view.connections
            .iter()
            .filter(|c| caller.sees_user(&c.user))
            .map(shapes::connection)
            .collect(),
        &params,
        listing::BY_VHOST_AND_NAME,
    )
}

async fn connection(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    view.connections
        .iter()
        .find(|c| (c.name == name || c.conn.to_string() == name) && caller.sees_user(&c.user))
        .map_or_else(|| Err(ApiError::not_found()), |c| ok(shapes::connection(c)))
}

/// `DELETE /api/connections/{name}`: 320 CONNECTION_FORCED with the `X-Reason` header's text
/// (RabbitMQ's default: "Closed via management plugin"). Administrators close any connection,
/// other users their own.
async fn close_connection(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    let Some(c) = view
        .connections
        .iter()
        .find(|c| (c.name == name || c.conn.to_string() == name) && caller.sees_user(&c.user))
    else {
        return Err(ApiError::not_found());
    };
    if c.user != caller.name && !caller.is_administrator() {
        return Err(ApiError::not_authorised("Not administrator user"));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_owned();
    if !ctx
        .node
        .management
        .close_connection(c.conn, &reason)
        .await?
    {
        return Err(ApiError::not_found());
    }
    no_content()
}

async fn channels(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    list(
        view.channels
            .iter()
            .filter(|ch| caller.sees_user(&ch.user))
            .filter_map(|ch| {
                let c = view.connections.iter().find(|c| c.conn == ch.conn)?;
                Some(shapes::channel(ch, c))
            })
            .collect(),
        &params,
        listing::BY_VHOST_AND_NAME,
    )
}

async fn consumers(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_consumers(ctx, peer, headers, None, params).await
}

async fn consumers_in(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    Query(params): Params,
) -> ApiResult {
    list_consumers(ctx, peer, headers, Some(vhost), params).await
}

async fn list_consumers(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    headers: HeaderMap,
    vhost: Option<String>,
    params: Vec<(String, String)>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    check_vhost(&caller, &view, vhost.as_deref())?;
    list(
        view.consumers
            .iter()
            .filter(|k| vhost.as_deref().is_none_or(|v| k.vhost == v))
            .filter(|k| caller.sees_vhost(&view, &k.vhost))
            .filter_map(|k| {
                let c = view.connections.iter().find(|c| c.conn == k.conn)?;
                let single_active = view
                    .queues
                    .iter()
                    .find(|q| q.vhost == k.vhost && q.name == k.queue)
                    .is_some_and(shapes::is_single_active);
                Some(shapes::consumer(k, c, single_active))
            })
            .collect(),
        &params,
        listing::UNSORTED,
    )
}

async fn users(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    list(
        view.users.iter().map(|u| shapes::user(u, &view)).collect(),
        &params,
        listing::BY_NAME,
    )
}

async fn user(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    view.users.iter().find(|u| u.name == name).map_or_else(
        || Err(ApiError::not_found()),
        |u| ok(shapes::user(u, &view)),
    )
}

/// User tags as RabbitMQ accepts them: a comma-separated string or a list.
pub(crate) fn tags(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

async fn put_user(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    names::check("user name", &name)?;
    let body = body_json(&body)?;
    // RabbitMQ requires the key (an empty string for no tags).
    if body.get("tags").is_none() {
        return Err(ApiError::bad_request("tags_not_present"));
    }
    let existing = view.users.iter().find(|u| u.name == name);
    let password = str_field(&body, "password").unwrap_or_default().to_owned();
    let mut password_hash = str_field(&body, "password_hash")
        .unwrap_or_default()
        .to_owned();
    if password.is_empty() && password_hash.is_empty() {
        // RabbitMQ keeps the password when only the tags change.
        match existing {
            Some(u) => password_hash = u.password_hash.clone(),
            None => return Err(ApiError::bad_request("give a password or a password_hash")),
        }
    }
    access_change(
        &ctx,
        Change::PutUser(pb::PutUser {
            name,
            password,
            password_hash,
            tags: tags(body.get("tags")),
        }),
    )
    .await?;
    if existing.is_some() {
        no_content()
    } else {
        created()
    }
}

async fn delete_user(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.users.iter().any(|u| u.name == name) {
        return Err(ApiError::not_found());
    }
    access_change(&ctx, Change::DeleteUser(pb::UserName { name })).await?;
    no_content()
}

async fn permissions(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    list(
        view.permissions.iter().map(shapes::permission).collect(),
        &params,
        listing::UNSORTED,
    )
}

async fn permission(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    view.permissions
        .iter()
        .find(|p| p.vhost == vhost && p.user == user)
        .map_or_else(|| Err(ApiError::not_found()), |p| ok(shapes::permission(p)))
}

async fn put_permission(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    let body = body_json(&body)?;
    let existed = view
        .permissions
        .iter()
        .any(|p| p.vhost == vhost && p.user == user);
    access_change(
        &ctx,
        Change::SetPermission(pb::SetPermission {
            user,
            vhost,
            configure: str_field(&body, "configure").unwrap_or_default().to_owned(),
            write: str_field(&body, "write").unwrap_or_default().to_owned(),
            read: str_field(&body, "read").unwrap_or_default().to_owned(),
        }),
    )
    .await?;
    if existed {
        no_content()
    } else {
        created()
    }
}

async fn delete_permission(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view
        .permissions
        .iter()
        .any(|p| p.vhost == vhost && p.user == user)
    {
        return Err(ApiError::not_found());
    }
    access_change(
        &ctx,
        Change::ClearPermission(pb::ClearPermission { user, vhost }),
    )
    .await?;
    no_content()
}
