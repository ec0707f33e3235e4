//! Queue commands between two brokers (issue 19, step 2): a channel on node 1 consumes from a
//! transient queue homed on node 2. Inputs in, the exact effects for clients out; the queue
//! commands and events travel between the brokers in order, and what either proposes is
//! applied on both, as one Raft log would.

use std::collections::VecDeque;

use bytes::Bytes;
use warren_wire::*;

use super::tests::{caps, send};
use super::*;
use crate::{ConsumerRef, Effect, Input, QueueCommand};

/// Brokers of nodes 1 (leading) and 2, a client connection on each with channel 1 open:
/// `a` on node 1, `b` on node 2.
pub(super) struct Pair {
    pub(super) brokers: [Broker; 2],
    /// Every queue command and event that crossed, in order: (from, to, what).
    pub(super) crossed: Vec<(u64, u64, String)>,
    /// A broken link: what either sends to the other is dropped.
    pub(super) cut: bool,
    /// Both brokers' clock.
    pub(super) now: Millis,
    /// Proposals wait here instead of being applied (a log that has not committed them yet).
    pub(super) hold: Option<Vec<crate::Command>>,
}

pub(super) const A: ConnId = 1 << 52 | 1;
pub(super) const B: ConnId = 2 << 52 | 1;

impl Pair {
    pub(super) fn new() -> Pair {
        let broker = |node| {
            Broker::new(BrokerConfig {
                node,
                ..BrokerConfig::default()
            })
        };
        let mut p = Pair {
            brokers: [broker(1), broker(2)],
            crossed: Vec::new(),
            cut: false,
            now: 1_000,
            hold: None,
        };
        p.brokers[0].set_leading(true);
        for (node, conn) in [(1, A), (2, B)] {
            for input in [
                Input::Login {
                    conn,
                    mechanism: "PLAIN".into(),
                    username: "guest".into(),
                    password: "guest".into(),
                    peer_loopback: true,
                    client_properties: caps(),
                },
                Input::OpenVhost {
                    conn,
                    vhost: "/".into(),
                },
                Input::Method {
                    conn,
                    channel: 1,
                    method: Method::ChannelOpen(ChannelOpen::default()),
                },
            ] {
                p.input(node, input);
            }
        }
        p
    }

    /// Handles `input` on node `node`'s broker and everything it causes on both; the effects
    /// for clients, in order.
    pub(super) fn input(&mut self, node: u64, input: Input) -> Vec<Effect> {
        let now = self.now;
        self.call(node, move |b, out| b.handle(now, input, out))
    }

    /// Calls `f` on node `node`'s broker and handles everything its effects cause on both;
    /// the effects for clients, in order.
    pub(super) fn call(
        &mut self,
        node: u64,
        f: impl FnOnce(&mut Broker, &mut Vec<Effect>),
    ) -> Vec<Effect> {
        let mut pending = VecDeque::new();
        let mut client = Vec::new();
        let mut first = Some(f);
        loop {
            let mut out = Vec::new();
            let node = if let Some(f) = first.take() {
                let broker = &mut self.brokers[node as usize - 1];
                f(broker, &mut out);
                node
            } else {
                let Some((node, input)) = pending.pop_front() else {
                    break;
                };
                let broker = &mut self.brokers[node as usize - 1];
                broker.handle(self.now, input, &mut out);
                node
            };
            let broker = &mut self.brokers[node as usize - 1];
            broker.check_credit();
            let other = 3 - node;
            for e in out {
                match e {
                    Effect::Propose { command } if self.hold.is_some() => {
                        self.hold.get_or_insert_with(Vec::new).push(command);
                    }
                    Effect::Propose { command } => {
                        for n in [1, 2] {
                            let command = command.clone();
                            pending.push_back((n, Input::Applied { command, index: 0 }));
                        }
                    }
                    Effect::ToOwner { node: to, command } => {
                        assert_eq!(to, other);
                        self.crossed.push((node, to, command_name(&command)));
                        if !self.cut {
                            pending.push_back((
                                to,
                                Input::QueueCommand {
                                    from: node,
                                    command,
                                },
                            ));
                        }
                    }
                    Effect::ToChannel { node: to, event } => {
                        assert_eq!(to, other);
                        self.crossed.push((node, to, event_name(&event)));
                        if !self.cut {
                            pending.push_back((to, Input::QueueEvent { from: node, event }));
                        }
                    }
                    // A broker answers for its own connections (the other's replies to a
                    // command it applied go nowhere, as the runtime drops them).
                    other if effect_conn(&other).is_none_or(|c| crate::node_of(c) == node) => {
                        client.push(other)
                    }
                    _ => {}
                }
            }
        }
        client
    }

