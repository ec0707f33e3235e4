//! Time-driven work, evaluated against the `now` of each input: message TTL expiry (with
//! dead-lettering) and `x-expires` queue expiry, each by the broker that decides the queue. For a
//! replicated queue both are carried out as commands ([`Op::Expire`], [`Op::RemoveQueue`]), so
//! replicas and replays agree; a local queue's expiries are its home's alone. Also the consumer
//! timeout: a delivery left unacked too long, by the broker that made it.

use warren_wire::{BasicCancel, Method, ShortStr};

use super::{Broker, Ctx};
use crate::command::Op;
use crate::queue::QueueId;
use crate::{AmqpError, ConnId, Effect, Millis};

impl Broker {
    pub(super) fn tick(&mut self, out: &mut Vec<Effect>) {
        self.records.shed();
        self.tick_cleanup(out);
        self.enforce_consumer_timeouts(out);
        self.tick_follow(out);
        self.commands_now_applied(out);
        let mut ids: Vec<QueueId> = self.queues.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if !self.decides_queue(id) {
                continue;
            }
            self.expire_queue(id, out);
            let expired = self.queues.get(&id).is_some_and(|q| {
                q.consumers.is_empty()
                    && q.args
                        .expires
                        .is_some_and(|ttl| self.now >= q.last_used.saturating_add(ttl))
            });
            if expired {
                self.propose_removal(id, out);
            }
        }
    }

    /// Asks for the expired head of a queue to go (an [`Op::Expire`]); returns whether it had
    /// one. Until the command is applied the expired messages stay, undelivered.
    pub(crate) fn expire_queue(&mut self, id: QueueId, out: &mut Vec<Effect>) -> bool {
        let now = self.now;
        if !self.queues.get(&id).is_some_and(|q| q.head_expired(now)) {
            return false;
        }
        self.submit_for_queue(id, Op::Expire { queue: id }, out);
        self.queues.get(&id).is_some_and(|q| q.head_expired(now))
    }

    /// Applies an [`Op::Expire`] at the command's time: the expired head is dead-lettered.
    pub(super) fn apply_expire(&mut self, id: QueueId, at: Millis, out: &mut Vec<Effect>) {
        let expired = match self.queues.get_mut(&id) {
            Some(q) => q.expire(at),
            None => return,
        };
        for entry in expired {
            self.dead_letter(id, entry, "expired", out);
        }
        self.deliver(id, out);
    }

    /// RabbitMQ's consumer timeout: a delivery unacked for longer than its consumer's
    /// `x-consumer-timeout`, else its queue's, else the node's `consumer_timeout`, ends its
    /// consumer. A client that announced `consumer_cancel_notify` gets `basic.cancel` and the
    /// consumer's unacked messages go back to their queues, as RabbitMQ 4.3 does; otherwise (and
    /// for a `basic.get` delivery) the channel is closed with 406. The oldest delivery of each
    /// channel (its lowest delivery tag) is checked, once per tick.
    fn enforce_consumer_timeouts(&mut self, out: &mut Vec<Effect>) {
        let now = self.now;
        let node_timeout = self.config.consumer_timeout;
        // (channel, consumer tag if any, the timeout that passed)
        let mut late: Vec<(Ctx, Option<ShortStr>, Millis)> = Vec::new();
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            let Some(c) = self.connections.get(&conn) else {
                continue;
            };
            let mut channels: Vec<_> = c.channels.iter().collect();
            channels.sort_unstable_by_key(|(n, _)| **n);
            for (&number, ch) in channels {
                let Some(oldest) = ch.unacked.values().next() else {
                    continue;
                };
                let consumer = oldest
                    .consumer_tag
                    .as_ref()
                    .and_then(|t| ch.consumers.get(t));
                let queue = self
                    .queues
                    .get(&oldest.queue)
                    .and_then(|q| q.args.consumer_timeout);
                let Some(timeout) = consumer.and_then(|k| k.timeout).or(queue).or(node_timeout)
                else {
                    continue;
                };
                if now.saturating_sub(oldest.delivered_at) > timeout {
                    let ctx = Ctx {
                        conn,
                        channel: number,
                    };
                    late.push((ctx, consumer.map(|k| k.tag.clone()), timeout));
                }
            }
        }
        for (ctx, tag, timeout) in late {
            let notify = self
                .connections
                .get(&ctx.conn)
                .is_some_and(|c| c.consumer_cancel_notify);
            match tag {
                Some(tag) if notify => self.cancel_timed_out(ctx, tag, out),
                _ => self.fail(
                    ctx,
                    AmqpError::precondition_failed(format!(
                        "delivery acknowledgement on channel {} timed out. Timeout value used: \
                         {timeout} ms. This timeout value can be configured, see consumers doc \
                         guide to learn more",
                        ctx.channel
                    )),
                    out,
                ),
            }
        }
    }

    /// Cancels consumer `tag` of channel `ctx` on the server's side (`basic.cancel` to the
    /// client) and gives its unacked deliveries back to their queues.
    fn cancel_timed_out(&mut self, ctx: Ctx, tag: ShortStr, out: &mut Vec<Effect>) {
        let Some(ch) = self.channel_mut(ctx) else {
            return;
        };
        let Some(consumer) = ch.consumers.remove(&tag) else {
            return;
        };
        let tags: Vec<u64> = ch
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer_tag.as_ref() == Some(&tag))
            .map(|(t, _)| *t)
            .collect();
        let mut given_back = Vec::with_capacity(tags.len());
        for t in tags {
            if let Some(u) = ch.unacked.remove(&t) {
                given_back.push((u.queue, u.seq));
            }
        }
        out.push(Effect::Send {
            conn: ctx.conn,
            channel: ctx.channel,
            method: Method::BasicCancel(BasicCancel {
                consumer_tag: tag.clone(),
                nowait: true,
            }),
        });
        let cref = crate::queue::ConsumerRef {
            conn: ctx.conn,
            channel: ctx.channel,
            tag,
        };
        self.detach_consumer(consumer.queue, &cref, out);
        let touched = self.give_back(Some(ctx), given_back, out);
        for q in touched {
            self.deliver(q, out);
        }
    }
}
