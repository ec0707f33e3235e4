//! The owner's side of queue commands (`crate::queue_command`): channels on other nodes
//! consuming from queues this broker decides. A remote consumer sits in the queue's consumer
//! table like a local one, with the credit its channel granted; its deliveries leave as
//! [`QueueEvent::Deliver`] (see `delivery.rs`), and the messages it holds are recorded
//! (`QueueConsumers::hold`) until its channel settles or returns them, or its node is lost.

use super::Broker;
use crate::command::Op;
use crate::consumers::Attach;
use crate::queue::{ConsumerRef, QueueId};
use crate::{node_of, AmqpError, Effect, QueueCommand, QueueEvent};

/// How long a get waits at most for this broker to apply the log as far as the channel's
/// node had (see [`Broker::gets_now_applied`]).
const GET_WAIT_MAX_MS: crate::Millis = 5_000;

impl Broker {
    /// [`crate::Input::QueueCommand`] from a channel on node `from`.
    pub(super) fn queue_command(
        &mut self,
        from: u64,
        command: QueueCommand,
        out: &mut Vec<Effect>,
    ) {
        let id = command.queue();
        if id >= self.next_queue_id && !self.queues.contains_key(&id) {
            // A queue the channel's node has applied the declaration of and this broker not
            // yet (queue ids are given in log order): the command waits until it has.
            self.commands_after_applied.push((self.now, from, command));
            return;
        }
        self.queue_command_now(from, command, out);
    }

    /// [`Broker::queue_command`], the queue's declaration applied here (or waited for long
    /// enough).
    pub(super) fn queue_command_now(
        &mut self,
        from: u64,
        command: QueueCommand,
        out: &mut Vec<Effect>,
    ) {
        match command {
            QueueCommand::Consume {
                consumer,
                queue,
                credit,
                priority,
                no_ack,
                exclusive,
                held,
            } => {
                let attach = Attach {
                    priority,
                    no_ack,
                    exclusive,
                    remote: true,
                };
                let error = self
                    .attach_remote(queue, consumer.clone(), credit, attach, &held)
                    .err();
                let attached = error.is_none();
                out.push(Effect::ToChannel {
                    node: from,
                    event: QueueEvent::Consumed {
                        consumer,
                        queue,
                        error,
                    },
                });
                if attached {
                    self.deliver(queue, out);
                }
            }
            QueueCommand::Credit {
                consumer,
                queue,
                credit,
            } => {
                if let Some(q) = self.owned_queue(queue) {
                    q.consumers.grant(&consumer, credit);
                    self.deliver(queue, out);
                }
            }
            QueueCommand::Settle { queue, seqs } => {
                let seqs = self.release_held(queue, from, seqs);
                if !seqs.is_empty() {
                    self.submit_for_queue(queue, Op::Settle { queue, seqs }, out);
                }
            }
            QueueCommand::Discard { queue, seqs } => {
                let seqs = self.release_held(queue, from, seqs);
                if !seqs.is_empty() {
                    self.submit_for_queue(queue, Op::Reject { queue, seqs }, out);
                }
            }
            QueueCommand::Return { queue, seqs } => {
                let seqs = self.release_held(queue, from, seqs);
                if !seqs.is_empty() {
                    let touched = self.give_back(None, seqs.into_iter().map(|s| (queue, s)), out);
                    for q in touched {
                        self.deliver(q, out);
                    }
                }
            }
            QueueCommand::Get {
                consumer,
                queue,
                no_ack,
                applied,
            } => {
                let returning = self.returns_in_flight.get(&queue).is_some_and(|&n| n > 0);
                if returning || applied > self.last_applied {
                    // Returns this owner logged are not applied yet (a quorum queue's), or
                    // the channel's node had applied more of the log: the get waits, so a get
                    // after a requeue finds the message (or its dead-lettered copy).
                    let get = QueueCommand::Get {
                        consumer,
                        queue,
                        no_ack,
                        applied,
                    };
                    if returning {
                        let waiting = self.gets_after_returns.entry(queue).or_default();
                        waiting.push((from, get));
                    } else {
                        self.commands_after_applied.push((self.now, from, get));
                    }
                    return;
                }
                let event = self.get_for_remote(consumer, queue, no_ack, out);
                out.push(Effect::ToChannel { node: from, event });
            }
            QueueCommand::Purge {
                consumer,
                queue,
                reply,
            } => {
                let purged = self
                    .owned_queue(queue)
                    .is_some()
                    .then(|| self.purge_decided(queue, out));
                if reply {
                    let event = QueueEvent::Purged {
                        consumer,
                        queue,
                        message_count: purged.unwrap_or(0),
                        error: purged.is_none().then(|| {
                            AmqpError::not_found(
                                "the queue was deleted while the channel was purging it",
                            )
                        }),
                    };
                    out.push(Effect::ToChannel { node: from, event });
                }
            }
            QueueCommand::Delete {
                consumer,
                queue,
                if_unused,
                if_empty,
            } => {
                let outcome = self.delete_for_remote(queue, if_unused, if_empty, out);
                let (message_count, error) = match outcome {
                    Ok(n) => (n, None),
                    Err(e) => (0, Some(e)),
                };
                let event = QueueEvent::Deleted {
                    consumer,
                    queue,
                    message_count,
                    error,
                };
                out.push(Effect::ToChannel { node: from, event });
            }
            QueueCommand::Declare {
                consumer,
                queue,
                reply,
            } => {
                let outcome = self.declare_for_remote(queue);
                if reply {
                    let ((message_count, consumer_count), error) = match outcome {
                        Ok(counts) => (counts, None),
                        Err(e) => ((0, 0), Some(e)),
                    };
                    let event = QueueEvent::Declared {
                        consumer,
                        queue,
                        message_count,
                        consumer_count,
                        error,
                    };
                    out.push(Effect::ToChannel { node: from, event });
                }
            }
            QueueCommand::Cancel { consumer, queue } => {
                self.detach_consumer(queue, &consumer, out);
                let ok = QueueEvent::CancelOk { consumer, queue };
                if self.queues.contains_key(&queue) && self.removing.contains_key(&queue) {
                    // An auto-delete queue's last consumer: answered once the queue is gone,
                    // as `basic.cancel-ok` is for a channel of this broker.
                    self.removal_events
                        .entry(queue)
                        .or_default()
                        .push((from, ok));
                } else {
                    out.push(Effect::ToChannel {
                        node: from,
                        event: ok,
                    });
                }
            }
        }
    }

