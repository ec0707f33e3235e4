//! The channel's side of queue commands (`crate::queue_command`): this broker's channels
//! consuming from queues another node's broker owns. The channel keeps what the client sees —
//! delivery tags, the unacked map, prefetch — and sends the owner consume, credit, settle,
//! return, discard and cancel; the owner answers with deliveries (`owner.rs`).
//!
//! Credit: a consumer with a prefetch (its own, or the channel's global one when it has none)
//! gets that much when it attaches and one back per delivery settled or returned
//! ([`Broker::grant_credit`]). A no-ack consumer, or one without any prefetch, gets a window of
//! [`REMOTE_WINDOW`] deliveries, given back in batches ([`REMOTE_REFILL`]) as its deliveries
//! go out to the client while its connection can take them, and held back while it cannot (back-pressure reaches
//! the owner: at most a window is in flight). The global prefetch is not shared exactly
//! across consumers of queues on other nodes (each such consumer may hold up to the limit);
//! exact sharing needs absolute grants (`docs/architecture.md`, step 2).

use warren_wire::{
    BasicCancel, BasicCancelOk, BasicConsumeOk, BasicGetEmpty, BasicGetOk, Method, QueueDeclare,
    QueueDeclareOk, QueueDeleteOk, QueuePurgeOk, ShortStr,
};

use super::delivery::deliver_effect;
use super::{Broker, Ctx};
use crate::channel::{Awaiting, Consumer, RemoteConsumer, Unacked};
use crate::connection::DELIVERY_OVERHEAD_BYTES;
use crate::queue::{ConsumerRef, QueueId};
use crate::{AmqpError, Delivery, Effect, Millis, QueueCommand, QueueEvent};

/// The credit window of a consumer of another node's queue without a prefetch.
pub(crate) const REMOTE_WINDOW: u32 = 200;

/// A window's credit goes back to the owner in batches of this many deliveries sent on (one
/// `Credit` per delivery cost a command per message: T1 of `benches/compare` measured 12 %
/// fewer messages per second that way); the owner keeps at least the rest of the window.
pub(crate) const REMOTE_REFILL: u32 = REMOTE_WINDOW / 4;

/// A `basic.consume` on a queue another node's broker owns, checked by the channel.
pub(super) struct RemoteConsume {
    pub(super) queue: QueueId,
    pub(super) owner: u64,
    pub(super) tag: ShortStr,
    pub(super) no_ack: bool,
    pub(super) exclusive: bool,
    pub(super) nowait: bool,
    pub(super) prefetch: u16,
    pub(super) global_prefetch: u16,
    pub(super) priority: i32,
    pub(super) timeout: Option<Millis>,
}

impl Broker {
    /// The node whose broker owns queue `id`, if not this one and the channel reaches it with
    /// queue commands for any queue method: a transient queue homed elsewhere. (A replicated
    /// queue's owner is asked only what a replica cannot answer:
    /// [`Broker::decider_elsewhere`].) Only for a connection of this node (`conn`).
    pub(crate) fn owner_elsewhere(&self, conn: crate::ConnId, id: QueueId) -> Option<u64> {
        if crate::node_of(conn) != self.config.node {
            return None;
        }
        self.home_elsewhere(id)
    }

    /// The home of transient queue `id`, if not this node.
    fn home_elsewhere(&self, id: QueueId) -> Option<u64> {
        let q = self.queues.get(&id)?;
        (q.is_local() && q.home != 0 && q.home != self.config.node).then_some(q.home)
    }

    /// The node whose broker owns queue `id` for a channel of connection `conn`, if not this
    /// one: a transient queue's home, or the leader for a replicated queue (not a stream:
    /// every replica has a stream's messages, and its consumers read their own node's) while
    /// this broker does not lead. The owner holds the consumers and knows which messages are
    /// ready (a replica does not know what the leader checked out): consumes, gets, a
    /// declare's counts, purges and conditional deletes go there. Only for a connection of
    /// this node.
    pub(crate) fn decider_elsewhere(&self, conn: crate::ConnId, id: QueueId) -> Option<u64> {
        if crate::node_of(conn) != self.config.node {
            return None;
        }
        self.queue_owner_elsewhere(id)
    }

    /// The node whose broker owns queue `id`, if not this one and queue commands reach it:
    /// where the returns and credit of a delivery from it go (only a channel of this node
    /// has one).
    pub(crate) fn queue_owner_elsewhere(&self, id: QueueId) -> Option<u64> {
        let q = self.queues.get(&id)?;
        if super::follow::follows_leader(q) {
            return self.leader_elsewhere();
        }
        self.home_elsewhere(id)
    }

