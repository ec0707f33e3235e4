//! Client connections and their channels: `/api/connections`, `/api/connections/{name}`
//! (closing one with DELETE) and `/api/channels`.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;

use super::{list, no_content, ok, session, ApiResult, Params, Peer, Shared};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::shapes;

pub(super) async fn connections(
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

pub(super) async fn connection(
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
pub(super) async fn close_connection(
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

pub(super) async fn channels(
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
