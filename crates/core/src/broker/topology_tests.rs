//! Topology from the client's node (issue 19, step 4): a channel on node 2, which does not
//! lead, declares, binds, purges and deletes with commands it proposes itself, numbered in the
//! channel's log sequence so that a copy sent again after a leader change is applied once; it
//! asks the owner (the leader's broker) for what only the owner knows. Inputs in, the exact
//! effects for clients out, with the `Pair` of `remote_tests.rs`.

use warren_wire::*;

use super::remote_tests::{crossed, Pair, A, B};
use super::tests::send;
use crate::{Effect, Input};

fn declare_ok(queue: &str, message_count: u32, consumer_count: u32) -> Effect {
    send(
        B,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: queue.into(),
            message_count,
            consumer_count,
        }),
    )
}

fn durable(queue: &str) -> Method {
    Method::QueueDeclare(QueueDeclare {
        queue: queue.into(),
        durable: true,
        ..Default::default()
    })
}

#[test]
fn a_channel_on_a_follower_proposes_its_topology_and_is_answered_when_it_applies_it() {
    let mut p = Pair::new();
    p.input(2, Input::Leader { node: Some(1) });
    p.hold = Some(Vec::new());
    let exchange = Method::ExchangeDeclare(ExchangeDeclare {
        exchange: "events".into(),
        kind: "topic".into(),
        durable: true,
        ..Default::default()
    });
    assert_eq!(
        p.method(B, exchange),
        vec![],
        "no reply before it is applied"
    );
    assert_eq!(p.method(B, durable("audit")), vec![], "waits behind it");
    let held = p.hold.clone().unwrap_or_default();
    assert_eq!(
        held.len(),
        1,
        "the declare waits for the exchange's command"
    );
    assert_eq!(held[0].origin.map(|o| o.conn), Some(B));
    assert_eq!(
        held[0].number,
        Some(1),
        "numbered in the channel's log sequence"
    );
    // Committed: the exchange's declare-ok, then the queue's declare goes on (committed at
    // once now) and is answered.
    let e = p.commit_held();
    assert_eq!(
        e,
        vec![
            send(B, Method::ExchangeDeclareOk(ExchangeDeclareOk {})),
            declare_ok("audit", 0, 0)
        ],
    );
    let bind = Method::QueueBind(QueueBind {
        queue: "audit".into(),
        exchange: "events".into(),
        routing_key: "#".into(),
        ..Default::default()
    });
    assert_eq!(
        p.method(B, bind),
        vec![send(B, Method::QueueBindOk(QueueBindOk {}))]
    );
    assert!(crossed(&mut p).is_empty(), "no queue command: all logged");
    // Both replicas have it: a publish on the leader's node routes through the binding.
    let one = &p.brokers[0];
    assert!(one.queue_id(&"/".into(), "audit").is_some());
    assert_eq!(
        one.route(&"/".into(), &"events".into(), "a.b", None),
        vec![one.queue_id(&"/".into(), "audit").expect("audit")]
    );
}