    /// Attaches a consumer of another node's queue: the channel records it and asks the owner,
    /// whose answer ([`QueueEvent::Consumed`]) sends `basic.consume-ok` or closes the channel.
    /// The channel's later methods wait for it, as for a command in flight.
    pub(super) fn consume_remote(&mut self, ctx: Ctx, c: RemoteConsume, out: &mut Vec<Effect>) {
        let limited = !c.no_ack && (c.prefetch > 0 || c.global_prefetch > 0);
        let credit = match (limited, c.prefetch) {
            (false, _) => REMOTE_WINDOW,
            (true, 0) => u32::from(c.global_prefetch),
            (true, p) => u32::from(p),
        };
        let consumer = ConsumerRef {
            conn: ctx.conn,
            channel: ctx.channel,
            tag: c.tag.clone(),
        };
        let Some(ch) = self.channel_mut(ctx) else {
            return;
        };
        ch.consumers.insert(
            c.tag.clone(),
            Consumer {
                tag: c.tag.clone(),
                queue: c.queue,
                no_ack: c.no_ack,
                prefetch: c.prefetch,
                unacked: 0,
                timeout: c.timeout,
                stream_next: None,
                remote: Some(RemoteConsumer {
                    owner: c.owner,
                    window: !limited,
                    owed: 0,
                }),
                priority: c.priority,
                exclusive: c.exclusive,
            },
        );
        ch.awaiting_owner.insert(c.tag, (true, c.nowait, c.owner));
        ch.in_flight += 1;
        if c.owner == 0 {
            // A replicated queue while no leader is known: sent once one is (`follow.rs`).
            return;
        }
        out.push(Effect::ToOwner {
            node: c.owner,
            command: QueueCommand::Consume {
                consumer,
                queue: c.queue,
                credit,
                priority: c.priority,
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                held: Vec::new(),
            },
        });
    }

    /// `basic.cancel` of a consumer of another node's queue: the owner detaches it and answers
    /// ([`QueueEvent::CancelOk`], after removing an auto-delete queue that lost its last
    /// consumer); `basic.cancel-ok` waits for that.
    pub(super) fn cancel_remote(
        &mut self,
        ctx: Ctx,
        tag: ShortStr,
        consumer: &Consumer,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) {
        let Some(remote) = &consumer.remote else {
            return;
        };
        let owner = remote.owner;
        if owner == 0 {
            // Attached nowhere (a replicated queue between leaders): nothing to detach.
            if !nowait {
                let ok = BasicCancelOk { consumer_tag: tag };
                self.reply(ctx, Method::BasicCancelOk(ok), out);
            }
            return;
        }
        if let Some(ch) = self.channel_mut(ctx) {
            ch.awaiting_owner
                .insert(tag.clone(), (false, nowait, owner));
            ch.in_flight += 1;
        }
        out.push(Effect::ToOwner {
            node: owner,
            command: QueueCommand::Cancel {
                consumer: ConsumerRef {
                    conn: ctx.conn,
                    channel: ctx.channel,
                    tag,
                },
                queue: consumer.queue,
            },
        });
    }

    /// [`crate::Input::QueueEvent`].
    pub(super) fn queue_event(&mut self, from: u64, event: QueueEvent, out: &mut Vec<Effect>) {
        match event {
            QueueEvent::Consumed {
                consumer, error, ..
            } => self.owner_answered(from, consumer, true, error, out),
            QueueEvent::CancelOk { consumer, .. } => {
                self.owner_answered(from, consumer, false, None, out)
            }
            QueueEvent::Deliver(delivery) => self.remote_deliver(from, delivery, out),
            QueueEvent::Got {
                delivery,
                message_count,
            } => self.remote_got(from, delivery, message_count, out),
            QueueEvent::GotNothing {
                consumer, error, ..
            } => self.remote_got_nothing(from, &consumer, error, out),
            QueueEvent::Purged {
                consumer,
                message_count,
                error,
                ..
            } => self.remote_purged(from, &consumer, message_count, error, out),
            QueueEvent::Deleted {
                consumer,
                queue,
                message_count,
                error,
            } => self.remote_deleted(from, &consumer, queue, message_count, error, out),
            QueueEvent::Declared {
                consumer,
                queue,
                message_count,
                consumer_count,
                error,
            } => {
                let counts = (message_count, consumer_count);
                self.remote_declared(from, &consumer, queue, counts, error, out)
            }
        }
    }

