//! RabbitMQ's policy routes: `/api/policies[/{vhost}[/{name}]]` and the same under
//! `/api/operator-policies`, in RabbitMQ's JSON (`vhost`, `name`, `pattern`, `apply-to`,
//! `definition`, `priority`). A PUT is checked here as the leader checks it
//! (`warren_core::policy::Policy::new`), so a bad one answers 400 with RabbitMQ's reason and
//! changes nothing; a good one goes through the Access service like every operator change. What
//! a policy does to queues and exchanges is the core's (`warren_core::policy`), not this file's.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tracing::warn;
use warren_core::policy::{is_mirroring_key, Policy};
use warren_core::view::{BrokerView, PolicyView};
use warren_proto::access as pb;
use warren_proto::access::access_change::Change;

use crate::api::{
    access_change, body_json, check_vhost, created, field_table, no_content, ok, session,
    ApiResult, Params, Peer, Shared,
};
use crate::auth::Need;
use crate::error::ApiError;
use crate::listing;
use crate::names;
use crate::shapes;
use crate::Ctx;

/// Which of RabbitMQ's two kinds a route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `/api/policies`: administrators, and policymakers in their vhosts.
    Policy,
    /// `/api/operator-policies`: administrators only.
    Operator,
}

impl Kind {
    fn is_operator(self) -> bool {
        self == Kind::Operator
    }
}

/// `GET /api/policies`.
pub(crate) async fn policies(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list(ctx, peer, headers, None, params, Kind::Policy).await
}

/// `GET /api/policies/{vhost}`.
pub(crate) async fn policies_in(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    Query(params): Params,
) -> ApiResult {
    list(ctx, peer, headers, Some(vhost), params, Kind::Policy).await
}

/// `GET /api/operator-policies`.
pub(crate) async fn operator_policies(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(params): Params,
) -> ApiResult {
    list(ctx, peer, headers, None, params, Kind::Operator).await
}

/// `GET /api/operator-policies/{vhost}`.
pub(crate) async fn operator_policies_in(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    Query(params): Params,
) -> ApiResult {
    list(ctx, peer, headers, Some(vhost), params, Kind::Operator).await
}

/// `GET /api/policies/{vhost}/{name}`.
pub(crate) async fn policy(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    get_one(&ctx, peer, &headers, &vhost, &name, Kind::Policy).await
}

/// `PUT /api/policies/{vhost}/{name}`.
pub(crate) async fn put_policy(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put(&ctx, peer, &headers, vhost, name, &body, Kind::Policy).await
}

/// `DELETE /api/policies/{vhost}/{name}`.
pub(crate) async fn delete_policy(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    delete(&ctx, peer, &headers, vhost, name, Kind::Policy).await
}

/// `GET /api/operator-policies/{vhost}/{name}`.
pub(crate) async fn operator_policy(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    get_one(&ctx, peer, &headers, &vhost, &name, Kind::Operator).await
}

/// `PUT /api/operator-policies/{vhost}/{name}`.
pub(crate) async fn put_operator_policy(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put(&ctx, peer, &headers, vhost, name, &body, Kind::Operator).await
}

/// `DELETE /api/operator-policies/{vhost}/{name}`.
pub(crate) async fn delete_operator_policy(
    State(ctx): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    delete(&ctx, peer, &headers, vhost, name, Kind::Operator).await
}

/// A listing, as RabbitMQ's (`rabbit_mgmt_wm_policies`): any management user, the vhosts it
/// sees, sorted by priority.
async fn list(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    headers: HeaderMap,
    vhost: Option<String>,
    params: Vec<(String, String)>,
    kind: Kind,
) -> ApiResult {
    let (caller, view) = session(&ctx, &headers, peer, Need::Management).await?;
    check_vhost(&caller, &view, vhost.as_deref())?;
    crate::api::list(
        view.policies
            .iter()
            .filter(|p| p.operator == kind.is_operator())
            .filter(|p| vhost.as_deref().is_none_or(|v| p.vhost == v))
            .filter(|p| caller.sees_vhost(&view, &p.vhost))
            .map(shapes::policy)
            .collect(),
        &params,
        listing::BY_PRIORITY,
    )
}

