//! Users' permissions in vhosts: `/api/permissions` and `/api/permissions/{vhost}/{user}`
//! (listed from the view, changed through the Access service). Topic permissions are in
//! `topic_permissions`.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use warren_proto::access as pb;
use warren_proto::access::access_change::Change;

use super::{
    access_change, body_json, created, list, no_content, ok, session, str_field, ApiResult, Params,
    Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::shapes;

pub(super) async fn permissions(
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

pub(super) async fn permission(
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

pub(super) async fn put_permission(
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

pub(super) async fn delete_permission(
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