    /// `basic.get` of a queue another node's broker owns: the owner checks a message out to
    /// the channel ([`QueueEvent::Got`]) or has none; the channel's later methods wait for it.
    pub(super) fn get_remote(
        &mut self,
        ctx: Ctx,
        queue: QueueId,
        owner: u64,
        no_ack: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let consumer = channel_ref(ctx);
        // What this broker has applied, counting the entry being applied: a get that waited
        // for the channel's requeue runs while that requeue is applied, before
        // `last_applied` moves, and the owner must see the requeue too.
        let command = QueueCommand::Get {
            consumer,
            queue,
            no_ack,
            applied: self.last_applied.max(self.applying_index),
        };
        self.ask_owner(
            ctx,
            owner,
            Some(Awaiting::Get { no_ack, queue }),
            command,
            out,
        )
    }

    /// `queue.purge` of a queue another node's broker owns: the owner purges it and answers
    /// ([`QueueEvent::Purged`]) unless `nowait`; the channel's later methods wait for that.
    pub(super) fn purge_remote(
        &mut self,
        ctx: Ctx,
        queue: QueueId,
        owner: u64,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let consumer = channel_ref(ctx);
        let command = QueueCommand::Purge {
            consumer,
            queue,
            reply: !nowait,
        };
        let awaiting = (!nowait).then_some(Awaiting::Purge);
        self.ask_owner(ctx, owner, awaiting, command, out)
    }

    /// `queue.delete` of a queue another node's broker owns: the owner decides (it has the
    /// consumers and messages) and proposes the removal; the channel's later methods wait for
    /// its answer, and `queue.delete-ok` for the removal applied here too.
    /// `how`: the method's `if-unused`, `if-empty` and `nowait`.
    pub(super) fn delete_remote(
        &mut self,
        ctx: Ctx,
        how: (bool, bool, bool),
        queue: QueueId,
        owner: u64,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (if_unused, if_empty, nowait) = how;
        let command = QueueCommand::Delete {
            consumer: channel_ref(ctx),
            queue,
            if_unused,
            if_empty,
        };
        let awaiting = Some(Awaiting::Delete { nowait });
        self.ask_owner(ctx, owner, awaiting, command, out)
    }

    /// `queue.declare` of a queue another node's broker owns, passive or (`declare`) a
    /// redeclare this broker has checked against the replicated declaration: the owner has
    /// the counts (and the use, for `x-expires`) and decides whether the queue is still there
    /// and exclusive; the channel's later methods wait for its answer. A passive `nowait`
    /// declare waits for nothing. A redeclare the owner answers "gone" creates the queue anew.
    pub(super) fn declare_remote(
        &mut self,
        ctx: Ctx,
        queue: QueueId,
        owner: u64,
        declare: Option<QueueDeclare>,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let reply = declare.is_some() || !nowait;
        if let Some(ch) = self.channel_mut(ctx) {
            ch.remote_declare = declare;
        }
        let command = QueueCommand::Declare {
            consumer: channel_ref(ctx),
            queue,
            reply,
        };
        let awaiting = reply.then_some(Awaiting::Declare { nowait });
        self.ask_owner(ctx, owner, awaiting, command, out)
    }