    /// Applies the held proposals on both brokers, in order, and stops holding; the effects
    /// for clients.
    pub(super) fn commit_held(&mut self) -> Vec<Effect> {
        let mut client = Vec::new();
        for command in self.hold.take().unwrap_or_default() {
            for n in [1, 2] {
                let applied = Input::Applied {
                    command: command.clone(),
                    index: 0,
                };
                client.extend(self.input(n, applied));
            }
        }
        client
    }

    pub(super) fn method(&mut self, conn: ConnId, method: Method) -> Vec<Effect> {
        let node = crate::node_of(conn);
        self.input(
            node,
            Input::Method {
                conn,
                channel: 1,
                method,
            },
        )
    }

    pub(super) fn publish(&mut self, conn: ConnId, queue: &str, body: &'static str) -> Vec<Effect> {
        self.input(
            crate::node_of(conn),
            Input::Publish {
                conn,
                channel: 1,
                publish: BasicPublish {
                    routing_key: queue.into(),
                    ..Default::default()
                },
                properties: BasicProperties::default(),
                body: Bytes::from_static(body.as_bytes()),
            },
        )
    }

    /// The owner's (node 2's) queue: (ready, checked out, consumers).
    pub(super) fn owner_queue(&self, name: &str) -> (u32, u64, u32) {
        let b = &self.brokers[1];
        let q = &b.queues[&b.queue_id(&"/".into(), name).expect("queue")];
        (q.ready_count(), q.unacked_count(), q.consumer_count())
    }

