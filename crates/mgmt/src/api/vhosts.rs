//! Virtual hosts: `/api/vhosts` and `/api/vhosts/{vhost}` (listed from the view, changed
//! through the Access service).

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use warren_proto::access as pb;
use warren_proto::access::access_change::Change;

use super::{
    access_change, created, list, no_content, ok, session, ApiResult, Params, Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::names;
use crate::shapes;

pub(super) async fn vhosts(
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

pub(super) async fn vhost(
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

pub(super) async fn put_vhost(
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

pub(super) async fn delete_vhost(
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