    /// The owner's answer to a channel's `queue.declare`: `queue.declare-ok` with its counts
    /// (none for `nowait`), the queue created anew for a redeclare of a queue the owner no
    /// longer has, or the channel closes with the owner's error (or 404 if the queue went here
    /// meanwhile).
    fn remote_declared(
        &mut self,
        from: u64,
        consumer: &ConsumerRef,
        queue: QueueId,
        (message_count, consumer_count): (u32, u32),
        error: Option<AmqpError>,
        out: &mut Vec<Effect>,
    ) {
        let Some((ctx, kind)) =
            self.take_answer(from, consumer, |k| matches!(k, Awaiting::Declare { .. }))
        else {
            return;
        };
        let declare = self
            .channel_mut(ctx)
            .and_then(|ch| ch.remote_declare.take());
        let name = self.queues.get(&queue).map(|q| q.name.clone());
        match (error, declare) {
            (Some(e), Some(m)) if e.code == warren_wire::constants::NOT_FOUND => {
                let vhost = self.session(ctx.conn).map(|(v, _)| v);
                if let Ok(vhost) = vhost {
                    let op = super::queue_class::declare_op(vhost, m);
                    self.submit(Some(ctx.origin()), op, out);
                }
                self.command_applied(ctx, false, out);
            }
            (Some(error), _) => {
                // RabbitMQ's text for a queue that is gone, where this replica knows its name.
                let vhost = self.session(ctx.conn).map(|(v, _)| v).ok();
                let error = match (&name, vhost) {
                    (Some(name), Some(vhost))
                        if error.code == warren_wire::constants::NOT_FOUND =>
                    {
                        super::queue_class::no_queue(name, &vhost)
                    }
                    _ => error,
                };
                self.fail(ctx, error.caused_by(50, 10), out)
            }
            (None, _) if kind == (Awaiting::Declare { nowait: true }) => {
                self.command_applied(ctx, false, out)
            }
            (None, _) => {
                let answer = match name {
                    Some(name) => Ok(Method::QueueDeclareOk(QueueDeclareOk {
                        queue: name,
                        message_count,
                        consumer_count,
                    })),
                    None => Err(AmqpError::not_found(
                        "the queue was deleted while the channel was declaring it",
                    )
                    .caused_by(50, 10)),
                };
                self.owner_replied(ctx, answer, out);
            }
        }
    }

    /// Sends a channel's `command` to the queue's owner; with `awaiting`, the channel's later
    /// methods wait for the owner's answer.
    fn ask_owner(
        &mut self,
        ctx: Ctx,
        owner: u64,
        awaiting: Option<Awaiting>,
        command: QueueCommand,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        if let Some(kind) = awaiting {
            ch.awaiting_answer = Some((owner, kind));
            ch.asked = Some(command.clone());
            ch.in_flight += 1;
        }
        out.push(Effect::ToOwner {
            node: owner,
            command,
        });
        Ok(())
    }

    /// The owner answered a channel's `queue.delete`: `queue.delete-ok` once this broker has
    /// applied the removal too (a client that declares the queue next finds it gone), or the
    /// channel closes with the owner's error.
    fn remote_deleted(
        &mut self,
        from: u64,
        consumer: &ConsumerRef,
        queue: QueueId,
        message_count: u32,
        error: Option<AmqpError>,
        out: &mut Vec<Effect>,
    ) {
        let Some((ctx, kind)) =
            self.take_answer(from, consumer, |k| matches!(k, Awaiting::Delete { .. }))
        else {
            return;
        };
        if let Some(error) = error {
            self.fail(ctx, error.caused_by(50, 40), out);
            return;
        }
        if kind == (Awaiting::Delete { nowait: false }) {
            let ok = Method::QueueDeleteOk(QueueDeleteOk { message_count });
            if self.queues.contains_key(&queue) {
                self.reply_when_removed(ctx, queue, ok);
            } else {
                self.reply(ctx, ok, out);
            }
        }
        self.command_applied(ctx, false, out);
    }

    /// The channel `consumer` names, if it waits for `from`'s answer of kind `kind` (which
    /// `matches` recognises): no longer waiting after this.
    fn take_answer(
        &mut self,
        from: u64,
        consumer: &ConsumerRef,
        matches: impl Fn(Awaiting) -> bool,
    ) -> Option<(Ctx, Awaiting)> {
        let ctx = Ctx {
            conn: consumer.conn,
            channel: consumer.channel,
        };
        let ch = self.channel_mut(ctx)?;
        match ch.awaiting_answer {
            Some((owner, kind)) if owner == from && matches(kind) => {
                ch.awaiting_answer = None;
                Some((ctx, kind))
            }
            _ => None,
        }
    }

    /// The owner purged a queue for a channel: `queue.purge-ok`, or the channel closes with
    /// the owner's error.
    fn remote_purged(
        &mut self,
        from: u64,
        consumer: &ConsumerRef,
        message_count: u32,
        error: Option<AmqpError>,
        out: &mut Vec<Effect>,
    ) {
        let Some((ctx, _)) = self.take_answer(from, consumer, |k| k == Awaiting::Purge) else {
            return;
        };
        let answer = match error {
            Some(error) => Err(error.caused_by(50, 30)),
            None => Ok(Method::QueuePurgeOk(QueuePurgeOk { message_count })),
        };
        self.owner_replied(ctx, answer, out);
    }