    /// A non-durable queue declared by `b`: homed on node 2.
    fn declare_on_two(&mut self, name: &str, arguments: FieldTable, auto_delete: bool) {
        let e = self.method(
            B,
            Method::QueueDeclare(QueueDeclare {
                queue: name.into(),
                auto_delete,
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
        let one = &self.brokers[0];
        let id = one
            .queue_id(&"/".into(), name)
            .expect("replicated declaration");
        assert_eq!(one.queues[&id].home, 2);
    }

    pub(super) fn consume(
        &mut self,
        conn: ConnId,
        queue: &str,
        tag: &str,
        no_ack: bool,
    ) -> Vec<Effect> {
        self.method(
            conn,
            Method::BasicConsume(BasicConsume {
                queue: queue.into(),
                consumer_tag: tag.into(),
                no_ack,
                ..Default::default()
            }),
        )
    }
}

fn effect_conn(e: &Effect) -> Option<ConnId> {
    match e {
        Effect::Send { conn, .. }
        | Effect::SendContent { conn, .. }
        | Effect::CloseChannel { conn, .. }
        | Effect::CloseConnection { conn, .. }
        | Effect::AwaitWritable { conn }
        | Effect::Flow { conn, .. }
        | Effect::Synced { conn, .. }
        | Effect::Authenticated { conn, .. } => Some(*conn),
        _ => None,
    }
}

fn command_name(c: &QueueCommand) -> String {
    match c {
        QueueCommand::Consume { credit, .. } => format!("consume {credit}"),
        QueueCommand::Credit { credit, .. } => format!("credit {credit}"),
        QueueCommand::Settle { seqs, .. } => format!("settle {seqs:?}"),
        QueueCommand::Return { seqs, .. } => format!("return {seqs:?}"),
        QueueCommand::Discard { seqs, .. } => format!("discard {seqs:?}"),
        QueueCommand::Cancel { .. } => "cancel".into(),
        QueueCommand::Get { .. } => "get".into(),
        QueueCommand::Purge { reply, .. } => format!("purge {reply}"),
        QueueCommand::Delete { .. } => "delete".into(),
        QueueCommand::Declare { reply, .. } => format!("declare {reply}"),
    }
}

fn event_name(e: &crate::QueueEvent) -> String {
    match e {
        crate::QueueEvent::Consumed { error, .. } => format!("consumed {}", error.is_none()),
        crate::QueueEvent::Deliver(d) => format!("deliver {}", d.seq),
        crate::QueueEvent::CancelOk { .. } => "cancel-ok".into(),
        crate::QueueEvent::Got { delivery, .. } => format!("got {}", delivery.seq),
        crate::QueueEvent::GotNothing { .. } => "got nothing".into(),
        crate::QueueEvent::Purged { message_count, .. } => format!("purged {message_count}"),
        crate::QueueEvent::Deleted { error, .. } => format!("deleted {}", error.is_none()),
        crate::QueueEvent::Declared {
            message_count,
            consumer_count,
            ..
        } => format!("declared {message_count} {consumer_count}"),
    }
}

/// (consumer tag, delivery tag, redelivered, body) of each `basic.deliver` in `effects`.
pub(super) fn deliveries(effects: &[Effect]) -> Vec<(String, u64, bool, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendContent {
                method: Method::BasicDeliver(d),
                body,
                ..
            } => Some((
                d.consumer_tag.to_string(),
                d.delivery_tag,
                d.redelivered,
                String::from_utf8_lossy(body).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

pub(super) fn d(
    tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    body: &str,
) -> (String, u64, bool, String) {
    (tag.into(), delivery_tag, redelivered, body.into())
}

pub(super) fn crossed(p: &mut Pair) -> Vec<String> {
    std::mem::take(&mut p.crossed)
        .into_iter()
        .map(|(from, to, what)| format!("{from}→{to} {what}"))
        .collect()
}

pub(super) fn ack(tag: u64) -> Method {
    Method::BasicAck(BasicAck {
        delivery_tag: tag,
        multiple: false,
    })
}

#[test]
fn a_channel_consumes_another_nodes_queue_with_credit_and_settles_with_queue_commands() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.method(
        A,
        Method::BasicQos(BasicQos {
            prefetch_count: 2,
            ..Default::default()
        }),
    );
    let e = p.consume(A, "t", "c", false);
    assert_eq!(
        e,
        vec![send(
            A,
            Method::BasicConsumeOk(BasicConsumeOk {
                consumer_tag: "c".into()
            })
        )],
        "consume-ok once the owner attached the consumer"
    );
    assert_eq!(crossed(&mut p), ["1→2 consume 2", "2→1 consumed true"]);
    assert_eq!(p.owner_queue("t"), (0, 0, 1));

    let mut e = Vec::new();
    for body in ["m1", "m2", "m3"] {
        e.extend(p.publish(B, "t", body));
    }
    assert_eq!(
        deliveries(&e),
        [d("c", 1, false, "m1"), d("c", 2, false, "m2")],
        "two deliveries: the channel's prefetch is the consumer's credit on node 2"
    );
    assert_eq!(crossed(&mut p), ["2→1 deliver 1", "2→1 deliver 2"]);
    assert_eq!(p.owner_queue("t"), (1, 2, 1));

    let e = p.method(A, ack(1));
    assert_eq!(deliveries(&e), [d("c", 3, false, "m3")]);
    assert_eq!(
        crossed(&mut p),
        ["1→2 credit 1", "1→2 settle [1]", "2→1 deliver 3"],
        "an ack gives credit back and settles; the owner delivers the next message"
    );
    assert_eq!(p.owner_queue("t"), (0, 2, 1));

    let e = p.method(
        A,
        Method::BasicNack(BasicNack {
            delivery_tag: 2,
            multiple: false,
            requeue: true,
        }),
    );
    assert_eq!(
        deliveries(&e),
        [d("c", 4, true, "m2")],
        "a requeued message comes back, redelivered, under a new tag"
    );
    assert_eq!(
        crossed(&mut p),
        ["1→2 credit 1", "1→2 return [2]", "2→1 deliver 2"]
    );

    let e = p.method(A, Method::ChannelClose(ChannelClose::default()));
    assert_eq!(e, vec![send(A, Method::ChannelCloseOk(ChannelCloseOk {}))]);
    assert_eq!(
        crossed(&mut p),
        ["1→2 cancel", "1→2 return [3, 2]", "2→1 cancel-ok"],
        "a closed channel detaches its consumer first, then gives its messages back in \
         delivery-tag order (each goes back to its place in the queue)"
    );
    assert_eq!(p.owner_queue("t"), (2, 0, 0));
}

#[test]
fn a_no_ack_consumer_of_another_nodes_queue_gets_a_window_refilled_as_its_socket_takes_them() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.consume(A, "t", "c", true);
    assert_eq!(
        crossed(&mut p),
        [
            format!("1→2 consume {}", super::remote::REMOTE_WINDOW),
            "2→1 consumed true".into()
        ]
    );
    let refill = super::remote::REMOTE_REFILL;
    for n in 1..refill {
        let e = p.publish(B, "t", "m");
        assert_eq!(deliveries(&e), [d("c", u64::from(n), false, "m")]);
    }
    assert_eq!(crossed(&mut p).len() as u32, refill - 1, "deliveries only");
    p.publish(B, "t", "m");
    assert_eq!(
        crossed(&mut p),
        [
            format!("2→1 deliver {refill}"),
            format!("1→2 credit {refill}")
        ],
        "settled by the owner when delivered; the window refilled in a batch as they went out"
    );
    assert_eq!(p.owner_queue("t"), (0, 0, 1));

    // The client's socket is full: the window is not refilled until it drains.
    p.input(
        1,
        Input::Writable {
            conn: A,
            writable: false,
        },
    );
    let e = p.publish(B, "t", "m2");
    let next = u64::from(refill) + 1;
    assert_eq!(deliveries(&e), [d("c", next, false, "m2")]);
    assert_eq!(crossed(&mut p), [format!("2→1 deliver {next}")]);
    p.input(
        1,
        Input::Writable {
            conn: A,
            writable: true,
        },
    );
    assert_eq!(crossed(&mut p), ["1→2 credit 1"], "paid when it drained");
}

#[test]
fn the_owner_refuses_a_second_consumer_of_an_exclusively_consumed_queue() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    let e = p.method(
        B,
        Method::BasicConsume(BasicConsume {
            queue: "t".into(),
            consumer_tag: "first".into(),
            exclusive: true,
            ..Default::default()
        }),
    );
    assert_eq!(e.len(), 1, "consume-ok on node 2");
    let e = p.consume(A, "t", "c", false);
    assert_eq!(
        e,
        vec![Effect::CloseChannel {
            conn: A,
            channel: 1,
            error: AmqpError::access_refused("queue 't' in vhost '/' in exclusive use")
                .caused_by(60, 20),
        }],
        "the channel closes with the owner's answer, as RabbitMQ's does"
    );
    assert_eq!(p.owner_queue("t"), (0, 0, 1));
}

#[test]
fn cancelling_the_last_consumer_of_an_auto_delete_queue_answers_once_the_queue_is_gone() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), true);
    p.consume(A, "t", "c", false);
    crossed(&mut p);
    let e = p.method(
        A,
        Method::BasicCancel(BasicCancel {
            consumer_tag: "c".into(),
            nowait: false,
        }),
    );
    assert_eq!(
        e,
        vec![send(
            A,
            Method::BasicCancelOk(BasicCancelOk {
                consumer_tag: "c".into()
            })
        )]
    );
    assert_eq!(crossed(&mut p), ["1→2 cancel", "2→1 cancel-ok"]);
    for b in &p.brokers {
        assert_eq!(
            b.queue_id(&"/".into(), "t"),
            None,
            "removed on every node first"
        );
    }
}

