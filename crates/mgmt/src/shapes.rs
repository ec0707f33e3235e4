//! The JSON shapes of RabbitMQ's management API (3.10), built from the broker's view. Fields a
//! Warren broker has no value for (Erlang memory, process ids, garbage collection) are left out
//! rather than invented; `docs/compatibility.md` lists them.

use serde_json::{json, Map, Value};
use warren_core::view::{
    ArgValue, BindingView, BrokerView, ChannelView, ConnectionView, ConsumerView, ExchangeView,
    LimitsView, PermissionView, PolicyView, QueueView, TopicPermissionView, UserView,
};

use crate::node_name;
use crate::rates::{
    edge_key, exchange_key, node_key, queue_key, total_key, HistoryPoint, RateTable, Rates,
};

/// Who leads and who is a member, for the queues' `leader`/`members` (every queue is replicated
/// by the cluster's Raft group).
pub(crate) struct Cluster {
    pub(crate) leader: Option<u64>,
    pub(crate) members: Vec<u64>,
}

impl Cluster {
    fn leader_name(&self) -> Value {
        self.leader
            .map_or(Value::Null, |l| Value::from(node_name(l)))
    }

    fn member_names(&self) -> Value {
        Value::from(
            self.members
                .iter()
                .map(|m| node_name(*m))
                .collect::<Vec<_>>(),
        )
    }
}

pub(crate) fn arg(v: &ArgValue) -> Value {
    match v {
        ArgValue::Bool(b) => Value::from(*b),
        ArgValue::Int(i) => Value::from(*i),
        ArgValue::Float(f) => Value::from(*f),
        ArgValue::Str(s) => Value::from(s.as_str()),
        ArgValue::List(l) => Value::from(l.iter().map(arg).collect::<Vec<_>>()),
        ArgValue::Table(t) => args(t),
        ArgValue::Void => Value::Null,
    }
}

pub(crate) fn args(table: &[(String, ArgValue)]) -> Value {
    Value::Object(table.iter().map(|(k, v)| (k.clone(), arg(v))).collect())
}

fn details(rate: f64) -> Value {
    json!({ "rate": rate })
}

/// `{name: n, name_details: {rate}}` pairs for a stats object.
fn stat(obj: &mut Map<String, Value>, name: &str, value: u64, rate: f64) {
    obj.insert(name.to_owned(), Value::from(value));
    obj.insert(format!("{name}_details"), details(rate));
}

/// The node a connection's socket is on (the top bits of its id are the node id).
pub(crate) fn conn_node(conn: u64) -> u64 {
    conn >> 52
}

/// The queue's type as RabbitMQ names it: its `x-queue-type` when that is `quorum` (or
/// `stream`), `classic` otherwise (a queue declared without the argument included).
pub(crate) fn queue_type(q: &QueueView) -> &'static str {
    let declared = q
        .arguments
        .iter()
        .find(|(k, _)| k == "x-queue-type")
        .and_then(|(_, v)| match v {
            ArgValue::Str(s) => Some(s.as_str()),
            _ => None,
        });
    match declared {
        Some("quorum") => "quorum",
        Some("stream") => "stream",
        _ => "classic",
    }
}

