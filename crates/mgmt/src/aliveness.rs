//! `GET /api/aliveness-test/{vhost}`, as RabbitMQ 3.10's management plugin answers it: through
//! a direct connection of the caller, declare the queue `aliveness-test` (not durable, so it
//! lives on the node asked), publish a message to it and get it back. `{"status":"ok"}`; 503
//! `{"status":"failed","reason":...}` when the message does not come back.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use serde_json::json;
use tracing::warn;
use warren_server::direct::{DirectConnection, DirectError};
use warren_wire::{BasicProperties, Method, ShortStr};

use crate::api::{direct, ok, session, ApiResult, Peer, Shared};
use crate::auth::Need;
use crate::error::ApiError;

/// The queue RabbitMQ's aliveness test uses (and leaves in place, so a test every few seconds
/// declares nothing new).
const QUEUE: &str = "aliveness-test";
/// The message it publishes.
const PAYLOAD: &[u8] = b"test_message";

pub(crate) async fn aliveness_test(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    if !view.vhosts.contains(&vhost) {
        return Err(ApiError::not_found());
    }
    let mut conn = direct(&ctx, &caller, &vhost).await?;
    let result = round_trip(&mut conn).await;
    conn.close().await;
    let reason = match result {
        Ok(true) => return ok(json!({"status": "ok"})),
        Ok(false) => "aliveness-test queue is empty".to_owned(),
        // Refused by the broker (permissions, an inequivalent `aliveness-test`): RabbitMQ's
        // answer to a refused channel operation.
        Err(e @ DirectError::Refused(_)) => return Err(e.into()),
        Err(e) => e.to_string(),
    };
    warn!(%vhost, %reason, "aliveness test failed");
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": reason})),
    )
        .into_response())
}

/// Declares the queue, publishes to it and gets a message back (acked): whether one came.
async fn round_trip(conn: &mut DirectConnection) -> Result<bool, DirectError> {
    conn.call(Method::QueueDeclare(warren_wire::QueueDeclare {
        queue: ShortStr::from(QUEUE),
        ..Default::default()
    }))
    .await?;
    conn.publish(
        "",
        QUEUE,
        BasicProperties::default(),
        Bytes::from_static(PAYLOAD),
    )
    .await?;
    match conn.get(QUEUE).await? {
        Some(m) => {
            conn.settle(m.delivery_tag, None).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}
