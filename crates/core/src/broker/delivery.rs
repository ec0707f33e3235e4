//! Pushing messages to consumers: round-robin over a queue's consumers, skipping those without
//! credit (per-consumer prefetch, per-channel global prefetch, channel flow, connection
//! back-pressure).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use warren_wire::{BasicDeliver, BasicProperties, FieldValue, Method, ShortStr};

use super::{Broker, Ctx};
use crate::channel::Unacked;
use crate::command::Op;
use crate::connection::{Connection, DELIVERY_OVERHEAD_BYTES};
use crate::consumers::Chosen;
use crate::message::{Message, Payload};
use crate::queue::{ConsumerRef, Entry, QueueId};
use crate::{node_of, ConnId, Delivery, Effect, QueueEvent};

impl Broker {
    /// Delivers ready messages of queue `id` to its consumers until the queue is empty or no
    /// consumer has credit. Expired messages met at the head are dead-lettered first. Messages
    /// delivered to no-ack consumers are settled with one [`Op::Settle`].
    pub(crate) fn deliver(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        if self.holding_deliveries {
            return;
        }
        let mut settled = Vec::new();
        self.deliver_ready(id, &mut settled, out);
        if !settled.is_empty() {
            self.submit_for_queue(
                id,
                Op::Settle {
                    queue: id,
                    seqs: settled,
                },
                out,
            );
        }
    }

    fn deliver_ready(&mut self, id: QueueId, settled: &mut Vec<u64>, out: &mut Vec<Effect>) {
        if self.queues.get(&id).is_some_and(|q| q.is_stream()) {
            // Any node's broker serves its own channels' stream consumers; the leader's alone
            // decides retention by age.
            if self.decides_queue(id) && self.expire_queue(id, out) {
                return;
            }
            self.deliver_stream(id, out);
            return;
        }
        if self.expire_queue(id, out) {
            // The expired head goes first; apply_expire delivers again.
            return;
        }
        loop {
            // The owner's part: which consumer, with its credit (`QueueConsumers::next`).
            let Some(queue) = self.queues.get_mut(&id) else {
                return;
            };
            if queue.is_empty() || queue.consumers.is_empty() {
                return;
            }
            let connections = &mut self.connections;
            let single = queue.args.single_active_consumer;
            let Some(Chosen {
                consumer,
                no_ack,
                remote,
            }) = queue
                .consumers
                .next(single, |c| channel_can_take(connections, c, out))
            else {
                return;
            };
            let Some((seq, entry)) = queue.checkout(no_ack) else {
                // Unreachable (the queue is not empty); the credit goes back.
                queue.consumers.grant(&consumer, 1);
                return;
            };
            if remote {
                if no_ack {
                    settled.push(seq);
                } else {
                    queue.consumers.hold(seq, consumer.clone());
                }
                let message = self.load_or_lost(&entry.message);
                out.push(Effect::ToChannel {
                    node: node_of(consumer.conn),
                    event: QueueEvent::Deliver(Delivery {
                        consumer,
                        queue: id,
                        seq,
                        redelivered: entry.redelivered,
                        delivery_count: entry.delivery_count,
                        message,
                    }),
                });
                continue;
            }
            // The channel's part: a delivery tag, the unacked map, the content.
            let Some(ch) = self
                .connections
                .get_mut(&consumer.conn)
                .and_then(|c| c.channels.get_mut(&consumer.channel))
            else {
                // Unreachable in practice (`channel_can_take` checked it); put the message back
                // rather than lose it.
                queue.requeue(seq);
                return;
            };
            let delivery_tag = ch.next_tag();
            if no_ack {
                settled.push(seq);
            } else {
                ch.unacked.insert(
                    delivery_tag,
                    Unacked {
                        queue: id,
                        seq,
                        consumer_tag: Some(consumer.tag.clone()),
                        delivered_at: self.now,
                    },
                );
                if let Some(c) = ch.consumers.get_mut(&consumer.tag) {
                    c.unacked += 1;
                }
            }
            let ctx = Ctx {
                conn: consumer.conn,
                channel: consumer.channel,
            };
            self.send_delivery(ctx, consumer.tag, delivery_tag, entry, out);
        }
    }

