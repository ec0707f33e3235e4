//! `queue.*` methods: declare (with RabbitMQ's equivalence and exclusivity rules), bind, unbind,
//! purge, delete; and removing a queue with everything that refers to it.

use warren_wire::{
    FieldTable, Method, QueueBind, QueueDeclare, QueueDeclareOk, QueueDelete, QueueDeleteOk,
    QueuePurge, QueuePurgeOk, QueueUnbind, ShortStr,
};

use super::{Broker, Ctx};
use crate::command::{Destination, Op, Origin};
use crate::queue::{Queue, QueueArgs, QueueId, EQUIVALENCE_ARGS};
use crate::user::Access;
use crate::{AmqpError, ConnId, Effect, Millis};

/// The pseudo-queue of direct reply-to (RabbitMQ's "Direct Reply-to" page).
pub(crate) const REPLY_TO_QUEUE: &str = "amq.rabbitmq.reply-to";

pub(crate) fn no_queue(name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!("no queue '{name}' in vhost '{vhost}'"))
}

/// A method reached a broker that does not hold the local queue it names: the queue was
/// removed or moved while the client's node was sending it (see `docs/architecture.md`).
pub(crate) fn not_here(name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!(
        "queue '{name}' in vhost '{vhost}' is not on this node (it was just deleted or redeclared elsewhere)"
    ))
}

pub(crate) fn locked(name: &str, vhost: &str) -> AmqpError {
    AmqpError::resource_locked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    ))
}

