//! The broker state machine: owns every vhost, user, exchange, queue and connection, and turns each
//! [`Input`] into [`Effect`]s. Method handlers live in one file per AMQP class; shared-state changes
//! go through [`Command`]s ([`Broker::submit`]) so the same path serves one node and a cluster.

mod basic_class;
mod channel_class;
mod connection_class;
mod delivery;
mod exchange_class;
mod follow;
mod home;
mod limit_checks;
mod owner;
mod policies;
mod publish;
mod publishers;
mod queue_class;
mod recovery;
mod remote;
mod security;
mod snapshot_io;
mod tick;
mod topic_authorisation;
mod tx_class;
mod view;

pub use view::{CONNECTION_NAME_PROPERTY, CONNECTION_PROTOCOL_PROPERTY};

use std::collections::HashMap;

use base64::Engine;
use sha2::{Digest, Sha256};
use warren_wire::{Method, ShortStr};

use crate::command::{Command, Op, Origin, STATE_MACHINE_VERSION};
use crate::connection::Connection;
use crate::error::ErrorScope;
use crate::limits::Limits;
use crate::message::{MemoryRecords, Message, Records};
use crate::queue::{Queue, QueueId};
use crate::topic_permission::TopicPermission;
use crate::user::{hash_password, Access, Permission, User};
use crate::vhost::Vhost;
use crate::{AmqpError, ChannelId, ConnId, Effect, Input, Millis};

/// Broker settings that are not part of the replicated state.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The user created at first start (RabbitMQ: guest).
    pub default_user: String,
    pub default_pass: String,
    /// The vhost created at first start, on which the default user gets full permissions.
    pub default_vhost: String,
    /// Users that may log in only from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// This node's id in the cluster (0 for a single node): the home of the transient queues
    /// its connections declare, which this broker decides.
    pub node: u64,
    /// The first connection id this node's process gives out: a local queue homed here that was
    /// declared by an earlier connection of this node belongs to an earlier life of the process
    /// and is removed (0: none are).
    pub first_conn: ConnId,
    /// How long a delivery may stay unacked before its consumer is cancelled or its channel
    /// closed (RabbitMQ's `consumer_timeout`; `None`: never). Queues and consumers may set
    /// their own (`x-consumer-timeout`).
    pub consumer_timeout: Option<Millis>,
    /// Credit flow: a connection with this many publishes on their way into the log is not
    /// read until half of them are applied (see [`crate::Effect::Flow`]); at least 2.
    pub publish_credit: u32,
}

/// What this node's clients caused, since the process started, that RabbitMQ counts per node
/// and only the core sees (the rest is counted at the socket: `warren_server::counters`). The
/// runtime takes it after each batch ([`Broker::take_churn`]) and adds it to the node's
/// counters. Not replicated, not in snapshots: a replay of earlier runs' commands counts
/// nothing (their connections are older than `BrokerConfig::first_conn`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Churn {
    /// Queues created by a declare of one of this node's clients.
    pub queues_created: u64,
    /// Queues removed (by `queue.delete`, auto-delete, exclusivity, expiry) that one of this
    /// node's clients had declared.
    pub queues_deleted: u64,
    /// Publishes of this node's clients, not mandatory, that no queue took (RabbitMQ's
    /// `messages_unroutable_dropped`).
    pub unroutable_dropped: u64,
}

impl Churn {
    pub fn is_empty(&self) -> bool {
        *self == Churn::default()
    }
}

/// RabbitMQ's default `consumer_timeout`: 30 minutes.
pub const DEFAULT_CONSUMER_TIMEOUT: Millis = 30 * 60 * 1000;

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            default_user: "guest".into(),
            default_pass: "guest".into(),
            default_vhost: "/".into(),
            loopback_users: vec!["guest".into()],
            node: 0,
            first_conn: 0,
            consumer_timeout: Some(DEFAULT_CONSUMER_TIMEOUT),
            publish_credit: crate::DEFAULT_PUBLISH_CREDIT,
        }
    }
}