#[test]
fn a_lost_peer_takes_back_what_its_channels_held_and_cancels_consumers_of_its_queues() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.method(
        A,
        Method::BasicQos(BasicQos {
            prefetch_count: 5,
            ..Default::default()
        }),
    );
    p.consume(A, "t", "c", false);
    for body in ["m1", "m2"] {
        p.publish(B, "t", body);
    }
    assert_eq!(p.owner_queue("t"), (0, 2, 1));
    crossed(&mut p);

    // The link breaks: each side drops what they shared.
    p.cut = true;
    let e = p.input(2, Input::PeerLost { node: 1 });
    assert_eq!(e, vec![]);
    assert_eq!(
        p.owner_queue("t"),
        (2, 0, 0),
        "the owner detached the consumer and took its messages back"
    );
    let e = p.input(1, Input::PeerLost { node: 2 });
    assert_eq!(
        e,
        vec![send(
            A,
            Method::BasicCancel(BasicCancel {
                consumer_tag: "c".into(),
                nowait: true
            })
        )],
        "the client hears its consumer is gone"
    );
    assert_eq!(
        p.method(A, ack(2)),
        vec![],
        "acking a delivery of the lost queue does nothing"
    );
    assert_eq!(
        p.method(
            A,
            Method::BasicAck(BasicAck {
                delivery_tag: 1,
                multiple: true
            })
        ),
        vec![]
    );
    assert_eq!(
        crossed(&mut p),
        Vec::<String>::new(),
        "nothing sent for them"
    );
    let e = p.method(A, ack(1));
    assert!(
        matches!(&e[..], [Effect::CloseChannel { error, .. }] if error.code == 406),
        "tag 1 is known no more: {e:?}"
    );
}

