//! Consumers: `/api/consumers` and `/api/consumers/{vhost}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;

use super::{check_vhost, list, session, ApiResult, Params, Peer, Shared};
use crate::auth::Need;
use crate::listing;
use crate::shapes;
use crate::Ctx;

pub(super) async fn consumers(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list_consumers(ctx, peer, headers, None, params).await
}

pub(super) async fn consumers_in(
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
