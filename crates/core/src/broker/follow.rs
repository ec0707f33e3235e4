//! Consumers of replicated queues on the client's node (issue 19, step 3; see
//! `docs/architecture.md`, "Consumers as queue commands"). A replicated queue is decided by
//! the leader's broker; a channel of any node consumes from it with the queue commands of
//! `remote.rs` (on the leader itself, as a local consumer). The consumer follows the
//! leadership:
//!
//! * The runtime tells each broker who leads ([`crate::Input::Leader`]) and the leader's own
//!   broker that it leads ([`Broker::lead`], once it has applied its `TakeOver`). A consumer
//!   attaches to that node's broker again, sending the messages its channel holds unacked from
//!   the previous owner (`QueueCommand::Consume::held`): the new owner checks those out to it
//!   again where still ready (a leader change made them ready and redelivered), so the
//!   client's acks of them settle them instead of being ignored.
//! * A broken stream to the owner leaves the consumer attached nowhere (owner 0) with its
//!   unacked deliveries; it attaches again at the next tick (at most once a second) to
//!   whoever leads then.
//! * Acks and rejects are logged from the channel's node (`Op::Settle`, `Op::Reject`): every
//!   replica applies them, and the owner stops holding them for that node
//!   (`QueueConsumers::forget_held`). Returns go to the owner, which puts the message back
//!   where it checked it out.
//! * A broker that does not lead yet keeps the queue commands for replicated queues it gets
//!   (a follower may learn of the new leader before that leader's broker has taken over)
//!   until it leads, until another node is known to lead, or for [`PENDING_MAX_MS`].

use warren_wire::{BasicConsumeOk, Method, ShortStr};

use super::remote::REMOTE_WINDOW;
use super::{Broker, Ctx};
use crate::channel::RemoteConsumer;
use crate::consumers::{Attach, UNLIMITED};
use crate::queue::{ConsumerRef, Queue};
use crate::{Effect, Millis, QueueCommand};

/// How long queue commands for replicated queues wait at a broker that does not lead.
pub(super) const PENDING_MAX_MS: Millis = 30_000;

/// How often consumers attached nowhere try again.
pub(super) const REATTACH_EVERY_MS: Millis = 1_000;

/// At most this many queue commands wait for a broker to lead (the oldest go first).
const PENDING_MAX: usize = 100_000;

/// Which of this node's consumers of replicated queues [`Broker::detach_followers`] detaches.
#[derive(Clone, Copy)]
pub(super) enum Detach {
    /// Every one: this broker stopped leading (its local consumers too).
    All,
    /// Those attached to another node's broker (`Some`: to that node's only).
    Remote(Option<u64>),
}

/// Whether queue `q`'s consumers follow the leader: a replicated queue other than a stream
/// (a stream's consumers read the replica of their own node).
pub(crate) fn follows_leader(q: &Queue) -> bool {
    !q.is_local() && !q.is_stream()
}

impl Broker {
    /// Whether queue `id` is a replicated queue whose consumers follow the leader (what a
    /// leader that steps down must no longer tell other nodes' channels about).
    pub fn follows_leader(&self, id: u64) -> bool {
        self.queues.get(&id).is_some_and(follows_leader)
    }

    /// The node whose broker decides the replicated queues, if it is known and not this one.
    pub(crate) fn leader_elsewhere(&self) -> Option<u64> {
        if self.leading {
            return None;
        }
        self.leader.filter(|&n| n != 0 && n != self.config.node)
    }

    /// [`crate::Input::Leader`].
    pub(super) fn leader_known(&mut self, node: Option<u64>, out: &mut Vec<Effect>) {
        self.leader = node;
        if node.is_some_and(|n| n != self.config.node) {
            // Commands kept for leading: the channels attach to that node instead.
            self.pending_owner.clear();
        }
        self.reattach_consumers(out);
    }