/// The view, once the caller may use policy `vhost`/... of `kind`: RabbitMQ's
/// `is_authorized_policies` for policies, `is_authorized_admin` for operator policies.
async fn authorised(
    ctx: &Ctx,
    peer: SocketAddr,
    headers: &HeaderMap,
    vhost: &str,
    kind: Kind,
) -> Result<BrokerView, ApiError> {
    match kind {
        Kind::Operator => Ok(session(ctx, headers, peer, Need::Administrator).await?.1),
        Kind::Policy => {
            let (caller, view) = session(ctx, headers, peer, Need::Management).await?;
            if !caller.makes_policies_in(&view, vhost) {
                return Err(ApiError::not_authorised(
                    "User not authorised to access object",
                ));
            }
            Ok(view)
        }
    }
}

fn find<'a>(view: &'a BrokerView, vhost: &str, name: &str, kind: Kind) -> Option<&'a PolicyView> {
    view.policies
        .iter()
        .find(|p| p.operator == kind.is_operator() && p.vhost == vhost && p.name == name)
}

async fn get_one(
    ctx: &Ctx,
    peer: SocketAddr,
    headers: &HeaderMap,
    vhost: &str,
    name: &str,
    kind: Kind,
) -> ApiResult {
    let view = authorised(ctx, peer, headers, vhost, kind).await?;
    find(&view, vhost, name, kind)
        .map_or_else(|| Err(ApiError::not_found()), |p| ok(shapes::policy(p)))
}

/// Creates (201) or replaces (204) a policy; 404 for an unknown vhost, 400 with RabbitMQ's
/// reason for a body that does not make a valid policy (nothing is changed then).
async fn put(
    ctx: &Ctx,
    peer: SocketAddr,
    headers: &HeaderMap,
    vhost: String,
    name: String,
    body: &Bytes,
    kind: Kind,
) -> ApiResult {
    let view = authorised(ctx, peer, headers, &vhost, kind).await?;
    if !view.vhosts.contains(&vhost) {
        return Err(ApiError::vhost_not_found());
    }
    let body = body_json(body)?;
    let change = from_json(&vhost, &name, &body, kind.is_operator())?;
    let existed = find(&view, &vhost, &name, kind).is_some();
    access_change(ctx, Change::SetPolicy(change)).await?;
    if existed {
        no_content()
    } else {
        created()
    }
}

/// Removes a policy (204); 404 if there is none of that name.
async fn delete(
    ctx: &Ctx,
    peer: SocketAddr,
    headers: &HeaderMap,
    vhost: String,
    name: String,
    kind: Kind,
) -> ApiResult {
    let view = authorised(ctx, peer, headers, &vhost, kind).await?;
    if find(&view, &vhost, &name, kind).is_none() {
        return Err(ApiError::not_found());
    }
    access_change(
        ctx,
        Change::ClearPolicy(pb::ClearPolicy {
            vhost,
            name,
            operator: kind.is_operator(),
        }),
    )
    .await?;
    no_content()
}

