//! `channel.*` methods (`channel.open` within the user's `max-channels`) and the cleanup of a
//! channel's state when it closes for any reason.

use warren_wire::{ChannelFlow, ChannelFlowOk, ChannelOpenOk, Method};

use super::{Broker, Ctx};
use crate::channel::Channel;
use crate::queue::{ConsumerRef, QueueId};
use crate::{AmqpError, Effect};

impl Broker {
    pub(super) fn channel_open(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let conn = self
            .connections
            .get(&ctx.conn)
            .ok_or_else(|| AmqpError::command_invalid("connection not open"))?;
        if conn.vhost.is_none() {
            return Err(AmqpError::command_invalid(
                "channel.open before connection.open",
            ));
        }
        if conn.channels.contains_key(&ctx.channel) {
            return Err(AmqpError::channel_error("second 'channel.open' seen"));
        }
        if let Err(e) = self.check_channel_limit(ctx) {
            // Not for the method (RabbitMQ's reader refuses the channel itself): the error keeps
            // its class and method 0.
            self.fail(ctx, e, out);
            return Ok(());
        }
        let Some(conn) = self.connections.get_mut(&ctx.conn) else {
            return Ok(());
        };
        conn.channels.insert(ctx.channel, Channel::new());
        self.counts_changed = true;
        self.reply(ctx, Method::ChannelOpenOk(ChannelOpenOk::default()), out);
        Ok(())
    }

    pub(super) fn channel_close(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        self.close_channel_state(ctx, out);
        self.reply(ctx, Method::ChannelCloseOk(Default::default()), out);
        Ok(())
    }

    pub(super) fn channel_flow(
        &mut self,
        ctx: Ctx,
        m: ChannelFlow,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if !m.active {
            // RabbitMQ 3.x no longer lets clients pause deliveries with channel.flow.
            return Err(AmqpError::not_implemented("active=false"));
        }
        if let Some(ch) = self.channel_mut(ctx) {
            ch.flow_active = true;
        }
        self.reply(
            ctx,
            Method::ChannelFlowOk(ChannelFlowOk { active: true }),
            out,
        );
        self.deliver_channel(ctx, out);
        Ok(())
    }

    /// Drops a channel: its unacked messages go back to their queues (in their original places,
    /// marked redelivered), its consumers are removed (auto-delete queues may go), and the queues
    /// that got messages back are offered to their other consumers. Idempotent.
    pub(crate) fn close_channel_state(&mut self, ctx: Ctx, out: &mut Vec<Effect>) {
        self.drop_channel(ctx, out);
    }

    /// [`Broker::close_channel_state`], returning the inputs that were waiting on the channel
    /// (see `defer_while_in_flight`).
    pub(crate) fn drop_channel(
        &mut self,
        ctx: Ctx,
        out: &mut Vec<Effect>,
    ) -> std::collections::VecDeque<crate::Input> {
        let Some(mut channel) = self
            .connections
            .get_mut(&ctx.conn)
            .and_then(|c| c.channels.remove(&ctx.channel))
        else {
            return Default::default();
        };
        self.counts_changed = true;
        let deferred = std::mem::take(&mut channel.deferred);
        if let Some(key) = &channel.reply_to_key {
            self.reply_to.remove(key);
        }
        // In delivery-tag order, so that a quorum queue's `Op::Return` lists them in order.
        let mut unacked: Vec<(u64, QueueId, u64)> = channel
            .unacked
            .iter()
            .map(|(tag, u)| (*tag, u.queue, u.seq))
            .collect();
        unacked.sort_unstable();
        let mut consumers: Vec<_> = channel.consumers.values().collect();
        consumers.sort_by(|a, b| a.tag.cmp(&b.tag));
        // A consumer of another node's queue is detached before its deliveries go back, so
        // that the owner does not offer them to it again.
        let (remote, local): (Vec<_>, Vec<_>) = consumers
            .into_iter()
            .map(|c| {
                let cref = ConsumerRef {
                    conn: ctx.conn,
                    channel: ctx.channel,
                    tag: c.tag.clone(),
                };
                (c.remote.as_ref().map(|r| r.owner), c.queue, cref)
            })
            .partition(|(owner, _, _)| owner.is_some());
        for (owner, queue, cref) in remote {
            // Owner 0: attached nowhere at the moment (a replicated queue between leaders).
            if let Some(node) = owner.filter(|&n| n != 0) {
                out.push(Effect::ToOwner {
                    node,
                    command: crate::QueueCommand::Cancel {
                        consumer: cref,
                        queue,
                    },
                });
            }
        }
        let touched = self.give_back(None, unacked.into_iter().map(|(_, q, s)| (q, s)), out);
        for (_, queue, cref) in &local {
            self.detach_consumer(*queue, cref, out);
        }
        for q in touched {
            self.deliver(q, out);
        }
        self.release_syncs(ctx.conn, out);
        deferred
    }
}
