//! Consumers of replicated queues on the client's node (issue 19, step 3): a channel on node 2
//! consumes a durable queue decided by the leader's broker (node 1) with queue commands, and
//! follows the leadership when it moves. Inputs in, the exact effects for clients out, with
//! the `Pair` of `remote_tests.rs` (what either broker proposes is applied on both).

use warren_wire::*;

use super::remote_tests::{ack, crossed, d, deliveries, Pair, A, B};
use super::*;
use crate::{ConnId, Effect, Input};

/// Queue `name` on node `node`'s broker: (ready, checked out, consumers).
fn queue_on(p: &Pair, node: u64, name: &str) -> (u32, u64, u32) {
    let b = &p.brokers[node as usize - 1];
    let q = &b.queues[&b.queue_id(&"/".into(), name).expect("queue")];
    (q.ready_count(), q.unacked_count(), q.consumer_count())
}

/// A durable queue `name` declared by `a` (node 1 leads), node 2 told so, and `prefetch` on
/// both clients' channel 1.
fn durable(p: &mut Pair, name: &str, prefetch: u16) {
    durable_with(p, name, FieldTable::default());
    qos(p, prefetch);
}

/// `prefetch` on both clients' channel 1.
fn qos(p: &mut Pair, prefetch: u16) {
    for conn in [A, B] {
        p.method(
            conn,
            Method::BasicQos(BasicQos {
                prefetch_count: prefetch,
                ..Default::default()
            }),
        );
    }
}

/// A durable queue `name` with `arguments`, declared by `a` (node 1 leads), node 2 told so.
fn durable_with(p: &mut Pair, name: &str, arguments: FieldTable) {
    let e = p.method(
        A,
        Method::QueueDeclare(QueueDeclare {
            queue: name.into(),
            durable: true,
            arguments,
            ..Default::default()
        }),
    );
    assert!(
        matches!(
            &e[..],
            [Effect::Send {
                method: Method::QueueDeclareOk(_),
                ..
            }]
        ),
        "{e:?}"
    );
    p.input(2, Input::Leader { node: Some(1) });
}

/// A new leader's `Op::TakeOver`, issued at `now`.
pub(super) fn take_over(now: crate::Millis) -> crate::Command {
    crate::Command {
        version: crate::STATE_MACHINE_VERSION,
        origin: None,
        number: None,
        issued_at: now,
        op: Op::TakeOver,
    }
}

/// The leadership moves from node 1 to node 2: node 1 steps down, node 2's `TakeOver` is
/// applied on both, and node 1 hears of the new leader before node 2's broker leads (its
/// queue commands wait there). The effects for clients.
fn leader_moves_to_two(p: &mut Pair) -> Vec<Effect> {
    let mut e = Vec::new();
    p.brokers[0].step_down();
    let take_over = take_over(p.now);
    for node in [1, 2] {
        let command = take_over.clone();
        e.extend(p.input(node, Input::Applied { command, index: 0 }));
    }
    e.extend(p.input(1, Input::Leader { node: Some(2) }));
    e.extend(p.call(2, |b, out| b.lead(out)));
    e
}