impl Broker {
    /// Resolves a queue name from a method: empty means the channel's last declared queue.
    pub(super) fn resolve_queue_name(
        &mut self,
        ctx: Ctx,
        name: ShortStr,
    ) -> Result<ShortStr, AmqpError> {
        if !name.is_empty() {
            return Ok(name);
        }
        self.channel_mut(ctx)
            .and_then(|ch| ch.last_queue.clone())
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// Finds a queue the connection may use: it exists and is not another connection's exclusive
    /// queue.
    pub(super) fn usable_queue(
        &self,
        conn: ConnId,
        vhost: &ShortStr,
        name: &str,
    ) -> Result<QueueId, AmqpError> {
        let id = self
            .queue_id(vhost, name)
            .ok_or_else(|| no_queue(name, vhost))?;
        match self.queues.get(&id) {
            Some(q) if q.exclusive_owner.is_some_and(|o| o != conn) => Err(locked(name, vhost)),
            Some(_) => Ok(id),
            None => Err(no_queue(name, vhost)),
        }
    }

    /// [`Broker::usable_queue`], and this broker decides it (holds its messages and
    /// consumers).
    pub(super) fn deciding_queue(
        &self,
        conn: ConnId,
        vhost: &ShortStr,
        name: &str,
    ) -> Result<QueueId, AmqpError> {
        let id = self.usable_queue(conn, vhost, name)?;
        if self.decides_queue(id) {
            Ok(id)
        } else {
            Err(not_here(name, vhost))
        }
    }

    pub(super) fn queue_declare(
        &mut self,
        ctx: Ctx,
        m: QueueDeclare,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        if m.queue.as_str() == REPLY_TO_QUEUE {
            if !m.nowait {
                let ok = QueueDeclareOk {
                    queue: m.queue,
                    message_count: 0,
                    consumer_count: 0,
                };
                self.reply(ctx, Method::QueueDeclareOk(ok), out);
            }
            return Ok(());
        }
        if m.passive {
            let name = self.resolve_queue_name(ctx, m.queue)?;
            let remote = self
                .queue_id(&vhost, &name)
                .and_then(|id| Some((id, self.decider_elsewhere(ctx.conn, id)?)));
            if let Some((id, owner)) = remote {
                // A queue another node's broker owns: it has the counts (a replica does not
                // know which messages are checked out), and decides whether the queue is
                // still there and exclusive.
                if let Some(ch) = self.channel_mut(ctx) {
                    ch.last_queue = Some(name);
                }
                return self.declare_remote(ctx, id, owner, None, m.nowait, out);
            }
            let id = self.usable_queue(ctx.conn, &vhost, &name)?;
            let q = self
                .queues
                .get_mut(&id)
                .ok_or_else(|| no_queue(&name, &vhost))?;
            q.last_used = self.now;
            let ok = QueueDeclareOk {
                queue: name.clone(),
                message_count: q.ready_count(),
                consumer_count: q.consumer_count(),
            };
            if let Some(ch) = self.channel_mut(ctx) {
                ch.last_queue = Some(name);
            }
            if !m.nowait {
                self.reply(ctx, Method::QueueDeclareOk(ok), out);
            }
            return Ok(());
        }
        let name = if m.queue.is_empty() {
            self.generate_name("amq.gen-", ctx.conn)
        } else {
            if m.queue.starts_with("amq.") {
                return Err(AmqpError::access_refused(format!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    m.queue
                )));
            }
            m.queue
        };
        self.check_access(ctx.conn, Access::Configure, "queue", &name)?;
        let parsed =
            QueueArgs::parse(&m.arguments).map_err(|e| invalid_argument(&e, &name, &vhost))?;
        if parsed.stream {
            // RabbitMQ's streams are durable, shared and kept: as its queue type checks say.
            let refused = [
                (!m.durable, "non-durable"),
                (m.exclusive, "exclusive-owner"),
                (m.auto_delete, "auto-delete"),
            ];
            if let Some((_, property)) = refused.iter().find(|(bad, _)| *bad) {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid property '{property}' for queue '{name}' in vhost '{vhost}'"
                )));
            }
        }
        if let Some(v) = m
            .arguments
            .get("x-dead-letter-exchange")
            .and_then(|v| v.as_str())
        {
            self.check_access(ctx.conn, Access::Write, "exchange", v)?;
        }
        if let Some(ch) = self.channel_mut(ctx) {
            ch.last_queue = Some(name.clone());
        }
        {
            if let Some(id) = self.queue_id(&vhost, &name) {
                if self.queues.get(&id).is_some_and(|q| q.is_local()) {
                    // A local queue is redeclared where it lives: its home has the counts,
                    // and nothing changes that the log must carry. This broker checks the
                    // declaration (every replica has it); a home on another node answers
                    // with its counts to a queue command.
                    let remote = self.owner_elsewhere(ctx.conn, id);
                    if remote.is_none() && !self.decides_queue(id) {
                        return Err(not_here(&name, &vhost));
                    }
                    let mut owner = m.exclusive.then_some(ctx.conn);
                    if remote.is_some() {
                        // An exclusive queue's owner decides (this replica may not have
                        // applied its removal yet).
                        if let Some(held) = self.queues.get(&id).and_then(|q| q.exclusive_owner) {
                            owner = Some(held);
                        }
                    }
                    let ok = self.redeclare(
                        id,
                        &vhost,
                        &name,
                        (m.durable, m.exclusive, m.auto_delete),
                        owner,
                        &m.arguments,
                    )?;
                    if let Some(remote) = remote {
                        let nowait = m.nowait;
                        let m = QueueDeclare { queue: name, ..m };
                        return self.declare_remote(ctx, id, remote, Some(m), nowait, out);
                    }
                    if !m.nowait {
                        self.reply(ctx, Method::QueueDeclareOk(ok), out);
                    }
                    return Ok(());
                }
                if let Some(owner) = self.decider_elsewhere(ctx.conn, id) {
                    // A replicated queue, redeclared on a node that does not lead: checked
                    // against this replica, then the owner answers with its counts (or,
                    // gone meanwhile, the declare creates it anew).
                    self.redeclare(
                        id,
                        &vhost,
                        &name,
                        (m.durable, m.exclusive, m.auto_delete),
                        m.exclusive.then_some(ctx.conn),
                        &m.arguments,
                    )?;
                    let nowait = m.nowait;
                    let m = QueueDeclare { queue: name, ..m };
                    return self.declare_remote(ctx, id, owner, Some(m), nowait, out);
                }
            }
        }
        let m = QueueDeclare { queue: name, ..m };
        self.submit(Some(ctx.origin()), declare_op(vhost, m), out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_declare_queue(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        name: ShortStr,
        (durable, exclusive, auto_delete): (bool, bool, bool),
        arguments: FieldTable,
        nowait: bool,
        now: Millis,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let owner = if exclusive {
            origin.map(|o| o.conn)
        } else {
            None
        };
        if let Some(id) = self.queue_id(vhost, &name) {
            let ok = self.redeclare(
                id,
                vhost,
                &name,
                (durable, exclusive, auto_delete),
                owner,
                &arguments,
            )?;
            if let Some(q) = self.queues.get_mut(&id) {
                q.last_used = now;
            }
            if !nowait {
                Self::reply_origin(origin, Method::QueueDeclareOk(ok), out);
            }
            return Ok(());
        }
        // Decided here, in the log's order, so that every replica agrees and two declares
        // racing for a vhost's last place cannot both get it.
        self.check_queue_limit(vhost, &name)?;
        // Created even if the declaring connection closed while the command was in flight:
        // whether it did is not in the log, and every replica (and every replay) must assign the
        // same queue ids. The leader removes such an orphan on its next tick (`tick_cleanup`).
        let args = QueueArgs::parse_existing(&arguments).map_err(AmqpError::precondition_failed)?;
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        let mut queue = Queue::new(
            id,
            vhost.clone(),
            name.clone(),
            durable,
            owner,
            auto_delete,
            arguments,
            args,
            now,
        );
        if queue.is_local() {
            queue.home = Self::home_of(origin);
        }
        queue.declared_by = origin.map_or(0, |o| o.conn);
        if self.is_live_here(queue.declared_by) {
            self.churn.queues_created += 1;
        }
        self.queues.insert(id, queue);
        self.apply_policies_to_queue(id, out);
        let v = self
            .vhosts
            .get_mut(vhost)
            .ok_or_else(|| AmqpError::not_found(format!("no vhost '{vhost}'")))?;
        v.queues.insert(name.clone(), id);
        // Every queue is bound to the default exchange by its name; routing through "" is done by
        // name lookup, so no binding is stored.
        if !nowait {
            let ok = QueueDeclareOk {
                queue: name,
                message_count: 0,
                consumer_count: 0,
            };
            Self::reply_origin(origin, Method::QueueDeclareOk(ok), out);
        }
        Ok(())
    }

    /// `queue.declare` of queue `id`, which exists: RabbitMQ's exclusivity and equivalence
    /// checks, then the declare-ok with its counts. `owner` is the declaring client if
    /// `exclusive`.
    fn redeclare(
        &mut self,
        id: QueueId,
        vhost: &ShortStr,
        name: &ShortStr,
        (durable, exclusive, auto_delete): (bool, bool, bool),
        owner: Option<ConnId>,
        arguments: &FieldTable,
    ) -> Result<QueueDeclareOk, AmqpError> {
        let now = self.now;
        let q = self
            .queues
            .get_mut(&id)
            .ok_or_else(|| no_queue(name, vhost))?;
        if q.exclusive_owner.is_some() && q.exclusive_owner != owner
            || q.exclusive_owner.is_none() && exclusive
        {
            return Err(locked(name, vhost));
        }
        let inequivalent = |arg: &str, received: bool, current: bool| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received '{received}' but current is '{current}'"
            ))
        };
        if q.durable != durable {
            return Err(inequivalent("durable", durable, q.durable));
        }
        if q.auto_delete != auto_delete {
            return Err(inequivalent("auto_delete", auto_delete, q.auto_delete));
        }
        for key in EQUIVALENCE_ARGS {
            let (old, new) = (q.arguments.get(key), arguments.get(key));
            if !args_equivalent(old, new) {
                // RabbitMQ names the types only when one side has no value.
                let (received, current) = match (new, old) {
                    (Some(n), Some(o)) => (format!("'{}'", shown(n)), format!("'{}'", shown(o))),
                    _ => (describe(new), describe(old)),
                };
                return Err(AmqpError::precondition_failed(format!(
                    "inequivalent arg '{key}' for queue '{name}' in vhost '{vhost}': received {received} but current is {current}"
                )));
            }
        }
        q.last_used = now;
        Ok(QueueDeclareOk {
            queue: name.clone(),
            message_count: q.ready_count(),
            consumer_count: q.consumer_count(),
        })
    }

    pub(super) fn queue_bind(
        &mut self,
        ctx: Ctx,
        m: QueueBind,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        let queue = self.resolve_queue_name(ctx, m.queue)?;
        // queue.bind: an empty routing key with an empty queue name means the last queue's name.
        let routing_key = if m.routing_key.is_empty() && queue.is_empty() {
            queue.clone()
        } else {
            m.routing_key
        };
        self.check_bind_access(ctx, &queue, "queue", &m.exchange, &routing_key)?;
        if self.queue_id(&vhost, &queue).is_some() {
            self.usable_queue(ctx.conn, &vhost, &queue)?;
        }
        self.submit(
            Some(ctx.origin()),
            Op::Bind {
                vhost,
                source: m.exchange,
                destination: Destination::Queue(queue),
                routing_key,
                arguments: m.arguments,
                nowait: m.nowait,
            },
            out,
        );
        Ok(())
    }

    pub(super) fn queue_unbind(
        &mut self,
        ctx: Ctx,
        m: QueueUnbind,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        let queue = self.resolve_queue_name(ctx, m.queue)?;
        self.check_bind_access(ctx, &queue, "queue", &m.exchange, &m.routing_key)?;
        if self.queue_id(&vhost, &queue).is_some() {
            self.usable_queue(ctx.conn, &vhost, &queue)?;
        }
        self.submit(
            Some(ctx.origin()),
            Op::Unbind {
                vhost,
                source: m.exchange,
                destination: Destination::Queue(queue),
                routing_key: m.routing_key,
                arguments: m.arguments,
                nowait: false,
            },
            out,
        );
        Ok(())
    }

    pub(super) fn queue_purge(
        &mut self,
        ctx: Ctx,
        m: QueuePurge,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        let name = self.resolve_queue_name(ctx, m.queue)?;
        self.check_access(ctx.conn, Access::Read, "queue", &name)?;
        let id = self.usable_queue(ctx.conn, &vhost, &name)?;
        if let Some(owner) = self.decider_elsewhere(ctx.conn, id) {
            // A transient queue homed on another node, or a replicated one while another node
            // leads: its owner purges it (it knows which messages are checked out).
            return self.purge_remote(ctx, id, owner, m.nowait, out);
        }
        let replicated_here = self
            .queues
            .get(&id)
            .is_some_and(super::follow::follows_leader)
            && self.decides_queue(id);
        if self.is_local_queue(id) || replicated_here {
            // Decided here: a local queue's messages are only on its home (purged outside the
            // log); a replicated queue's ready ones are settled through the log.
            if !self.decides_queue(id) {
                return Err(not_here(&name, &vhost));
            }
            let message_count = self.purge_decided(id, out);
            if !m.nowait {
                self.reply(
                    ctx,
                    Method::QueuePurgeOk(QueuePurgeOk { message_count }),
                    out,
                );
            }
            return Ok(());
        }
        self.submit(
            Some(ctx.origin()),
            Op::PurgeQueue {
                vhost,
                name,
                nowait: m.nowait,
            },
            out,
        );
        Ok(())
    }

    pub(super) fn apply_purge_queue(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        name: &ShortStr,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let id = self
            .queue_id(vhost, name)
            .ok_or_else(|| no_queue(name, vhost))?;
        let q = self
            .queues
            .get_mut(&id)
            .ok_or_else(|| no_queue(name, vhost))?;
        let message_count = q.purge();
        if !nowait {
            Self::reply_origin(
                origin,
                Method::QueuePurgeOk(QueuePurgeOk { message_count }),
                out,
            );
        }
        Ok(())
    }

    pub(super) fn queue_delete(
        &mut self,
        ctx: Ctx,
        m: QueueDelete,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        let name = self.resolve_queue_name(ctx, m.queue)?;
        self.check_access(ctx.conn, Access::Configure, "queue", &name)?;
        if let Some(id) = self.queue_id(&vhost, &name) {
            self.usable_queue(ctx.conn, &vhost, &name)?;
            // A transient queue homed on another node, or (with a condition) a replicated
            // queue while another node leads: its owner decides, having the consumers and
            // knowing which messages are ready.
            let conditional = m.if_unused || m.if_empty;
            let owner = self.owner_elsewhere(ctx.conn, id).or_else(|| {
                conditional
                    .then(|| self.decider_elsewhere(ctx.conn, id))
                    .flatten()
            });
            if let Some(owner) = owner {
                let how = (m.if_unused, m.if_empty, m.nowait);
                return self.delete_remote(ctx, how, id, owner, out);
            }
            // Decided here, by the broker that has the consumers and the local queues'
            // messages: a replica applying the command has neither, so the command that goes
            // through the log is unconditional (a refused one is never logged).
            if let Some(q) = self.queues.get(&id) {
                if m.if_unused && q.consumer_count() > 0 {
                    return Err(AmqpError::precondition_failed(format!(
                        "queue '{name}' in vhost '{vhost}' in use"
                    )));
                }
                if m.if_empty && !q.is_empty() {
                    return Err(AmqpError::precondition_failed(format!(
                        "queue '{name}' in vhost '{vhost}' not empty"
                    )));
                }
            }
            if self.is_local_queue(id) {
                // Decided by its home, which alone knows its consumers and messages; it goes
                // when the removal is applied, and the reply with it.
                if !self.decides_queue(id) {
                    return Err(not_here(&name, &vhost));
                }
                let message_count = self.queues.get(&id).map_or(0, |q| q.ready_count());
                if !m.nowait {
                    self.reply_when_removed(
                        ctx,
                        id,
                        Method::QueueDeleteOk(QueueDeleteOk { message_count }),
                    );
                }
                self.propose_removal(id, out);
                return Ok(());
            }
        }
        self.submit(
            Some(ctx.origin()),
            Op::DeleteQueue {
                vhost,
                name,
                if_unused: false,
                if_empty: false,
                nowait: m.nowait,
            },
            out,
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_delete_queue(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        name: &ShortStr,
        if_unused: bool,
        if_empty: bool,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let mut message_count = 0;
        if let Some(id) = self.queue_id(vhost, name) {
            if let Some(q) = self.queues.get(&id) {
                if if_unused && q.consumer_count() > 0 {
                    return Err(AmqpError::precondition_failed(format!(
                        "queue '{name}' in vhost '{vhost}' in use"
                    )));
                }
                if if_empty && !q.is_empty() {
                    return Err(AmqpError::precondition_failed(format!(
                        "queue '{name}' in vhost '{vhost}' not empty"
                    )));
                }
                message_count = q.ready_count();
            }
            self.remove_queue(id, out);
        }
        // Deleting a queue that does not exist succeeds with a count of 0, as in RabbitMQ 3.x.
        if !nowait {
            Self::reply_origin(
                origin,
                Method::QueueDeleteOk(QueueDeleteOk { message_count }),
                out,
            );
        }
        Ok(())
    }

    /// Removes a queue: its bindings, its consumers (each told with `basic.cancel` when its client
    /// announced `consumer_cancel_notify`), and auto-delete exchanges left without bindings.
    pub(crate) fn remove_queue(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        let Some(queue) = self.queues.remove(&id) else {
            return;
        };
        if self.is_live_here(queue.declared_by) {
            self.churn.queues_deleted += 1;
        }
        let vhost = queue.vhost.clone();
        let mut emptied = Vec::new();
        if let Some(v) = self.vhosts.get_mut(&vhost) {
            if v.queues.get(&queue.name) == Some(&id) {
                v.queues.remove(&queue.name);
            }
            let dest = Destination::Queue(queue.name.clone());
            for x in v.exchanges.values_mut() {
                if x.bindings.remove_destination(&dest) > 0
                    && x.auto_delete
                    && x.bindings.is_empty()
                {
                    emptied.push(x.name.clone());
                }
            }
        }
        for x in emptied {
            self.remove_exchange(&vhost, &x);
        }
        for consumer in queue.consumers.iter() {
            let Some(conn) = self.connections.get_mut(&consumer.conn) else {
                continue;
            };
            let notify = conn.consumer_cancel_notify;
            if let Some(ch) = conn.channels.get_mut(&consumer.channel) {
                ch.consumers.remove(&consumer.tag);
                if notify {
                    out.push(Effect::Send {
                        conn: consumer.conn,
                        channel: consumer.channel,
                        method: Method::BasicCancel(warren_wire::BasicCancel {
                            consumer_tag: consumer.tag.clone(),
                            nowait: true,
                        }),
                    });
                }
            }
        }
        self.queue_removed(id, out);
    }
}

/// Argument equivalence as RabbitMQ checks it: same value, integers compared by value whatever
/// their width.
fn args_equivalent(
    a: Option<&warren_wire::FieldValue>,
    b: Option<&warren_wire::FieldValue>,
) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => false,
    }
}