#[test]
fn a_consume_waiting_for_a_lost_owner_fails_with_rabbitmqs_node_down_text() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.cut = true;
    let e = p.consume(A, "t", "c", false);
    assert_eq!(e, vec![], "waiting for the owner");
    let e = p.input(1, Input::PeerLost { node: 2 });
    assert_eq!(e, vec![node_two_down(60, 20)]);
}

#[test]
fn the_owner_delivers_back_in_queue_order_after_a_closed_channel_gives_messages_back() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.method(
        A,
        Method::BasicQos(BasicQos {
            prefetch_count: 1,
            ..Default::default()
        }),
    );
    p.consume(A, "t", "c", false);
    for body in ["m1", "m2"] {
        p.publish(B, "t", body);
    }
    p.method(A, Method::ChannelClose(ChannelClose::default()));
    p.method(A, Method::ChannelOpen(ChannelOpen::default()));
    crossed(&mut p);
    let e = p.consume(A, "t", "again", true);
    assert_eq!(
        deliveries(&e),
        [d("again", 1, true, "m1"), d("again", 2, false, "m2")],
        "m1 went back to its place, before m2, marked redelivered"
    );
}

#[test]
fn a_settle_that_arrives_after_the_owner_lost_its_channels_node_changes_nothing() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.consume(A, "t", "c", false);
    p.publish(B, "t", "m1");
    assert_eq!(p.owner_queue("t"), (0, 1, 1));
    // The owner hears its peer is lost first; the channel's ack was already on its way.
    p.cut = true;
    p.input(2, Input::PeerLost { node: 1 });
    assert_eq!(p.owner_queue("t"), (1, 0, 0), "m1 is back in the queue");
    p.cut = false;
    crossed(&mut p);
    p.method(A, ack(1));
    assert_eq!(crossed(&mut p), ["1→2 settle [1]"]);
    assert_eq!(
        p.owner_queue("t"),
        (1, 0, 0),
        "the late settle does not take m1 from the queue: no channel of node 1 holds it"
    );
    let e = p.consume(B, "t", "local", true);
    assert_eq!(deliveries(&e), [d("local", 1, true, "m1")]);
}

#[test]
fn a_delivery_to_a_consumer_the_channel_no_longer_has_goes_back_and_detaches_it() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    let id = p.brokers[1]
        .queue_id(&"/".into(), "t")
        .expect("queue on the owner");
    // A consume that reached the owner after node 1 dropped what they shared (its channel
    // answered the client already and knows no such consumer).
    p.input(
        2,
        Input::QueueCommand {
            from: 1,
            command: QueueCommand::Consume {
                consumer: ConsumerRef {
                    conn: A,
                    channel: 1,
                    tag: "ghost".into(),
                },
                queue: id,
                credit: 5,
                priority: 0,
                no_ack: false,
                exclusive: false,
                held: Vec::new(),
            },
        },
    );
    assert_eq!(p.owner_queue("t").2, 1);
    crossed(&mut p);
    let e = p.publish(B, "t", "m1");
    assert_eq!(deliveries(&e), [], "no client gets it");
    assert_eq!(
        crossed(&mut p),
        [
            "2→1 deliver 1",
            "1→2 cancel",
            "1→2 return [1]",
            "2→1 cancel-ok"
        ]
    );
    assert_eq!(
        p.owner_queue("t"),
        (1, 0, 0),
        "m1 is back and the consumer nobody holds is detached"
    );
}

/// (delivery tag, message count, body) of the `basic.get-ok`s in `effects`, and how many
/// `basic.get-empty`s.
fn gets(effects: &[Effect]) -> (Vec<(u64, u32, String)>, usize) {
    let mut ok = Vec::new();
    let mut empty = 0;
    for e in effects {
        match e {
            Effect::SendContent {
                method: Method::BasicGetOk(g),
                body,
                ..
            } => ok.push((
                g.delivery_tag,
                g.message_count,
                String::from_utf8_lossy(body).into_owned(),
            )),
            Effect::Send {
                method: Method::BasicGetEmpty(_),
                ..
            } => empty += 1,
            _ => {}
        }
    }
    (ok, empty)
}

fn get(no_ack: bool) -> Method {
    Method::BasicGet(BasicGet {
        queue: "t".into(),
        no_ack,
        ..Default::default()
    })
}

