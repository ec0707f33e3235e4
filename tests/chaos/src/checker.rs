//! The checker: reads the history of a run (and what the final checks saw on every node) and
//! says whether every invariant held. A pure function of its inputs, so it is tested on
//! hand-made histories below.
//!
//! Invariants:
//! - every publish the broker acked was delivered (else: lost, reported with when and where);
//! - nothing was delivered that was never published, and every body arrived intact;
//! - nothing nacked or returned was delivered;
//! - no message arrived twice with redelivered=false (a message is handed out as never
//!   delivered at most once);
//! - every metadata entity whose final state is determined by the history (see
//!   [`expected_entities`]) is present, or absent, as expected, through every node;
//! - every node ends with the same applied index and the same state digest;
//! - no node's log has a panic;
//! - with `--backlog`: every confirmed message of the standing backlog was drained, none twice
//!   as new, none never published, none damaged ([`check_backlog`]).
//!
//! Counted, not violations: duplicates (redelivered), deliveries of publishes whose outcome was
//! unknown, publishes of unknown outcome never delivered, and *late first deliveries*: the
//! delivery with redelivered=false arrived after a redelivered copy. That is a first delivery
//! held up in transit (in a paused node's socket or relay stream) while the leader took the
//! message back from the consumer it could no longer reach and handed it out again, marked
//! redelivered; no broker can order arrivals on different connections, and the client that got
//! it first-marked is the one it was first handed to. (A leader that hands a message out as
//! never delivered *after* another leader did is a bug, caught when both copies are marked
//! so, and tested directly: `tests/tests/failover.rs`, the paused-leader test.)

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Event, MetaOp, MetaOutcome, Outcome};

/// What the final checks saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FinalView {
    /// Entity ("queue meta-q1", "exchange meta-x0", "binding meta-x0->meta-q1") → node slot →
    /// present (None: the node did not answer).
    pub entities: BTreeMap<String, BTreeMap<usize, Option<bool>>>,
    /// Node slot → (applied index, state digest).
    pub digests: BTreeMap<usize, (Option<u64>, String)>,
    /// Lines of node logs that report a panic.
    pub panics: Vec<String>,
    /// Messages still in the message queues after the drain, per node asked.
    pub left_in_queues: BTreeMap<usize, Vec<u32>>,
}

#[derive(Debug, Serialize)]
pub struct Loss {
    pub id: u64,
    pub publisher_node: usize,
    pub sent_ms: u64,
    pub acked_ms: u64,
    /// Faults injected from 10 s before the publish until 10 s after its confirm.
    pub faults_around: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub published: usize,
    pub acked: usize,
    pub nacked: usize,
    pub returned: usize,
    pub unknown: usize,
    /// Publishes still without an outcome when the run ended (counted as unknown too).
    pub no_outcome: usize,
    pub deliveries: usize,
    pub delivered_distinct: usize,
    pub deliveries_by_get: usize,
    pub duplicates: usize,
    pub unknown_delivered: usize,
    pub unknown_not_delivered: usize,
    pub lost: Vec<Loss>,
    pub phantom: usize,
    pub corrupt: usize,
    pub nacked_delivered: Vec<u64>,
    pub returned_delivered: Vec<u64>,
    /// (id, time of the second) of messages that arrived twice with redelivered=false.
    pub twice_not_redelivered: Vec<(u64, u64)>,
    /// (id, time) of deliveries with redelivered=false that arrived after a redelivered copy.
    pub late_first_deliveries: Vec<(u64, u64)>,
    /// The transient workload (queues of one node, not replicated).
    pub transient: TransientReport,
    pub meta_ops: usize,
    pub meta_ok: usize,
    pub meta_refused: usize,
    pub meta_unknown: usize,
    pub entities_determined: usize,
    pub entity_mismatches: Vec<String>,
    pub digests_equal: bool,
    pub panics: Vec<String>,
    /// The standing backlog, when the run had one.
    pub backlog: Option<BacklogReport>,
    /// Every broken invariant, one line each.
    pub violations: Vec<String>,
}

impl Report {
    /// Adds the backlog's verdict: its violations become the run's.
    pub fn add_backlog(&mut self, b: BacklogReport) {
        self.violations.extend(b.violations.iter().cloned());
        self.backlog = Some(b);
    }
}