    /// This node leads and its broker decides the replicated queues from now on (its
    /// `TakeOver` or `Recover` is applied): this node's consumers of them attach here, and
    /// the queue commands other nodes sent while it was not leading yet are handled, claiming
    /// what their channels hold before anything is delivered.
    pub fn lead(&mut self, out: &mut Vec<Effect>) {
        self.leading = true;
        self.leader = Some(self.config.node);
        self.holding_deliveries = true;
        self.reattach_consumers(out);
        for (_, from, command) in std::mem::take(&mut self.pending_owner) {
            self.queue_command(from, command, out);
        }
        self.holding_deliveries = false;
        let mut ids: Vec<_> = self
            .queues
            .values()
            .filter(|q| follows_leader(q) && !q.consumers.is_empty())
            .map(|q| q.id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.deliver(id, out);
        }
    }

    /// A queue command for a replicated queue reached this broker while it does not lead:
    /// kept until it does (true), or handled now (false).
    pub(super) fn keep_until_leading(&mut self, from: u64, command: &QueueCommand) -> bool {
        if self.leading {
            return false;
        }
        let id = command.queue();
        if !self.queues.get(&id).is_some_and(follows_leader) {
            return false;
        }
        if self.pending_owner.len() >= PENDING_MAX {
            self.pending_owner.pop_front();
        }
        self.pending_owner
            .push_back((self.now, from, command.clone()));
        true
    }

    /// Every tick: commands kept too long for leading go; consumers attached nowhere try
    /// again (at most once per [`REATTACH_EVERY_MS`]).
    pub(super) fn tick_follow(&mut self, out: &mut Vec<Effect>) {
        let now = self.now;
        let oldest = now.saturating_sub(PENDING_MAX_MS);
        self.pending_owner.retain(|(at, _, _)| *at >= oldest);
        if now >= self.next_reattach {
            self.next_reattach = now.saturating_add(REATTACH_EVERY_MS);
            self.reattach_consumers(out);
        }
    }

    /// A new leader took over (its `TakeOver` or `Recover` is applied here): whatever this
    /// node's consumers of replicated queues were attached to, the old leader's broker let
    /// them go (a leader re-elected after stepping down too, which the runtime's view of the
    /// leader may not show as a change). They attach again to the leader this broker knows,
    /// or to the next one it hears of.
    pub(super) fn follow_take_over(&mut self, out: &mut Vec<Effect>) {
        self.detach_followers(Detach::Remote(None));
        // The old leader's broker may have dropped a channel's question, or its answer, when
        // it stepped down (a leader re-elected too): every one is asked again (so
        // `reattach_consumers` finds none left to ask).
        if let Some(target) = self.owner_of_replicated() {
            self.ask_again(target, true, out);
        }
        self.reattach_consumers(out);
    }

    /// The broker that decides the replicated queues, if known: this one or the leader's.
    fn owner_of_replicated(&self) -> Option<u64> {
        if self.leading {
            Some(self.config.node)
        } else {
            self.leader_elsewhere()
        }
    }

    /// The channels of this node waiting for an answer about a replicated queue (a declare's
    /// counts, a conditional delete) from another owner than `target` (or from any, with
    /// `all`): the question goes to `target` now. A get is answered empty instead (see
    /// [`Broker::end_stale_gets`]).
    fn ask_again(&mut self, target: u64, all: bool, out: &mut Vec<Effect>) {
        let node = self.config.node;
        let mut again = Vec::new();
        for (&conn, c) in &self.connections {
            for (&channel, ch) in &c.channels {
                let (Some((from, kind)), Some(asked)) = (ch.awaiting_answer, &ch.asked) else {
                    continue;
                };
                if matches!(kind, crate::channel::Awaiting::Get { .. })
                    || (from == target && !all)
                    || !self.queues.get(&asked.queue()).is_some_and(follows_leader)
                {
                    continue;
                }
                again.push((Ctx { conn, channel }, kind, asked.clone()));
            }
        }
        again.sort_by_key(|(ctx, _, _)| (ctx.conn, ctx.channel));
        for (ctx, kind, command) in again {
            if let Some(ch) = self.channel_mut(ctx) {
                ch.awaiting_answer = Some((target, kind));
            }
            if target == node {
                // This broker decides: its own answer, handled here.
                let mut answers = Vec::new();
                self.queue_command_now(node, command, &mut answers);
                for e in answers {
                    match e {
                        Effect::ToChannel { node: to, event } if to == node => {
                            self.queue_event(node, event, out)
                        }
                        other => out.push(other),
                    }
                }
            } else {
                out.push(Effect::ToOwner {
                    node: target,
                    command,
                });
            }
        }
    }