#[test]
fn a_channel_consumes_a_replicated_queue_from_the_leaders_broker_and_logs_its_acks() {
    let mut p = Pair::new();
    durable(&mut p, "d", 2);
    let e = p.consume(B, "d", "c", false);
    assert_eq!(
        e,
        vec![super::tests::send(
            B,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "c".into()
            })
        )],
        "consume-ok once the leader's broker attached the consumer"
    );
    assert_eq!(crossed(&mut p), ["2→1 consume 2", "1→2 consumed true"]);
    assert_eq!(queue_on(&p, 1, "d"), (0, 0, 1));

    let mut e = Vec::new();
    for body in ["m1", "m2", "m3"] {
        e.extend(p.publish(A, "d", body));
    }
    assert_eq!(
        deliveries(&e),
        [d("c", 1, false, "m1"), d("c", 2, false, "m2")],
        "the channel's prefetch is the consumer's credit at the leader"
    );
    assert_eq!(crossed(&mut p), ["1→2 deliver 1", "1→2 deliver 2"]);
    assert_eq!(queue_on(&p, 1, "d"), (1, 2, 1));

    let e = p.method(B, ack(1));
    assert_eq!(deliveries(&e), [d("c", 3, false, "m3")]);
    assert_eq!(
        crossed(&mut p),
        ["2→1 credit 1", "1→2 deliver 3"],
        "the ack is logged from node 2 (no settle command): only its credit crosses"
    );
    assert_eq!(queue_on(&p, 1, "d"), (0, 2, 1));
    assert_eq!(
        queue_on(&p, 2, "d"),
        (2, 0, 0),
        "node 2's replica settled m1 too: m2 and m3 are ready there (delivered by the leader)"
    );
    let q = &p.brokers[0].queues[&p.brokers[0].queue_id(&"/".into(), "d").expect("d")];
    assert_eq!(
        q.consumers.held_by_node(2),
        [2, 3],
        "the leader no longer holds m1 for node 2 once the settle is applied"
    );

    let e = p.method(
        B,
        Method::BasicNack(BasicNack {
            delivery_tag: 2,
            multiple: false,
            requeue: true,
        }),
    );
    assert_eq!(deliveries(&e), [d("c", 4, true, "m2")]);
    assert_eq!(
        crossed(&mut p),
        ["2→1 credit 1", "2→1 return [2]", "1→2 deliver 2"],
        "a requeue goes to the owner, which puts m2 back at its place"
    );
}

/// Another client connection of node 1 with channel 1 open and `prefetch`: it stays when node
/// 1 stops leading.
const H: ConnId = 1 << 52 | 2;

fn open_home(p: &mut Pair, prefetch: u16) {
    p.input(
        1,
        Input::Login {
            conn: H,
            mechanism: "PLAIN".into(),
            username: "guest".into(),
            password: "guest".into(),
            peer_loopback: true,
            client_properties: super::tests::caps(),
        },
    );
    p.input(
        1,
        Input::OpenVhost {
            conn: H,
            vhost: "/".into(),
        },
    );
    for method in [
        Method::ChannelOpen(ChannelOpen::default()),
        Method::BasicQos(BasicQos {
            prefetch_count: prefetch,
            ..Default::default()
        }),
    ] {
        p.input(
            1,
            Input::Method {
                conn: H,
                channel: 1,
                method,
            },
        );
    }
}

#[test]
fn a_leader_change_moves_consumers_with_what_they_hold_and_their_old_acks_count() {
    let mut p = Pair::new();
    durable(&mut p, "d", 2);
    open_home(&mut p, 2);
    p.consume(H, "d", "a", false);
    p.consume(B, "d", "b", false);
    assert_eq!(crossed(&mut p), ["2→1 consume 2", "1→2 consumed true"]);
    let mut e = Vec::new();
    for body in ["m1", "m2", "m3", "m4"] {
        e.extend(p.publish(A, "d", body));
    }
    assert_eq!(
        deliveries(&e),
        [
            d("a", 1, false, "m1"),
            d("b", 1, false, "m2"),
            d("a", 2, false, "m3"),
            d("b", 2, false, "m4")
        ]
    );
    crossed(&mut p);
    assert_eq!(queue_on(&p, 1, "d"), (0, 4, 2));

    let e = leader_moves_to_two(&mut p);
    assert_eq!(
        deliveries(&e),
        [],
        "nothing is delivered again: each consumer's messages are checked out to it anew"
    );
    assert_eq!(
        crossed(&mut p),
        ["2→1 consume 0", "1→2 consume 0", "2→1 consumed true"],
        "at the take-over node 2 (not leading yet) attaches its consumer to the leader it \
         knows, node 1, which keeps that until another node leads; node 1's consumer attaches \
         to node 2 without credit (it holds its prefetch) and with m1 and m3 held, kept until \
         node 2 leads; node 2's own consumer becomes local there"
    );
    assert_eq!(queue_on(&p, 2, "d"), (0, 4, 2));
    let q = &p.brokers[1].queues[&p.brokers[1].queue_id(&"/".into(), "d").expect("d")];
    assert_eq!(q.consumers.held_by_node(1), [1, 3]);

    // The clients ack the tags they got before the change: the messages go.
    p.method(H, ack(1));
    p.method(B, ack(2));
    assert_eq!(queue_on(&p, 2, "d"), (0, 2, 2));
    assert_eq!(queue_on(&p, 1, "d"), (2, 0, 0));
    assert_eq!(crossed(&mut p), ["1→2 credit 1"]);
    let e = p.publish(B, "d", "m5");
    assert_eq!(
        deliveries(&e),
        [d("b", 3, false, "m5")],
        "a new message goes to the first consumer with credit, not marked redelivered"
    );
    // Requeued at the new leader, m3 comes back redelivered (the take-over marked it).
    let e = p.method(
        H,
        Method::BasicReject(BasicReject {
            delivery_tag: 2,
            requeue: true,
        }),
    );
    assert_eq!(deliveries(&e), [d("a", 3, true, "m3")]);
    assert_eq!(
        crossed(&mut p),
        ["1→2 credit 1", "1→2 return [3]", "2→1 deliver 3"]
    );
}