/// How often each message arrived, and how often with redelivered=false.
#[derive(Default)]
struct Arrivals {
    delivered: HashMap<u64, usize>,
    first_marked: HashMap<u64, usize>,
}

/// What one arrival was, compared with the ones before it.
#[derive(PartialEq)]
enum Arrival {
    First,
    /// A repeat (counted as a duplicate).
    Again,
    /// A repeat with redelivered=false after a redelivered copy: a late first delivery.
    LateFirst,
    /// A second arrival with redelivered=false: a violation.
    TwiceFirst,
}

impl Arrivals {
    fn record(&mut self, id: u64, redelivered: bool) -> Arrival {
        let n = self.delivered.entry(id).or_insert(0);
        *n += 1;
        let repeat = *n > 1;
        if !redelivered {
            let firsts = self.first_marked.entry(id).or_insert(0);
            *firsts += 1;
            if *firsts > 1 {
                return Arrival::TwiceFirst;
            }
            if repeat {
                return Arrival::LateFirst;
            }
        }
        if repeat {
            Arrival::Again
        } else {
            Arrival::First
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.delivered.contains_key(&id)
    }

    fn distinct(&self) -> usize {
        self.delivered.len()
    }
}

/// What the transient workload saw. A confirmed message that never arrived is counted, not a
/// violation: its queue's messages live only in the leader's broker, and a leader change (or
/// the connection's end, which deletes the queue) takes them.
#[derive(Debug, Default, Serialize)]
pub struct TransientReport {
    pub published: usize,
    pub confirmed: usize,
    pub deliveries: usize,
    pub delivered_distinct: usize,
    pub duplicates: usize,
    pub confirmed_not_delivered: usize,
    pub phantom: usize,
    pub corrupt: usize,
    /// (id, time of the second) of messages that arrived twice with redelivered=false.
    pub twice_not_redelivered: Vec<(u64, u64)>,
}

fn check_transient(events: &[Event]) -> TransientReport {
    let mut r = TransientReport::default();
    let mut published = std::collections::HashSet::new();
    let mut confirmed = std::collections::HashSet::new();
    for e in events {
        match e {
            Event::TransientPublish { id, .. } => {
                published.insert(*id);
            }
            Event::TransientAcked { id, .. } => {
                confirmed.insert(*id);
            }
            _ => {}
        }
    }
    let mut arrivals = Arrivals::default();
    for e in events {
        let Event::TransientDeliver {
            t,
            id,
            redelivered,
            intact,
            ..
        } = e
        else {
            continue;
        };
        r.deliveries += 1;
        let Some(id) = id.filter(|id| published.contains(id)) else {
            r.phantom += 1;
            continue;
        };
        if !intact {
            r.corrupt += 1;
        }
        let arrival = arrivals.record(id, *redelivered);
        if arrival != Arrival::First {
            r.duplicates += 1;
        }
        if arrival == Arrival::TwiceFirst {
            r.twice_not_redelivered.push((id, *t));
        }
    }
    r.published = published.len();
    r.confirmed = confirmed.len();
    r.delivered_distinct = arrivals.distinct();
    r.confirmed_not_delivered = confirmed
        .iter()
        .filter(|id| !arrivals.contains(**id))
        .count();
    r
}

/// The expected final state of every metadata entity whose state the history determines:
/// `true` present, `false` absent. An operation of unknown outcome may have taken effect at
/// any time after it was sent (a node may still hold it) or never, so an entity is determined
/// only if every such operation would leave it as the last operation known to succeed did.
pub fn expected_entities(events: &[Event]) -> BTreeMap<String, bool> {
    // Per entity: (sent, effect, outcome) of each operation that changes it.
    let mut ops: BTreeMap<String, Vec<(u64, bool, MetaOutcome)>> = BTreeMap::new();
    for e in events {
        let Event::Meta {
            op, outcome, sent, ..
        } = e
        else {
            continue;
        };
        let mut add =
            |k: String, effect: bool| ops.entry(k).or_default().push((*sent, effect, *outcome));
        match op {
            MetaOp::DeclareQueue { queue } => add(format!("queue {queue}"), true),
            MetaOp::DeleteQueue { queue } => add(format!("queue {queue}"), false),
            MetaOp::DeclareExchange { exchange } => add(format!("exchange {exchange}"), true),
            MetaOp::DeleteExchange { exchange } => add(format!("exchange {exchange}"), false),
            MetaOp::Bind { exchange, queue } => add(format!("binding {exchange}->{queue}"), true),
            MetaOp::Unbind { exchange, queue } => {
                add(format!("binding {exchange}->{queue}"), false)
            }
        }
    }
    // Deleting a queue or an exchange removes its bindings.
    let mut binding_removals: Vec<(String, (u64, bool, MetaOutcome))> = Vec::new();
    for key in ops.keys().filter(|k| k.starts_with("binding ")) {
        let (x, q) = key["binding ".len()..].split_once("->").unwrap_or_default();
        for (entity, list) in [
            (format!("exchange {x}"), &ops),
            (format!("queue {q}"), &ops),
        ] {
            if let Some(l) = list.get(&entity) {
                for (sent, effect, outcome) in l {
                    if !effect && *outcome != MetaOutcome::Refused {
                        binding_removals.push((key.clone(), (*sent, false, *outcome)));
                    }
                }
            }
        }
    }
    for (key, op) in binding_removals {
        if let Some(l) = ops.get_mut(&key) {
            l.push(op);
        }
    }
    let mut expected = BTreeMap::new();
    // Queues and exchanges first: a binding's expectation depends on theirs.
    let (bindings, others): (Vec<_>, Vec<_>) = ops
        .into_iter()
        .partition(|(k, _)| k.starts_with("binding "));
    for (key, mut list) in others.into_iter().chain(bindings) {
        list.sort_by_key(|(sent, _, _)| *sent);
        let last_ok = list
            .iter()
            .rev()
            .find(|(_, _, o)| *o == MetaOutcome::Ok)
            .map(|(_, effect, _)| *effect);
        let Some(state) = last_ok else { continue };
        let mut determined = list
            .iter()
            .filter(|(_, _, o)| *o == MetaOutcome::Unknown)
            .all(|(_, effect, _)| *effect == state);
        if key.starts_with("binding ") && state {
            // A binding needs its queue and exchange: present only if both are expected
            // present (checked below).
            let (x, q) = key["binding ".len()..].split_once("->").unwrap_or_default();
            determined &= expected.get(&format!("exchange {x}")) == Some(&true)
                && expected.get(&format!("queue {q}")) == Some(&true);
        }
        if determined {
            expected.insert(key, state);
        }
    }
    expected
}

pub fn check(events: &[Event], view: &FinalView) -> Report {
    let mut r = Report::default();
    let mut published: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut outcome: HashMap<u64, (Outcome, u64)> = HashMap::new();
    let mut arrivals = Arrivals::default();
    let mut faults: Vec<(u64, String)> = Vec::new();
    for e in events {
        match e {
            Event::Publish { t, id, node, .. } => {
                published.insert(*id, (*t, *node));
            }
            Event::Outcome { t, id, outcome: o } => {
                outcome.insert(*id, (*o, *t));
            }
            Event::Fault { t, kind, detail } => {
                faults.push((*t, format!("{t} ms {kind} {detail}")))
            }
            _ => {}
        }
    }
    r.published = published.len();
    for (o, _) in outcome.values() {
        match o {
            Outcome::Acked => r.acked += 1,
            Outcome::Nacked => r.nacked += 1,
            Outcome::Returned => r.returned += 1,
            Outcome::Unknown => r.unknown += 1,
        }
    }
    r.no_outcome = published
        .keys()
        .filter(|id| !outcome.contains_key(id))
        .count();
    for e in events {
        let Event::Deliver {
            t,
            id,
            get,
            redelivered,
            intact,
            ..
        } = e
        else {
            continue;
        };
        r.deliveries += 1;
        if *get {
            r.deliveries_by_get += 1;
        }
        let Some(id) = id else {
            r.phantom += 1;
            continue;
        };
        if !published.contains_key(id) {
            r.phantom += 1;
            continue;
        }
        if !intact {
            r.corrupt += 1;
        }
        let arrival = arrivals.record(*id, *redelivered);
        if arrival != Arrival::First {
            r.duplicates += 1;
        }
        match arrival {
            Arrival::TwiceFirst => r.twice_not_redelivered.push((*id, *t)),
            Arrival::LateFirst => r.late_first_deliveries.push((*id, *t)),
            Arrival::First | Arrival::Again => {}
        }
    }
    r.delivered_distinct = arrivals.distinct();
    let mut lost = Vec::new();
    for (id, (sent, node)) in &published {
        let o = outcome.get(id).copied();
        let was_delivered = arrivals.contains(*id);
        match o {
            Some((Outcome::Acked, at)) if !was_delivered => lost.push(Loss {
                id: *id,
                publisher_node: *node,
                sent_ms: *sent,
                acked_ms: at,
                faults_around: faults
                    .iter()
                    .filter(|(t, _)| *t + 10_000 >= *sent && *t <= at + 10_000)
                    .map(|(_, f)| f.clone())
                    .collect(),
            }),
            Some((Outcome::Nacked, _)) if was_delivered => r.nacked_delivered.push(*id),
            Some((Outcome::Returned, _)) if was_delivered => r.returned_delivered.push(*id),
            Some((Outcome::Unknown, _)) | None => {
                if was_delivered {
                    r.unknown_delivered += 1;
                } else {
                    r.unknown_not_delivered += 1;
                }
            }
            _ => {}
        }
    }
    lost.sort_by_key(|l| l.sent_ms);
    r.lost = lost;
    r.nacked_delivered.sort_unstable();
    r.returned_delivered.sort_unstable();

    for e in events {
        if let Event::Meta { outcome, .. } = e {
            r.meta_ops += 1;
            match outcome {
                MetaOutcome::Ok => r.meta_ok += 1,
                MetaOutcome::Refused => r.meta_refused += 1,
                MetaOutcome::Unknown => r.meta_unknown += 1,
            }
        }
    }
    let expected = expected_entities(events);
    r.entities_determined = expected.len();
    for (entity, want) in &expected {
        let seen = view.entities.get(entity);
        match seen {
            None => r.entity_mismatches.push(format!(
                "{entity}: expected {}, not checked",
                present(*want)
            )),
            Some(nodes) => {
                for (node, got) in nodes {
                    match got {
                        Some(g) if g == want => {}
                        Some(g) => r.entity_mismatches.push(format!(
                            "{entity}: expected {}, node {node} says {}",
                            present(*want),
                            present(*g)
                        )),
                        None => r
                            .entity_mismatches
                            .push(format!("{entity}: node {node} did not answer")),
                    }
                }
            }
        }
    }
    let distinct: std::collections::BTreeSet<&(Option<u64>, String)> =
        view.digests.values().collect();
    r.digests_equal = distinct.len() == 1
        && view
            .digests
            .values()
            .all(|(i, d)| i.is_some() && !d.is_empty());
    r.panics = view.panics.clone();

    let v = &mut r.violations;
    for l in &r.lost {
        v.push(format!(
            "LOST: message {} ({}), published through node {} at {} ms, acked at {} ms, never delivered; faults around it: {}",
            l.id,
            show_id(l.id),
            l.publisher_node,
            l.sent_ms,
            l.acked_ms,
            if l.faults_around.is_empty() { "none".to_string() } else { l.faults_around.join("; ") }
        ));
    }
    if r.phantom > 0 {
        v.push(format!(
            "{} deliveries of messages never published",
            r.phantom
        ));
    }
    if r.corrupt > 0 {
        v.push(format!("{} deliveries with a damaged body", r.corrupt));
    }
    for id in &r.nacked_delivered {
        v.push(format!(
            "message {id} ({}) was nacked, then delivered",
            show_id(*id)
        ));
    }
    for id in &r.returned_delivered {
        v.push(format!(
            "message {id} ({}) was returned, then delivered",
            show_id(*id)
        ));
    }
    for (id, t) in &r.twice_not_redelivered {
        v.push(format!(
            "message {id} ({}) arrived a second time with redelivered=false, at {t} ms",
            show_id(*id)
        ));
    }
    r.transient = check_transient(events);
    let t = &r.transient;
    if t.phantom > 0 {
        v.push(format!(
            "transient: {} deliveries of messages never published",
            t.phantom
        ));
    }
    if t.corrupt > 0 {
        v.push(format!(
            "transient: {} deliveries with a damaged body",
            t.corrupt
        ));
    }
    for (id, at) in &t.twice_not_redelivered {
        v.push(format!(
            "transient: message {id} ({}) arrived a second time with redelivered=false, at {at} ms",
            show_id(*id)
        ));
    }
    for m in &r.entity_mismatches {
        v.push(format!("metadata: {m}"));
    }
    if !r.digests_equal {
        v.push(format!(
            "nodes differ in applied state: {}",
            view.digests
                .iter()
                .map(|(n, (i, d))| format!("node {n}: applied {i:?} digest {d}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for p in &r.panics {
        v.push(format!("panic: {p}"));
    }
    for (node, depths) in &view.left_in_queues {
        if depths.iter().any(|d| *d > 0) {
            v.push(format!(
                "after the drain node {node} still reports messages in the queues: {depths:?}"
            ));
        }
    }
    r
}

/// One delivery from the backlog queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogDelivery {
    /// The id the body names (None: it names none).
    pub id: Option<u64>,
    pub redelivered: bool,
    /// The body and its `message_id` are those published with that id.
    pub intact: bool,
}

/// What the backlog's drain found, against what its fill published and had confirmed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BacklogReport {
    pub messages: u64,
    /// Ids published at least once.
    pub published: u64,
    pub confirmed: u64,
    pub deliveries: u64,
    pub delivered_distinct: u64,
    /// Arrivals of an id that had arrived before.
    pub duplicates: u64,
    /// Of those, arrivals marked redelivered.
    pub duplicates_redelivered: u64,
    /// Ids that arrived with redelivered=false more often than they were published.
    pub twice_not_redelivered: u64,
    pub twice_not_redelivered_ids: String,
    /// Deliveries whose id was never published (or whose body names no id).
    pub phantom: u64,
    pub corrupt: u64,
    /// Confirmed ids never delivered.
    pub lost: u64,
    pub lost_ids: String,
    /// Ids published, never confirmed (the fill ran out of time), delivered or not.
    pub unconfirmed_delivered: u64,
    pub unconfirmed_not_delivered: u64,
    /// Ready messages left in the queue after the drain, per node asked (None: no answer).
    pub left_in_queue: BTreeMap<usize, Option<u32>>,
    pub violations: Vec<String>,
}

/// The standing backlog's verdict. `attempts[id]` is how many times id was published and
/// `confirmed[id]` whether one of those publishes was confirmed (ids are `0..attempts.len()`);
/// `deliveries` are the drain's, in arrival order; `left` what each node reported in the queue
/// afterwards.
///
/// Violations: a confirmed id never delivered (LOST); an id delivered with redelivered=false
/// more often than it was published (a publish retried after an unknown outcome may have been
/// enqueued each time, so only the excess is a violation; a repeat marked redelivered is always
/// allowed); a delivery of an id never published; a damaged body; messages left in the queue.
pub fn check_backlog(
    attempts: &[u32],
    confirmed: &[bool],
    deliveries: &[BacklogDelivery],
    left: &BTreeMap<usize, Option<u32>>,
) -> BacklogReport {
    let mut r = BacklogReport {
        messages: attempts.len() as u64,
        published: attempts.iter().filter(|a| **a > 0).count() as u64,
        confirmed: confirmed.iter().filter(|c| **c).count() as u64,
        deliveries: deliveries.len() as u64,
        left_in_queue: left.clone(),
        ..Default::default()
    };
    let mut arrived = vec![0u32; attempts.len()];
    let mut first_marked = vec![0u32; attempts.len()];
    let mut too_many_first = Vec::new();
    for d in deliveries {
        let Some(id) =
            d.id.filter(|id| attempts.get(*id as usize).is_some_and(|a| *a > 0))
        else {
            r.phantom += 1;
            continue;
        };
        let i = id as usize;
        if !d.intact {
            r.corrupt += 1;
        }
        arrived[i] += 1;
        if arrived[i] > 1 {
            r.duplicates += 1;
            if d.redelivered {
                r.duplicates_redelivered += 1;
            }
        }
        if !d.redelivered {
            first_marked[i] += 1;
            if first_marked[i] == attempts[i] + 1 {
                too_many_first.push(id);
            }
        }
    }
    r.delivered_distinct = arrived.iter().filter(|n| **n > 0).count() as u64;
    let mut lost = Vec::new();
    for (i, published) in attempts.iter().enumerate() {
        let delivered = arrived[i] > 0;
        match (confirmed.get(i).copied().unwrap_or(false), delivered) {
            (true, false) => lost.push(i as u64),
            (false, true) if *published > 0 => r.unconfirmed_delivered += 1,
            (false, false) if *published > 0 => r.unconfirmed_not_delivered += 1,
            _ => {}
        }
    }
    too_many_first.sort_unstable();
    r.lost = lost.len() as u64;
    r.lost_ids = id_ranges(&lost, 20);
    r.twice_not_redelivered = too_many_first.len() as u64;
    r.twice_not_redelivered_ids = id_ranges(&too_many_first, 20);

    let v = &mut r.violations;
    if r.lost > 0 {
        v.push(format!(
            "backlog LOST: {} confirmed messages never delivered, ids {}",
            r.lost, r.lost_ids
        ));
    }
    if r.twice_not_redelivered > 0 {
        v.push(format!(
            "backlog: {} messages arrived with redelivered=false more often than they were published, ids {}",
            r.twice_not_redelivered, r.twice_not_redelivered_ids
        ));
    }
    if r.phantom > 0 {
        v.push(format!(
            "backlog: {} deliveries of messages never published",
            r.phantom
        ));
    }
    if r.corrupt > 0 {
        v.push(format!(
            "backlog: {} deliveries with a damaged body",
            r.corrupt
        ));
    }
    for (node, n) in left {
        if let Some(n) = n.filter(|n| *n > 0) {
            v.push(format!(
                "backlog: after the drain node {node} still reports {n} messages in the queue"
            ));
        }
    }
    r
}

/// Sorted ids as ranges, "0-99, 150, 200-201", at most `max` ranges, then how many more.
fn id_ranges(ids: &[u64], max: usize) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for id in ids {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == *id => *end = *id,
            _ => ranges.push((*id, *id)),
        }
    }
    let mut s = ranges
        .iter()
        .take(max)
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if ranges.len() > max {
        s.push_str(&format!(" and {} more ranges", ranges.len() - max));
    }
    s
}

fn present(b: bool) -> &'static str {
    if b {
        "present"
    } else {
        "absent"
    }
}

