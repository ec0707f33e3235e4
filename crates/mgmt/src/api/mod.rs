//! The `/api` routes: RabbitMQ's management HTTP API paths, answered from the deciding broker's
//! view, the Access service and direct connections (see the crate docs). One file per resource,
//! as in RabbitMQ's management plugin; this one holds the router and what the handlers share
//! (policies, limits, topic permissions and definitions have their modules beside `api`).

pub(crate) mod bindings;
mod connections;
mod consumers;
pub(crate) mod exchanges;
mod nodes;
mod overview;
mod permissions;
pub(crate) mod queues;
pub(crate) mod users;
mod vhosts;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tonic::Request;
use warren_core::view::BrokerView;
use warren_proto::access::access_change::Change;
use warren_proto::access::access_server::Access;
use warren_proto::access::AccessChange;
use warren_server::direct::DirectConnection;
use warren_wire::{FieldTable, FieldValue, Method};

use self::exchanges::{declare_exchange, exchange_exists, exchange_name};
use self::queues::declare_queue;
use crate::auth::{self, Caller, Need};
use crate::error::ApiError;
use crate::listing::{ListQuery, Listing};
use crate::names;
use crate::Ctx;

pub(crate) type Shared = State<Arc<Ctx>>;
pub(crate) type Peer = ConnectInfo<SocketAddr>;
pub(crate) type ApiResult = Result<Response, ApiError>;
/// A request's query parameters, decoded, in order.
pub(crate) type Params = Query<Vec<(String, String)>>;

/// A query-string flag such as RabbitMQ's `if-unused=true`: set when given as `true`.
pub(crate) fn query_flag(params: &[(String, String)], name: &str) -> bool {
    params.iter().any(|(k, v)| k == name && v == "true")
}

pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/whoami", get(overview::whoami))
        .route("/api/cluster-name", get(overview::cluster_name))
        .route("/api/nodes", get(nodes::nodes))
        .route("/api/nodes/{name}", get(nodes::node))
        .route("/api/healthchecks/node", get(overview::healthcheck))
        .route(
            "/api/aliveness-test/{vhost}",
            get(crate::aliveness::aliveness_test),
        )
        .route("/api/vhosts", get(vhosts::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(vhosts::vhost)
                .put(vhosts::put_vhost)
                .delete(vhosts::delete_vhost),
        )
        .route("/api/exchanges", get(exchanges::exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges::exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchanges::exchange)
                .put(exchanges::put_exchange)
                .delete(exchanges::delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(exchanges::publish),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings::exchange_source_bindings),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings::exchange_destination_bindings),
        )
        .route("/api/queues", get(queues::queues))
        .route("/api/queues/{vhost}", get(queues::queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queues::queue)
                .put(queues::put_queue)
                .delete(queues::delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(queues::purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/get", post(queues::get_messages))
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings::queue_bindings),
        )
        .route("/api/bindings", get(bindings::bindings))
        .route("/api/bindings/{vhost}", get(bindings::bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            post(bindings::add_binding),
        )
        .route("/api/connections", get(connections::connections))
        .route(
            "/api/connections/{name}",
            get(connections::connection).delete(connections::close_connection),
        )
        .route("/api/channels", get(connections::channels))
        .route("/api/consumers", get(consumers::consumers))
        .route("/api/consumers/{vhost}", get(consumers::consumers_in))
        .route("/api/users", get(users::users))
        .route(
            "/api/users/{name}",
            get(users::user)
                .put(users::put_user)
                .delete(users::delete_user),
        )
        .route("/api/permissions", get(permissions::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permissions::permission)
                .put(permissions::put_permission)
                .delete(permissions::delete_permission),
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

/// 200 with `v` as the JSON body.
pub(crate) fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// A list as RabbitMQ answers it: sorted, cut to columns and paged as the query asks.
pub(crate) fn list(items: Vec<Value>, params: &[(String, String)], listing: Listing) -> ApiResult {
    ok(ListQuery::new(params).reply(items, listing)?)
}

/// 204 with no body: a change that was made (or a PUT of something that already existed).
pub(crate) fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// 201 with no body: a PUT that made something new.
pub(crate) fn created() -> ApiResult {
    Ok(StatusCode::CREATED.into_response())
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

/// Sends one method on a direct connection of the caller to `vhost` (opened and closed
/// around it) and returns the reply: the API's operations that are one AMQP method.
pub(crate) async fn call_direct(
    ctx: &Ctx,
    caller: &Caller,
    vhost: &str,
    method: Method,
) -> Result<Method, ApiError> {
    let mut conn = direct(ctx, caller, vhost).await?;
    let reply = conn.call(method).await;
    conn.close().await;
    Ok(reply?)
}

/// A request body as JSON: `{}` when empty, 400 when it is not JSON.
pub(crate) fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

fn bool_field(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// `v[key]` if it is a string; `None` if it is missing or of another type.
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
        Declared::Exchange => exchange_exists(&view, &vhost, exchange_name(&name)),
        Declared::Queue => queues::queue_exists(&view, &vhost, &name),
    };
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let r = match what {
        // `amq.default` declares the default exchange, which `exchange.declare` refuses, as
        // RabbitMQ's API does (it maps the name the same way).
        Declared::Exchange => declare_exchange(&mut conn, exchange_name(&name), &body).await,
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
