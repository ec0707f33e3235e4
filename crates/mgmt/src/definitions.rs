//! `GET/POST /api/definitions`: the cluster's users (with their limits), vhosts, permissions,
//! topic permissions, vhost limits, policies, exchanges, queues and bindings in RabbitMQ's
//! definitions format, and importing such a file (RabbitMQ's own exports included). Operator
//! policies travel where RabbitMQ puts them: `operator_policy` entries of `parameters`. Vhost
//! limits are exported where RabbitMQ 3.10 puts them (a `vhost-limits` runtime parameter) and
//! where later versions also do (the vhost's `limits`); both are read on import. Users, vhosts,
//! permissions, policies and limits go through the Access service (committed through Raft);
//! exchanges, queues and bindings are declared through a direct connection of the importing
//! administrator in each vhost, so the administrator needs permissions there (given in the same
//! file, as RabbitMQ's exports do for their users). Limits are set after the topology, so that
//! they never refuse the import's own connections and queues.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use warren_proto::access as pb;
use warren_proto::access::access_change::Change;

use crate::api::bindings::{bind, check_binding_names};
use crate::api::exchanges::declare_exchange;
use crate::api::queues::declare_queue;
use crate::api::users::tags;
use crate::api::{access_change, direct, session};
use crate::auth::Need;
use crate::error::ApiError;
use crate::names;
use crate::policies;
use crate::shapes;
use crate::Ctx;

/// The runtime parameter component of operator policies in RabbitMQ's definitions.
const OPERATOR_POLICY: &str = "operator_policy";

/// Exchanges every vhost has: never exported, skipped on import.
fn predeclared(name: &str) -> bool {
    name.is_empty() || name.starts_with("amq.")
}

pub(crate) async fn export(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, view) = session(&ctx, &headers, peer, Need::Administrator).await?;
    let exchanges: Vec<Value> = view
        .exchanges
        .iter()
        .filter(|x| !predeclared(&x.name))
        .map(|x| {
            json!({
                "name": x.name, "vhost": x.vhost, "type": x.kind, "durable": x.durable,
                "auto_delete": x.auto_delete, "internal": x.internal,
                "arguments": shapes::args(&x.arguments),
            })
        })
        .collect();
    let queues: Vec<Value> = view
        .queues
        .iter()
        .filter(|q| q.exclusive_owner.is_none())
        .map(|q| {
            json!({
                "name": q.name, "vhost": q.vhost, "durable": q.durable,
                "auto_delete": q.auto_delete, "arguments": shapes::args(&q.arguments),
            })
        })
        .collect();
    let bindings: Vec<Value> = view
        .bindings
        .iter()
        .map(|b| {
            json!({
                "source": b.source, "vhost": b.vhost, "destination": b.destination,
                "destination_type": b.destination_type, "routing_key": b.routing_key,
                "arguments": shapes::args(&b.arguments),
            })
        })
        .collect();
    Ok(Json(json!({
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": view.users.iter().map(|u| json!({
            "name": u.name, "password_hash": u.password_hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": u.tags,
            "limits": shapes::limits_value(shapes::owner_limits(&view.user_limits, &u.name)),
        })).collect::<Vec<_>>(),
        "vhosts": view.vhosts.iter().map(|v| {
            // An empty Erlang proplist, as RabbitMQ writes a vhost without limits.
            let limits = match shapes::owner_limits(&view.vhost_limits, v) {
                [] => json!([]),
                l => shapes::limits_value(l),
            };
            json!({"name": v, "limits": limits, "metadata": {"description": "", "tags": []}})
        }).collect::<Vec<_>>(),
        "permissions": view.permissions.iter().map(shapes::permission).collect::<Vec<_>>(),
        "topic_permissions": view
            .topic_permissions
            .iter()
            .map(shapes::topic_permission)
            .collect::<Vec<_>>(),
        "parameters": view.vhost_limits.iter().map(|l| json!({
            "value": shapes::limits_value(&l.limits), "vhost": l.owner,
            "component": "vhost-limits", "name": "limits",
        })).chain(view.policies.iter().filter(|p| p.operator).map(|p| {
            // RabbitMQ keeps operator policies as runtime parameters and exports them so.
            let mut value = shapes::policy(p);
            if let Some(v) = value.as_object_mut() {
                v.remove("vhost");
                v.remove("name");
            }
            json!({"value": value, "vhost": p.vhost, "component": OPERATOR_POLICY, "name": p.name})
        })).collect::<Vec<_>>(),
        "global_parameters": [],
        "policies": view
            .policies
            .iter()
            .filter(|p| !p.operator)
            .map(shapes::policy)
            .collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }))
    .into_response())
}