#[test]
fn a_consumer_whose_stream_to_the_leader_broke_attaches_again_with_its_deliveries() {
    let mut p = Pair::new();
    durable(&mut p, "d", 5);
    p.consume(B, "d", "c", false);
    let mut e = Vec::new();
    for body in ["m1", "m2"] {
        e.extend(p.publish(A, "d", body));
    }
    assert_eq!(
        deliveries(&e),
        [d("c", 1, false, "m1"), d("c", 2, false, "m2")]
    );
    crossed(&mut p);

    // The stream breaks: the leader takes m1 and m2 back; node 2 keeps its consumer and its
    // unacked deliveries, attached nowhere, and says nothing to the client.
    p.cut = true;
    let mut e = p.input(1, Input::PeerLost { node: 2 });
    e.extend(p.input(2, Input::PeerLost { node: 1 }));
    assert_eq!(e, vec![], "no basic.cancel: the consumer stays");
    assert_eq!(queue_on(&p, 1, "d"), (2, 0, 0));
    p.cut = false;

    // The next tick: attached again, m1 and m2 claimed, nothing redelivered.
    p.now += 100;
    let e = p.input(2, Input::Tick);
    assert_eq!(deliveries(&e), []);
    assert_eq!(crossed(&mut p), ["2→1 consume 3", "1→2 consumed true"]);
    assert_eq!(queue_on(&p, 1, "d"), (0, 2, 1));

    // Its acks of m1 and m2, given before the break, settle them.
    p.method(
        B,
        Method::BasicAck(BasicAck {
            delivery_tag: 2,
            multiple: true,
        }),
    );
    assert_eq!(queue_on(&p, 1, "d"), (0, 0, 1));
    assert_eq!(queue_on(&p, 2, "d"), (0, 0, 0));
}

#[test]
fn a_consume_while_no_leader_is_known_waits_and_is_answered_by_the_next_one() {
    let mut p = Pair::new();
    durable(&mut p, "d", 1);
    p.input(2, Input::Leader { node: None });
    let e = p.consume(B, "d", "c", false);
    assert_eq!(e, vec![], "no consume-ok while no leader is known");
    assert_eq!(crossed(&mut p), [] as [String; 0]);
    let e = p.input(2, Input::Leader { node: Some(1) });
    assert_eq!(
        e,
        vec![super::tests::send(
            B,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "c".into()
            })
        )]
    );
    assert_eq!(crossed(&mut p), ["2→1 consume 1", "1→2 consumed true"]);
    let e = p.publish(A, "d", "m1");
    assert_eq!(deliveries(&e), [d("c", 1, false, "m1")]);
}

#[test]
fn queue_commands_kept_for_leading_are_dropped_when_another_node_leads() {
    let mut p = Pair::new();
    durable(&mut p, "d", 1);
    p.brokers[0].step_down();
    // Node 2 believes node 1 leads again; node 1 keeps its consume for when it leads.
    let e = p.consume(B, "d", "c", false);
    assert_eq!(e, vec![]);
    assert_eq!(crossed(&mut p), ["2→1 consume 1"]);
    assert_eq!(p.brokers[0].pending_owner.len(), 1);
    p.input(1, Input::Leader { node: Some(2) });
    assert!(p.brokers[0].pending_owner.is_empty());
    // A kept command goes after PENDING_MAX_MS too.
    p.input(1, Input::Leader { node: None });
    let id = p.brokers[0].queue_id(&"/".into(), "d").expect("d");
    let credit = crate::QueueCommand::Credit {
        consumer: crate::ConsumerRef {
            conn: B,
            channel: 1,
            tag: "c".into(),
        },
        queue: id,
        credit: 1,
    };
    p.input(
        1,
        Input::QueueCommand {
            from: 2,
            command: credit,
        },
    );
    assert_eq!(p.brokers[0].pending_owner.len(), 1);
    p.now += super::follow::PENDING_MAX_MS;
    p.input(1, Input::Tick);
    assert_eq!(
        p.brokers[0].pending_owner.len(),
        1,
        "kept for PENDING_MAX_MS"
    );
    p.now += 1;
    p.input(1, Input::Tick);
    assert!(p.brokers[0].pending_owner.is_empty());
}

