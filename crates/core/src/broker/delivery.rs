//! Pushing messages to consumers: round-robin over a queue's consumers, skipping those without
//! credit (per-consumer prefetch, per-channel global prefetch, channel flow, connection
//! back-pressure).

use std::collections::BTreeSet;
use std::sync::Arc;

use warren_wire::{BasicDeliver, BasicProperties, FieldValue, Method, ShortStr};

use super::{Broker, Ctx};
use crate::channel::Unacked;
use crate::command::Op;
use crate::connection::DELIVERY_OVERHEAD_BYTES;
use crate::message::{Message, Payload};
use crate::queue::{Entry, QueueId};
use crate::Effect;

impl Broker {
    /// Delivers ready messages of queue `id` to its consumers until the queue is empty or no
    /// consumer has credit. Expired messages met at the head are dead-lettered first. Messages
    /// delivered to no-ack consumers are settled with one [`Op::Settle`].
    pub(crate) fn deliver(&mut self, id: QueueId, out: &mut Vec<Effect>) {
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
        if self.expire_queue(id, out) {
            // The expired head goes first; apply_expire delivers again.
            return;
        }
        if self.queues.get(&id).is_some_and(|q| q.is_stream()) {
            self.deliver_stream(id, out);
            return;
        }
        loop {
            let Some(queue) = self.queues.get_mut(&id) else {
                return;
            };
            if queue.is_empty() || queue.consumers.is_empty() {
                return;
            }
            // The first consumer, in round-robin order, that can take a message; with consumer
            // priorities, the first of the highest priority among those that can.
            let prioritised = !queue.consumer_priorities.is_empty();
            // A single-active-consumer queue offers its messages to its first consumer only.
            let single = queue.args.single_active_consumer;
            let candidates = if single { 1 } else { queue.consumers.len() };
            let mut chosen: Option<(usize, i32, bool)> = None;
            for i in 0..candidates {
                let candidate = &queue.consumers[i];
                let Some(conn) = self.connections.get_mut(&candidate.conn) else {
                    continue;
                };
                if !conn.writable {
                    continue;
                }
                if conn.credit <= 0 {
                    if !conn.awaiting_writable {
                        conn.awaiting_writable = true;
                        out.push(Effect::AwaitWritable {
                            conn: candidate.conn,
                        });
                    }
                    continue;
                }
                let Some(ch) = conn.channels.get(&candidate.channel) else {
                    continue;
                };
                let Some(consumer) = ch.consumers.get(&candidate.tag) else {
                    continue;
                };
                let has_credit = consumer.no_ack
                    || ((consumer.prefetch == 0
                        || consumer.unacked < u32::from(consumer.prefetch))
                        && ch.global_credit());
                if !(ch.flow_active && has_credit) {
                    continue;
                }
                let priority = if prioritised {
                    queue
                        .consumer_priorities
                        .get(candidate)
                        .copied()
                        .unwrap_or(0)
                } else {
                    0
                };
                if chosen.is_none_or(|(_, best, _)| priority > best) {
                    chosen = Some((i, priority, consumer.no_ack));
                }
                if !prioritised {
                    break;
                }
            }
            let Some((i, _, no_ack)) = chosen else {
                return;
            };
            let consumer = if single {
                queue.consumers[i].clone()
            } else {
                // The chosen consumer goes to the back: the next message is offered to the
                // others of its priority first.
                let Some(consumer) = queue.consumers.remove(i) else {
                    return;
                };
                queue.consumers.push_back(consumer.clone());
                consumer
            };
            let Some((seq, entry)) = queue.checkout(no_ack) else {
                return;
            };
            let Some(ch) = self
                .connections
                .get_mut(&consumer.conn)
                .and_then(|c| c.channels.get_mut(&consumer.channel))
            else {
                // Unreachable in practice (checked above); put the message back rather than lose it.
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
        out.push(Effect::SendContent {
            conn: ctx.conn,
            channel: ctx.channel,
            method: Method::BasicDeliver(BasicDeliver {
                consumer_tag,
                delivery_tag,
                redelivered: entry.redelivered,
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            }),
            properties: delivered_properties(&entry, &message),
            body: message.body.clone(),
        });
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

/// A message's properties as delivered: a quorum queue's message that came back from a consumer
/// carries its delivery count in `x-delivery-count`, as RabbitMQ's quorum queues add it.
pub(crate) fn delivered_properties(entry: &Entry, message: &Message) -> BasicProperties {
    let mut properties = message.properties.clone();
    if entry.delivery_count > 0 {
        let mut headers = properties.headers.take().unwrap_or_default();
        headers.insert(
            "x-delivery-count",
            FieldValue::I64(i64::from(entry.delivery_count)),
        );
        properties.headers = Some(headers);
    }
    properties
}