pub(crate) fn queue(q: &QueueView, rates: &RateTable, cluster: &Cluster) -> Value {
    let r = |c: &str| rates.get(&queue_key(&q.vhost, &q.name, c));
    let mut stats = Map::new();
    stat(&mut stats, "publish", q.counters.published, r("published"));
    stat(
        &mut stats,
        "deliver_get",
        q.counters.delivered,
        r("delivered"),
    );
    stat(&mut stats, "deliver", q.counters.delivered, r("delivered"));
    stat(
        &mut stats,
        "redeliver",
        q.counters.redelivered,
        r("redelivered"),
    );
    stat(&mut stats, "ack", q.counters.acked, r("acked"));
    let messages = q.messages_ready + q.messages_unacknowledged;
    let mut obj = Map::new();
    obj.insert("name".into(), q.name.clone().into());
    obj.insert("vhost".into(), q.vhost.clone().into());
    obj.insert("durable".into(), q.durable.into());
    obj.insert("auto_delete".into(), q.auto_delete.into());
    obj.insert("exclusive".into(), q.exclusive_owner.is_some().into());
    obj.insert("arguments".into(), args(&q.arguments));
    obj.insert("type".into(), queue_type(q).into());
    obj.insert("state".into(), "running".into());
    match q.home {
        // A transient queue lives on its home node alone, as a RabbitMQ classic queue does.
        Some(home) if home != 0 => {
            let home = Value::from(node_name(home));
            obj.insert("node".into(), home.clone());
            obj.insert("leader".into(), home.clone());
            obj.insert("members".into(), Value::from(vec![home.clone()]));
            obj.insert("online".into(), Value::from(vec![home]));
        }
        _ => {
            obj.insert("node".into(), cluster.leader_name());
            obj.insert("leader".into(), cluster.leader_name());
            obj.insert("members".into(), cluster.member_names());
            obj.insert("online".into(), cluster.member_names());
        }
    }
    obj.insert("policy".into(), q.policy.clone().into());
    obj.insert("operator_policy".into(), q.operator_policy.clone().into());
    obj.insert(
        "effective_policy_definition".into(),
        args(&q.effective_policy_definition),
    );
    obj.insert("consumers".into(), q.consumers.into());
    if is_single_active(q) {
        obj.insert(
            "single_active_consumer_tag".into(),
            q.single_active_consumer_tag.clone().into(),
        );
    }
    stat(&mut obj, "messages", messages, r("messages"));
    stat(
        &mut obj,
        "messages_ready",
        q.messages_ready,
        r("messages_ready"),
    );
    stat(
        &mut obj,
        "messages_unacknowledged",
        q.messages_unacknowledged,
        r("messages_unacknowledged"),
    );
    obj.insert("message_bytes_ready".into(), q.message_bytes_ready.into());
    obj.insert("message_stats".into(), Value::Object(stats));
    // Where each exchange's messages went: the flow along bindings (Warren's own field).
    obj.insert(
        "incoming".into(),
        Value::from(
            q.published_from
                .iter()
                .map(|(x, n)| {
                    json!({
                        "exchange": {"name": x, "vhost": q.vhost},
                        "stats": {"publish": n, "publish_details": details(rates.get(&edge_key(&q.vhost, x, &q.name)))}
                    })
                })
                .collect::<Vec<_>>(),
        ),
    );
    Value::Object(obj)
}

pub(crate) fn exchange(x: &ExchangeView, rates: &RateTable) -> Value {
    let r = |c: &str| rates.get(&exchange_key(&x.vhost, &x.name, c));
    let mut stats = Map::new();
    stat(&mut stats, "publish_in", x.publish_in, r("publish_in"));
    stat(&mut stats, "publish_out", x.publish_out, r("publish_out"));
    json!({
        "name": x.name,
        "vhost": x.vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": args(&x.arguments),
        "user_who_performed_action": "",
        "policy": x.policy,
        "message_stats": stats,
    })
}

/// A policy or operator policy as `/api/policies` and definitions files show it.
pub(crate) fn policy(p: &PolicyView) -> Value {
    json!({
        "vhost": p.vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": args(&p.definition),
        "priority": p.priority,
    })
}

/// RabbitMQ's `properties_key`: the routing key, `~` plus a hash when there are arguments.
fn properties_key(routing_key: &str, arguments: &[(String, ArgValue)]) -> String {
    if arguments.is_empty() {
        if routing_key.is_empty() {
            "~".into()
        } else {
            routing_key.replace('%', "%25").replace('~', "%7E")
        }
    } else {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("{arguments:?}").bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{routing_key}~{:x}", h & 0xffff_ffff)
    }
}

pub(crate) fn binding(b: &BindingView) -> Value {
    json!({
        "source": b.source,
        "vhost": b.vhost,
        "destination": b.destination,
        "destination_type": b.destination_type,
        "routing_key": b.routing_key,
        "arguments": args(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// Every binding, with the default exchange's implicit one per queue first, as RabbitMQ lists them.
pub(crate) fn bindings<'a>(view: &'a BrokerView) -> impl Iterator<Item = BindingView> + 'a {
    let implicit = view.queues.iter().map(|q| BindingView {
        vhost: q.vhost.clone(),
        source: String::new(),
        destination: q.name.clone(),
        destination_type: "queue".into(),
        routing_key: q.name.clone(),
        arguments: vec![],
    });
    implicit.chain(view.bindings.iter().cloned())
}

fn split_addr(addr: &str) -> (String, Value) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port.parse::<u16>().map_or(Value::Null, Value::from),
        ),
        None => (addr.to_owned(), Value::Null),
    }
}

