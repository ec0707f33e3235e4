//! Bindings: `/api/bindings`, `/api/bindings/{vhost}`, adding one through
//! `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}`, and the bindings of a queue
//! (`/api/queues/{vhost}/{name}/bindings`) and of an exchange (`.../bindings/source|destination`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;
use warren_core::view::BindingView;
use warren_server::direct::DirectConnection;
use warren_wire::{Method, ShortStr};

use super::exchanges::exchange_name;
use super::{
    body_json, check_vhost, created, direct, field_table, list, session, str_field, ApiResult,
    Params, Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::names;
use crate::shapes;
use crate::Ctx;

pub(super) async fn bindings(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_bindings(ctx, peer, headers, None, Bound::Any, params).await
}

pub(super) async fn bindings_in(
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
pub(super) async fn queue_bindings(
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
pub(super) async fn exchange_source_bindings(
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
pub(super) async fn exchange_destination_bindings(
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

pub(super) async fn add_binding(
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
