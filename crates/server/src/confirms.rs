//! Publisher confirms coalesced on their way to the client, as RabbitMQ sends them: a run of
//! `basic.ack`s for one channel that leaves every earlier delivery tag confirmed goes out as
//! one `basic.ack` with `multiple=true` (clients such as amqplib wait for it).
//!
//! The core confirms each publish on its own (`multiple=false`), in whatever order the
//! brokers that decide the queues answer. What may be coalesced is known from the confirms
//! already written: every publish on a confirm channel gets exactly one ack or nack, tags
//! count from 1, so once tags 1..=N are all answered an ack of N with `multiple=true` says
//! nothing more than the individual acks of the run that completed them.

use std::collections::{BTreeSet, HashMap};

use warren_core::{ChannelId, ConnId, Effect};
use warren_wire::{BasicAck, Method};

/// What a channel's client has been told of its publishes so far.
#[derive(Debug, Default)]
struct Answered {
    /// Every tag up to this one has been acked or nacked.
    upto: u64,
    /// Answered tags above `upto + 1` (answered out of order).
    above: BTreeSet<u64>,
}

impl Answered {
    /// Records an answer; returns how many tags it answered that were not answered before.
    fn answer(&mut self, tag: u64, multiple: bool) -> u64 {
        // The common case: the next tag, in order.
        if !multiple && tag == self.upto + 1 && self.above.is_empty() {
            self.upto = tag;
            return 1;
        }
        let answered = if tag <= self.upto {
            0
        } else if multiple {
            let already = self.above.range(..=tag).count() as u64;
            let answered = tag - self.upto - already;
            self.upto = tag;
            answered
        } else if self.above.insert(tag) {
            1
        } else {
            0
        };
        while self.above.first().is_some_and(|&t| t <= self.upto + 1) {
            if let Some(t) = self.above.pop_first() {
                self.upto = self.upto.max(t);
            }
        }
        answered
    }
}

/// The confirms of one connection, per channel.
#[derive(Debug, Default)]
pub(crate) struct Confirms {
    channels: HashMap<ChannelId, Answered>,
}

/// A run of adjacent individual acks of one channel: `len` effects from index `start`.
struct Run {
    start: usize,
    len: usize,
    conn: ConnId,
    channel: ChannelId,
    highest: u64,
}

/// A confirm sent to the client.
struct Confirm {
    conn: ConnId,
    channel: ChannelId,
    tag: u64,
    multiple: bool,
    nack: bool,
}

impl Confirms {
    /// Channel `channel` opened or closed: its numbering starts again.
    pub(crate) fn reset(&mut self, channel: ChannelId) {
        self.channels.remove(&channel);
    }

    /// Rewrites `effects` in place: each run of adjacent individual acks for one channel that
    /// leaves all of that channel's tags up to the run's highest answered becomes one ack of
    /// that tag with `multiple=true`. Nacks are answers too, never coalesced. A batch with
    /// nothing to coalesce is only read. Returns how many publishes the batch's acks confirm
    /// (each once, however many acks or `multiple` acks name it; nacks not counted).
    pub(crate) fn coalesce(&mut self, effects: &mut Vec<Effect>) -> u64 {
        let mut confirmed = 0;
        let mut runs: Vec<Run> = Vec::new();
        let mut run: Option<Run> = None;
        for (i, e) in effects.iter().enumerate() {
            let Some(c) = confirm_of(e) else {
                self.end_run(run.take(), &mut runs);
                continue;
            };
            let single_ack = !c.nack && !c.multiple;
            match &mut run {
                Some(r) if single_ack && r.channel == c.channel => {
                    r.highest = r.highest.max(c.tag);
                    r.len += 1;
                }
                _ => {
                    // The run ends before this confirm is counted: a coalesced ack must not
                    // answer a tag whose own answer comes after it.
                    self.end_run(run.take(), &mut runs);
                    run = single_ack.then_some(Run {
                        start: i,
                        len: 1,
                        conn: c.conn,
                        channel: c.channel,
                        highest: c.tag,
                    });
                }
            }
            let answered = self
                .channels
                .entry(c.channel)
                .or_default()
                .answer(c.tag, c.multiple);
            if !c.nack {
                confirmed += answered;
            }
        }
        self.end_run(run.take(), &mut runs);
        if runs.is_empty() {
            return confirmed;
        }
        // Each run's first effect becomes its multiple ack; the rest of the run goes.
        for r in &runs {
            effects[r.start] = Effect::Send {
                conn: r.conn,
                channel: r.channel,
                method: Method::BasicAck(BasicAck {
                    delivery_tag: r.highest,
                    multiple: true,
                }),
            };
        }
        let mut index = 0;
        let mut runs = runs.iter().peekable();
        effects.retain(|_| {
            while runs.peek().is_some_and(|r| index >= r.start + r.len) {
                runs.next();
            }
            let keep = runs.peek().is_none_or(|r| index <= r.start);
            index += 1;
            keep
        });
        confirmed
    }

    /// Keeps `run` for coalescing if it has two acks or more and every tag up to its highest
    /// is answered.
    fn end_run(&self, run: Option<Run>, runs: &mut Vec<Run>) {
        let Some(r) = run else {
            return;
        };
        let complete = self
            .channels
            .get(&r.channel)
            .is_some_and(|a| a.upto >= r.highest);
        if r.len >= 2 && complete {
            runs.push(r);
        }
    }
}