/// The whole broker model. Deterministic: the same inputs with the same `now` give the same effects.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    /// Counted since the last [`Broker::take_churn`].
    churn: Churn,
    vhosts: HashMap<ShortStr, Vhost>,
    users: HashMap<String, User>,
    permissions: HashMap<(String, ShortStr), Permission>,
    /// Topic permissions: user → vhost → exchange → permission. Nested so that a publish finds
    /// "none for this user in this vhost" with borrowed keys (see `topic_authorisation.rs`).
    topic_permissions: TopicPermissions,
    /// Limits of the vhosts that have any (`max-connections`, `max-queues`).
    vhost_limits: HashMap<ShortStr, Limits>,
    /// Limits of the users that have any (`max-connections`, `max-channels`).
    user_limits: HashMap<String, Limits>,
    queues: HashMap<QueueId, Queue>,
    /// Policies and operator policies, by (vhost, name) (see `crate::policy`).
    policies: policies::Policies,
    operator_policies: policies::Policies,
    next_queue_id: QueueId,
    connections: HashMap<ConnId, Connection>,
    /// Direct reply-to addresses (the part after `amq.rabbitmq.reply-to.`) → their channel.
    reply_to: HashMap<ShortStr, (ConnId, ChannelId)>,
    /// Feeds generated names (`amq.gen-…`, `amq.ctag-…`, reply-to keys).
    name_counter: u64,
    /// The `now` of the input being handled.
    now: Millis,
    /// Per publishing channel, the last confirm number applied (replicated: re-sent publishes
    /// after a failover are recognised by it).
    publishers: HashMap<(ConnId, ChannelId), publishers::Publisher>,
    /// Leader only: when to look for publishers to forget next.
    next_publisher_check: Millis,
    /// This broker is the leader's (or a single node's): it decides the replicated queues
    /// (deliveries, expiries, orphans). Local queues are decided by their home's broker,
    /// leading or not (see `home.rs`).
    leading: bool,
    /// The node whose broker leads, as the runtime last said ([`Input::Leader`]); this node
    /// while it leads. This node's consumers of replicated queues attach there (`follow.rs`).
    leader: Option<u64>,
    /// Queue commands for replicated queues that came while this broker did not lead yet:
    /// (when, from which node, the command), handled when it leads (see `follow.rs`).
    pending_owner: std::collections::VecDeque<(Millis, u64, crate::QueueCommand)>,
    /// Per queue this broker decides, how many returns it logged are not applied yet, and
    /// the gets of other nodes' channels waiting for them (see `owner.rs`).
    returns_in_flight: HashMap<QueueId, usize>,
    gets_after_returns: HashMap<QueueId, Vec<(u64, crate::QueueCommand)>>,
    /// The queue commands of other nodes' channels that wait for this broker to apply the log
    /// as far as their node had (a get), or the declaration of their queue (see `owner.rs`),
    /// and the highest log index applied.
    commands_after_applied: Vec<(Millis, u64, crate::QueueCommand)>,
    last_applied: u64,
    /// When consumers attached nowhere next try to attach again.
    next_reattach: Millis,
    /// While [`Broker::lead`] attaches consumers: nothing is delivered before every consumer
    /// has claimed what its channel holds.
    holding_deliveries: bool,
    /// Removals this broker proposed for queues it decides (orphans, auto-delete, `x-expires`,
    /// `queue.delete` of a local queue), with when: not proposed again before a while, since
    /// the queue goes only when the command is applied.
    removing: HashMap<QueueId, Millis>,
    /// What waits for a queue's removal to be applied: replies (`queue.delete-ok`,
    /// `basic.cancel-ok`) and a client's methods to handle again (see `home.rs`).
    removal_waiters: HashMap<QueueId, Vec<(Ctx, home::Waiter)>>,
    /// Answers to other nodes' channels that wait for a queue's removal to be applied
    /// (`basic.cancel` of an auto-delete queue's last consumer: see `owner.rs`).
    removal_events: HashMap<QueueId, Vec<(u64, crate::QueueEvent)>>,
    /// Where the messages of replicated queues rest (see [`Records`]).
    records: Box<dyn Records>,
    /// The log index of the command being applied (0 outside `apply`, or without a log).
    applying_index: u64,
    /// The state machine version of the command being applied ([`STATE_MACHINE_VERSION`]
    /// outside `apply`: what this broker decides alone follows its own version).
    applying_version: u32,
    /// The last counts each peer node sent of its client connections (see `limit_checks.rs`).
    peer_counts: HashMap<u64, crate::ClientCounts>,
    /// This node's client connections or their channels changed since the counts were last
    /// taken ([`Broker::take_changed_counts`]).
    counts_changed: bool,
}

/// A channel's topology command: replied to when applied, numbered for the log (see
/// [`Broker::submit`]).
fn is_topology(op: &Op) -> bool {
    matches!(
        op,
        Op::DeclareExchange { .. }
            | Op::DeleteExchange { .. }
            | Op::DeclareQueue { .. }
            | Op::DeleteQueue { .. }
            | Op::PurgeQueue { .. }
            | Op::Bind { .. }
            | Op::Unbind { .. }
    )
}

/// user → vhost → exchange → topic permission.
type TopicPermissions = HashMap<String, HashMap<ShortStr, HashMap<ShortStr, TopicPermission>>>;

/// Where a channel-level method came from: the error path needs all of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub(crate) conn: ConnId,
    pub(crate) channel: ChannelId,
}

impl Ctx {
    pub(crate) fn origin(self) -> Origin {
        Origin {
            conn: self.conn,
            channel: self.channel,
        }
    }
}