#[test]
fn a_channel_gets_from_another_nodes_queue_with_a_queue_command() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    for body in ["m1", "m2"] {
        p.publish(B, "t", body);
    }
    crossed(&mut p);
    let e = p.method(A, get(false));
    assert_eq!(gets(&e), (vec![(1, 1, "m1".into())], 0));
    assert_eq!(crossed(&mut p), ["1→2 get", "2→1 got 1"]);
    assert_eq!(p.owner_queue("t"), (1, 1, 0), "m1 checked out to node 1");
    p.method(A, ack(1));
    assert_eq!(crossed(&mut p), ["1→2 settle [1]"]);
    assert_eq!(p.owner_queue("t"), (1, 0, 0));
    let e = p.method(A, get(true));
    assert_eq!(
        gets(&e),
        (vec![(2, 0, "m2".into())], 0),
        "no-ack: settled by the owner at once"
    );
    assert_eq!(p.owner_queue("t"), (0, 0, 0));
    let e = p.method(A, get(false));
    assert_eq!(gets(&e), (vec![], 1));
    assert_eq!(
        crossed(&mut p),
        ["1→2 get", "2→1 got 2", "1→2 get", "2→1 got nothing"]
    );
}

#[test]
fn a_get_waiting_for_a_lost_owner_fails_and_one_held_goes_back_to_the_queue() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.publish(B, "t", "m1");
    let e = p.method(A, get(false));
    assert_eq!(gets(&e), (vec![(1, 0, "m1".into())], 0));
    p.cut = true;
    let e = p.method(A, get(false));
    assert_eq!(e, vec![], "waiting for the owner");
    p.input(2, Input::PeerLost { node: 1 });
    assert_eq!(p.owner_queue("t"), (1, 0, 0), "m1 back, redelivered");
    let e = p.input(1, Input::PeerLost { node: 2 });
    assert_eq!(e, vec![node_two_down(60, 70)]);
}

#[test]
fn a_channel_purges_another_nodes_queue_with_a_queue_command() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    for body in ["m1", "m2", "m3"] {
        p.publish(B, "t", body);
    }
    let e = p.method(A, get(false));
    assert_eq!(gets(&e).0.len(), 1);
    crossed(&mut p);
    let purge = |nowait| {
        Method::QueuePurge(QueuePurge {
            queue: "t".into(),
            nowait,
            ..Default::default()
        })
    };
    let e = p.method(A, purge(false));
    assert_eq!(
        e,
        vec![send(
            A,
            Method::QueuePurgeOk(QueuePurgeOk { message_count: 2 })
        )],
        "the ready messages; the one the channel holds stays"
    );
    assert_eq!(crossed(&mut p), ["1→2 purge true", "2→1 purged 2"]);
    assert_eq!(p.owner_queue("t"), (0, 1, 0));
    p.publish(B, "t", "m4");
    crossed(&mut p);
    assert_eq!(p.method(A, purge(true)), vec![], "nowait: no answer");
    assert_eq!(crossed(&mut p), ["1→2 purge false"]);
    assert_eq!(p.owner_queue("t"), (0, 1, 0));
    // A purge waiting for a lost owner fails as a get does.
    p.cut = true;
    assert_eq!(p.method(A, purge(false)), vec![]);
    let e = p.input(1, Input::PeerLost { node: 2 });
    assert_eq!(e, vec![node_two_down(50, 30)]);
}

#[test]
fn a_channel_deletes_another_nodes_queue_its_owner_decides_and_the_reply_waits_for_the_removal() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.publish(B, "t", "m1");
    p.consume(B, "t", "local", false);
    crossed(&mut p);
    let delete = |if_unused| {
        Method::QueueDelete(QueueDelete {
            queue: "t".into(),
            if_unused,
            ..Default::default()
        })
    };
    let e = p.method(A, delete(true));
    assert_eq!(
        e,
        vec![Effect::CloseChannel {
            conn: A,
            channel: 1,
            error: AmqpError::precondition_failed("queue 't' in vhost '/' in use")
                .caused_by(50, 40),
        }],
        "the owner knows it has a consumer"
    );
    assert_eq!(crossed(&mut p), ["1→2 delete", "2→1 deleted false"]);
    p.method(A, Method::ChannelOpen(ChannelOpen::default()));
    let e = p.method(A, delete(false));
    let ok = send(A, Method::QueueDeleteOk(QueueDeleteOk { message_count: 0 }));
    assert!(e.contains(&ok), "{e:?}");
    assert!(
        p.brokers
            .iter()
            .all(|b| b.queue_id(&"/".into(), "t").is_none()),
        "removed on both nodes when the delete-ok goes"
    );
}