    /// The owner's answer to a channel's method that waited for it: the reply, and the
    /// channel's later methods go on; or the channel closes with the error.
    fn owner_replied(
        &mut self,
        ctx: Ctx,
        answer: Result<Method, AmqpError>,
        out: &mut Vec<Effect>,
    ) {
        match answer {
            Ok(reply) => {
                self.reply(ctx, reply, out);
                self.command_applied(ctx, false, out);
            }
            Err(error) => self.fail(ctx, error, out),
        }
    }

    /// A message for a channel's `basic.get`: `basic.get-ok` with the channel's tag (one
    /// nobody waits for any more goes back).
    fn remote_got(
        &mut self,
        from: u64,
        delivery: Delivery,
        message_count: u32,
        out: &mut Vec<Effect>,
    ) {
        let Delivery {
            consumer,
            queue,
            seq,
            redelivered,
            delivery_count,
            message,
        } = delivery;
        let now = self.now;
        let taken = self.take_answer(from, &consumer, |k| matches!(k, Awaiting::Get { .. }));
        let Some(((ctx, no_ack), ch)) = taken.and_then(|(ctx, kind)| {
            let no_ack = matches!(kind, Awaiting::Get { no_ack: true, .. });
            Some(((ctx, no_ack), self.channel_mut(ctx)?))
        }) else {
            out.push(Effect::ToOwner {
                node: from,
                command: QueueCommand::Return {
                    queue,
                    seqs: vec![seq],
                },
            });
            return;
        };
        let delivery_tag = ch.next_tag();
        if !no_ack {
            ch.unacked.insert(
                delivery_tag,
                Unacked {
                    queue,
                    seq,
                    consumer_tag: None,
                    delivered_at: now,
                },
            );
        }
        out.push(Effect::SendContent {
            conn: ctx.conn,
            channel: ctx.channel,
            method: Method::BasicGetOk(BasicGetOk {
                delivery_tag,
                redelivered,
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                message_count,
            }),
            properties: super::delivery::with_delivery_count(&message, delivery_count),
            body: message.body.clone(),
        });
        self.command_applied(ctx, false, out);
    }

    /// A channel's `basic.get` waiting for owner `from`, which no longer decides the queue:
    /// `basic.get-empty`.
    pub(super) fn stale_get_answered(&mut self, ctx: Ctx, from: u64, out: &mut Vec<Effect>) {
        self.remote_got_nothing(from, &channel_ref(ctx), None, out);
    }

    /// No message for a channel's `basic.get`: `basic.get-empty`, or the channel closes with
    /// the owner's error.
    fn remote_got_nothing(
        &mut self,
        from: u64,
        consumer: &ConsumerRef,
        error: Option<AmqpError>,
        out: &mut Vec<Effect>,
    ) {
        let Some((ctx, _)) =
            self.take_answer(from, consumer, |k| matches!(k, Awaiting::Get { .. }))
        else {
            return;
        };
        let answer = match error {
            Some(error) => Err(error.caused_by(60, 70)),
            None => Ok(Method::BasicGetEmpty(BasicGetEmpty {
                cluster_id: ShortStr::default(),
            })),
        };
        self.owner_replied(ctx, answer, out);
    }

    /// Owner `from` answered a consume (`consume`) or a cancel of this channel's.
    fn owner_answered(
        &mut self,
        from: u64,
        consumer: ConsumerRef,
        consume: bool,
        error: Option<AmqpError>,
        out: &mut Vec<Effect>,
    ) {
        let ctx = Ctx {
            conn: consumer.conn,
            channel: consumer.channel,
        };
        let notify = self
            .connections
            .get(&ctx.conn)
            .is_some_and(|c| c.consumer_cancel_notify);
        let Some(ch) = self.channel_mut(ctx) else {
            return;
        };
        let waiting = ch.awaiting_owner.get(&consumer.tag).copied();
        let Some((was_consume, nowait, _)) = waiting.filter(|w| w.2 == from) else {
            // No client method waits: a consumer of a replicated queue attaching again to a
            // new owner. Refused (the queue went, or another consumer holds it exclusively):
            // the consumer ends here too.
            if consume && error.is_some() {
                let attached_there = ch
                    .consumers
                    .get(&consumer.tag)
                    .and_then(|k| k.remote.as_ref())
                    .is_some_and(|r| r.owner == from);
                if attached_there {
                    if let Some(k) = ch.consumers.remove(&consumer.tag) {
                        ch.forget_unacked(|u| u.queue == k.queue);
                    }
                    if notify {
                        out.push(cancel_to_client(ctx.conn, ctx.channel, consumer.tag));
                    }
                }
            }
            return;
        };
        ch.awaiting_owner.remove(&consumer.tag);
        if was_consume != consume {
            return;
        }
        if let Some(error) = error {
            ch.consumers.remove(&consumer.tag);
            // The error of the client's `basic.consume`.
            self.fail(ctx, error.caused_by(60, 20), out);
            return;
        }
        if !nowait {
            let reply = if consume {
                Method::BasicConsumeOk(BasicConsumeOk {
                    consumer_tag: consumer.tag,
                })
            } else {
                Method::BasicCancelOk(BasicCancelOk {
                    consumer_tag: consumer.tag,
                })
            };
            self.reply(ctx, reply, out);
        }
        self.command_applied(ctx, false, out);
    }