/// Peer and local host/port of a connection, from its name `peer -> local`.
fn endpoints(c: &ConnectionView) -> ((String, Value), (String, Value)) {
    match c.name.split_once(" -> ") {
        Some((peer, local)) => (split_addr(peer), split_addr(local)),
        None => ((String::new(), Value::Null), (String::new(), Value::Null)),
    }
}

/// The `connection_name` a client sent in its client properties (RabbitMQ's
/// `user_provided_name`).
fn user_provided_name(c: &ConnectionView) -> Option<&str> {
    c.client_properties
        .iter()
        .find(|(k, _)| k == "connection_name")
        .and_then(|(_, v)| match v {
            ArgValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
}

pub(crate) fn connection(c: &ConnectionView) -> Value {
    let ((peer_host, peer_port), (host, port)) = endpoints(c);
    let direct = c.name == "management API (direct)";
    let mut obj = json!({
        "name": c.name,
        "node": node_name(conn_node(c.conn)),
        "user": c.user,
        "vhost": c.vhost,
        "channels": c.channels,
        // RabbitMQ's states: `flow` while credit flow holds the publisher back.
        "state": if c.flow { "flow" } else { "running" },
        "protocol": match &c.protocol {
            Some(p) => p.as_str(),
            None if direct => "Direct 0-9-1",
            None => "AMQP 0-9-1",
        },
        "type": if direct { "direct" } else { "network" },
        "auth_mechanism": "PLAIN",
        "ssl": false,
        "peer_host": peer_host,
        "peer_port": peer_port,
        "host": host,
        "port": port,
        "connected_at": c.connected_at,
        "client_properties": args(&c.client_properties),
        "warren_id": c.conn.to_string(),
    });
    // Absent when the client sent none, as in RabbitMQ.
    if let Some(name) = user_provided_name(c) {
        obj["user_provided_name"] = Value::from(name);
    }
    obj
}

fn channel_name(c: &ConnectionView, number: u16) -> String {
    format!("{} ({number})", c.name)
}

pub(crate) fn channel(ch: &ChannelView, c: &ConnectionView) -> Value {
    let ((peer_host, peer_port), _) = endpoints(c);
    json!({
        "name": channel_name(c, ch.number),
        "number": ch.number,
        "node": node_name(conn_node(c.conn)),
        "user": ch.user,
        "vhost": ch.vhost,
        "state": "running",
        "consumer_count": ch.consumers,
        "messages_unacknowledged": ch.messages_unacknowledged,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "message_stats": {},
        "connection_details": {"name": c.name, "peer_host": peer_host, "peer_port": peer_port},
    })
}

/// A consumer as RabbitMQ lists it; `single_active` if its queue has a single active consumer.
pub(crate) fn consumer(k: &ConsumerView, c: &ConnectionView, single_active: bool) -> Value {
    let ((peer_host, peer_port), _) = endpoints(c);
    json!({
        "consumer_tag": k.tag,
        "queue": {"name": k.queue, "vhost": k.vhost},
        "channel_details": {
            "name": channel_name(c, k.channel),
            "number": k.channel,
            "connection_name": c.name,
            "peer_host": peer_host,
            "peer_port": peer_port,
            "node": node_name(conn_node(c.conn)),
            "user": c.user,
        },
        "ack_required": k.ack_required,
        "prefetch_count": k.prefetch_count,
        "exclusive": k.exclusive,
        "active": k.active,
        // RabbitMQ's statuses: `single_active` for the consumer that receives from a
        // single-active-consumer queue, `waiting` for the others there, `up` elsewhere.
        "activity_status": match (k.active, single_active) {
            (true, true) => "single_active",
            (false, _) => "waiting",
            (true, false) => "up",
        },
        "arguments": {},
    })
}

/// A user as RabbitMQ lists it, with its limits (`{}` for none).
pub(crate) fn user(u: &UserView, view: &BrokerView) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": u.tags,
        "limits": limits_value(owner_limits(&view.user_limits, &u.name)),
    })
}

/// The limits of `owner` in a view's list (none: empty).
pub(crate) fn owner_limits<'a>(all: &'a [LimitsView], owner: &str) -> &'a [(String, i64)] {
    all.iter()
        .find(|l| l.owner == owner)
        .map_or(&[], |l| l.limits.as_slice())
}

/// Limits as RabbitMQ's JSON object: `{"max-connections": 10, ...}`.
pub(crate) fn limits_value(limits: &[(String, i64)]) -> Value {
    Value::Object(
        limits
            .iter()
            .map(|(name, value)| (name.clone(), Value::from(*value)))
            .collect(),
    )
}