#[test]
fn a_topology_command_sent_again_after_its_first_copy_was_applied_is_skipped() {
    let mut p = Pair::new();
    p.input(2, Input::Leader { node: Some(1) });
    p.hold = Some(Vec::new());
    p.method(B, durable("q"));
    let declare = p.hold.clone().unwrap_or_default().remove(0);
    assert_eq!(p.commit_held(), vec![declare_ok("q", 0, 0)]);
    // The node sent it again to a new leader, which commits the copy too.
    let e = p.input(
        2,
        Input::Applied {
            command: declare.clone(),
            index: 0,
        },
    );
    assert_eq!(e, vec![], "no second declare-ok");
    // The channel's later commands are not held back by it.
    let e = p.method(
        B,
        Method::QueuePurge(QueuePurge {
            queue: "q".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        e,
        vec![send(
            B,
            Method::QueuePurgeOk(QueuePurgeOk { message_count: 0 })
        )]
    );
}

#[test]
fn a_follower_asks_the_owner_for_a_replicated_queues_counts_and_its_conditional_delete() {
    let mut p = Pair::new();
    p.input(2, Input::Leader { node: Some(1) });
    p.method(A, durable("d"));
    for body in ["m1", "m2", "m3"] {
        p.publish(A, "d", body);
    }
    // A consumer on the leader's node holds one of them.
    p.method(
        A,
        Method::BasicQos(BasicQos {
            prefetch_count: 1,
            ..Default::default()
        }),
    );
    p.consume(A, "d", "c", false);
    crossed(&mut p);
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "d".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(
        p.method(B, passive),
        vec![declare_ok("d", 2, 1)],
        "the owner's counts: two ready (node 2's replica does not know one is out), one consumer"
    );
    assert_eq!(crossed(&mut p), ["2→1 declare true", "1→2 declared 2 1"]);
    assert_eq!(p.method(B, durable("d")), vec![declare_ok("d", 2, 1)]);
    assert_eq!(crossed(&mut p), ["2→1 declare true", "1→2 declared 2 1"]);
    // A redeclare that does not match is refused by node 2's replica, asking nobody.
    let e = p.method(
        B,
        Method::QueueDeclare(QueueDeclare {
            queue: "d".into(),
            durable: false,
            ..Default::default()
        }),
    );
    assert!(
        matches!(&e[..], [Effect::CloseChannel { error, .. }] if error.code == 406),
        "{e:?}"
    );
    assert!(crossed(&mut p).is_empty());
    p.input(
        2,
        Input::Method {
            conn: B,
            channel: 1,
            method: Method::ChannelOpen(ChannelOpen::default()),
        },
    );
    let e = p.method(
        B,
        Method::QueueDelete(QueueDelete {
            queue: "d".into(),
            if_unused: true,
            ..Default::default()
        }),
    );
    assert!(
        matches!(&e[..], [Effect::CloseChannel { error, .. }]
            if error.code == 406 && error.text.contains("in use")),
        "the owner has the consumer: {e:?}"
    );
    assert_eq!(crossed(&mut p), ["2→1 delete", "1→2 deleted false"]);
    p.input(
        2,
        Input::Method {
            conn: B,
            channel: 1,
            method: Method::ChannelOpen(ChannelOpen::default()),
        },
    );
    let e = p.method(
        B,
        Method::QueueDelete(QueueDelete {
            queue: "d".into(),
            ..Default::default()
        }),
    );
    assert!(
        e.contains(&send(
            B,
            Method::QueueDeleteOk(QueueDeleteOk { message_count: 3 })
        )),
        "unconditional: proposed from node 2 (its replica's count): {e:?}"
    );
    assert!(crossed(&mut p).is_empty());
    assert!(p.brokers[0].queue_id(&"/".into(), "d").is_none());
}

#[test]
fn the_owner_answers_a_consume_of_a_queue_once_it_has_applied_its_declaration() {
    let mut p = Pair::new();
    p.input(2, Input::Leader { node: Some(1) });
    p.hold = Some(Vec::new());
    p.method(B, durable("q"));
    let declare = p.hold.take().unwrap_or_default().remove(0);
    // Node 2 applies the declaration before the leader's broker does.
    let e = p.input(
        2,
        Input::Applied {
            command: declare.clone(),
            index: 0,
        },
    );
    assert_eq!(e, vec![declare_ok("q", 0, 0)]);
    let e = p.consume(B, "q", "c", false);
    assert_eq!(e, vec![], "the consume-ok waits for the owner");
    assert_eq!(crossed(&mut p), ["2→1 consume 200"]);
    assert_eq!(
        p.brokers[0].queue_id(&"/".into(), "q"),
        None,
        "not declared on node 1 yet"
    );
    let e = p.input(
        1,
        Input::Applied {
            command: declare,
            index: 0,
        },
    );
    assert_eq!(
        e,
        vec![send(
            B,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "c".into()
            })
        )],
        "attached once the owner has the queue (not refused with 404)"
    );
    assert_eq!(crossed(&mut p), ["1→2 consumed true"]);
}

#[test]
fn a_declare_waiting_for_an_owner_that_lost_the_leadership_is_asked_of_the_next_one() {
    let mut p = Pair::new();
    p.input(2, Input::Leader { node: Some(1) });
    p.method(A, durable("d"));
    p.publish(A, "d", "m1");
    crossed(&mut p);
    // The leader's node cannot be reached: node 2's question goes nowhere.
    p.cut = true;
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "d".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(p.method(B, passive), vec![]);
    assert_eq!(crossed(&mut p), ["2→1 declare true"]);
    // Node 2 takes over: it answers the question itself.
    p.brokers[0].step_down();
    let command = super::follow_tests::take_over(p.now);
    p.input(2, Input::Applied { command, index: 0 });
    let e = p.call(2, |b, out| b.lead(out));
    assert_eq!(e, vec![declare_ok("d", 1, 0)]);
}