    /// A delivery from another node's queue: the channel gives it a tag and sends it on (a
    /// client cannot stop a channel with `channel.flow`, as in RabbitMQ). One for a consumer
    /// that is gone goes back to its queue.
    fn remote_deliver(&mut self, from: u64, delivery: Delivery, out: &mut Vec<Effect>) {
        let Delivery {
            consumer,
            queue,
            seq,
            redelivered,
            delivery_count,
            message,
        } = delivery;
        let ctx = Ctx {
            conn: consumer.conn,
            channel: consumer.channel,
        };
        let now = self.now;
        let Some(conn) = self.connections.get_mut(&ctx.conn) else {
            return give_back_one(from, consumer, queue, seq, true, out);
        };
        let (writable, credit) = (conn.writable, conn.credit);
        let Some(ch) = conn.channels.get_mut(&ctx.channel) else {
            return give_back_one(from, consumer, queue, seq, true, out);
        };
        let cancelling = ch
            .awaiting_owner
            .get(&consumer.tag)
            .is_some_and(|&(consume, _, owner)| !consume && owner == from);
        let Some(k) = ch
            .consumers
            .get_mut(&consumer.tag)
            .filter(|k| k.queue == queue && k.remote.as_ref().is_some_and(|r| r.owner == from))
        else {
            return give_back_one(from, consumer, queue, seq, !cancelling, out);
        };
        let no_ack = k.no_ack;
        // A window's credit goes back in batches, while the client's socket takes deliveries.
        let mut refill = 0;
        if let Some(r) = k.remote.as_mut().filter(|r| r.window) {
            r.owed += 1;
            if writable && credit > 0 && r.owed >= REMOTE_REFILL {
                refill = std::mem::take(&mut r.owed);
            }
        }
        if !no_ack {
            k.unacked += 1;
        }
        let delivery_tag = ch.next_tag();
        if !no_ack {
            ch.unacked.insert(
                delivery_tag,
                Unacked {
                    queue,
                    seq,
                    consumer_tag: Some(consumer.tag.clone()),
                    delivered_at: now,
                },
            );
        }
        conn.credit -= message.body.len() as i64 + DELIVERY_OVERHEAD_BYTES;
        let await_writable = conn.credit <= 0 && !conn.awaiting_writable;
        if await_writable {
            // The window's credit owed waits for the socket to drain: ask to be told
            // (`pay_owed_credit`), as the delivery loop does for a local consumer.
            conn.awaiting_writable = true;
        }
        if refill > 0 {
            out.push(Effect::ToOwner {
                node: from,
                command: QueueCommand::Credit {
                    consumer: consumer.clone(),
                    queue,
                    credit: refill,
                },
            });
        }
        let tags = (consumer.tag, delivery_tag);
        out.push(deliver_effect(
            ctx,
            tags,
            redelivered,
            delivery_count,
            &message,
        ));
        if await_writable {
            out.push(Effect::AwaitWritable { conn: ctx.conn });
        }
    }