/// One entry of `/api/vhost-limits` (`key` "vhost") or `/api/user-limits` (`key` "user").
pub(crate) fn limits(key: &str, l: &LimitsView) -> Value {
    json!({key: l.owner, "value": limits_value(&l.limits)})
}

pub(crate) fn topic_permission(p: &TopicPermissionView) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "exchange": p.exchange,
        "write": p.write,
        "read": p.read,
    })
}

pub(crate) fn permission(p: &PermissionView) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

pub(crate) fn vhost(name: &str, view: &BrokerView) -> Value {
    let (mut ready, mut unacked) = (0, 0);
    for q in view.queues.iter().filter(|q| q.vhost == name) {
        ready += q.messages_ready;
        unacked += q.messages_unacknowledged;
    }
    let mut obj = Map::new();
    obj.insert("name".into(), name.into());
    obj.insert("description".into(), "".into());
    obj.insert("tags".into(), json!([]));
    obj.insert("metadata".into(), json!({"description": "", "tags": []}));
    obj.insert("default_queue_type".into(), "classic".into());
    obj.insert("tracing".into(), false.into());
    obj.insert("cluster_state".into(), json!({}));
    obj.insert("message_stats".into(), json!({}));
    stat(&mut obj, "messages", ready + unacked, 0.0);
    stat(&mut obj, "messages_ready", ready, 0.0);
    stat(&mut obj, "messages_unacknowledged", unacked, 0.0);
    Value::Object(obj)
}

/// The overview's `message_stats` and `queue_totals` (for the objects the user sees).
pub(crate) fn totals(queues: &[&QueueView], rates: &RateTable, all: bool) -> (Value, Value) {
    let sum = |f: fn(&QueueView) -> u64| queues.iter().map(|q| f(q)).sum::<u64>();
    let rate = |counter: &str| {
        if all {
            rates.get(&total_key(counter))
        } else {
            queues
                .iter()
                .map(|q| rates.get(&queue_key(&q.vhost, &q.name, counter)))
                .sum()
        }
    };
    let mut stats = Map::new();
    stat(
        &mut stats,
        "publish",
        sum(|q| q.counters.published),
        rate("published"),
    );
    stat(
        &mut stats,
        "deliver_get",
        sum(|q| q.counters.delivered),
        rate("delivered"),
    );
    stat(
        &mut stats,
        "redeliver",
        sum(|q| q.counters.redelivered),
        rate("redelivered"),
    );
    stat(&mut stats, "ack", sum(|q| q.counters.acked), rate("acked"));
    let mut qt = Map::new();
    stat(
        &mut qt,
        "messages",
        sum(|q| q.messages_ready + q.messages_unacknowledged),
        rate("messages"),
    );
    stat(
        &mut qt,
        "messages_ready",
        sum(|q| q.messages_ready),
        rate("messages_ready"),
    );
    stat(
        &mut qt,
        "messages_unacknowledged",
        sum(|q| q.messages_unacknowledged),
        rate("messages_unacknowledged"),
    );
    (Value::Object(stats), Value::Object(qt))
}

/// Adds RabbitMQ's `samples` (`[{"sample": value, "timestamp": ms}]`, newest first) to the
/// `*_details` of the cluster's totals, from the rates' history (`msg_rates_age` and
/// `msg_rates_incr` asked them).
pub(crate) fn add_samples(
    message_stats: &mut Value,
    queue_totals: &mut Value,
    history: &[crate::rates::HistoryPoint],
) {
    let samples = |counter: &str| {
        let key = total_key(counter);
        Value::Array(
            history
                .iter()
                .map(|(t, values)| {
                    json!({"sample": values.get(&key).copied().unwrap_or(0), "timestamp": t})
                })
                .collect(),
        )
    };
    let stats = [
        ("publish", "published"),
        ("confirm", "confirmed"),
        ("deliver_get", "delivered"),
        ("redeliver", "redelivered"),
        ("ack", "acked"),
    ];
    let totals = [
        ("messages", "messages"),
        ("messages_ready", "messages_ready"),
        ("messages_unacknowledged", "messages_unacknowledged"),
    ];
    for (obj, fields) in [(message_stats, &stats[..]), (queue_totals, &totals[..])] {
        for (name, counter) in fields {
            if let Some(details) = obj.get_mut(format!("{name}_details")) {
                details["samples"] = samples(counter);
            }
        }
    }
}