#[test]
fn a_channel_declares_another_nodes_queue_checked_here_counted_and_kept_alive_by_its_owner() {
    let mut p = Pair::new();
    let mut args = FieldTable::default();
    args.insert("x-expires", FieldValue::I32(10_000));
    p.declare_on_two("t", args.clone(), false);
    let qos = Method::BasicQos(BasicQos {
        prefetch_count: 1,
        ..Default::default()
    });
    p.method(B, qos);
    p.consume(B, "t", "local", false);
    for body in ["m1", "m2", "m3"] {
        p.publish(B, "t", body);
    }
    crossed(&mut p);
    let declare = |passive, durable, exclusive, nowait, arguments: &FieldTable| {
        Method::QueueDeclare(QueueDeclare {
            queue: "t".into(),
            passive,
            durable,
            exclusive,
            nowait,
            arguments: arguments.clone(),
            ..Default::default()
        })
    };
    let ok = send(
        A,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "t".into(),
            message_count: 2,
            consumer_count: 1,
        }),
    );
    let none = FieldTable::default();
    let e = p.method(A, declare(true, false, false, false, &none));
    assert_eq!(e, vec![ok.clone()], "the owner's counts, not this node's");
    assert_eq!(crossed(&mut p), ["1→2 declare true", "2→1 declared 2 1"]);
    let e = p.method(A, declare(false, false, false, false, &args));
    assert_eq!(e, vec![ok], "a redeclare too");
    assert_eq!(crossed(&mut p), ["1→2 declare true", "2→1 declared 2 1"]);
    assert_eq!(
        p.method(A, declare(true, false, false, true, &none)),
        vec![]
    );
    assert_eq!(crossed(&mut p), ["1→2 declare false"], "nowait: no answer");

    // The declaration is checked here: every node has it.
    let e = p.method(A, declare(false, true, false, false, &args));
    let inequivalent = "inequivalent arg 'durable' for queue 't' in vhost '/': received 'true' but current is 'false'";
    assert_eq!(
        e,
        vec![Effect::CloseChannel {
            conn: A,
            channel: 1,
            error: AmqpError::precondition_failed(inequivalent).caused_by(50, 10),
        }]
    );
    assert_eq!(crossed(&mut p), Vec::<String>::new());
    p.method(A, Method::ChannelOpen(ChannelOpen::default()));

    // A declare is a use: the queue (expiring 10 s after its last use, its consumer gone at
    // 1 s) declared at 9 s stays at 15 s and goes at 20 s.
    p.method(
        B,
        Method::BasicCancel(BasicCancel {
            consumer_tag: "local".into(),
            ..Default::default()
        }),
    );
    p.now = 9_000;
    p.method(A, declare(true, false, false, false, &none));
    p.now = 15_000;
    p.input(2, Input::Tick);
    assert!(p.brokers[0].queue_id(&"/".into(), "t").is_some());
    p.now = 20_000;
    p.input(2, Input::Tick);
    assert!(p
        .brokers
        .iter()
        .all(|b| b.queue_id(&"/".into(), "t").is_none()));

    // The owner decides whether the queue is still there: a redeclare of a queue whose
    // removal is under way (this replica still has it) creates it anew, after the removal.
    p.declare_on_two("gone", FieldTable::default(), false);
    crossed(&mut p);
    p.hold = Some(Vec::new());
    let delete = Method::QueueDelete(QueueDelete {
        queue: "gone".into(),
        nowait: true,
        ..Default::default()
    });
    p.method(B, delete);
    let redeclare = Method::QueueDeclare(QueueDeclare {
        queue: "gone".into(),
        ..Default::default()
    });
    assert_eq!(p.method(A, redeclare), vec![], "waits for the log");
    assert_eq!(crossed(&mut p), ["1→2 declare true", "2→1 declared 0 0"]);
    let e = p.commit_held();
    let created = send(
        A,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "gone".into(),
            message_count: 0,
            consumer_count: 0,
        }),
    );
    assert_eq!(e, vec![created]);
    let id = p.brokers[1]
        .queue_id(&"/".into(), "gone")
        .expect("declared anew");
    assert_eq!(
        p.brokers[1].queues[&id].home, 1,
        "on the declaring client's node"
    );

    // A declare waiting for a lost owner fails as a get does.
    p.declare_on_two("u", FieldTable::default(), false);
    p.cut = true;
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "u".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(p.method(A, passive), vec![]);
    let e = p.input(1, Input::PeerLost { node: 2 });
    assert_eq!(e, vec![node_two_down(50, 10)]);
}

