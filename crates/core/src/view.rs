//! A read-only picture of the broker for operators (the management API, metrics): vhosts,
//! exchanges, bindings, queues with their depths and counters, connections, channels, consumers,
//! users, permissions, topic permissions and limits, as plain data. Built by [`crate::Broker::view`]; never changes state.
//!
//! The counters (published, delivered, acked, routed) count what this broker did since it was
//! created or restored; they are not replicated. Rates are computed by whoever samples them.

use serde::{Deserialize, Serialize};
use warren_wire::{FieldTable, FieldValue};

use crate::{ConnId, Millis};

/// Everything an operator can list, sorted by vhost and name (connections by id).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerView {
    pub vhosts: Vec<String>,
    pub exchanges: Vec<ExchangeView>,
    pub bindings: Vec<BindingView>,
    pub queues: Vec<QueueView>,
    pub connections: Vec<ConnectionView>,
    pub channels: Vec<ChannelView>,
    pub consumers: Vec<ConsumerView>,
    pub users: Vec<UserView>,
    pub permissions: Vec<PermissionView>,
    /// Sorted by user, vhost, exchange.
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermissionView>,
    /// The vhosts that have limits, sorted by vhost.
    #[serde(default)]
    pub vhost_limits: Vec<LimitsView>,
    /// The users that have limits, sorted by user.
    #[serde(default)]
    pub user_limits: Vec<LimitsView>,
    /// Client connections this broker paused for credit flow (see [`crate::Effect::Flow`]),
    /// by client connection id: the cluster's view marks them `flow` (see
    /// `warren_server::management`).
    #[serde(default)]
    pub in_flow: Vec<ConnId>,
    /// Policies and operator policies, sorted by (operator, vhost, name).
    #[serde(default)]
    pub policies: Vec<PolicyView>,
}

/// A policy or operator policy, as `/api/policies` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    pub vhost: String,
    pub name: String,
    /// An operator policy (`/api/operator-policies`).
    pub operator: bool,
    pub pattern: String,
    /// RabbitMQ's `apply-to`: `all`, `queues`, `classic_queues`, `quorum_queues`, `streams`,
    /// `exchanges`.
    pub apply_to: String,
    pub priority: i64,
    pub definition: Vec<(String, ArgValue)>,
}

/// An AMQP field value in a form any encoder can write (arguments, client properties).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ArgValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<ArgValue>),
    Table(Vec<(String, ArgValue)>),
    Void,
}

impl ArgValue {
    fn from_field(v: &FieldValue) -> ArgValue {
        match v {
            FieldValue::Bool(b) => ArgValue::Bool(*b),
            FieldValue::F32(f) => ArgValue::Float(f64::from(*f)),
            FieldValue::F64(f) => ArgValue::Float(*f),
            FieldValue::Decimal { scale, value } => {
                ArgValue::Float(f64::from(*value) / 10f64.powi(i32::from(*scale)))
            }
            FieldValue::LongStr(s) => {
                ArgValue::Str(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            FieldValue::ByteArray(b) => ArgValue::Str(String::from_utf8_lossy(b).into_owned()),
            FieldValue::Array(a) => ArgValue::List(a.iter().map(ArgValue::from_field).collect()),
            FieldValue::Timestamp(t) => ArgValue::Int(i64::try_from(*t).unwrap_or(i64::MAX)),
            FieldValue::Table(t) => ArgValue::Table(args(t)),
            FieldValue::Void => ArgValue::Void,
            other => other.as_i64().map_or(ArgValue::Void, ArgValue::Int),
        }
    }
}

/// A field table as key/value pairs, in the table's order.
pub fn table_args(table: &FieldTable) -> Vec<(String, ArgValue)> {
    args(table)
}

pub(crate) fn args(table: &FieldTable) -> Vec<(String, ArgValue)> {
    table
        .iter()
        .map(|(k, v)| (k.to_owned(), ArgValue::from_field(v)))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeView {
    pub vhost: String,
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers`.
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Vec<(String, ArgValue)>,
    /// Messages published to this exchange.
    pub publish_in: u64,
    /// Queue deliveries those messages were routed to (one per queue reached).
    pub publish_out: u64,
    /// The policy it follows, if any.
    #[serde(default)]
    pub policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingView {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    pub routing_key: String,
    pub arguments: Vec<(String, ArgValue)>,
}

/// What a queue has done since this broker built it (not replicated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounters {
    /// Messages enqueued (published or dead-lettered into it).
    pub published: u64,
    /// Messages handed to a consumer or to `basic.get`.
    pub delivered: u64,
    /// Deliveries redelivered (the message had been delivered before).
    pub redelivered: u64,
    /// Messages that left the queue acked or settled (no-ack deliveries included).
    pub acked: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<ConnId>,
    pub arguments: Vec<(String, ArgValue)>,
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub message_bytes_ready: u64,
    pub consumers: u32,
    pub counters: QueueCounters,
    /// Messages enqueued here per exchange they were published to (the flow along bindings).
    pub published_from: Vec<(String, u64)>,
    /// A local queue's home node, whose broker holds its messages and consumers (and knows its
    /// numbers); `None` for a replicated queue.
    #[serde(default)]
    pub home: Option<u64>,
    /// The tag of the consumer that receives from a single-active-consumer queue.
    #[serde(default)]
    pub single_active_consumer_tag: Option<String>,
    /// The policy and operator policy it follows, and the definition they give it together.
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub operator_policy: Option<String>,
    #[serde(default)]
    pub effective_policy_definition: Vec<(String, ArgValue)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub conn: ConnId,
    /// RabbitMQ's connection name, `client-ip:port -> server-ip:port`, as the runtime gave it.
    pub name: String,
    pub user: String,
    /// `None` until `connection.open`.
    pub vhost: Option<String>,
    pub channels: u32,
    pub connected_at: Millis,
    pub client_properties: Vec<(String, ArgValue)>,
    /// Paused by credit flow on the client's node: RabbitMQ's connection state `flow`.
    #[serde(default)]
    pub flow: bool,
    /// The protocol of a client the node translates into AMQP (`STOMP 1.2`); `None`: AMQP 0-9-1.
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelView {
    pub conn: ConnId,
    pub number: u16,
    pub user: String,
    pub vhost: String,
    pub consumers: u32,
    pub messages_unacknowledged: u64,
    pub prefetch_count: u16,
    pub global_prefetch_count: u16,
    pub confirm: bool,
    pub transactional: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumerView {
    pub conn: ConnId,
    pub channel: u16,
    pub tag: String,
    pub vhost: String,
    pub queue: String,
    pub ack_required: bool,
    pub prefetch_count: u16,
    pub exclusive: bool,
    /// Receives messages: false for a consumer waiting its turn on a single-active-consumer
    /// queue.
    #[serde(default = "active_by_default")]
    pub active: bool,
}

fn active_by_default() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub password_hash: String,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PermissionView {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicPermissionView {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// The limits of one vhost or user (`owner`), by name; a negative value is no limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitsView {
    pub owner: String,
    pub limits: Vec<(String, i64)>,
}
