//! Exchanges: `/api/exchanges`, `/api/exchanges/{vhost}`, `/api/exchanges/{vhost}/{name}` and
//! publishing through `/api/exchanges/{vhost}/{name}/publish`. Their bindings are in `bindings`.

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
    body_json, bool_field, call_direct, check_vhost, direct, field_table, list, no_content, ok,
    put_declared, query_flag, session, str_field, ApiResult, Declared, Params, Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::names;
use crate::shapes;
use crate::Ctx;

pub(super) async fn exchanges(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_exchanges(ctx, peer, headers, None, params).await
}

pub(super) async fn exchanges_in(
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
pub(super) fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

pub(super) async fn exchange(
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

pub(super) async fn put_exchange(
    ctx: Shared,
    peer: Peer,
    headers: HeaderMap,
    path: Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put_declared(ctx, peer, headers, path, body, Declared::Exchange).await
}

/// Whether `vhost` holds an exchange named `name` (a name already mapped by [`exchange_name`]).
pub(super) fn exchange_exists(view: &BrokerView, vhost: &str, name: &str) -> bool {
    view.exchanges
        .iter()
        .any(|x| x.vhost == vhost && x.name == name)
}

/// `DELETE /api/exchanges/{vhost}/{name}`: 204; 404 if the vhost or the exchange does not exist;
/// with `if-unused=true`, 400 if it is the source of a binding.
/// The default exchange and `amq.*` exchanges are refused by `exchange.delete` itself (403,
/// answered 401 as every AMQP access refusal).
pub(super) async fn delete_exchange(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Params,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    let name = exchange_name(&name);
    // `exchange.delete` of a missing exchange succeeds; RabbitMQ's API answers 404 before it
    // sends one (its `resource_exists`).
    if !exchange_exists(&view, &vhost, name) {
        return Err(ApiError::not_found());
    }
    call_direct(
        &ctx,
        &caller,
        &vhost,
        Method::ExchangeDelete(warren_wire::ExchangeDelete {
            exchange: ShortStr::from(name),
            // RabbitMQ's `if-unused=true`: an exchange that is a binding's source stays (400).
            if_unused: query_flag(&params, "if-unused"),
            ..Default::default()
        }),
    )
    .await?;
    no_content()
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: `{"routed": bool}`.
pub(super) async fn publish(
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