/// An argument's value as RabbitMQ's error texts show it.
fn shown(v: &warren_wire::FieldValue) -> String {
    match (v.as_str(), v.as_i64()) {
        (Some(s), _) => s.to_owned(),
        (None, Some(n)) => n.to_string(),
        _ => format!("{v:?}"),
    }
}

fn describe(v: Option<&warren_wire::FieldValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => format!(
            "the value '{}' of type '{}'",
            shown(v),
            crate::queue::type_name(v)
        ),
    }
}

/// RabbitMQ's 406 for a queue argument it refuses, naming the queue and its vhost
/// ("invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,300}").
fn invalid_argument(e: &str, name: &str, vhost: &str) -> AmqpError {
    AmqpError::precondition_failed(e.replacen(
        " for queue: ",
        &format!(" for queue '{name}' in vhost '{vhost}': "),
        1,
    ))
}

/// The log command that declares the queue `m` names in `vhost`, as `m` asks.
pub(super) fn declare_op(vhost: ShortStr, m: QueueDeclare) -> Op {
    Op::DeclareQueue {
        vhost,
        name: m.queue,
        durable: m.durable,
        exclusive: m.exclusive,
        auto_delete: m.auto_delete,
        arguments: m.arguments,
        nowait: m.nowait,
    }
}