    /// The connection can take deliveries again: the window credit its consumers of other
    /// nodes' queues held back goes to their owners.
    pub(super) fn pay_owed_credit(&mut self, conn: crate::ConnId, out: &mut Vec<Effect>) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        for (&channel, ch) in c.channels.iter_mut() {
            for k in ch.consumers.values_mut() {
                let Some(r) = k.remote.as_mut().filter(|r| r.owed > 0 && r.owner != 0) else {
                    continue;
                };
                out.push(Effect::ToOwner {
                    node: r.owner,
                    command: QueueCommand::Credit {
                        consumer: ConsumerRef {
                            conn,
                            channel,
                            tag: k.tag.clone(),
                        },
                        queue: k.queue,
                        credit: std::mem::take(&mut r.owed),
                    },
                });
            }
        }
    }

    /// Credit for the consumer of another node's queue `queue` whose deliveries were settled or
    /// returned: `Some(None)` if it is such a consumer and its credit waits to be sent with
    /// more, `None` if it is not such a consumer (or its credit is a window, refilled as its
    /// deliveries go out instead). Credit goes back in batches of a quarter of the consumer's
    /// prefetch (one `Credit` per ack cost S4 of `benches/compare`, 100 queues, about a
    /// third of its messages per second); what is held back is at most a quarter of it.
    pub(super) fn remote_grant(
        &mut self,
        ctx: Ctx,
        queue: QueueId,
        tag: &ShortStr,
        n: u32,
    ) -> Option<Option<Effect>> {
        let ch = self
            .connections
            .get_mut(&ctx.conn)?
            .channels
            .get_mut(&ctx.channel)?;
        let prefetch_global = ch.prefetch_global;
        let k = ch.consumers.get_mut(tag).filter(|k| k.queue == queue)?;
        let prefetch = if k.prefetch > 0 {
            k.prefetch
        } else {
            prefetch_global
        };
        let r = k.remote.as_mut().filter(|r| !r.window && r.owner != 0)?;
        r.owed = r.owed.saturating_add(n);
        let batch = (u32::from(prefetch) / 4).max(1);
        if r.owed < batch {
            return Some(None);
        }
        Some(Some(Effect::ToOwner {
            node: r.owner,
            command: QueueCommand::Credit {
                consumer: ConsumerRef {
                    conn: ctx.conn,
                    channel: ctx.channel,
                    tag: tag.clone(),
                },
                queue,
                credit: std::mem::take(&mut r.owed),
            },
        }))
    }

    /// Settle, return or discard of messages of another node's queue: the command for its
    /// owner, or `None` if this broker owns `queue`.
    /// A replicated queue's acks and rejects are logged from here (every replica settles
    /// them, its owner too, which then no longer holds them for this node): only its returns
    /// go to the owner, which puts the message back where it checked it out.
    pub(super) fn remote_settlement(&self, queue: QueueId, op: &crate::Op) -> Option<Effect> {
        let node = self.queue_owner_elsewhere(queue)?;
        let replicated = !self.is_local_queue(queue);
        if replicated && !matches!(op, crate::Op::Return { .. }) {
            return None;
        }
        let command = match op {
            crate::Op::Settle { seqs, .. } => QueueCommand::Settle {
                queue,
                seqs: seqs.clone(),
            },
            crate::Op::Return { seqs, .. } => QueueCommand::Return {
                queue,
                seqs: seqs.clone(),
            },
            crate::Op::Reject { seqs, .. } => QueueCommand::Discard {
                queue,
                seqs: seqs.clone(),
            },
            _ => return None,
        };
        Some(Effect::ToOwner { node, command })
    }

    /// Queue `id` was removed (applied from the log): this broker's consumers of it on
    /// another node's broker are cancelled (told with `basic.cancel` if their clients
    /// understand it). Their unacked deliveries stay until acked (acking them does nothing).
    pub(super) fn cancel_remote_consumers_of(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        for (&conn, c) in self.connections.iter_mut() {
            let notify = c.consumer_cancel_notify;
            for (&channel, ch) in c.channels.iter_mut() {
                let gone: Vec<ShortStr> = ch
                    .consumers
                    .values()
                    .filter(|k| k.queue == id && k.remote.is_some())
                    .map(|k| k.tag.clone())
                    .collect();
                for tag in gone {
                    ch.consumers.remove(&tag);
                    if notify {
                        out.push(cancel_to_client(conn, channel, tag));
                    }
                }
            }
        }
    }

    /// [`crate::Input::PeerLost`], the channel's side: consumers of queues owned on `node` are
    /// cancelled and their unacked deliveries forgotten; a consume or cancel waiting for that
    /// owner is answered here (a consume fails with 404, as for a queue whose node is down).
    pub(super) fn channels_lost_peer(&mut self, node: u64, out: &mut Vec<Effect>) {
        let mut answers = Vec::new();
        let mut waiting = Vec::new();
        // A replicated queue's consumers stay, with their unacked deliveries, attached
        // nowhere until they attach again (`follow.rs`): its messages are not lost with the
        // stream, and its next owner checks them out to them again.
        self.detach_followers(super::follow::Detach::Remote(Some(node)));
        let follows: std::collections::HashSet<QueueId> = self
            .queues
            .values()
            .filter(|q| super::follow::follows_leader(q))
            .map(|q| q.id)
            .collect();
        for (&conn, c) in self.connections.iter_mut() {
            let notify = c.consumer_cancel_notify;
            for (&channel, ch) in c.channels.iter_mut() {
                let gone: Vec<(ShortStr, QueueId)> = ch
                    .consumers
                    .values()
                    .filter(|k| k.remote.as_ref().is_some_and(|r| r.owner == node))
                    .map(|k| (k.tag.clone(), k.queue))
                    .collect();
                for (tag, queue) in gone {
                    ch.consumers.remove(&tag);
                    ch.forget_unacked(|u| u.queue == queue);
                    if notify && !ch.awaiting_owner.contains_key(&tag) {
                        out.push(cancel_to_client(conn, channel, tag));
                    }
                }
                if let Some((owner, kind)) = ch.awaiting_answer {
                    if owner == node {
                        waiting.push((Ctx { conn, channel }, kind));
                    }
                }
                for (tag, waiting) in ch.awaiting_owner.iter_mut() {
                    let (consume, _, owner) = *waiting;
                    let replicated = ch
                        .consumers
                        .get(tag)
                        .is_some_and(|k| follows.contains(&k.queue));
                    if owner == node && consume && replicated {
                        // Answered by the next owner it attaches to.
                        waiting.2 = 0;
                        continue;
                    }
                    if owner == node {
                        let consumer = ConsumerRef {
                            conn,
                            channel,
                            tag: tag.clone(),
                        };
                        answers.push((consumer, consume));
                    }
                }
            }
        }
        answers.sort_by(|a, b| {
            (a.0.conn, a.0.channel, &a.0.tag).cmp(&(b.0.conn, b.0.channel, &b.0.tag))
        });
        for (consumer, consume) in answers {
            let error = consume.then(|| node_down(node));
            self.owner_answered(node, consumer, consume, error, out);
        }
        waiting.sort_by_key(|(ctx, _)| (ctx.conn, ctx.channel));
        for (ctx, kind) in waiting {
            let consumer = channel_ref(ctx);
            let error = Some(node_down(node));
            match kind {
                Awaiting::Get { .. } => self.remote_got_nothing(node, &consumer, error, out),
                Awaiting::Purge => self.remote_purged(node, &consumer, 0, error, out),
                Awaiting::Delete { .. } => self.remote_deleted(node, &consumer, 0, 0, error, out),
                Awaiting::Declare { .. } => {
                    // The owner is lost, not the queue: no declaring it anew.
                    if let Some(ch) = self.channel_mut(ctx) {
                        ch.remote_declare = None;
                    }
                    self.remote_declared(node, &consumer, 0, (0, 0), error, out)
                }
            }
        }
    }
}