impl Broker {
    /// A broker with the default vhost and the default user (full permissions on it).
    pub fn new(config: BrokerConfig) -> Broker {
        let mut broker = Broker {
            vhosts: HashMap::new(),
            users: HashMap::new(),
            permissions: HashMap::new(),
            topic_permissions: HashMap::new(),
            vhost_limits: HashMap::new(),
            user_limits: HashMap::new(),
            queues: HashMap::new(),
            policies: Default::default(),
            operator_policies: Default::default(),
            next_queue_id: 1,
            connections: HashMap::new(),
            reply_to: HashMap::new(),
            name_counter: 0,
            now: 0,
            publishers: HashMap::new(),
            next_publisher_check: 0,
            leading: false,
            leader: None,
            pending_owner: Default::default(),
            next_reattach: 0,
            returns_in_flight: HashMap::new(),
            gets_after_returns: HashMap::new(),
            commands_after_applied: Vec::new(),
            last_applied: 0,
            holding_deliveries: false,
            removing: HashMap::new(),
            removal_waiters: HashMap::new(),
            removal_events: HashMap::new(),
            records: Box::new(MemoryRecords::default()),
            applying_index: 0,
            applying_version: STATE_MACHINE_VERSION,
            peer_counts: HashMap::new(),
            counts_changed: false,
            config,
            churn: Churn::default(),
        };
        let vhost = ShortStr::from(broker.config.default_vhost.as_str());
        broker.add_vhost(vhost.clone());
        let (user, pass) = (
            broker.config.default_user.clone(),
            broker.config.default_pass.clone(),
        );
        broker.add_user(
            &user,
            &pass,
            [0x57, 0x61, 0x72, 0x6e],
            vec!["administrator".into()],
        );
        broker.set_permission(&user, vhost, Permission::all());
        broker
    }

    /// Where this broker keeps and reads back the messages of replicated queues (by default in
    /// memory, without bound).
    pub fn set_records(&mut self, records: Box<dyn Records>) {
        self.records = records;
    }

    /// Creates a vhost with the predeclared exchanges (no-op if it exists).
    pub fn add_vhost(&mut self, name: ShortStr) {
        self.vhosts.entry(name).or_insert_with(Vhost::new);
    }

    /// Creates or replaces a user; `salt` comes from the caller so the core stays deterministic.
    pub fn add_user(&mut self, name: &str, password: &str, salt: [u8; 4], tags: Vec<String>) {
        self.users.insert(
            name.to_owned(),
            User {
                name: name.to_owned(),
                password_hash: hash_password(salt, password),
                tags,
            },
        );
    }

    /// Grants `user` the permission on `vhost` (replacing any previous one).
    pub fn set_permission(&mut self, user: &str, vhost: ShortStr, permission: Permission) {
        self.permissions
            .insert((user.to_owned(), vhost), permission);
    }

    /// Handles one input and appends the resulting effects to `effects`, in the order the runtime
    /// must apply them.
    pub fn handle(&mut self, now: Millis, input: Input, effects: &mut Vec<Effect>) {
        self.now = now;
        let input = match self.defer_while_in_flight(input) {
            Some(input) => input,
            None => return,
        };
        self.handle_now(input, effects);
    }

    /// Keeps a channel's own writes visible to it: while commands it caused are in flight, its
    /// other methods wait (publishes still go straight on: the log keeps them in order). Returns
    /// the input if it can run now.
    fn defer_while_in_flight(&mut self, input: Input) -> Option<Input> {
        let ctx = match &input {
            Input::Method { conn, channel, .. } | Input::Publish { conn, channel, .. } => Ctx {
                conn: *conn,
                channel: *channel,
            },
            _ => return Some(input),
        };
        let Some(ch) = self.channel_mut(ctx) else {
            return Some(input);
        };
        // A publish waits behind the channel's other commands (a bind just sent must route it;
        // its local part is enqueued at once), not behind its earlier publishes.
        let waiting_for = if matches!(input, Input::Publish { .. }) {
            ch.in_flight - ch.publishes_in_flight
        } else {
            ch.in_flight
        };
        if !ch.deferred.is_empty() || waiting_for > 0 {
            ch.deferred.push_back(input);
            return None;
        }
        Some(input)
    }

    /// Sends `method` once the channel has no command in flight (at once if it has none).
    pub(crate) fn reply_when_applied(&mut self, ctx: Ctx, method: Method, out: &mut Vec<Effect>) {
        match self.channel_mut(ctx) {
            Some(ch) if ch.in_flight > 0 => ch.replies_when_applied.push(method),
            _ => self.reply(ctx, method, out),
        }
    }