    /// `basic.get` of a channel on another node: the message checked out to it (held by its
    /// node until settled or returned; settled at once with `no_ack`), or nothing.
    fn get_for_remote(
        &mut self,
        consumer: ConsumerRef,
        id: QueueId,
        no_ack: bool,
        out: &mut Vec<Effect>,
    ) -> QueueEvent {
        // An expired head still waiting for its Op::Expire is never handed out.
        let expiring = self.decides_queue(id) && self.expire_queue(id, out);
        let now = self.now;
        let Some(q) = self.owned_queue(id) else {
            return QueueEvent::GotNothing {
                consumer,
                queue: id,
                error: Some(AmqpError::not_found(
                    "the queue was deleted while the channel was getting from it",
                )),
            };
        };
        q.last_used = now;
        let checked_out = if expiring { None } else { q.checkout(no_ack) };
        let Some((seq, entry)) = checked_out else {
            return QueueEvent::GotNothing {
                consumer,
                queue: id,
                error: None,
            };
        };
        let message_count = q.ready_count();
        if no_ack {
            let seqs = vec![seq];
            self.submit_for_queue(id, Op::Settle { queue: id, seqs }, out);
        } else {
            q.consumers.hold(seq, consumer.clone());
        }
        let message = self.load_or_lost(&entry.message);
        QueueEvent::Got {
            delivery: crate::Delivery {
                consumer,
                queue: id,
                seq,
                redelivered: entry.redelivered,
                delivery_count: entry.delivery_count,
                message,
            },
            message_count,
        }
    }