fn list<'a>(defs: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    defs.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The vhost of a topology item: its own, or the file's (a single-vhost export has none).
fn vhost_of<'a>(v: &'a Value, default: &'a str) -> &'a str {
    v.get("vhost").and_then(Value::as_str).unwrap_or(default)
}

pub(crate) async fn import(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (caller, _) = session(&ctx, &headers, peer, Need::Administrator).await?;
    let defs: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not a definitions file: {e}")))?;
    if !defs.is_object() {
        return Err(ApiError::bad_request(
            "not a definitions file: not a JSON object",
        ));
    }
    check_names(&defs)?;
    let policies = policies_of(&defs)?;
    for v in list(&defs, "vhosts") {
        access_change(
            &ctx,
            Change::PutVhost(pb::VhostName {
                name: text(v, "name").into(),
            }),
        )
        .await?;
    }
    for u in list(&defs, "users") {
        let algorithm = text(u, "hashing_algorithm");
        if !algorithm.is_empty() && algorithm != "rabbit_password_hashing_sha256" {
            return Err(ApiError::bad_request(format!(
                "user '{}': hashing algorithm '{algorithm}' is not supported (only rabbit_password_hashing_sha256)",
                text(u, "name")
            )));
        }
        access_change(
            &ctx,
            Change::PutUser(pb::PutUser {
                name: text(u, "name").into(),
                password: String::new(),
                password_hash: text(u, "password_hash").into(),
                tags: tags(u.get("tags")),
            }),
        )
        .await?;
    }
    for p in list(&defs, "permissions") {
        access_change(
            &ctx,
            Change::SetPermission(pb::SetPermission {
                user: text(p, "user").into(),
                vhost: text(p, "vhost").into(),
                configure: text(p, "configure").into(),
                write: text(p, "write").into(),
                read: text(p, "read").into(),
            }),
        )
        .await?;
    }
    for p in list(&defs, "topic_permissions") {
        access_change(
            &ctx,
            Change::SetTopicPermission(pb::SetTopicPermission {
                user: text(p, "user").into(),
                vhost: text(p, "vhost").into(),
                exchange: text(p, "exchange").into(),
                write: text(p, "write").into(),
                read: text(p, "read").into(),
            }),
        )
        .await?;
    }
    // Before the topology, as RabbitMQ imports them: a queue follows its policy from the start.
    for policy in policies {
        access_change(&ctx, Change::SetPolicy(policy)).await?;
    }
    // Topology, one direct connection per vhost, in RabbitMQ's order: exchanges, queues, bindings.
    let mut vhosts: Vec<&str> = Vec::new();
    for key in ["exchanges", "queues", "bindings"] {
        for item in list(&defs, key) {
            let v = vhost_of(item, "/");
            if !vhosts.contains(&v) {
                vhosts.push(v);
            }
        }
    }
    for vhost in vhosts {
        let mut conn = direct(&ctx, &caller, vhost).await?;
        let result = async {
            for x in list(&defs, "exchanges").filter(|x| vhost_of(x, "/") == vhost) {
                if !predeclared(text(x, "name")) {
                    declare_exchange(&mut conn, text(x, "name"), x).await?;
                }
            }
            for q in list(&defs, "queues").filter(|q| vhost_of(q, "/") == vhost) {
                declare_queue(&mut conn, text(q, "name"), q).await?;
            }
            for b in list(&defs, "bindings").filter(|b| vhost_of(b, "/") == vhost) {
                bind(
                    &mut conn,
                    text(b, "source"),
                    text(b, "destination_type"),
                    text(b, "destination"),
                    b,
                )
                .await?;
            }
            Ok::<(), ApiError>(())
        }
        .await;
        conn.close().await;
        result?;
    }
    for u in list(&defs, "users") {
        if let Some(limits) = u.get("limits").and_then(Value::as_object) {
            access_change(
                &ctx,
                Change::SetUserLimits(pb::SetUserLimits {
                    user: text(u, "name").into(),
                    limits: limits_of(limits, text(u, "name"))?,
                    replace: true,
                }),
            )
            .await?;
        }
    }
    let vhost_limits = list(&defs, "vhosts")
        .filter_map(|v| Some((text(v, "name"), v.get("limits")?.as_object()?)))
        .chain(
            list(&defs, "parameters")
                .filter(|p| text(p, "component") == "vhost-limits")
                .filter_map(|p| Some((vhost_of(p, "/"), p.get("value")?.as_object()?))),
        );
    for (vhost, limits) in vhost_limits {
        access_change(
            &ctx,
            Change::SetVhostLimits(pb::SetVhostLimits {
                vhost: vhost.into(),
                limits: limits_of(limits, vhost)?,
                replace: true,
            }),
        )
        .await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every name in the file fits AMQP's short strings (see [`names`]): checked before anything is
/// imported, so a file with a name too long changes nothing.
fn check_names(defs: &Value) -> Result<(), ApiError> {
    for v in list(defs, "vhosts") {
        names::check("vhost name", text(v, "name"))?;
    }
    for u in list(defs, "users") {
        names::check("user name", text(u, "name"))?;
    }
    for x in list(defs, "exchanges") {
        names::check("exchange name", text(x, "name"))?;
    }
    for q in list(defs, "queues") {
        names::check("queue name", text(q, "name"))?;
    }
    for b in list(defs, "bindings") {
        check_binding_names(text(b, "source"), text(b, "destination"), b)?;
    }
    Ok(())
}

/// The file's policies (`policies`) and operator policies (`operator_policy` entries of
/// `parameters`, as RabbitMQ exports them), each checked before anything is imported, so a file
/// with a bad one changes nothing; the reason names it as RabbitMQ's does.
fn policies_of(defs: &Value) -> Result<Vec<pb::SetPolicy>, ApiError> {
    let operator = list(defs, "parameters")
        .filter(|p| text(p, "component") == OPERATOR_POLICY)
        .map(|p| (p, p.get("value").unwrap_or(&Value::Null), true));
    list(defs, "policies")
        .map(|p| (p, p, false))
        .chain(operator)
        .map(|(entry, body, operator)| {
            let (vhost, name) = (vhost_of(entry, "/"), text(entry, "name"));
            if name.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "policy in virtual host '{vhost}' has undefined name"
                )));
            }
            policies::from_json(vhost, name, body, operator).map_err(|e| {
                ApiError::bad_request(format!("{} (vhost: \"{vhost}\" key: \"{name}\")", e.reason))
            })
        })
        .collect()
}

/// A definitions file's limits object (`{"max-connections": 10}`) as Access limits; values must
/// be integers.
fn limits_of(
    limits: &serde_json::Map<String, Value>,
    owner: &str,
) -> Result<Vec<pb::Limit>, ApiError> {
    limits
        .iter()
        .map(|(name, value)| match value.as_i64() {
            Some(value) => Ok(pb::Limit {
                name: name.clone(),
                value,
            }),
            None => Err(ApiError::bad_request(format!(
                "limit '{name}' of '{owner}': {name} should be a number, actually was {value}"
            ))),
        })
        .collect()
}