/// "publisher P, #N".
pub fn show_id(id: u64) -> String {
    format!("publisher {}, #{}", id >> 40, id & ((1 << 40) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(t: u64, id: u64) -> Event {
        Event::Publish {
            t,
            id,
            node: 1,
            queue: 0,
        }
    }
    fn out(t: u64, id: u64, outcome: Outcome) -> Event {
        Event::Outcome { t, id, outcome }
    }
    fn deliver(t: u64, id: u64, redelivered: bool) -> Event {
        Event::Deliver {
            t,
            id: Some(id),
            node: 2,
            get: false,
            redelivered,
            intact: true,
        }
    }
    fn digests() -> FinalView {
        let mut v = FinalView::default();
        for n in 1..=3 {
            v.digests.insert(n, (Some(10), "abc".into()));
        }
        v
    }

    #[test]
    fn a_clean_history_passes_and_counts() {
        let events = vec![
            publish(1, 1),
            publish(2, 2),
            publish(3, 3),
            out(4, 1, Outcome::Acked),
            out(5, 2, Outcome::Unknown),
            out(6, 3, Outcome::Nacked),
            deliver(7, 1, false),
            deliver(8, 1, true),
            deliver(9, 2, false),
        ];
        let r = check(&events, &digests());
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.acked, r.nacked, r.unknown), (1, 1, 1));
        assert_eq!((r.duplicates, r.unknown_delivered), (1, 1));
    }

    #[test]
    fn a_first_delivery_arriving_after_its_redelivered_copy_is_counted_not_a_violation() {
        let events = vec![
            publish(1, 1),
            out(2, 1, Outcome::Acked),
            // The first copy is held up in transit; the redelivered copy arrives first.
            deliver(3, 1, true),
            deliver(4, 1, false),
        ];
        let r = check(&events, &digests());
        assert_eq!(r.late_first_deliveries, vec![(1, 4)]);
        assert!(r.twice_not_redelivered.is_empty());
        assert_eq!(r.duplicates, 1);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
    }

    #[test]
    fn each_broken_invariant_is_reported() {
        let events = vec![
            Event::Fault {
                t: 1,
                kind: "kill".into(),
                detail: "node 2".into(),
            },
            publish(2, 1),
            out(3, 1, Outcome::Acked),
            publish(4, 2),
            out(5, 2, Outcome::Nacked),
            deliver(6, 2, false),
            publish(7, 3),
            out(8, 3, Outcome::Acked),
            deliver(9, 3, false),
            deliver(10, 3, false),
            deliver(11, 99, false),
        ];
        let mut view = digests();
        view.digests.insert(3, (Some(10), "xyz".into()));
        view.panics.push("node 1: thread panicked".into());
        let r = check(&events, &view);
        assert_eq!(r.lost.len(), 1);
        assert_eq!(
            r.lost[0].faults_around,
            vec!["1 ms kill node 2".to_string()]
        );
        assert_eq!(r.nacked_delivered, vec![2]);
        assert_eq!(r.twice_not_redelivered, vec![(3, 10)]);
        assert_eq!(r.phantom, 1);
        assert!(!r.digests_equal);
        assert_eq!(r.violations.len(), 6, "{:#?}", r.violations);
    }

    #[test]
    fn transient_losses_are_counted_and_transient_repeats_and_phantoms_are_violations() {
        let tdeliver = |t: u64, id: u64, redelivered: bool| Event::TransientDeliver {
            t,
            id: Some(id),
            node: 1,
            redelivered,
            intact: true,
        };
        let tpublish = |t: u64, id: u64| Event::TransientPublish { t, id, node: 1 };
        let tacked = |t: u64, id: u64| Event::TransientAcked { t, id };
        let clean = vec![
            tpublish(1, 1),
            tacked(2, 1),
            tpublish(3, 2),
            tacked(4, 2),
            tdeliver(5, 1, false),
            tdeliver(6, 1, true),
        ];
        let r = check(&clean, &digests());
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!(r.transient.confirmed, 2);
        assert_eq!(r.transient.confirmed_not_delivered, 1, "message 2 went");
        assert_eq!(r.transient.duplicates, 1);
        let mut broken = clean;
        broken.push(tdeliver(7, 1, false));
        broken.push(tdeliver(8, 77, false));
        let r = check(&broken, &digests());
        assert_eq!(r.transient.twice_not_redelivered, vec![(1, 7)]);
        assert_eq!(r.transient.phantom, 1);
        assert_eq!(r.violations.len(), 2, "{:#?}", r.violations);
    }

    fn bdeliver(id: u64, redelivered: bool) -> BacklogDelivery {
        BacklogDelivery {
            id: Some(id),
            redelivered,
            intact: true,
        }
    }
    fn empty_everywhere() -> BTreeMap<usize, Option<u32>> {
        (1..=3).map(|n| (n, Some(0))).collect()
    }

    #[test]
    fn a_clean_backlog_passes_and_counts_redelivered_repeats() {
        let attempts = [1, 1, 2, 1];
        // Id 3's publishes were never confirmed; id 2 was published twice (the first outcome
        // unknown) and is there twice.
        let confirmed = [true, true, true, false];
        let deliveries = [
            bdeliver(0, false),
            bdeliver(1, false),
            bdeliver(2, false),
            bdeliver(2, false),
            bdeliver(0, true),
        ];
        let r = check_backlog(&attempts, &confirmed, &deliveries, &empty_everywhere());
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!((r.confirmed, r.lost, r.delivered_distinct), (3, 0, 3));
        assert_eq!((r.duplicates, r.duplicates_redelivered), (2, 1));
        assert_eq!(r.unconfirmed_not_delivered, 1);
    }

    #[test]
    fn a_confirmed_backlog_message_missing_is_a_loss() {
        let attempts = [1; 6];
        let confirmed = [true; 6];
        let deliveries = [bdeliver(0, false), bdeliver(4, false)];
        let r = check_backlog(&attempts, &confirmed, &deliveries, &empty_everywhere());
        assert_eq!(r.lost, 4);
        assert_eq!(r.lost_ids, "1-3, 5");
        assert_eq!(r.violations.len(), 1, "{:#?}", r.violations);
        assert!(r.violations[0].starts_with("backlog LOST: 4"));
    }

    #[test]
    fn a_backlog_repeat_without_redelivered_a_phantom_and_a_damaged_body_are_violations() {
        let attempts = [1, 1];
        let confirmed = [true, true];
        let damaged = BacklogDelivery {
            id: Some(1),
            redelivered: false,
            intact: false,
        };
        let deliveries = [
            bdeliver(0, false),
            bdeliver(0, false),
            damaged,
            bdeliver(9, false),
            BacklogDelivery {
                id: None,
                redelivered: false,
                intact: false,
            },
        ];
        let mut left = empty_everywhere();
        left.insert(2, Some(3));
        let r = check_backlog(&attempts, &confirmed, &deliveries, &left);
        assert_eq!((r.twice_not_redelivered, r.phantom, r.corrupt), (1, 2, 1));
        assert_eq!(r.lost, 0);
        assert_eq!(r.violations.len(), 4, "{:#?}", r.violations);
        let mut report = Report::default();
        report.add_backlog(r);
        assert_eq!(report.violations.len(), 4);
    }

    #[test]
    fn id_ranges_are_compact_and_capped() {
        assert_eq!(id_ranges(&[], 3), "");
        assert_eq!(id_ranges(&[1, 2, 3, 7, 9, 10], 3), "1-3, 7, 9-10");
        assert_eq!(id_ranges(&[1, 3, 5, 7], 2), "1, 3 and 2 more ranges");
    }

    fn meta(sent: u64, op: MetaOp, outcome: MetaOutcome) -> Event {
        Event::Meta {
            t: sent + 1,
            node: 1,
            op,
            outcome,
            sent,
        }
    }

    #[test]
    fn entity_expectations_follow_the_last_success_unless_an_unknown_op_disagrees() {
        let q = |n: &str| n.to_string();
        let events = vec![
            meta(1, MetaOp::DeclareQueue { queue: q("a") }, MetaOutcome::Ok),
            meta(2, MetaOp::DeleteQueue { queue: q("a") }, MetaOutcome::Ok),
            meta(3, MetaOp::DeclareQueue { queue: q("b") }, MetaOutcome::Ok),
            meta(
                4,
                MetaOp::DeleteQueue { queue: q("b") },
                MetaOutcome::Unknown,
            ),
            meta(
                5,
                MetaOp::DeclareQueue { queue: q("c") },
                MetaOutcome::Unknown,
            ),
            meta(6, MetaOp::DeclareQueue { queue: q("d") }, MetaOutcome::Ok),
            meta(
                7,
                MetaOp::DeclareExchange { exchange: q("x") },
                MetaOutcome::Ok,
            ),
            meta(
                8,
                MetaOp::Bind {
                    exchange: q("x"),
                    queue: q("d"),
                },
                MetaOutcome::Ok,
            ),
            meta(
                9,
                MetaOp::Bind {
                    exchange: q("x"),
                    queue: q("a"),
                },
                MetaOutcome::Refused,
            ),
        ];
        let e = expected_entities(&events);
        assert_eq!(e.get("queue a"), Some(&false));
        assert_eq!(e.get("queue b"), None, "an unknown delete leaves it open");
        assert_eq!(e.get("queue c"), None, "nothing known to have succeeded");
        assert_eq!(e.get("binding x->d"), Some(&true));
        // Queue a was deleted (and the bind refused): no binding.
        assert_eq!(e.get("binding x->a"), Some(&false));
        // A later delete of the queue removes the binding.
        let mut more = events.clone();
        more.push(meta(
            10,
            MetaOp::DeleteQueue { queue: q("d") },
            MetaOutcome::Ok,
        ));
        let e = expected_entities(&more);
        assert_eq!(e.get("binding x->d"), Some(&false));
    }
}