#[test]
fn a_no_ack_consumer_whose_socket_fills_asks_to_hear_when_it_drains_and_then_pays_its_credit() {
    let mut p = Pair::new();
    durable(&mut p, "d", 0);
    p.consume(B, "d", "c", true);
    crossed(&mut p);
    // Two messages of 600 KiB use up the connection's 1 MiB of delivery credit.
    let big: &'static str = Box::leak("x".repeat(600 << 10).into_boxed_str());
    let mut e = Vec::new();
    for _ in 0..2 {
        e.extend(p.publish(A, "d", big));
    }
    assert_eq!(deliveries(&e).len(), 2);
    assert!(
        e.contains(&Effect::AwaitWritable { conn: B }),
        "the connection asks to be told when its socket drains: {:?}",
        e.iter()
            .filter(|e| !matches!(e, Effect::SendContent { .. }))
            .collect::<Vec<_>>()
    );
    // Fill the window's batch: the credit is owed, not paid, while the socket is full.
    let small = super::remote::REMOTE_REFILL;
    for _ in 0..small {
        p.publish(A, "d", "m");
    }
    assert!(
        !crossed(&mut p).iter().any(|c| c.starts_with("2→1 credit")),
        "no credit back while the client's socket is full"
    );
    p.input(
        2,
        Input::Writable {
            conn: B,
            writable: true,
        },
    );
    assert_eq!(
        crossed(&mut p),
        [format!("2→1 credit {}", small + 2)],
        "paid when it drains"
    );
}

#[test]
fn a_get_after_a_requeue_of_a_quorum_queue_finds_the_message_wherever_the_return_was_logged() {
    let mut p = Pair::new();
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
    durable_with(&mut p, "q", arguments);
    p.publish(A, "q", "m1");
    let get = |channel| Input::Method {
        conn: B,
        channel,
        method: Method::BasicGet(BasicGet {
            queue: "q".into(),
            ..Default::default()
        }),
    };
    let got = |e: &[Effect], tag: u64, redelivered: bool| {
        matches!(e, [Effect::SendContent { method: Method::BasicGetOk(g), .. }]
            if g.delivery_tag == tag && g.redelivered == redelivered)
    };
    let e = p.input(2, get(1));
    assert!(got(&e, 1, false), "{e:?}");
    assert_eq!(crossed(&mut p), ["2→1 get", "1→2 got 1"]);

    // A nack logs the return from the channel's node (a quorum queue counts deliveries):
    // the channel's next get waits until it is applied there.
    p.hold = Some(Vec::new());
    p.method(
        B,
        Method::BasicNack(BasicNack {
            delivery_tag: 1,
            multiple: false,
            requeue: true,
        }),
    );
    let e = p.input(2, get(1));
    assert_eq!(e, vec![], "no answer before the return is applied");
    assert_eq!(crossed(&mut p), [] as [String; 0]);
    let e = p.commit_held();
    assert!(
        got(&e, 2, true),
        "the get finds the message it requeued: {e:?}"
    );
    assert_eq!(crossed(&mut p), ["2→1 get", "1→2 got 1"]);

    // A closed channel's deliveries go back through the owner, which logs the return: a get
    // of another channel waits at the owner until it is applied.
    p.hold = Some(Vec::new());
    p.method(B, Method::ChannelClose(ChannelClose::default()));
    p.input(
        2,
        Input::Method {
            conn: B,
            channel: 2,
            method: Method::ChannelOpen(ChannelOpen::default()),
        },
    );
    let e = p.input(2, get(2));
    assert_eq!(e, vec![], "no answer before the return is applied");
    assert_eq!(crossed(&mut p), ["2→1 return [1]", "2→1 get"]);
    let e = p.commit_held();
    assert!(got(&e, 1, true), "the get finds the message: {e:?}");
    assert_eq!(crossed(&mut p), ["1→2 got 1"]);
}

