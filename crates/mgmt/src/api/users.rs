//! Users: `/api/users` and `/api/users/{name}` (listed from the view, changed through the Access
//! service).

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;
use warren_proto::access as pb;
use warren_proto::access::access_change::Change;

use super::{
    access_change, body_json, created, list, no_content, ok, session, str_field, ApiResult, Params,
    Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::names;
use crate::shapes;

pub(super) async fn users(
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

pub(super) async fn user(
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

pub(super) async fn put_user(
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

pub(super) async fn delete_user(
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
