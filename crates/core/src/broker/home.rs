//! Which broker decides what (see `docs/architecture.md`, "Transient queues live on their home
//! node"). A replicated queue is decided by the leader's broker; a local queue (exclusive,
//! auto-delete or non-durable: `Queue::is_local`) by the broker of its *home*, the node of the
//! connection that declared it, whether that node leads or not. Only the deciding broker holds a
//! local queue's messages and consumers; every broker knows its declaration and bindings (they
//! are logged), so any broker can route to it.
//!
//! A client talks to its own node's broker only: a local queue homed elsewhere is driven with
//! queue commands, and messages published to one travel as [`crate::Effect::Forward`]s. A queue this broker decides goes away only when its removal is
//! applied from the log (proposed by [`Broker::propose_removal`]), so every replica removes it at
//! the same point and queue ids never diverge.

use std::sync::Arc;

use warren_wire::Method;

use super::{Broker, Ctx};
use crate::command::{Op, Origin};
use crate::queue::{Queue, QueueId};
use crate::{node_of, Effect, Message, Millis};

/// What waits for a queue's removal to be applied.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A reply to send.
    Reply(Method),
    /// A client's method to handle again (see [`Broker::wait_for_removal_first`]).
    Rerun(Method),
}

/// How long a proposed removal may take before the broker proposes it again (it is idempotent:
/// queue ids are never reused).
const REMOVAL_RETRY_MS: Millis = 5_000;

impl Broker {
    /// Whether this broker leads: set by the runtime when its node starts or stops leading. A
    /// broker that stops leading must also give up what it decided for the replicated queues
    /// ([`Broker::step_down`]).
    pub fn set_leading(&mut self, leading: bool) {
        self.leading = leading;
    }

    /// Whether this broker decides queue `q`: holds its messages and consumers, delivers, and
    /// decides its expiries and removal.
    pub(crate) fn decides(&self, q: &Queue) -> bool {
        if q.is_local() {
            q.home == self.config.node
        } else {
            self.leading
        }
    }

    /// [`Broker::decides`] by id (false for an unknown queue).
    pub(crate) fn decides_queue(&self, id: QueueId) -> bool {
        self.queues.get(&id).is_some_and(|q| self.decides(q))
    }

    /// The home of a local queue declared through `origin`: the node of its connection.
    pub(super) fn home_of(origin: Option<Origin>) -> u64 {
        origin.map_or(0, |o| node_of(o.conn))
    }

    /// [`crate::Input::Forwarded`]: a message another node routed to a local queue homed here.
    pub(super) fn forwarded(
        &mut self,
        from: u64,
        seq: u64,
        queue: u64,
        message: Message,
        out: &mut Vec<Effect>,
    ) {
        let message = Arc::new(message);
        if queue == 0 {
            self.deliver_reply(&message, out);
            return;
        }
        if !self
            .queues
            .get(&queue)
            .is_some_and(|q| q.is_local() && self.decides(q))
        {
            // Removed meanwhile: as if it had been removed a moment before the publish.
            return;
        }
        let now = self.now;
        if !self.enqueue(queue, message, now, out) {
            out.push(Effect::ForwardRefused { to: from, seq });
        }
    }

    /// Asks for queue `id`, which this broker decides, to be removed: it goes when the command is
    /// applied, on every replica at the same point of the log. Proposed again if it is still
    /// there after a while (a proposal lost at a leader change).
    pub(crate) fn propose_removal(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        let now = self.now;
        if self
            .removing
            .get(&id)
            .is_some_and(|&at| now < at.saturating_add(REMOVAL_RETRY_MS))
        {
            return;
        }
        self.removing.insert(id, now);
        if let Some(q) = self.queues.get_mut(&id).filter(|q| q.is_local()) {
            // Gone for the clients from now on (see `home_redirect`).
            q.dying = true;
        }
        self.submit(None, Op::RemoveQueue { queue: id }, out);
    }

    /// Sends `reply` on `ctx` once queue `id` is removed (holding the channel's later methods
    /// until then, as for a command in flight).
    pub(super) fn reply_when_removed(&mut self, ctx: Ctx, id: QueueId, reply: Method) {
        self.wait_for_removal(ctx, id, Waiter::Reply(reply));
    }

