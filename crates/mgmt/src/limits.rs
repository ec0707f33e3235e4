//! RabbitMQ's limit routes: `/api/vhost-limits[/{vhost}]` and `/api/user-limits[/{user}]` list
//! `{"vhost"|"user", "value": {name: n}}` entries; PUT `/api/vhost-limits/{vhost}/{name}` (and
//! the user's) with `{"value": n}` sets one limit keeping the others, DELETE clears one (204 even
//! if it was not set, as RabbitMQ). Changes go through the Access service; vhost limits are
//! visible to whoever sees the vhost, user limits to administrators.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;
use warren_proto::access as pb;
use warren_proto::access::access_change::Change;

use crate::api::{access_change, body_json, no_content, ok, session, ApiResult, Peer, Shared};
use crate::auth::Need;
use crate::error::ApiError;
use crate::shapes;

/// `GET /api/vhost-limits`: the visible vhosts that have limits.
pub(crate) async fn vhost_limits(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    ok(Value::from(
        view.vhost_limits
            .iter()
            .filter(|l| caller.sees_vhost(&view, &l.owner))
            .map(|l| shapes::limits("vhost", l))
            .collect::<Vec<_>>(),
    ))
}

/// `GET /api/vhost-limits/{vhost}`: a list of one entry, or empty when it has none; 404 for an
/// unknown (or invisible) vhost.
pub(crate) async fn vhost_limits_of(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    if !view.vhosts.contains(&vhost) || !caller.sees_vhost(&view, &vhost) {
        return Err(ApiError::not_found());
    }
    ok(Value::from(
        view.vhost_limits
            .iter()
            .filter(|l| l.owner == vhost)
            .map(|l| shapes::limits("vhost", l))
            .collect::<Vec<_>>(),
    ))
}

/// `GET /api/user-limits`: the users that have limits.
pub(crate) async fn user_limits(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    ok(Value::from(
        view.user_limits
            .iter()
            .map(|l| shapes::limits("user", l))
            .collect::<Vec<_>>(),
    ))
}

/// `GET /api/user-limits/{user}`: a list of one entry, or empty; 404 for an unknown user.
pub(crate) async fn user_limits_of(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.users.iter().any(|u| u.name == user) {
        return Err(ApiError::not_found());
    }
    ok(Value::from(
        view.user_limits
            .iter()
            .filter(|l| l.owner == user)
            .map(|l| shapes::limits("user", l))
            .collect::<Vec<_>>(),
    ))
}

/// The `value` of a limit's PUT body: an integer (negative: no limit), with RabbitMQ's
/// refusals.
fn limit_value(body: &Bytes, name: &str) -> Result<i64, ApiError> {
    let body = body_json(body)?;
    let value = body
        .get("value")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    value.as_i64().ok_or_else(|| {
        ApiError::bad_request(format!("{name} should be a number, actually was {value}"))
    })
}

/// `PUT /api/vhost-limits/{vhost}/{name}` with `{"value": n}`.
pub(crate) async fn put_vhost_limit(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.vhosts.contains(&vhost) {
        return Err(ApiError::vhost_not_found());
    }
    let value = limit_value(&body, &name)?;
    access_change(
        &ctx,
        Change::SetVhostLimits(pb::SetVhostLimits {
            vhost,
            limits: vec![pb::Limit { name, value }],
            replace: false,
        }),
    )
    .await?;
    no_content()
}

/// `DELETE /api/vhost-limits/{vhost}/{name}`.
pub(crate) async fn delete_vhost_limit(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.vhosts.contains(&vhost) {
        return Err(ApiError::vhost_not_found());
    }
    access_change(
        &ctx,
        Change::ClearVhostLimits(pb::ClearVhostLimits {
            vhost,
            names: vec![name],
        }),
    )
    .await?;
    no_content()
}

/// `PUT /api/user-limits/{user}/{name}` with `{"value": n}`.
pub(crate) async fn put_user_limit(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((user, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    session(&ctx, &headers, peer, Need::Administrator).await?;
    let value = limit_value(&body, &name)?;
    access_change(
        &ctx,
        Change::SetUserLimits(pb::SetUserLimits {
            user,
            limits: vec![pb::Limit { name, value }],
            replace: false,
        }),
    )
    .await?;
    no_content()
}

/// `DELETE /api/user-limits/{user}/{name}`: 404 for an unknown user.
pub(crate) async fn delete_user_limit(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.users.iter().any(|u| u.name == user) {
        return Err(ApiError::not_found());
    }
    access_change(
        &ctx,
        Change::ClearUserLimits(pb::ClearUserLimits {
            user,
            names: vec![name],
        }),
    )
    .await?;
    no_content()
}