fn confirm_of(e: &Effect) -> Option<Confirm> {
    match e {
        Effect::Send {
            conn,
            channel,
            method: Method::BasicAck(a),
        } => Some(Confirm {
            conn: *conn,
            channel: *channel,
            tag: a.delivery_tag,
            multiple: a.multiple,
            nack: false,
        }),
        Effect::Send {
            conn,
            channel,
            method: Method::BasicNack(n),
        } => Some(Confirm {
            conn: *conn,
            channel: *channel,
            tag: n.delivery_tag,
            multiple: n.multiple,
            nack: true,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::BasicNack;

    fn ack(channel: ChannelId, tag: u64) -> Effect {
        Effect::Send {
            conn: 7,
            channel,
            method: Method::BasicAck(BasicAck {
                delivery_tag: tag,
                multiple: false,
            }),
        }
    }

    fn nack(channel: ChannelId, tag: u64) -> Effect {
        Effect::Send {
            conn: 7,
            channel,
            method: Method::BasicNack(BasicNack {
                delivery_tag: tag,
                multiple: false,
                requeue: false,
            }),
        }
    }

    fn multiple(channel: ChannelId, tag: u64) -> Effect {
        Effect::Send {
            conn: 7,
            channel,
            method: Method::BasicAck(BasicAck {
                delivery_tag: tag,
                multiple: true,
            }),
        }
    }

    fn coalesced(c: &mut Confirms, effects: Vec<Effect>) -> Vec<Effect> {
        let mut effects = effects;
        c.coalesce(&mut effects);
        effects
    }

    fn confirmed(c: &mut Confirms, effects: Vec<Effect>) -> u64 {
        let mut effects = effects;
        c.coalesce(&mut effects)
    }

    #[test]
    fn each_publish_acked_counts_once_however_it_was_acked() {
        let mut c = Confirms::default();
        assert_eq!(confirmed(&mut c, vec![ack(1, 1), ack(1, 2), ack(1, 3)]), 3);
        // 5 answered out of order, 4 nacked (not a confirm), then a multiple ack of 7 answers
        // only 6 and 7; an ack of a tag already answered is nothing new.
        assert_eq!(confirmed(&mut c, vec![ack(1, 5), nack(1, 4)]), 1);
        assert_eq!(confirmed(&mut c, vec![multiple(1, 7), ack(1, 7)]), 2);
        // A multiple ack skips the tags answered out of order: 9 alone, then 8 and 10.
        assert_eq!(confirmed(&mut c, vec![ack(1, 9), multiple(1, 10)]), 3);
        assert_eq!(confirmed(&mut c, vec![ack(2, 1)]), 1);
    }

    #[test]
    fn a_run_of_acks_from_the_first_unanswered_tag_becomes_one_multiple_ack() {
        let mut c = Confirms::default();
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 1), ack(1, 2), ack(1, 3)]),
            [multiple(1, 3)]
        );
        // A lone ack stays as it is; the next run starts after it.
        assert_eq!(coalesced(&mut c, vec![ack(1, 4)]), [ack(1, 4)]);
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 6), ack(1, 5)]),
            [multiple(1, 6)]
        );
    }

    #[test]
    fn acks_that_leave_an_earlier_tag_unanswered_stay_single() {
        let mut c = Confirms::default();
        // Tag 1 is not answered yet: acking 2 and 3 with multiple would answer it.
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 2), ack(1, 3)]),
            [ack(1, 2), ack(1, 3)]
        );
        // Its nack comes later, alone; from then on all up to 3 are answered.
        assert_eq!(coalesced(&mut c, vec![nack(1, 1)]), [nack(1, 1)]);
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 4), ack(1, 5)]),
            [multiple(1, 5)]
        );
    }

    #[test]
    fn a_nack_or_another_channel_ends_a_run_and_nothing_answers_a_later_tag_early() {
        let mut c = Confirms::default();
        assert_eq!(
            coalesced(
                &mut c,
                vec![
                    ack(1, 1),
                    ack(1, 2),
                    nack(1, 3),
                    ack(2, 1),
                    ack(1, 4),
                    ack(1, 5)
                ]
            ),
            [multiple(1, 2), nack(1, 3), ack(2, 1), multiple(1, 5)]
        );
        // A run whose completion needs a confirm that follows it (a nack) is not coalesced.
        let mut c = Confirms::default();
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 2), ack(1, 3), nack(1, 1)]),
            [ack(1, 2), ack(1, 3), nack(1, 1)]
        );
        // Out of order within one run is fine: the run answers every tag up to its highest.
        let mut c = Confirms::default();
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 2), ack(1, 3), ack(1, 1)]),
            [multiple(1, 3)]
        );
    }

    #[test]
    fn a_reopened_channel_counts_from_one_again() {
        let mut c = Confirms::default();
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 1), ack(1, 2)]),
            [multiple(1, 2)]
        );
        c.reset(1);
        assert_eq!(
            coalesced(&mut c, vec![ack(1, 1), ack(1, 2)]),
            [multiple(1, 2)]
        );
    }
}