    fn wait_for_removal(&mut self, ctx: Ctx, id: QueueId, waiter: Waiter) {
        if let Some(ch) = self.channel_mut(ctx) {
            ch.in_flight += 1;
        }
        self.removal_waiters
            .entry(id)
            .or_default()
            .push((ctx, waiter));
    }

    /// Queue `id` is gone: what waited for that goes on.
    pub(super) fn queue_removed(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        self.removing.remove(&id);
        for (node, event) in self.removal_events.remove(&id).unwrap_or_default() {
            out.push(Effect::ToChannel { node, event });
        }
        self.cancel_remote_consumers_of(id, out);
        for (ctx, waiter) in self.removal_waiters.remove(&id).unwrap_or_default() {
            if self.channel_mut(ctx).is_none() {
                continue;
            }
            match waiter {
                Waiter::Reply(reply) => {
                    self.reply(ctx, reply, out);
                    self.command_applied(ctx, false, out);
                }
                Waiter::Rerun(method) => {
                    // Runs ahead of the channel's methods that waited behind it.
                    if let Some(ch) = self.channel_mut(ctx) {
                        ch.deferred.push_front(crate::Input::Method {
                            conn: ctx.conn,
                            channel: ctx.channel,
                            method,
                        });
                    }
                    self.command_applied(ctx, false, out);
                }
            }
        }
    }

    /// A queue method this broker cannot serve yet: one for a local queue of this node whose
    /// removal is under way runs again once it is removed (a declare then creates the queue
    /// anew, anything else finds it gone). Returns the method if it is for now: every queue
    /// method of a client is served by its own node's broker (issue 19, step 4: declares,
    /// bindings and deletes are proposed from the client's node, a stream is read from its
    /// replica, a queue another broker owns is driven with queue commands).
    pub(super) fn wait_for_removal_first(&mut self, ctx: Ctx, method: Method) -> Option<Method> {
        let name = match &method {
            Method::QueueDeclare(m) if !m.queue.is_empty() => m.queue.clone(),
            Method::QueuePurge(m) => m.queue.clone(),
            Method::QueueDelete(m) => m.queue.clone(),
            Method::BasicConsume(m) => m.queue.clone(),
            Method::BasicGet(m) => m.queue.clone(),
            _ => return Some(method),
        };
        if name.as_str() == super::queue_class::REPLY_TO_QUEUE {
            return Some(method);
        }
        let Ok(name) = self.resolve_queue_name(ctx, name) else {
            return Some(method);
        };
        let Some(vhost) = self
            .connections
            .get(&ctx.conn)
            .and_then(|c| c.vhost.clone())
        else {
            return Some(method);
        };
        let Some(q) = self
            .queue_id(&vhost, &name)
            .and_then(|id| self.queues.get(&id))
        else {
            return Some(method);
        };
        if q.is_local() && q.dying && self.decides(q) {
            let id = q.id;
            self.wait_for_removal(ctx, id, Waiter::Rerun(method));
            return None;
        }
        Some(method)
    }

    /// [`crate::Input::NodeDown`]: the leader removes the local queues homed on `node`.
    pub(super) fn node_down(&mut self, node: u64, out: &mut Vec<Effect>) {
        if !self.leading || node == self.config.node {
            return;
        }
        let mut gone: Vec<QueueId> = self
            .queues
            .values()
            .filter(|q| q.is_local() && q.home == node)
            .map(|q| q.id)
            .collect();
        gone.sort_unstable();
        for id in gone {
            self.propose_removal(id, out);
        }
    }

    /// Routes `message` into local queue `id`: enqueued here if this broker decides it,
    /// otherwise forwarded to its home. Returns false if the queue refused it.
    pub(crate) fn enqueue_local(
        &mut self,
        id: QueueId,
        message: Arc<Message>,
        now: Millis,
        out: &mut Vec<Effect>,
    ) -> bool {
        let Some(q) = self.queues.get(&id) else {
            return true;
        };
        if self.decides(q) {
            return self.enqueue(id, message, now, out);
        }
        if q.home != 0 {
            out.push(Effect::Forward {
                home: q.home,
                queue: id,
                message,
            });
        }
        true
    }
}