#[test]
fn a_get_waits_until_the_owner_has_applied_the_log_as_far_as_the_channels_node_had() {
    let mut p = Pair::new();
    durable(&mut p, "d", 0);
    p.publish(A, "d", "m1");
    let id = p.brokers[0].queue_id(&"/".into(), "d").expect("d");
    let get = |applied| Input::QueueCommand {
        from: 2,
        command: crate::QueueCommand::Get {
            consumer: crate::ConsumerRef {
                conn: B,
                channel: 1,
                tag: "".into(),
            },
            queue: id,
            no_ack: true,
            applied,
        },
    };
    let applied = |index| Input::Applied {
        command: crate::Command {
            version: crate::STATE_MACHINE_VERSION,
            origin: None,
            number: None,
            issued_at: 0,
            op: Op::ForgetPublishers { before: 0 },
        },
        index,
    };
    p.cut = true;
    p.input(1, get(10));
    assert_eq!(
        crossed(&mut p),
        [] as [String; 0],
        "node 1 has applied nothing yet"
    );
    p.input(1, applied(9));
    assert_eq!(crossed(&mut p), [] as [String; 0]);
    p.input(1, applied(10));
    assert_eq!(
        crossed(&mut p),
        ["1→2 got 1"],
        "answered once index 10 is applied"
    );

    // Without the index ever seen (a snapshot moved the log on), it waits 5 s at most.
    p.input(1, get(20));
    p.now += 4_000;
    p.input(1, Input::Tick);
    assert_eq!(crossed(&mut p), [] as [String; 0]);
    p.now += 1_001;
    p.input(1, Input::Tick);
    assert_eq!(crossed(&mut p), ["1→2 got nothing"]);
}

#[test]
fn a_streams_consumer_reads_its_own_nodes_replica_whoever_leads() {
    let mut p = Pair::new();
    p.input(2, Input::Leader { node: Some(1) });
    let mut args = FieldTable::default();
    args.insert("x-queue-type", FieldValue::LongStr("stream".into()));
    p.method(
        A,
        Method::QueueDeclare(QueueDeclare {
            queue: "s".into(),
            durable: true,
            arguments: args,
            ..Default::default()
        }),
    );
    for body in ["m1", "m2"] {
        p.publish(A, "s", body);
    }
    p.method(
        B,
        Method::BasicQos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        }),
    );
    let mut offset = FieldTable::default();
    offset.insert("x-stream-offset", FieldValue::LongStr("first".into()));
    let e = p.method(
        B,
        Method::BasicConsume(BasicConsume {
            queue: "s".into(),
            consumer_tag: "c".into(),
            arguments: offset,
            ..Default::default()
        }),
    );
    assert_eq!(
        deliveries(&e),
        [d("c", 1, false, "m1"), d("c", 2, false, "m2")],
        "from node 2's replica"
    );
    assert!(
        crossed(&mut p).is_empty(),
        "no queue command: the stream is read where the channel is"
    );
    let e = p.publish(A, "s", "m3");
    assert_eq!(
        deliveries(&e),
        [d("c", 3, false, "m3")],
        "a publish on the leader's node reaches it when node 2 applies it"
    );
    // The leadership moves to node 2: the consumer is not touched (node 1's connections
    // are closed by its step-down, as a leader session's were; node 2's stay).
    let e = leader_moves_to_two(&mut p);
    assert!(deliveries(&e).is_empty(), "{e:?}");
    let e = p.publish(B, "s", "m4");
    assert_eq!(deliveries(&e), [d("c", 4, false, "m4")]);
    assert!(crossed(&mut p).is_empty());
}