    /// A stream's consumers each read from their own offset, as far as their prefetch allows;
    /// nothing leaves the stream (acks only free the window).
    fn deliver_stream(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        let now = self.now;
        let Some(q) = self.queues.get(&id) else {
            return;
        };
        let consumers: Vec<crate::queue::ConsumerRef> = q.consumers.iter().cloned().collect();
        for c in consumers {
            loop {
                let Some(q) = self.queues.get(&id) else {
                    return;
                };
                let (first, end) = (q.first_seq(), q.next_seq());
                let Some(conn) = self.connections.get_mut(&c.conn) else {
                    break;
                };
                if !conn.writable {
                    break;
                }
                if conn.credit <= 0 {
                    if !conn.awaiting_writable {
                        conn.awaiting_writable = true;
                        out.push(Effect::AwaitWritable { conn: c.conn });
                    }
                    break;
                }
                let Some(ch) = conn.channels.get_mut(&c.channel) else {
                    break;
                };
                let global = ch.global_credit();
                let flow = ch.flow_active;
                let Some(k) = ch.consumers.get_mut(&c.tag) else {
                    break;
                };
                let room = k.prefetch == 0 || k.unacked < u32::from(k.prefetch);
                let Some(next) = k.stream_next.map(|n| n.max(first)) else {
                    break;
                };
                if !(flow && room && global) || next >= end {
                    k.stream_next = Some(next);
                    break;
                }
                let Some(entry) = q.stream_entry(next).cloned() else {
                    break;
                };
                k.stream_next = Some(next + 1);
                k.unacked += 1;
                let delivery_tag = ch.next_tag();
                ch.unacked.insert(
                    delivery_tag,
                    Unacked {
                        queue: id,
                        seq: next,
                        consumer_tag: Some(c.tag.clone()),
                        delivered_at: now,
                    },
                );
                conn.credit -= entry.message.body_len() as i64 + DELIVERY_OVERHEAD_BYTES;
                let message = self.load_or_lost(&entry.message);
                let mut properties = message.properties.clone();
                let mut headers = properties.headers.take().unwrap_or_default();
                // RabbitMQ's offsets count from 0; sequence numbers from 1.
                headers.insert("x-stream-offset", FieldValue::I64((next - 1) as i64));
                properties.headers = Some(headers);
                out.push(Effect::SendContent {
                    conn: c.conn,
                    channel: c.channel,
                    method: Method::BasicDeliver(BasicDeliver {
                        consumer_tag: c.tag.clone(),
                        delivery_tag,
                        redelivered: false,
                        exchange: message.exchange.clone(),
                        routing_key: message.routing_key.clone(),
                    }),
                    properties,
                    body: message.body.clone(),
                });
            }
        }
    }

    /// A queued message, read back from where it rests if it is not in memory. `None` if its
    /// record cannot be read (the [`Records`] implementation reports why): the message is lost.
    pub(crate) fn load(&mut self, payload: &Payload) -> Option<Arc<Message>> {
        match payload {
            Payload::Loaded(m) => Some(Arc::clone(m)),
            Payload::Stored(r) => self.records.get(r.index),
        }
    }

    /// [`Broker::load`] for a delivery that is already checked out: a message whose record
    /// cannot be read goes out empty (exchange and routing key too) rather than leaving a
    /// hole in the channel's delivery tags; the [`Records`] implementation has logged why.
    pub(crate) fn load_or_lost(&mut self, payload: &Payload) -> Arc<Message> {
        self.load(payload).unwrap_or_else(|| {
            Arc::new(Message {
                exchange: ShortStr::from(""),
                routing_key: ShortStr::from(""),
                properties: warren_wire::BasicProperties::default(),
                body: bytes::Bytes::new(),
            })
        })
    }

    /// Emits one `basic.deliver` with its content and charges the connection's credit.
    pub(crate) fn send_delivery(
        &mut self,
        ctx: Ctx,
        consumer_tag: warren_wire::ShortStr,
        delivery_tag: u64,
        entry: Entry,
        out: &mut Vec<Effect>,
    ) {
        if let Some(conn) = self.connections.get_mut(&ctx.conn) {
            conn.credit -= entry.message.body_len() as i64 + DELIVERY_OVERHEAD_BYTES;
        }
        let message = self.load_or_lost(&entry.message);
        let tags = (consumer_tag, delivery_tag);
        out.push(deliver_effect(
            ctx,
            tags,
            entry.redelivered,
            entry.delivery_count,
            &message,
        ));
    }