    /// Answers the connection's syncs once none of its channels has a command in flight: its
    /// publishes are then in the log and applied here, so what a client asks next (through
    /// another connection too) sees them.
    fn release_syncs(&mut self, conn: ConnId, out: &mut Vec<Effect>) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        if c.syncs.is_empty() || c.channels.values().any(|ch| ch.in_flight > 0) {
            return;
        }
        for token in std::mem::take(&mut c.syncs) {
            out.push(Effect::Synced { conn, token });
        }
    }

    /// A command a channel caused was applied: once none is in flight, its held replies go out
    /// and its deferred methods run.
    fn command_applied(&mut self, ctx: Ctx, publish: bool, out: &mut Vec<Effect>) {
        self.command_applied_to_channel(ctx, publish, out);
        self.release_syncs(ctx.conn, out);
    }

    fn command_applied_to_channel(&mut self, ctx: Ctx, publish: bool, out: &mut Vec<Effect>) {
        if publish {
            // Counted per connection: the channel may have closed since.
            let credit = self.publish_credit();
            if let Some(c) = self.connections.get_mut(&ctx.conn) {
                out.extend(c.publish_applied(ctx.conn, credit));
            }
        }
        let mut replies = Vec::new();
        if let Some(ch) = self.channel_mut(ctx) {
            ch.in_flight = ch.in_flight.saturating_sub(1);
            if publish {
                ch.publishes_in_flight = ch.publishes_in_flight.saturating_sub(1);
            }
            if ch.in_flight == 0 {
                replies = std::mem::take(&mut ch.replies_when_applied);
            }
        }
        for method in replies {
            self.reply(ctx, method, out);
        }
        loop {
            let Some(ch) = self.channel_mut(ctx) else {
                return;
            };
            let runnable = match ch.deferred.front() {
                None => false,
                Some(Input::Publish { .. }) => ch.in_flight == ch.publishes_in_flight,
                Some(_) => ch.in_flight == 0,
            };
            if !runnable {
                return;
            }
            let Some(input) = ch.deferred.pop_front() else {
                return;
            };
            self.handle_now(input, out);
        }
    }

    fn handle_now(&mut self, input: Input, effects: &mut Vec<Effect>) {
        match input {
            Input::Login {
                conn,
                mechanism,
                username,
                password,
                peer_loopback,
                client_properties,
            } => self.login(
                conn,
                &mechanism,
                &username,
                &password,
                peer_loopback,
                &client_properties,
                effects,
            ),
            Input::OpenVhost { conn, vhost } => self.open_vhost(conn, &vhost, effects),
            Input::Method {
                conn,
                channel,
                method,
            } => {
                let ctx = Ctx { conn, channel };
                let (class_id, method_id) = (method.class_id(), method.method_id());
                if let Err(e) = self.method(ctx, method, effects) {
                    self.fail(ctx, e.caused_by(class_id, method_id), effects);
                }
            }
            Input::Publish {
                conn,
                channel,
                publish,
                properties,
                body,
            } => {
                let ctx = Ctx { conn, channel };
                if let Err(e) = self.publish(ctx, publish, properties, body, effects) {
                    self.fail(ctx, e.caused_by(60, 40), effects);
                }
            }
            Input::Writable { conn, writable } => self.set_writable(conn, writable, effects),
            Input::ConnectionClosed { conn } => self.close_connection_state(conn, effects),
            Input::Applied { command, index } => {
                self.applying_index = index;
                self.applying_version = command.version;
                self.apply(command, effects);
                self.applying_index = 0;
                self.applying_version = STATE_MACHINE_VERSION;
                if index > self.last_applied {
                    self.last_applied = index;
                }
                self.commands_now_applied(effects);
            }
            Input::ChannelError {
                conn,
                channel,
                error,
            } => self.fail(Ctx { conn, channel }, error, effects),
            Input::Tick => self.tick(effects),
            Input::Sync { conn, token } => {
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.syncs.push(token);
                    self.release_syncs(conn, effects);
                } else {
                    effects.push(Effect::Synced { conn, token });
                }
            }
            Input::NodeDown { node } => {
                self.peer_counts.remove(&node);
                self.node_down(node, effects)
            }
            Input::QueueCommand { from, command } => {
                if !self.keep_until_leading(from, &command) {
                    self.queue_command(from, command, effects)
                }
            }
            Input::Leader { node } => self.leader_known(node, effects),
            Input::QueueEvent { from, event } => self.queue_event(from, event, effects),
            Input::PeerLost { node } => {
                // Its counts come again first thing on its next stream.
                self.peer_counts.remove(&node);
                self.owner_lost_peer(node, effects);
                self.channels_lost_peer(node, effects);
            }
            Input::CloseConnection { conn, reason } => {
                self.close_by_operator(conn, &reason, effects)
            }
            Input::PeerCounts { node, counts } => self.peer_counts(node, counts),
            Input::Forwarded {
                from,
                seq,
                queue,
                message,
            } => self.forwarded(from, seq, queue, message, effects),
        }
    }

    /// Dispatches a channel-level method to its class's handler.
    fn method(&mut self, ctx: Ctx, method: Method, out: &mut Vec<Effect>) -> Result<(), AmqpError> {
        if let Method::ChannelOpen(_) = method {
            return self.channel_open(ctx, out);
        }
        let method = match self.wait_for_removal_first(ctx, method) {
            Some(m) => m,
            None => return Ok(()),
        };
        if self.channel_mut(ctx).is_none() {
            // The runtime forwards only methods of open channels; a method for a channel the core
            // already closed (a race with our channel.close) is dropped, as the spec requires.
            if let Method::ChannelClose(_) = method {
                out.push(Effect::Send {
                    conn: ctx.conn,
                    channel: ctx.channel,
                    method: Method::ChannelCloseOk(Default::default()),
                });
            }
            return Ok(());
        }
        match method {
            Method::ChannelClose(_) => self.channel_close(ctx, out),
            Method::ChannelCloseOk(_) => Ok(()),
            Method::ChannelFlow(m) => self.channel_flow(ctx, m, out),
            Method::ChannelFlowOk(_) => Ok(()),
            Method::AccessRequest(_) => {
                self.reply(
                    ctx,
                    Method::AccessRequestOk(warren_wire::AccessRequestOk { ticket: 1 }),
                    out,
                );
                Ok(())
            }
            Method::ExchangeDeclare(m) => self.exchange_declare(ctx, m, out),
            Method::ExchangeDelete(m) => self.exchange_delete(ctx, m, out),
            Method::ExchangeBind(m) => self.exchange_bind(ctx, m, out),
            Method::ExchangeUnbind(m) => self.exchange_unbind(ctx, m, out),
            Method::QueueDeclare(m) => self.queue_declare(ctx, m, out),
            Method::QueueBind(m) => self.queue_bind(ctx, m, out),
            Method::QueueUnbind(m) => self.queue_unbind(ctx, m, out),
            Method::QueuePurge(m) => self.queue_purge(ctx, m, out),
            Method::QueueDelete(m) => self.queue_delete(ctx, m, out),
            Method::BasicQos(m) => self.basic_qos(ctx, m, out),
            Method::BasicConsume(m) => self.basic_consume(ctx, m, out),
            Method::BasicCancel(m) => self.basic_cancel(ctx, m, out),
            Method::BasicGet(m) => self.basic_get(ctx, m, out),
            Method::BasicAck(m) => self.basic_ack(ctx, m.delivery_tag, m.multiple, out),
            Method::BasicNack(m) => {
                self.basic_nack(ctx, m.delivery_tag, m.multiple, m.requeue, out)
            }
            Method::BasicReject(m) => self.basic_nack(ctx, m.delivery_tag, false, m.requeue, out),
            Method::BasicRecover(m) => {
                self.basic_recover(ctx, m.requeue, out)?;
                self.reply(ctx, Method::BasicRecoverOk(Default::default()), out);
                self.deliver_channel(ctx, out);
                Ok(())
            }
            Method::BasicRecoverAsync(m) => {
                self.basic_recover(ctx, m.requeue, out)?;
                self.deliver_channel(ctx, out);
                Ok(())
            }
            Method::TxSelect(_) => self.tx_select(ctx, out),
            Method::TxCommit(_) => self.tx_commit(ctx, out),
            Method::TxRollback(_) => self.tx_rollback(ctx, out),
            Method::ConfirmSelect(m) => self.confirm_select(ctx, m.nowait, out),
            // RabbitMQ's rabbit_channel answers every other method with this hard error.
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    /// Whether queue `id`'s contents stay out of the log (see `Queue::is_local`).
    pub(crate) fn is_local_queue(&self, id: QueueId) -> bool {
        self.queues.get(&id).is_some_and(Queue::is_local)
    }

    /// A change to the contents of queue `queue` (settle, reject, expire): applied at once for a
    /// local queue, whose contents the log does not carry, otherwise submitted like any
    /// shared-state change.
    pub(crate) fn submit_for_queue(&mut self, queue: QueueId, op: Op, out: &mut Vec<Effect>) {
        if let Some(command) = self.remote_settlement(queue, &op) {
            out.push(command);
        } else if self.is_local_queue(queue) {
            let command = Command {
                version: STATE_MACHINE_VERSION,
                origin: None,
                number: None,
                issued_at: self.now,
                op,
            };
            self.apply(command, out);
        } else {
            self.submit(None, op, out);
        }
    }

    /// Proposes a shared-state change to the log ([`Effect::Propose`]); it takes effect when it
    /// comes back as [`Input::Applied`] (on a single node too: a log of one).
    pub(crate) fn submit(&mut self, origin: Option<Origin>, op: Op, out: &mut Vec<Effect>) {
        // A topology command of this node's client channel is numbered like its logged
        // publishes: the client's node sends it again after a leader change until it is
        // applied here, and the state machine applies it once.
        let number = match (origin, &op) {
            (Some(o), op) if is_topology(op) && crate::node_of(o.conn) == self.config.node => self
                .number_for_log(
                    Ctx {
                        conn: o.conn,
                        channel: o.channel,
                    },
                    None,
                ),
            _ => None,
        };
        let command = Command {
            version: STATE_MACHINE_VERSION,
            origin,
            number,
            issued_at: self.now,
            op,
        };
        let mut flow = None;
        let credit = self.publish_credit();
        if let Some(o) = origin {
            let publish = matches!(command.op, Op::Publish { .. });
            if let Some(c) = self.connections.get_mut(&o.conn) {
                if let Some(ch) = c.channels.get_mut(&o.channel) {
                    ch.in_flight += 1;
                    if publish {
                        ch.publishes_in_flight += 1;
                        flow = c.publish_proposed(o.conn, credit);
                    }
                }
            }
        }
        out.push(Effect::Propose { command });
        out.extend(flow);
    }

    /// Applies a committed command; replies and errors go to its origin. The replicated state
    /// reads time only from the command (`issued_at`, the leader's clock when it proposed it,
    /// as `rabbit_fifo` reads `system_time` from the entry): while it is applied, `now` is that
    /// time, so every replica, and a replay long after, computes the same expiries and `x-death`
    /// times. The node's own clock comes back for what follows the command.
    fn apply(&mut self, command: Command, out: &mut Vec<Effect>) {
        let node_now = std::mem::replace(&mut self.now, command.issued_at);
        self.apply_at_issue_time(command, out);
        self.now = node_now;
    }

    fn apply_at_issue_time(&mut self, command: Command, out: &mut Vec<Effect>) {
        let origin = command.origin;
        let now = command.issued_at;
        let (class_id, method_id) = op_method(&command.op);
        let publish = matches!(command.op, Op::Publish { .. });
        // A copy of a logged publish sent again after a leader change, whose first copy was
        // applied (and counted as the channel's command then): confirmed, not enqueued, and
        // not counted again — a second count let a sync, a held reply or a deferred method
        // of the channel through before its later publishes were applied.
        let resent = match &command.op {
            Op::Publish { confirm, .. } => {
                command.version >= 2 && self.is_resent(origin, *confirm, now, command.version >= 3)
            }
            // A topology command sent again whose first copy was applied: skipped whole (the
            // first copy replied and was counted as the channel's command).
            _ if command.number.is_some() => self.is_resent(origin, command.number, now, true),
            _ => false,
        };
        if resent && command.number.is_some() {
            return;
        }
        let result = match command.op {
            Op::DeclareExchange {
                vhost,
                name,
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
                nowait,
            } => self.apply_declare_exchange(
                origin,
                &vhost,
                name,
                &kind,
                (durable, auto_delete, internal),
                arguments,
                nowait,
                out,
            ),
            Op::DeleteExchange {
                vhost,
                name,
                if_unused,
                nowait,
            } => self.apply_delete_exchange(origin, &vhost, &name, if_unused, nowait, out),
            Op::DeclareQueue {
                vhost,
                name,
                durable,
                exclusive,
                auto_delete,
                arguments,
                nowait,
            } => self.apply_declare_queue(
                origin,
                &vhost,
                name,
                (durable, exclusive, auto_delete),
                arguments,
                nowait,
                now,
                out,
            ),
            Op::DeleteQueue {
                vhost,
                name,
                if_unused,
                if_empty,
                nowait,
            } => self.apply_delete_queue(origin, &vhost, &name, if_unused, if_empty, nowait, out),
            Op::PurgeQueue {
                vhost,
                name,
                nowait,
            } => self.apply_purge_queue(origin, &vhost, &name, nowait, out),
            Op::Bind {
                vhost,
                source,
                destination,
                routing_key,
                arguments,
                nowait,
            } => self.apply_bind(
                origin,
                &vhost,
                &source,
                destination,
                &routing_key,
                &arguments,
                nowait,
                out,
            ),
            Op::Unbind {
                vhost,
                source,
                destination,
                routing_key,
                arguments,
                nowait,
            } => self.apply_unbind(
                origin,
                &vhost,
                &source,
                &destination,
                &routing_key,
                &arguments,
                nowait,
                out,
            ),
            Op::Publish { confirm, .. } if resent => {
                self.confirm_resent(origin, confirm, out);
                Ok(())
            }
            Op::Publish {
                vhost,
                exchange,
                routing_key,
                mandatory,
                confirm,
                properties,
                body,
                queues,
            } => self.apply_publish(
                origin,
                &vhost,
                Message {
                    exchange,
                    routing_key,
                    properties,
                    body,
                },
                queues,
                mandatory,
                confirm,
                now,
                out,
            ),
            Op::Settle { queue, seqs } => {
                self.apply_settle(queue, &seqs);
                Ok(())
            }
            Op::Reject { queue, seqs } => {
                self.apply_reject(queue, &seqs, out);
                Ok(())
            }
            Op::Return { queue, seqs } => {
                self.apply_return(queue, &seqs, out);
                Ok(())
            }
            Op::SetPolicy {
                vhost,
                name,
                operator,
                pattern,
                apply_to,
                priority,
                definition,
            } => self.apply_set_policy(
                vhost, name, operator, &pattern, &apply_to, priority, definition, out,
            ),
            Op::ClearPolicy {
                vhost,
                name,
                operator,
            } => self.apply_clear_policy(vhost, name, operator, out),
            Op::Recover => {
                self.apply_recover(command.version, out);
                self.follow_take_over(out);
                Ok(())
            }
            Op::TakeOver => {
                self.apply_take_over(command.version, out);
                self.follow_take_over(out);
                Ok(())
            }
            Op::RemoveQueue { queue } => {
                self.remove_queue(queue, out);
                Ok(())
            }
            Op::Expire { queue } => {
                self.apply_expire(queue, now, out);
                Ok(())
            }
            Op::ConfirmSelect => {
                self.apply_confirm_select(origin);
                Ok(())
            }
            Op::ForgetPublishers { before } => {
                self.apply_forget_publishers(before);
                Ok(())
            }
            Op::PutVhost { name } => {
                self.add_vhost(name);
                Ok(())
            }
            Op::DeleteVhost { name } => {
                self.apply_delete_vhost(&name, out);
                Ok(())
            }
            Op::PutUser {
                name,
                password_hash,
                tags,
            } => {
                self.users.insert(
                    name.clone(),
                    User {
                        name,
                        password_hash,
                        tags,
                    },
                );
                Ok(())
            }
            Op::DeleteUser { name } => {
                self.apply_delete_user(&name, out);
                Ok(())
            }
            Op::SetPermission {
                user,
                vhost,
                configure,
                write,
                read,
            } => {
                if let Ok(p) = Permission::new(&configure, &write, &read) {
                    self.permissions.insert((user, vhost), p);
                }
                Ok(())
            }
            Op::ClearPermission { user, vhost } => {
                self.permissions.remove(&(user, vhost));
                Ok(())
            }
            Op::SetTopicPermission {
                user,
                vhost,
                exchange,
                write,
                read,
            } => {
                self.apply_set_topic_permission(user, vhost, exchange, &write, &read);
                Ok(())
            }
            Op::ClearTopicPermission {
                user,
                vhost,
                exchange,
            } => {
                self.apply_clear_topic_permission(&user, &vhost, exchange.as_ref());
                Ok(())
            }
            Op::SetVhostLimits {
                vhost,
                limits,
                replace,
            } => {
                if self.vhosts.contains_key(&vhost) {
                    let l = self.vhost_limits.entry(vhost.clone()).or_default();
                    l.set(&limits, replace);
                    if l.is_empty() {
                        self.vhost_limits.remove(&vhost);
                    }
                }
                Ok(())
            }
            Op::ClearVhostLimits { vhost, names } => {
                if let Some(l) = self.vhost_limits.get_mut(&vhost) {
                    l.clear(&names);
                    if l.is_empty() {
                        self.vhost_limits.remove(&vhost);
                    }
                }
                Ok(())
            }
            Op::SetUserLimits {
                user,
                limits,
                replace,
            } => {
                if self.users.contains_key(&user) {
                    let l = self.user_limits.entry(user.clone()).or_default();
                    l.set(&limits, replace);
                    if l.is_empty() {
                        self.user_limits.remove(&user);
                    }
                }
                Ok(())
            }
            Op::ClearUserLimits { user, names } => {
                if let Some(l) = self.user_limits.get_mut(&user) {
                    l.clear(&names);
                    if l.is_empty() {
                        self.user_limits.remove(&user);
                    }
                }
                Ok(())
            }
        };
        if let Some(o) = origin.filter(|_| !resent) {
            self.command_applied(
                Ctx {
                    conn: o.conn,
                    channel: o.channel,
                },
                publish,
                out,
            );
        }
        if let (Err(e), Some(origin)) = (result, origin) {
            let ctx = Ctx {
                conn: origin.conn,
                channel: origin.channel,
            };
            self.fail(ctx, e.caused_by(class_id, method_id), out);
        }
    }

    /// Turns an error into `channel.close` or `connection.close`, dropping the closed state first.
    pub(crate) fn fail(&mut self, ctx: Ctx, error: AmqpError, out: &mut Vec<Effect>) {
        match error.scope() {
            ErrorScope::Channel => {
                if self.channel_mut(ctx).is_none() {
                    return;
                }
                let deferred = self.drop_channel(ctx, out);
                out.push(Effect::CloseChannel {
                    conn: ctx.conn,
                    channel: ctx.channel,
                    error,
                });
                // What waited on the channel meets a closed channel: a close is answered, an
                // open opens it again; anything else is dropped, as the spec says.
                for input in deferred {
                    if let Input::Method {
                        method: Method::ChannelClose(_) | Method::ChannelOpen(_),
                        ..
                    } = &input
                    {
                        self.handle_now(input, out);
                    }
                }
            }
            ErrorScope::Connection => {
                if !self.connections.contains_key(&ctx.conn) {
                    return;
                }
                self.close_connection_state(ctx.conn, out);
                out.push(Effect::CloseConnection {
                    conn: ctx.conn,
                    error,
                });
            }
        }
    }

    /// Sends a content-less method back on the context's channel.
    pub(crate) fn reply(&self, ctx: Ctx, method: Method, out: &mut Vec<Effect>) {
        out.push(Effect::Send {
            conn: ctx.conn,
            channel: ctx.channel,
            method,
        });
    }

    /// Sends a reply to an origin, if the command had one.
    pub(crate) fn reply_origin(origin: Option<Origin>, method: Method, out: &mut Vec<Effect>) {
        if let Some(o) = origin {
            out.push(Effect::Send {
                conn: o.conn,
                channel: o.channel,
                method,
            });
        }
    }

    pub(crate) fn channel_mut(&mut self, ctx: Ctx) -> Option<&mut crate::channel::Channel> {
        self.connections
            .get_mut(&ctx.conn)?
            .channels
            .get_mut(&ctx.channel)
    }

    /// The vhost and user of an open connection.
    pub(crate) fn session(&self, conn: ConnId) -> Result<(ShortStr, String), AmqpError> {
        let c = self
            .connections
            .get(&conn)
            .ok_or_else(|| AmqpError::command_invalid("connection not open"))?;
        match (&c.vhost, &c.user) {
            (Some(v), Some(u)) => Ok((v.clone(), u.clone())),
            _ => Err(AmqpError::command_invalid("connection not open")),
        }
    }

    /// Checks the user's permission for `access` on a resource, with RabbitMQ's refusal text.
    pub(crate) fn check_access(
        &self,
        conn: ConnId,
        access: Access,
        resource_kind: &str,
        name: &str,
    ) -> Result<(), AmqpError> {
        let (vhost, user) = self.session(conn)?;
        let allowed = self
            .permissions
            .get(&(user.clone(), vhost.clone()))
            .is_some_and(|p| p.allows(access, name));
        if allowed {
            Ok(())
        } else {
            Err(AmqpError::access_refused(format!(
                "{} access to {resource_kind} '{name}' in vhost '{vhost}' refused for user '{user}'",
                access.as_str()
            )))
        }
    }

    /// A fresh name with RabbitMQ's shape: `prefix` + 22 url-safe base64 characters.
    pub(crate) fn generate_name(&mut self, prefix: &str, conn: ConnId) -> ShortStr {
        self.name_counter += 1;
        let mut hasher = Sha256::new();
        hasher.update(self.name_counter.to_be_bytes());
        hasher.update(conn.to_be_bytes());
        hasher.update(self.now.to_be_bytes());
        let digest = hasher.finalize();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        ShortStr::from(format!("{prefix}{encoded}"))
    }

    /// This broker's node (see [`BrokerConfig::node`]).
    /// What this node's clients caused since the last call (see [`Churn`]).
    pub fn take_churn(&mut self) -> Churn {
        std::mem::take(&mut self.churn)
    }

    /// Whether `conn` is a connection of this node's process (not of an earlier run, not of
    /// another node).
    pub(crate) fn is_live_here(&self, conn: ConnId) -> bool {
        crate::node_of(conn) == self.config.node && conn >= self.config.first_conn
    }

    /// A connection's credit for credit flow (see [`BrokerConfig::publish_credit`]).
    pub fn publish_credit(&self) -> u32 {
        self.config.publish_credit.max(2)
    }

    pub fn node(&self) -> u64 {
        self.config.node
    }

    /// Looks up a queue by name in a vhost.
    pub(crate) fn queue_id(&self, vhost: &ShortStr, name: &str) -> Option<QueueId> {
        self.vhosts.get(vhost)?.queues.get(name).copied()
    }
}

/// The (class, method) ids an operation answers, for error replies.
fn op_method(op: &Op) -> (u16, u16) {
    match op {
        Op::DeclareExchange { .. } => (40, 10),
        Op::DeleteExchange { .. } => (40, 20),
        Op::Bind {
            destination: crate::command::Destination::Exchange(_),
            ..
        } => (40, 30),
        Op::Unbind {
            destination: crate::command::Destination::Exchange(_),
            ..
        } => (40, 40),
        Op::DeclareQueue { .. } => (50, 10),
        Op::Bind { .. } => (50, 20),
        Op::PurgeQueue { .. } => (50, 30),
        Op::DeleteQueue { .. } => (50, 40),
        Op::Unbind { .. } => (50, 50),
        Op::Publish { .. } => (60, 40),
        Op::Settle { .. } => (60, 80),
        Op::Reject { .. } => (60, 90),
        Op::Return { .. } => (60, 120),
        Op::ConfirmSelect => (85, 10),
        Op::Recover
        | Op::TakeOver
        | Op::RemoveQueue { .. }
        | Op::Expire { .. }
        | Op::ForgetPublishers { .. }
        | Op::PutVhost { .. }
        | Op::DeleteVhost { .. }
        | Op::PutUser { .. }
        | Op::DeleteUser { .. }
        | Op::SetPermission { .. }
        | Op::ClearPermission { .. }
        | Op::SetTopicPermission { .. }
        | Op::ClearTopicPermission { .. }
        | Op::SetVhostLimits { .. }
        | Op::ClearVhostLimits { .. }
        | Op::SetUserLimits { .. }
        | Op::ClearUserLimits { .. }
        | Op::SetPolicy { .. }
        | Op::ClearPolicy { .. } => (0, 0),
    }
}

#[cfg(test)]
mod access_control_tests;
#[cfg(test)]
mod follow_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod topology_tests;
