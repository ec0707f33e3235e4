//! RabbitMQ's topic-permission routes (administrators only, as RabbitMQ's): `/api/topic-permissions`,
//! `/api/topic-permissions/{vhost}/{user}` (GET the user's list in the vhost, PUT one exchange's
//! `{"exchange", "write", "read"}`, DELETE all of them), `/api/vhosts/{vhost}/topic-permissions`
//! and `/api/users/{user}/topic-permissions`. Changes go through the Access service.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;
use warren_core::view::{BrokerView, TopicPermissionView};
use warren_proto::access as pb;
use warren_proto::access::access_change::Change;

use crate::api::{
    access_change, body_json, created, no_content, ok, session, ApiResult, Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::shapes;

fn listing<'a>(
    view: &'a BrokerView,
    keep: impl Fn(&TopicPermissionView) -> bool + 'a,
) -> Vec<Value> {
    view.topic_permissions
        .iter()
        .filter(|p| keep(p))
        .map(shapes::topic_permission)
        .collect()
}

/// `GET /api/topic-permissions`.
pub(crate) async fn list(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    ok(Value::from(listing(&view, |_| true)))
}

/// `GET /api/topic-permissions/{vhost}/{user}`: 404 when the user has none there.
pub(crate) async fn of_user_in_vhost(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    let found = listing(&view, |p| p.vhost == vhost && p.user == user);
    if found.is_empty() {
        return Err(ApiError::not_found());
    }
    ok(Value::from(found))
}

/// `GET /api/vhosts/{vhost}/topic-permissions`: 404 for an unknown vhost.
pub(crate) async fn in_vhost(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.vhosts.contains(&vhost) {
        return Err(ApiError::not_found());
    }
    ok(Value::from(listing(&view, |p| p.vhost == vhost)))
}

/// `GET /api/users/{user}/topic-permissions`: 404 for an unknown user.
pub(crate) async fn of_user(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.users.iter().any(|u| u.name == user) {
        return Err(ApiError::not_found());
    }
    ok(Value::from(listing(&view, |p| p.user == user)))
}

/// `PUT /api/topic-permissions/{vhost}/{user}` with `{"exchange", "write", "read"}` (all three
/// required, as RabbitMQ's): 201 if the user had none in the vhost, else 204.
pub(crate) async fn put(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view.vhosts.contains(&vhost) || !view.users.iter().any(|u| u.name == user) {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let body = body_json(&body)?;
    let field = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(format!("[{{key_missing,{key}}}]")))
    };
    let (exchange, write, read) = (field("exchange")?, field("write")?, field("read")?);
    let existed = view
        .topic_permissions
        .iter()
        .any(|p| p.vhost == vhost && p.user == user);
    access_change(
        &ctx,
        Change::SetTopicPermission(pb::SetTopicPermission {
            user,
            vhost,
            exchange,
            write,
            read,
        }),
    )
    .await?;
    if existed {
        no_content()
    } else {
        created()
    }
}

/// `DELETE /api/topic-permissions/{vhost}/{user}`: every topic permission of the user in the
/// vhost (404 if it has none).
pub(crate) async fn delete(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    if !view
        .topic_permissions
        .iter()
        .any(|p| p.vhost == vhost && p.user == user)
    {
        return Err(ApiError::not_found());
    }
    access_change(
        &ctx,
        Change::ClearTopicPermission(pb::ClearTopicPermission {
            user,
            vhost,
            exchange: None,
        }),
    )
    .await?;
    no_content()
}