#[test]
fn the_owner_of_an_exclusive_queue_says_locked_or_gone_whatever_the_channels_replica_has() {
    let mut p = Pair::new();
    let exclusive = Method::QueueDeclare(QueueDeclare {
        queue: "mine".into(),
        exclusive: true,
        ..Default::default()
    });
    p.method(B, exclusive);
    let passive = || {
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            passive: true,
            ..Default::default()
        })
    };
    let e = p.method(A, passive());
    let closed_with = |e: &[Effect]| match e {
        [Effect::CloseChannel { error, .. }] => (error.code, error.class_id, error.method_id),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        closed_with(&e),
        (405, 50, 10),
        "a connection of node 2 holds it"
    );
    assert_eq!(crossed(&mut p), ["1→2 declare true", "2→1 declared 0 0"]);
    p.method(A, Method::ChannelOpen(ChannelOpen::default()));
    // Its connection closed: the removal is proposed, not yet applied anywhere. Node 1's
    // replica still says "exclusive, someone else's"; the owner says gone.
    p.hold = Some(Vec::new());
    p.input(2, Input::ConnectionClosed { conn: B });
    let e = p.method(A, passive());
    assert_eq!(closed_with(&e), (404, 50, 10));
    assert!(
        matches!(&e[..], [Effect::CloseChannel { error, .. }] if error.text == "NOT_FOUND - no queue 'mine' in vhost '/'"),
        "RabbitMQ's text: {e:?}"
    );
    p.commit_held();
    assert!(p
        .brokers
        .iter()
        .all(|b| b.queue_id(&"/".into(), "mine").is_none()));
}

#[test]
fn a_client_gets_purges_and_deletes_a_queue_homed_elsewhere_with_queue_commands() {
    let mut p = Pair::new();
    p.declare_on_two("t", FieldTable::default(), false);
    p.publish(B, "t", "m1");
    const HOME: ConnId = 1 << 52 | 7;
    for input in [
        Input::Login {
            conn: HOME,
            mechanism: "PLAIN".into(),
            username: "guest".into(),
            password: "guest".into(),
            peer_loopback: true,
            client_properties: caps(),
        },
        Input::OpenVhost {
            conn: HOME,
            vhost: "/".into(),
        },
        Input::Method {
            conn: HOME,
            channel: 1,
            method: Method::ChannelOpen(ChannelOpen::default()),
        },
    ] {
        p.input(1, input);
    }
    crossed(&mut p);
    let on_home = |p: &mut Pair, method| {
        p.input(
            1,
            Input::Method {
                conn: HOME,
                channel: 1,
                method,
            },
        )
    };
    let e = on_home(&mut p, get(true));
    assert_eq!(gets(&e), (vec![(1, 0, "m1".into())], 0), "{e:?}");
    let purge = Method::QueuePurge(QueuePurge {
        queue: "t".into(),
        ..Default::default()
    });
    on_home(&mut p, purge);
    let delete = Method::QueueDelete(QueueDelete {
        queue: "t".into(),
        ..Default::default()
    });
    let e = on_home(&mut p, delete);
    assert!(
        e.iter().any(|e| matches!(
            e,
            Effect::Send {
                method: Method::QueueDeleteOk(_),
                ..
            }
        )),
        "{e:?}"
    );
    assert_eq!(
        crossed(&mut p),
        [
            "1→2 get",
            "2→1 got 1",
            "1→2 purge true",
            "2→1 purged 0",
            "1→2 delete",
            "2→1 deleted true"
        ]
    );

    // A leader session of a client of node 2, on node 1 (the leader): no queue command.
    let mut p = Pair::new();
    p.declare_on_two("u", FieldTable::default(), false);
    let relayed: ConnId = 2 << 52 | 9;
    let id = p.brokers[0].queue_id(&"/".into(), "u").expect("queue");
    assert_eq!(p.brokers[0].owner_elsewhere(relayed, id), None);
    assert_eq!(p.brokers[0].owner_elsewhere(A, id), Some(2));
}

/// The channel of `A` closed with RabbitMQ's 404 for a queue whose node (2) is down, for the
/// method `class`.`method`.
fn node_two_down(class: u16, method: u16) -> Effect {
    Effect::CloseChannel {
        conn: A,
        channel: 1,
        error: AmqpError::not_found(
            "home node 2 of a queue used on this channel is down or inaccessible",
        )
        .caused_by(class, method),
    }
}