/// Policy `name` of `vhost` from its JSON (a PUT body, an entry of a definitions file), as
/// RabbitMQ's `rabbit_policy:set` reads it: `pattern` and `definition` are required, `priority`
/// is 0 and `apply-to` "all" when absent. Checked as the leader checks it; the error is 400
/// with RabbitMQ's reason. `ha-*` keys (classic mirroring, gone in RabbitMQ 4) are accepted,
/// have no effect, and are logged as such.
pub(crate) fn from_json(
    vhost: &str,
    name: &str,
    body: &Value,
    operator: bool,
) -> Result<pb::SetPolicy, ApiError> {
    let missing: Vec<&str> = ["pattern", "definition"]
        .into_iter()
        .filter(|k| body.get(*k).is_none_or(Value::is_null))
        .collect();
    if !missing.is_empty() {
        let keys: Vec<String> = missing
            .iter()
            .map(|k| format!("{{key_missing,{k}}}"))
            .collect();
        return Err(ApiError::bad_request(format!("[{}]", keys.join(","))));
    }
    let invalid = |why: String| ApiError::bad_request(format!("Validation failed\n\n{why}"));
    let pattern = match &body["pattern"] {
        Value::String(s) => s.as_str(),
        other => {
            return Err(invalid(format!(
                "pattern should be a string, actually was {other}"
            )))
        }
    };
    let definition = match &body["definition"] {
        d @ Value::Object(map) => {
            for key in map.keys() {
                names::check("a policy definition key", key)?;
            }
            field_table(Some(d))
        }
        other => return Err(invalid(format!("definition must be a dictionary: {other}"))),
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid(format!("priority should be a number, actually was {v}")))?,
    };
    let apply_to = match body.get("apply-to") {
        None | Some(Value::Null) => "all",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(invalid(format!(
                "apply-to {other} unrecognised; should be one of: 'queues', 'classic_queues', \
                 'quorum_queues', 'streams', 'exchanges', or 'all'"
            )))
        }
    };
    Policy::new(
        name,
        pattern,
        apply_to,
        priority,
        definition.clone(),
        operator,
    )
    .map_err(ApiError::bad_request)?;
    for (key, _) in definition.iter().filter(|(k, _)| is_mirroring_key(k)) {
        warn!(
            vhost,
            policy = name,
            key,
            "classic queue mirroring is gone in RabbitMQ 4: \
             the policy key is accepted and has no effect"
        );
    }
    let mut encoded = BytesMut::new();
    warren_wire::encode_table(&mut encoded, &definition);
    Ok(pb::SetPolicy {
        vhost: vhost.to_owned(),
        name: name.to_owned(),
        operator,
        pattern: pattern.to_owned(),
        apply_to: apply_to.to_owned(),
        priority,
        definition: encoded.freeze(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(body: Value, operator: bool) -> String {
        from_json("/", "p", &body, operator)
            .map(|_| String::new())
            .unwrap_or_else(|e| format!("{} {}", e.status.as_u16(), e.reason))
    }

    #[test]
    fn bodies_are_read_and_refused_as_rabbitmq_reads_them() {
        let set = from_json(
            "/",
            "p",
            &json!({"pattern": "^a", "definition": {"max-length": 2}}),
            false,
        )
        .expect("valid");
        assert_eq!(
            (set.priority, set.apply_to.as_str()),
            (0, "all"),
            "RabbitMQ's defaults"
        );
        let table = warren_wire::decode_table(set.definition).expect("an AMQP table");
        assert_eq!(table.get("max-length").and_then(|v| v.as_i64()), Some(2));

        assert_eq!(
            reason(json!({"definition": {"max-length": 2}}), false),
            "400 [{key_missing,pattern}]"
        );
        assert_eq!(
            reason(json!({}), false),
            "400 [{key_missing,pattern},{key_missing,definition}]"
        );
        assert!(reason(json!({"pattern": "^a", "definition": [1]}), false)
            .starts_with("400 Validation failed\n\ndefinition must be a dictionary"));
        assert!(reason(
            json!({"pattern": "^a", "definition": {"max-length": 1}, "priority": "high"}),
            false
        )
        .contains("priority should be a number"));
        for bad in [
            json!({"pattern": "(", "definition": {"max-length": 1}}),
            json!({"pattern": "^a", "definition": {"max-length": -1}}),
            json!({"pattern": "^a", "definition": {"no-such-key": 1}}),
            json!({"pattern": "^a", "definition": {"max-length": 1}, "apply-to": "tables"}),
            json!({"pattern": "^a", "definition": {}}),
        ] {
            assert!(
                reason(bad.clone(), false).starts_with("400 Validation failed"),
                "{bad}: {}",
                reason(bad.clone(), false)
            );
        }
        assert_eq!(
            reason(
                json!({"pattern": ".*", "definition": {"ha-mode": "all"}}),
                false
            ),
            "",
            "accepted, without effect"
        );
        assert!(reason(
            json!({"pattern": ".*", "definition": {"dead-letter-exchange": "x"}}),
            true
        )
        .contains("operator policy"));
        assert!(reason(
            json!({"pattern": ".*", "definition": {"ha-mode": "all"}}),
            true
        )
        .starts_with("400"));
    }
}