    /// Checks that every consumer's credit on its queue is what its channel granted: its
    /// prefetch less its deliveries not yet settled (unlimited for a no-ack consumer, one
    /// without prefetch and a stream's). Core tests call it after every input.
    #[cfg(test)]
    pub(crate) fn check_credit(&self) {
        for (&conn, c) in &self.connections {
            for (&channel, ch) in &c.channels {
                for k in ch.consumers.values() {
                    let Some(q) = self.queues.get(&k.queue) else {
                        continue;
                    };
                    let cref = ConsumerRef {
                        conn,
                        channel,
                        tag: k.tag.clone(),
                    };
                    let Some(credit) = q.consumers.credit(&cref) else {
                        continue;
                    };
                    let granted = if k.no_ack || k.prefetch == 0 || q.is_stream() {
                        crate::consumers::UNLIMITED
                    } else {
                        u32::from(k.prefetch) - k.unacked
                    };
                    assert_eq!(credit, granted, "credit of consumer {cref:?} on {}", q.name);
                }
            }
        }
    }

    /// Offers every queue this channel consumes from to its consumers (after an ack freed credit,
    /// a qos change, a recover or a flow change).
    pub(crate) fn deliver_channel(&mut self, ctx: Ctx, out: &mut Vec<Effect>) {
        let queues: BTreeSet<QueueId> = match self.channel_mut(ctx) {
            Some(ch) => ch.consumers.values().map(|c| c.queue).collect(),
            None => return,
        };
        for q in queues {
            self.deliver(q, out);
        }
    }
}

/// The channel's part of choosing a consumer: whether consumer `c`'s channel can take a
/// delivery now — its connection is writable and has delivery credit (if not, the connection
/// asks to be told when its socket drains), its channel is not stopped by `channel.flow`, and
/// the channel's global prefetch has room (a no-ack consumer ignores prefetch). The consumer's
/// own prefetch is its credit on the queue, which the queue's owner holds.
fn channel_can_take(
    connections: &mut HashMap<ConnId, Connection>,
    c: &ConsumerRef,
    out: &mut Vec<Effect>,
) -> bool {
    let Some(conn) = connections.get_mut(&c.conn) else {
        return false;
    };
    if !conn.writable {
        return false;
    }
    if conn.credit <= 0 {
        if !conn.awaiting_writable {
            conn.awaiting_writable = true;
            out.push(Effect::AwaitWritable { conn: c.conn });
        }
        return false;
    }
    let Some(ch) = conn.channels.get(&c.channel) else {
        return false;
    };
    let Some(consumer) = ch.consumers.get(&c.tag) else {
        return false;
    };
    ch.flow_active && (consumer.no_ack || ch.global_credit())
}

/// One `basic.deliver` of `message` on `ctx` with (consumer tag, delivery tag), its
/// properties carrying `x-delivery-count` when it came back `delivery_count` times.
pub(crate) fn deliver_effect(
    ctx: Ctx,
    (consumer_tag, delivery_tag): (ShortStr, u64),
    redelivered: bool,
    delivery_count: u32,
    message: &Message,
) -> Effect {
    Effect::SendContent {
        conn: ctx.conn,
        channel: ctx.channel,
        method: Method::BasicDeliver(BasicDeliver {
            consumer_tag,
            delivery_tag,
            redelivered,
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
        }),
        properties: with_delivery_count(message, delivery_count),
        body: message.body.clone(),
    }
}

/// `message`'s properties as delivered: a quorum queue's message that came back from a consumer
/// `count` times carries it in `x-delivery-count`, as RabbitMQ's quorum queues add it.
pub(crate) fn with_delivery_count(message: &Message, count: u32) -> BasicProperties {
    let mut properties = message.properties.clone();
    if count > 0 {
        let mut headers = properties.headers.take().unwrap_or_default();
        headers.insert("x-delivery-count", FieldValue::I64(i64::from(count)));
        properties.headers = Some(headers);
    }
    properties
}