    /// `queue.delete` of a channel on another node: decided here, where the consumers and
    /// messages are (as for a channel of this broker, `queue_class::queue_delete`); the
    /// removal is proposed and the ready count returned.
    fn delete_for_remote(
        &mut self,
        id: QueueId,
        if_unused: bool,
        if_empty: bool,
        out: &mut Vec<Effect>,
    ) -> Result<u32, AmqpError> {
        let Some(q) = self.owned_queue(id) else {
            // Gone already (another delete, or this one asked again after a leader change):
            // deleted, as RabbitMQ 3.x answers a delete of a missing queue.
            return Ok(0);
        };
        if if_unused && q.consumer_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{}' in vhost '{}' in use",
                q.name, q.vhost
            )));
        }
        if if_empty && !q.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{}' in vhost '{}' not empty",
                q.name, q.vhost
            )));
        }
        let message_count = q.ready_count();
        self.propose_removal(id, out);
        Ok(message_count)
    }

    /// `queue.declare` of a channel on another node: the queue is used (`x-expires`), and its
    /// counts of ready messages and consumers; 404 if it is gone or going (a non-passive
    /// declare then creates it anew), 405 if it is exclusive (its owner is a connection of this
    /// node, where exclusive queues live, so never the declaring one). The owner decides these
    /// two: the channel's replica may not have applied the removal yet.
    fn declare_for_remote(&mut self, id: QueueId) -> Result<(u32, u32), AmqpError> {
        let now = self.now;
        let Some(q) = self.owned_queue(id).filter(|q| !q.dying) else {
            return Err(AmqpError::not_found(
                "the queue was deleted while the channel was declaring it",
            ));
        };
        if q.exclusive_owner.is_some() {
            return Err(super::queue_class::locked(&q.name, &q.vhost));
        }
        q.last_used = now;
        Ok((q.ready_count(), q.consumer_count()))
    }

    /// `n` returns of queue `id` were applied: the gets of other nodes' channels that waited
    /// for this broker's returns to be applied, once none is left.
    pub(super) fn returned(&mut self, id: QueueId, n: usize) -> Vec<(u64, QueueCommand)> {
        let Some(left) = self.returns_in_flight.get_mut(&id) else {
            return Vec::new();
        };
        *left = left.saturating_sub(n);
        if *left > 0 {
            return Vec::new();
        }
        self.returns_in_flight.remove(&id);
        self.gets_after_returns.remove(&id).unwrap_or_default()
    }

    /// The commands of other nodes' channels that waited for this broker to apply the log as
    /// far as their node had (a get), or up to the declaration of their queue, now that it
    /// has; and, at a tick, those that waited [`GET_WAIT_MAX_MS`] (the log moved on without
    /// this broker seeing the index: a snapshot installed).
    pub(super) fn commands_now_applied(&mut self, out: &mut Vec<Effect>) {
        if self.commands_after_applied.is_empty() {
            return;
        }
        let applied = self.last_applied;
        let next_queue_id = self.next_queue_id;
        let oldest = self.now.saturating_sub(GET_WAIT_MAX_MS);
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.commands_after_applied)
            .into_iter()
            .partition(|(since, _, command)| {
                let id = command.queue();
                let declared = id < next_queue_id || self.queues.contains_key(&id);
                let caught_up =
                    !matches!(command, QueueCommand::Get { applied: a, .. } if *a > applied);
                *since < oldest || (declared && caught_up)
            });
        self.commands_after_applied = wait;
        for (_, from, mut command) in ready {
            if let QueueCommand::Get { applied, .. } = &mut command {
                // Waited long enough (or applied): not again.
                *applied = 0;
            }
            // (One that waited long enough for a declaration this broker never saw is
            // answered as for a queue that is gone.)
            if !self.keep_until_leading(from, &command) {
                self.queue_command_now(from, command, out);
            }
        }
    }

    /// Purges queue `id`, which this broker decides: its ready messages go, not those
    /// checked out to consumers. A replicated queue's purge is logged as the settlement of
    /// exactly those messages, so every replica (which does not know what the owner checked
    /// out) removes the same ones; a local queue's is not logged. The count purged.
    pub(super) fn purge_decided(&mut self, id: QueueId, out: &mut Vec<Effect>) -> u32 {
        let Some(q) = self.queues.get_mut(&id) else {
            return 0;
        };
        if q.is_local() {
            return q.purge();
        }
        let seqs = q.ready_seqs();
        let count = q.purge();
        if !seqs.is_empty() {
            self.submit_for_queue(id, Op::Settle { queue: id, seqs }, out);
        }
        count
    }

    /// A queue this broker decides, for a command about it.
    fn owned_queue(&mut self, id: QueueId) -> Option<&mut crate::queue::Queue> {
        let decides = self.decides_queue(id);
        self.queues.get_mut(&id).filter(|_| decides)
    }

    /// Messages of queue `id` a channel on node `from` settles or returns are no longer held
    /// by it: those it did hold. None if this broker does not decide the queue (it went
    /// meanwhile); a message that node no longer holds is left alone (the command is late: the
    /// message went back to the queue when that node was lost, see [`Self::owner_lost_peer`]).
    fn release_held(&mut self, id: QueueId, from: u64, mut seqs: Vec<u64>) -> Vec<u64> {
        let Some(q) = self.owned_queue(id) else {
            return Vec::new();
        };
        seqs.retain(|&seq| q.consumers.release(seq, from));
        seqs
    }

    /// Attaches a consumer of a channel on another node, as `basic.consume` attaches one of
    /// this broker's (the channel checked permissions and arguments).
    ///
    /// `held`: messages the consumer's channel holds from an earlier owner of a replicated
    /// queue (it attaches again after a leader change or a broken stream): checked out to it
    /// again where still ready. A consumer of a single-active-consumer queue that holds any was
    /// the active one: it goes to the front of the order (stays active).
    fn attach_remote(
        &mut self,
        id: QueueId,
        consumer: ConsumerRef,
        credit: u32,
        attach: Attach,
        held: &[u64],
    ) -> Result<(), AmqpError> {
        let now = self.now;
        let decides = self.decides_queue(id);
        let Some(q) = self.queues.get_mut(&id) else {
            return Err(AmqpError::not_found(
                "the queue was deleted while the consumer was attaching",
            ));
        };
        if q.dying || !decides || q.is_stream() {
            return Err(super::queue_class::not_here(&q.name, &q.vhost));
        }
        if q.consumers.credit(&consumer).is_some() {
            // Attached already (its channel heard of a leader and of a take-over, and
            // attached after each): its credit stands (the grant in this command does not
            // count the deliveries on their way to the channel); what it holds is claimed.
            for &seq in held {
                if q.checkout_seq(seq) {
                    q.consumers.hold(seq, consumer.clone());
                }
            }
            return Ok(());
        }
        if q.consumers.exclusive().is_some() || (attach.exclusive && !q.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                q.name, q.vhost
            )));
        }
        let mut claimed = false;
        for &seq in held {
            if q.checkout_seq(seq) {
                q.consumers.hold(seq, consumer.clone());
                claimed = true;
            }
        }
        q.consumers.add(consumer.clone(), credit, attach);
        if claimed && q.args.single_active_consumer {
            // It holds deliveries from the earlier owner: it was the active one, and stays.
            q.consumers.promote(&consumer);
        }
        q.had_consumer = true;
        q.last_used = now;
        Ok(())
    }

    /// [`crate::Input::PeerLost`], the owner's side: the consumers of channels on `node` are
    /// detached from the queues this broker decides, and the messages those channels held go
    /// back to their places, marked redelivered (as when a channel closes).
    pub(super) fn owner_lost_peer(&mut self, node: u64, out: &mut Vec<Effect>) {
        let mut ids: Vec<QueueId> = self
            .queues
            .values()
            .filter(|q| self.decides(q))
            .map(|q| q.id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let Some(q) = self.queues.get_mut(&id) else {
                continue;
            };
            let gone: Vec<ConsumerRef> = q
                .consumers
                .iter()
                .filter(|c| node_of(c.conn) == node)
                .cloned()
                .collect();
            let held = q.consumers.take_held_by(node);
            for consumer in &gone {
                self.detach_consumer(id, consumer, out);
            }
            let touched = self.give_back(None, held.into_iter().map(|s| (id, s)), out);
            if !touched.is_empty() {
                self.deliver(id, out);
            }
        }
    }
}