    /// This node stopped leading: its channels' consumers of replicated queues are attached
    /// nowhere until the next leader is known (they keep their unacked deliveries), and the
    /// queues forget which messages other nodes' channels held.
    pub(super) fn follow_step_down(&mut self) {
        self.leader = None;
        self.pending_owner.clear();
        // Their channels answer the gets themselves when they hear of the next leader.
        self.returns_in_flight.clear();
        self.gets_after_returns.clear();
        // Those about replicated queues are asked again of the next leader; a transient
        // queue's (its declaration not applied here yet) still wait.
        let queues = &self.queues;
        self.commands_after_applied
            .retain(|(_, _, c)| !queues.get(&c.queue()).is_some_and(follows_leader));
        for q in self.queues.values_mut().filter(|q| follows_leader(q)) {
            q.consumers.clear_held();
        }
        self.detach_followers(Detach::All);
    }

    /// This node's consumers of replicated queues that `which` names are attached nowhere
    /// (owner 0) until they attach again; they keep their unacked deliveries.
    pub(super) fn detach_followers(&mut self, which: Detach) {
        let queues = &self.queues;
        let follows = |id: &u64| queues.get(id).is_some_and(follows_leader);
        for c in self.connections.values_mut() {
            for ch in c.channels.values_mut() {
                let prefetch_global = ch.prefetch_global;
                for k in ch.consumers.values_mut().filter(|k| follows(&k.queue)) {
                    match (&mut k.remote, which) {
                        (Some(r), Detach::All | Detach::Remote(None)) => {
                            r.owner = 0;
                            r.owed = 0;
                        }
                        (Some(r), Detach::Remote(Some(owner))) if r.owner == owner => {
                            r.owner = 0;
                            r.owed = 0;
                        }
                        (None, Detach::All) => {
                            let limited = !k.no_ack && (k.prefetch > 0 || prefetch_global > 0);
                            k.remote = Some(RemoteConsumer {
                                owner: 0,
                                window: !limited,
                                owed: 0,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Attaches this node's consumers of replicated queues to the broker that decides them,
    /// where they are not attached to it yet.
    fn reattach_consumers(&mut self, out: &mut Vec<Effect>) {
        let node = self.config.node;
        let Some(target) = self.owner_of_replicated() else {
            return;
        };
        let mut moves = Vec::new();
        for (&conn, c) in &self.connections {
            for (&channel, ch) in &c.channels {
                for k in ch.consumers.values() {
                    if !self.queues.get(&k.queue).is_some_and(follows_leader) {
                        continue;
                    }
                    let owner = k.remote.as_ref().map_or(node, |r| r.owner);
                    if owner != target {
                        moves.push((Ctx { conn, channel }, k.tag.clone()));
                    }
                }
            }
        }
        moves.sort_by(|a, b| (a.0.conn, a.0.channel, &a.1).cmp(&(b.0.conn, b.0.channel, &b.1)));
        self.end_stale_gets(target, out);
        self.ask_again(target, false, out);
        for (ctx, tag) in moves {
            if target == node {
                self.attach_here(ctx, tag, out);
            } else {
                self.attach_to(ctx, tag, target, out);
            }
        }
    }

    /// A `basic.get` of a replicated queue waiting for an owner other than `owner`, which
    /// decides now: answered `basic.get-empty` (the old owner let it go; the client asks
    /// again).
    fn end_stale_gets(&mut self, owner: u64, out: &mut Vec<Effect>) {
        let mut stale = Vec::new();
        for (&conn, c) in &self.connections {
            for (&channel, ch) in &c.channels {
                if let Some((from, crate::channel::Awaiting::Get { queue, .. })) =
                    ch.awaiting_answer
                {
                    if from != owner && self.queues.get(&queue).is_some_and(follows_leader) {
                        stale.push((Ctx { conn, channel }, from));
                    }
                }
            }
        }
        stale.sort_by_key(|(ctx, _)| (ctx.conn, ctx.channel));
        for (ctx, from) in stale {
            self.stale_get_answered(ctx, from, out);
        }
    }

    /// Consumer `tag` of channel `ctx`: its queue, and what the channel holds unacked for it
    /// (message numbers, in order).
    fn consumer_holds(&self, ctx: Ctx, tag: &ShortStr) -> Option<(u64, Vec<u64>)> {
        let ch = self
            .connections
            .get(&ctx.conn)
            .and_then(|c| c.channels.get(&ctx.channel))?;
        let queue = ch.consumers.get(tag)?.queue;
        let mut seqs: Vec<u64> = ch
            .unacked
            .values()
            .filter(|u| u.queue == queue && u.consumer_tag.as_ref() == Some(tag))
            .map(|u| u.seq)
            .collect();
        seqs.sort_unstable();
        Some((queue, seqs))
    }

    /// Attaches consumer `tag` of channel `ctx` to the owner on node `owner`.
    fn attach_to(&mut self, ctx: Ctx, tag: ShortStr, owner: u64, out: &mut Vec<Effect>) {
        let Some((queue, held)) = self.consumer_holds(ctx, &tag) else {
            return;
        };
        let Some(ch) = self.channel_mut(ctx) else {
            return;
        };
        let prefetch_global = ch.prefetch_global;
        let Some(k) = ch.consumers.get_mut(&tag) else {
            return;
        };
        let limited = !k.no_ack && (k.prefetch > 0 || prefetch_global > 0);
        let credit = match (limited, k.prefetch) {
            (false, _) => REMOTE_WINDOW,
            (true, 0) => u32::from(prefetch_global).saturating_sub(k.unacked),
            (true, p) => u32::from(p).saturating_sub(k.unacked),
        };
        k.remote = Some(RemoteConsumer {
            owner,
            window: !limited,
            owed: 0,
        });
        let command = QueueCommand::Consume {
            consumer: ConsumerRef {
                conn: ctx.conn,
                channel: ctx.channel,
                tag: tag.clone(),
            },
            queue,
            credit,
            priority: k.priority,
            no_ack: k.no_ack,
            exclusive: k.exclusive,
            held,
        };
        if let Some(waiting) = ch.awaiting_owner.get_mut(&tag) {
            // The client's `basic.consume` is answered by this owner.
            waiting.2 = owner;
        }
        out.push(Effect::ToOwner {
            node: owner,
            command,
        });
    }

    /// Attaches consumer `tag` of channel `ctx` to its queue on this broker, which leads: as
    /// a local consumer, with the deliveries its channel holds checked out to it again.
    fn attach_here(&mut self, ctx: Ctx, tag: ShortStr, out: &mut Vec<Effect>) {
        let Some((queue, held)) = self.consumer_holds(ctx, &tag) else {
            return;
        };
        let Some(ch) = self.channel_mut(ctx) else {
            return;
        };
        let waiting = ch.awaiting_owner.remove(&tag);
        let Some(k) = ch.consumers.get_mut(&tag) else {
            return;
        };
        k.remote = None;
        let credit = if k.no_ack || k.prefetch == 0 {
            UNLIMITED
        } else {
            u32::from(k.prefetch).saturating_sub(k.unacked)
        };
        let attach = Attach {
            priority: k.priority,
            no_ack: k.no_ack,
            exclusive: k.exclusive,
            remote: false,
        };
        let cref = ConsumerRef {
            conn: ctx.conn,
            channel: ctx.channel,
            tag: tag.clone(),
        };
        let now = self.now;
        if let Some(q) = self.queues.get_mut(&queue) {
            q.consumers.remove(&cref);
            q.consumers.add(cref.clone(), credit, attach);
            q.had_consumer = true;
            q.last_used = now;
            let mut claimed = false;
            for seq in held {
                claimed |= q.checkout_seq(seq);
            }
            if claimed && q.args.single_active_consumer {
                // It holds deliveries from the earlier owner: it was the active one (see
                // `Broker::attach_remote`).
                q.consumers.promote(&cref);
            }
        }
        if let Some((true, nowait, _)) = waiting {
            if !nowait {
                let ok = BasicConsumeOk { consumer_tag: tag };
                self.reply(ctx, Method::BasicConsumeOk(ok), out);
            }
            self.command_applied(ctx, false, out);
        }
        self.deliver(queue, out);
    }
}