/// A channel as a queue command names it for a get, purge, delete or declare: an empty tag.
fn channel_ref(ctx: Ctx) -> ConsumerRef {
    ConsumerRef {
        conn: ctx.conn,
        channel: ctx.channel,
        tag: ShortStr::default(),
    }
}

/// RabbitMQ's 404 for a queue whose node is down.
fn node_down(node: u64) -> AmqpError {
    AmqpError::not_found(format!(
        "home node {node} of a queue used on this channel is down or inaccessible"
    ))
}

/// A delivery that found no consumer goes back to its queue; the owner is told to detach the
/// consumer too (`cancel`) unless a cancel is on its way: a consume can reach the owner after
/// this node dropped what it shared with it (`Input::PeerLost` while the consume was in
/// flight), and the owner must not go on choosing a consumer nobody holds.
fn give_back_one(
    from: u64,
    consumer: ConsumerRef,
    queue: QueueId,
    seq: u64,
    cancel: bool,
    out: &mut Vec<Effect>,
) {
    // The cancel first: the message must not go to the same consumer again.
    if cancel {
        out.push(Effect::ToOwner {
            node: from,
            command: QueueCommand::Cancel { consumer, queue },
        });
    }
    out.push(Effect::ToOwner {
        node: from,
        command: QueueCommand::Return {
            queue,
            seqs: vec![seq],
        },
    });
}

/// A server-side `basic.cancel`.
fn cancel_to_client(conn: crate::ConnId, channel: crate::ChannelId, tag: ShortStr) -> Effect {
    Effect::Send {
        conn,
        channel,
        method: Method::BasicCancel(BasicCancel {
            consumer_tag: tag,
            nowait: true,
        }),
    }
}