/// Adds `confirm` and its rate to the overview's `message_stats`: publishes confirmed to the
/// clients of every node (each node counts its own; the sampler sums them).
pub(crate) fn add_confirms(message_stats: &mut Value, rates: &Rates, now: &RateTable) {
    let key = total_key("confirmed");
    if let Value::Object(stats) = message_stats {
        stat(
            stats,
            "confirm",
            rates.latest(&key).unwrap_or(0),
            now.get(&key),
        );
    }
}

/// The samples of `key` in `history`, as RabbitMQ lists them (newest first); readings without
/// the key are left out.
fn samples_of(key: &str, history: &[HistoryPoint]) -> Value {
    Value::Array(
        history
            .iter()
            .filter_map(|(t, values)| {
                values
                    .get(key)
                    .map(|v| json!({"sample": v, "timestamp": t}))
            })
            .collect(),
    )
}

/// What node `id`'s clients did, as a `message_stats` (RabbitMQ's names): counts from its
/// status (`None`: it did not answer), rates from the sampler, and samples if `history` is given.
pub(crate) fn node_stats(
    id: u64,
    counts: Option<&warren_proto::raft::ClientTotals>,
    rates: &RateTable,
    history: Option<&[HistoryPoint]>,
) -> Value {
    let mut stats = Map::new();
    for (name, counter, value) in [
        ("publish", "published", counts.map(|c| c.published)),
        ("confirm", "confirmed", counts.map(|c| c.confirmed)),
        ("deliver_get", "delivered", counts.map(|c| c.delivered)),
        ("ack", "acked", counts.map(|c| c.acked)),
    ] {
        let key = node_key(id, counter);
        stat(&mut stats, name, value.unwrap_or(0), rates.get(&key));
        if let Some(h) = history {
            stats[&format!("{name}_details")]["samples"] = samples_of(&key, h);
        }
    }
    Value::Object(stats)
}

/// The node that serves a queue: a transient queue's home, else the leader (`None` if there is
/// none).
pub(crate) fn serving_node(q: &QueueView, leader: Option<u64>) -> Option<u64> {
    q.home.filter(|h| *h != 0).or(leader)
}

/// The messages queued in the queues node `id` serves (transient queues homed there, the
/// replicated ones if it leads; `queued` from `rates::queued_by_node`), as RabbitMQ's
/// `queue_totals`, with samples if `history` is given.
pub(crate) fn node_queue_totals(
    id: u64,
    queued: &std::collections::HashMap<String, u64>,
    rates: &RateTable,
    history: Option<&[HistoryPoint]>,
) -> Value {
    let mut totals = Map::new();
    for counter in ["messages_ready", "messages_unacknowledged"] {
        let key = node_key(id, counter);
        let value = queued.get(&key).copied().unwrap_or(0);
        stat(&mut totals, counter, value, rates.get(&key));
        if let Some(h) = history {
            totals[&format!("{counter}_details")]["samples"] = samples_of(&key, h);
        }
    }
    Value::Object(totals)
}

/// `mem_used_details` of node `id`: its samples if `history` is given (RabbitMQ's node object
/// has them too).
pub(crate) fn node_memory_details(
    id: u64,
    rates: &RateTable,
    history: Option<&[HistoryPoint]>,
) -> Value {
    let key = node_key(id, "mem_used");
    let mut details = details(rates.get(&key));
    if let Some(h) = history {
        details["samples"] = samples_of(&key, h);
    }
    details
}

/// Adds RabbitMQ's `samples` to a queue's `message_stats` and message counts (its page's
/// chart), from the history.
pub(crate) fn add_queue_samples(
    queue: &mut Value,
    vhost: &str,
    name: &str,
    history: &[crate::rates::HistoryPoint],
) {
    let samples = |counter: &str| samples_of(&queue_key(vhost, name, counter), history);
    for (name, counter) in [
        ("publish", "published"),
        ("deliver_get", "delivered"),
        ("ack", "acked"),
    ] {
        if let Some(details) = queue["message_stats"].get_mut(format!("{name}_details")) {
            details["samples"] = samples(counter);
        }
    }
    for counter in ["messages_ready", "messages_unacknowledged"] {
        queue[format!("{counter}_details")]["samples"] = samples(counter);
    }
}

/// Declared with `x-single-active-consumer: true`.
pub(crate) fn is_single_active(q: &QueueView) -> bool {
    q.arguments
        .iter()
        .any(|(k, v)| k == "x-single-active-consumer" && matches!(v, ArgValue::Bool(true)))
}