#[test]
fn a_purge_from_a_follower_is_decided_by_the_owner_and_leaves_checked_out_messages_everywhere() {
    let mut p = Pair::new();
    durable(&mut p, "d", 1);
    for body in ["m1", "m2", "m3"] {
        p.publish(A, "d", body);
    }
    // A consumer on the leader's node holds m1.
    let e = p.consume(A, "d", "c", false);
    assert_eq!(deliveries(&e), [d("c", 1, false, "m1")]);
    crossed(&mut p);
    let e = p.method(
        B,
        Method::QueuePurge(QueuePurge {
            queue: "d".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        e,
        vec![super::tests::send(
            B,
            Method::QueuePurgeOk(QueuePurgeOk { message_count: 2 })
        )],
        "the ready ones: m1 is checked out"
    );
    assert_eq!(crossed(&mut p), ["2→1 purge true", "1→2 purged 2"]);
    assert_eq!(queue_on(&p, 1, "d"), (0, 1, 1));
    assert_eq!(
        queue_on(&p, 2, "d"),
        (1, 0, 0),
        "node 2's replica keeps m1 too (it was settled by the log, not purged wholesale)"
    );
    // m1 comes back and is delivered again: both replicas still have it.
    let e = p.method(
        A,
        Method::BasicNack(BasicNack {
            delivery_tag: 1,
            multiple: false,
            requeue: true,
        }),
    );
    assert_eq!(deliveries(&e), [d("c", 2, true, "m1")]);
    assert_eq!(queue_on(&p, 2, "d"), (1, 0, 0));
    // The same from a channel of the leader's node: its broker decides.
    p.publish(A, "d", "m4");
    let e = p.method(
        A,
        Method::QueuePurge(QueuePurge {
            queue: "d".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        e,
        vec![super::tests::send(
            A,
            Method::QueuePurgeOk(QueuePurgeOk { message_count: 1 })
        )]
    );
    assert_eq!(queue_on(&p, 1, "d"), (0, 1, 1));
    assert_eq!(queue_on(&p, 2, "d"), (1, 0, 0), "m1 kept on node 2");
}

#[test]
fn a_get_that_waited_for_the_channels_requeue_tells_the_owner_the_requeues_index() {
    let mut p = Pair::new();
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
    durable_with(&mut p, "q", arguments);
    p.publish(A, "q", "m1");
    let get = Method::BasicGet(BasicGet {
        queue: "q".into(),
        ..Default::default()
    });
    p.method(B, get.clone());
    p.hold = Some(Vec::new());
    p.method(
        B,
        Method::BasicNack(BasicNack {
            delivery_tag: 1,
            multiple: false,
            requeue: true,
        }),
    );
    assert_eq!(p.method(B, get), vec![], "waits for the requeue");
    let requeue = p.hold.take().unwrap_or_default().remove(0);
    // Node 2 applies the requeue at log index 7: the get goes out while it is applied.
    let mut out = Vec::new();
    p.brokers[1].handle(
        p.now,
        Input::Applied {
            command: requeue,
            index: 7,
        },
        &mut out,
    );
    let asked = out.iter().find_map(|e| match e {
        Effect::ToOwner {
            command: crate::QueueCommand::Get { applied, .. },
            ..
        } => Some(*applied),
        _ => None,
    });
    assert_eq!(
        asked,
        Some(7),
        "the owner answers once it has applied the requeue too: {out:?}"
    );
}

#[test]
fn a_single_active_consumer_holding_deliveries_stays_active_when_the_leadership_moves() {
    let mut p = Pair::new();
    let mut args = FieldTable::default();
    args.insert("x-single-active-consumer", FieldValue::Bool(true));
    durable_with(&mut p, "s", args);
    qos(&mut p, 5);
    // A's consumer (node 1) came first: active; B's (node 2) waits.
    p.consume(A, "s", "a", false);
    p.consume(B, "s", "w", false);
    crossed(&mut p);
    let e = p.publish(A, "s", "m1");
    assert_eq!(deliveries(&e), [d("a", 1, false, "m1")]);
    // Node 2 takes over. Its own consumer attaches first (no deliveries held); A's comes
    // with m1, which its channel holds unacked: it was the active one, and stays.
    leader_moves_to_two(&mut p);
    crossed(&mut p);
    let b = &p.brokers[1];
    let q = &b.queues[&b.queue_id(&"/".into(), "s").expect("s")];
    assert_eq!(
        q.single_active_consumer().map(|c| (c.conn, c.tag.as_str())),
        Some((A, "a")),
        "the consumer that held deliveries is still the active one"
    );
    let e = p.publish(A, "s", "m2");
    assert_eq!(deliveries(&e), [d("a", 2, false, "m2")], "{e:?}");
}
