//! The mux's routing, reply order, tag mapping, confirm joining and loss handling, without
//! sockets: client inputs in, the exact outputs out.

use std::collections::HashMap;

use bytes::Bytes;
use warren_core::{AmqpError, Effect, Input};
use warren_wire::*;

use super::*;

const CLIENT: ConnId = (1 << 52) | 100;

/// Queues by name: `d` replicated, `t` homed here (node 1), `u` homed on node 2.
struct Dir(HashMap<&'static str, Location>);

impl Dir {
    fn new() -> Dir {
        Dir(HashMap::from([
            ("d", Location::Replicated),
            ("t", Location::Local(1)),
            ("u", Location::Local(2)),
        ]))
    }
}

impl Directory for Dir {
    fn locate(&self, _vhost: &str, queue: &str) -> Location {
        self.0.get(queue).copied().unwrap_or(Location::Unknown)
    }
}

struct T {
    mux: Mux,
    dir: Dir,
    next: ConnId,
}

/// The home session id given out: 1001.
impl T {
    fn new() -> T {
        T {
            mux: Mux::new(CLIENT),
            dir: Dir::new(),
            next: 1000,
        }
    }

    fn client(&mut self, input: Input) -> Vec<Out> {
        let mut next = self.next;
        let mut alloc = || {
            next += 1;
            next
        };
        self.mux.client_input(input, &self.dir, &mut alloc);
        self.next = next;
        self.mux.take()
    }

    fn method(&mut self, channel: ChannelId, method: Method) -> Vec<Out> {
        self.client(Input::Method {
            conn: CLIENT,
            channel,
            method,
        })
    }

    fn sub(&mut self, sub: Sub, effect: Effect) -> Vec<Out> {
        self.mux.session_effect(sub, effect);
        self.mux.take()
    }

    /// Logs in, opens the vhost and channel 1 (the own home session is 1001).
    fn open() -> T {
        let mut t = T::new();
        t.client(Input::Login {
            conn: CLIENT,
            mechanism: "PLAIN".into(),
            username: "guest".into(),
            password: "guest".into(),
            peer_loopback: true,
            client_properties: caps(),
        });
        t.client(Input::OpenVhost {
            conn: CLIENT,
            vhost: "/".into(),
        });
        t.sub(
            Sub::Leader,
            send(CLIENT, 0, Method::ConnectionOpenOk(Default::default())),
        );
        let out = t.method(1, Method::ChannelOpen(ChannelOpen::default()));
        assert_eq!(
            out,
            vec![
                input(
                    Sub::Leader,
                    CLIENT,
                    Method::ChannelOpen(ChannelOpen::default())
                ),
                Out::Input(
                    Sub::Home,
                    Input::OpenHome {
                        conn: 1001,
                        client: CLIENT,
                        user: "guest".into(),
                        vhost: "/".into(),
                        client_properties: caps(),
                    }
                ),
                input(Sub::Home, 1001, Method::ChannelOpen(ChannelOpen::default())),
            ]
        );
        let open_ok = Method::ChannelOpenOk(Default::default());
        assert_eq!(t.sub(Sub::Home, send(1001, 1, open_ok.clone())), vec![]);
        assert_eq!(
            t.sub(Sub::Leader, send(CLIENT, 1, open_ok.clone())),
            vec![Out::Client(send(CLIENT, 1, open_ok))]
        );
        t
    }
}

fn caps() -> FieldTable {
    let mut caps = FieldTable::default();
    caps.insert("consumer_cancel_notify", FieldValue::Bool(true));
    let mut props = FieldTable::default();
    props.insert("capabilities", FieldValue::Table(caps));
    props
}

fn send(conn: ConnId, channel: ChannelId, method: Method) -> Effect {
    Effect::Send {
        conn,
        channel,
        method,
    }
}

fn input(sub: Sub, conn: ConnId, method: Method) -> Out {
    Out::Input(
        sub,
        Input::Method {
            conn,
            channel: 1,
            method,
        },
    )
}

fn deliver(conn: ConnId, tag: &str, delivery_tag: u64) -> Effect {
    Effect::SendContent {
        conn,
        channel: 1,
        method: Method::BasicDeliver(BasicDeliver {
            consumer_tag: tag.into(),
            delivery_tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        }),
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"m"),
    }
}

fn publish(body: &'static str) -> Input {
    Input::Publish {
        conn: CLIENT,
        channel: 1,
        publish: BasicPublish {
            exchange: "x".into(),
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(body.as_bytes()),
    }
}

fn ack(tag: u64) -> Method {
    Method::BasicAck(BasicAck {
        delivery_tag: tag,
        multiple: false,
    })
}

fn nack(tag: u64) -> Method {
    Method::BasicNack(BasicNack {
        delivery_tag: tag,
        multiple: false,
        requeue: false,
    })
}

fn consume(queue: &str, tag: &str) -> Method {
    Method::BasicConsume(BasicConsume {
        queue: queue.into(),
        consumer_tag: tag.into(),
        ..Default::default()
    })
}

fn consume_ok(tag: &str) -> Method {
    Method::BasicConsumeOk(BasicConsumeOk {
        consumer_tag: tag.into(),
    })
}

#[test]
fn publishes_go_to_the_own_home_which_confirms_them() {
    let mut t = T::open();
    let out = t.method(1, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    assert_eq!(
        out,
        vec![
            input(
                Sub::Leader,
                CLIENT,
                Method::ConfirmSelect(ConfirmSelect { nowait: true })
            ),
            input(
                Sub::Home,
                1001,
                Method::ConfirmSelect(ConfirmSelect { nowait: false })
            ),
        ],
        "the own home, which numbers every publish, answers"
    );
    let ok = Method::ConfirmSelectOk(ConfirmSelectOk {});
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, ok.clone())),
        vec![Out::Client(send(CLIENT, 1, ok))]
    );
    let out = t.client(publish("a"));
    assert!(
        matches!(
            &out[..],
            [Out::Input(Sub::Home, Input::Publish { conn: 1001, .. })]
        ),
        "{out:?}"
    );
    t.client(publish("b"));
    t.client(publish("c"));
    // The own home confirms every publish (it logs the replicated part itself): 1 acked, then
    // 2 nacked, then 3 acked with a multiple ack; a confirm from the leader session (it gets no
    // publishes) is not the client's.
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, ack(1))),
        vec![Out::Client(send(CLIENT, 1, ack(1)))]
    );
    assert_eq!(t.sub(Sub::Leader, send(CLIENT, 1, ack(2))), vec![]);
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, nack(2))),
        vec![Out::Client(send(CLIENT, 1, nack(2)))]
    );
    let multiple = Method::BasicAck(BasicAck {
        delivery_tag: 3,
        multiple: true,
    });
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, multiple)),
        vec![Out::Client(send(CLIENT, 1, ack(3)))]
    );
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, ack(3))),
        vec![],
        "confirmed once"
    );
}

#[test]
fn a_queue_homed_elsewhere_is_declared_consumed_got_purged_and_deleted_on_the_own_home_session() {
    let mut t = T::open();
    let out = t.method(1, consume("u", "cu"));
    assert_eq!(
        out,
        vec![input(Sub::Home, 1001, consume("u", "cu"))],
        "no home session on node 2: the own broker's channel consumes with queue commands"
    );
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, consume_ok("cu"))),
        vec![Out::Client(send(CLIENT, 1, consume_ok("cu")))]
    );
    assert_eq!(
        t.sub(Sub::Home, deliver(1001, "cu", 1)),
        vec![Out::Client(deliver(CLIENT, "cu", 1))]
    );
    assert_eq!(t.method(1, ack(1)), vec![input(Sub::Home, 1001, ack(1))]);
    let get = Method::BasicGet(BasicGet {
        queue: "u".into(),
        ..Default::default()
    });
    assert_eq!(
        t.method(1, get.clone()),
        vec![input(Sub::Home, 1001, get)],
        "a get too"
    );
    let purge = Method::QueuePurge(QueuePurge {
        queue: "u".into(),
        ..Default::default()
    });
    assert_eq!(
        t.method(1, purge.clone()),
        vec![input(Sub::Home, 1001, purge)],
        "and a purge"
    );
    let delete = Method::QueueDelete(QueueDelete {
        queue: "u".into(),
        ..Default::default()
    });
    assert_eq!(
        t.method(1, delete.clone()),
        vec![input(Sub::Home, 1001, delete)],
        "and a delete"
    );
    for passive in [true, false] {
        let declare = Method::QueueDeclare(QueueDeclare {
            queue: "u".into(),
            passive,
            ..Default::default()
        });
        assert_eq!(
            t.method(1, declare.clone()),
            vec![input(Sub::Home, 1001, declare)],
            "and a declare, passive {passive}: no session on node 2 at all"
        );
    }
}

#[test]
fn a_replicated_queue_is_consumed_and_got_from_on_the_own_home_session_and_purged_on_the_leaders() {
    let mut t = T::open();
    let out = t.method(1, consume("d", "cd"));
    assert_eq!(
        out,
        vec![input(Sub::Home, 1001, consume("d", "cd"))],
        "the own broker's channel consumes with queue commands to the leader's broker"
    );
    t.sub(Sub::Home, send(1001, 1, consume_ok("cd")));
    assert_eq!(
        t.sub(Sub::Home, deliver(1001, "cd", 1)),
        vec![Out::Client(deliver(CLIENT, "cd", 1))]
    );
    assert_eq!(t.method(1, ack(1)), vec![input(Sub::Home, 1001, ack(1))]);
    let get = Method::BasicGet(BasicGet {
        queue: "d".into(),
        ..Default::default()
    });
    assert_eq!(
        t.method(1, get.clone()),
        vec![input(Sub::Home, 1001, get)],
        "a get too"
    );
    let purge = Method::QueuePurge(QueuePurge {
        queue: "d".into(),
        ..Default::default()
    });
    assert_eq!(
        t.method(1, purge.clone()),
        vec![input(Sub::Leader, CLIENT, purge)],
        "a purge still goes to the leader session (until step 4)"
    );
}

#[test]
fn replies_reach_the_client_in_request_order() {
    let mut t = T::open();
    let bind = Method::QueueBind(QueueBind {
        queue: "d".into(),
        exchange: "x".into(),
        ..Default::default()
    });
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "t".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(
        t.method(1, bind),
        vec![input(
            Sub::Leader,
            CLIENT,
            Method::QueueBind(QueueBind {
                queue: "d".into(),
                exchange: "x".into(),
                ..Default::default()
            })
        )]
    );
    assert_eq!(
        t.method(1, passive.clone()),
        vec![input(Sub::Home, 1001, passive)]
    );
    let declare_ok = Method::QueueDeclareOk(QueueDeclareOk {
        queue: "t".into(),
        message_count: 3,
        consumer_count: 0,
    });
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, declare_ok.clone())),
        vec![],
        "held behind the bind's reply"
    );
    assert_eq!(
        t.sub(
            Sub::Leader,
            send(CLIENT, 1, Method::QueueBindOk(QueueBindOk {}))
        ),
        vec![
            Out::Client(send(CLIENT, 1, Method::QueueBindOk(QueueBindOk {}))),
            Out::Client(send(CLIENT, 1, declare_ok)),
        ]
    );
}

#[test]
fn closing_a_channel_closes_it_on_the_own_home_first_then_on_the_leader_with_one_close_ok() {
    let mut t = T::open();
    t.method(1, consume("u", "cu"));
    t.sub(Sub::Home, send(1001, 1, consume_ok("cu")));
    let close = Method::ChannelClose(ChannelClose {
        reply_code: 200,
        reply_text: "bye".into(),
        class_id: 0,
        method_id: 0,
    });
    assert_eq!(
        t.method(1, close.clone()),
        vec![input(Sub::Home, 1001, close)],
        "the own home first: what it routed must reach the leader before the leader's close"
    );
    let close_ok = Method::ChannelCloseOk(Default::default());
    let out = t.sub(Sub::Home, send(1001, 1, close_ok.clone()));
    assert!(
        matches!(
            &out[..],
            [Out::Input(
                Sub::Leader,
                Input::Method {
                    method: Method::ChannelClose(_),
                    ..
                }
            )]
        ),
        "then the leader: {out:?}"
    );
    assert_eq!(
        t.sub(Sub::Leader, send(CLIENT, 1, close_ok.clone())),
        vec![Out::Client(send(CLIENT, 1, close_ok))]
    );
}

#[test]
fn a_request_after_publishes_waits_until_the_own_home_has_handed_them_on() {
    let mut t = T::open();
    t.client(publish("a"));
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "d".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(
        t.method(1, passive.clone()),
        vec![Out::Input(
            Sub::Home,
            Input::Sync {
                conn: 1001,
                token: 1
            }
        )],
        "held until the own home is synced"
    );
    assert_eq!(t.method(1, ack(1)), vec![], "later inputs wait behind it");
    // The own home answers the sync once the publish's replicated part is applied.
    assert_eq!(
        t.sub(
            Sub::Home,
            Effect::Synced {
                conn: 1001,
                token: 1
            }
        ),
        vec![]
    );
    assert!(t.mux.is_holding());
    let mut next = 2000;
    let mut alloc = || {
        next += 1;
        next
    };
    t.mux.resume_held(&t.dir, &mut alloc);
    let out = t.mux.take();
    assert_eq!(out[0], input(Sub::Leader, CLIENT, passive));
    assert!(!t.mux.is_holding());
}

#[test]
fn a_method_a_home_sends_back_goes_to_the_leader_in_its_place() {
    let mut t = T::open();
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "t".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(
        t.method(1, passive.clone()),
        vec![input(Sub::Home, 1001, passive.clone())]
    );
    let bind = Method::QueueBind(QueueBind {
        queue: "d".into(),
        exchange: "x".into(),
        ..Default::default()
    });
    t.method(1, bind);
    let redirect = Effect::Redirect {
        conn: 1001,
        channel: 1,
        method: passive.clone(),
    };
    t.mux.observe_index(7, std::slice::from_ref(&redirect));
    assert_eq!(
        t.sub(Sub::Home, redirect),
        vec![
            Out::Barrier(Sub::Leader, 7),
            input(Sub::Leader, CLIENT, passive),
        ]
    );
    // The leader answers both, in the client's order.
    let not_found = Effect::CloseChannel {
        conn: CLIENT,
        channel: 1,
        error: AmqpError::not_found("no queue 't' in vhost '/'"),
    };
    assert_eq!(
        t.sub(
            Sub::Leader,
            send(CLIENT, 1, Method::QueueBindOk(QueueBindOk {}))
        ),
        vec![],
        "the declare, sent first, is answered first"
    );
    let out = t.sub(Sub::Leader, not_found.clone());
    assert_eq!(out.last(), Some(&Out::Client(not_found)));
}

#[test]
fn a_rolled_back_ack_leaves_the_delivery_unacked_for_a_later_ack() {
    let mut t = T::open();
    t.method(1, Method::TxSelect(TxSelect {}));
    t.sub(
        Sub::Leader,
        send(CLIENT, 1, Method::TxSelectOk(TxSelectOk {})),
    );
    t.sub(Sub::Home, send(1001, 1, Method::TxSelectOk(TxSelectOk {})));
    let get = Method::BasicGet(BasicGet {
        queue: "t".into(),
        ..Default::default()
    });
    t.method(1, get);
    let get_ok = Effect::SendContent {
        conn: 1001,
        channel: 1,
        method: Method::BasicGetOk(BasicGetOk {
            delivery_tag: 4,
            ..Default::default()
        }),
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"a"),
    };
    t.sub(Sub::Home, get_ok);
    assert_eq!(t.method(1, ack(1)), vec![input(Sub::Home, 1001, ack(4))]);
    t.method(1, Method::TxRollback(TxRollback {}));
    assert_eq!(
        t.method(1, ack(1)),
        vec![input(Sub::Home, 1001, ack(4))],
        "the rollback undid the ack: the tag is still the client's"
    );
    t.method(1, Method::TxCommit(TxCommit {}));
    let out = t.method(1, ack(1));
    assert!(
        out.iter().any(|o| matches!(o, Out::Input(Sub::Leader, Input::ChannelError { error, .. }) if error.code == 406)),
        "committed: the tag is gone, a third ack is the client's error: {out:?}"
    );
}

#[test]
fn a_reply_after_which_the_client_saw_the_log_puts_a_barrier_before_the_next_input() {
    let mut t = T::open();
    let declare = Method::QueueDeclare(QueueDeclare {
        queue: "new".into(),
        exclusive: true,
        ..Default::default()
    });
    t.method(1, declare);
    let ok = Method::QueueDeclareOk(QueueDeclareOk {
        queue: "new".into(),
        message_count: 0,
        consumer_count: 0,
    });
    let reply = send(CLIENT, 1, ok);
    t.mux.observe_index(42, std::slice::from_ref(&reply));
    t.sub(Sub::Leader, reply);
    t.dir.0.insert("new", Location::Local(1));
    let out = t.method(1, consume("new", "c"));
    assert_eq!(
        out,
        vec![
            Out::Barrier(Sub::Home, 42),
            input(Sub::Home, 1001, consume("new", "c")),
        ]
    );
    // A confirm is not a reply: it moves nothing.
    t.mux.observe_index(50, &[send(CLIENT, 1, ack(1))]);
    assert_eq!(t.mux.seen(), 42);
}

#[test]
fn inputs_held_for_a_sync_keep_their_order_and_a_later_request_waits_for_the_next_sync() {
    let mut t = T::open();
    let passive = |q: &str| {
        Method::QueueDeclare(QueueDeclare {
            queue: q.into(),
            passive: true,
            ..Default::default()
        })
    };
    t.client(publish("a"));
    let out = t.method(1, passive("d"));
    assert!(matches!(
        &out[..],
        [Out::Input(Sub::Home, Input::Sync { token: 1, .. })]
    ));
    assert_eq!(t.client(publish("b")), vec![], "held behind the declare");
    assert_eq!(t.method(1, passive("t")), vec![], "held too");
    let synced = Effect::Synced {
        conn: 1001,
        token: 1,
    };
    // The own home had applied the log up to 42 when it answered.
    t.mux.observe_index(42, std::slice::from_ref(&synced));
    t.sub(Sub::Home, synced);
    let mut next = 2000;
    let mut alloc = || {
        next += 1;
        next
    };
    t.mux.resume_held(&t.dir, &mut alloc);
    let out = t.mux.take();
    assert_eq!(
        out[0],
        Out::Barrier(Sub::Leader, 42),
        "the leader answers only once it has applied what the own home had"
    );
    assert_eq!(out[1], input(Sub::Leader, CLIENT, passive("d")));
    // (The own home gets the barrier too: it has applied that far, so it costs nothing.)
    assert_eq!(out[2], Out::Barrier(Sub::Home, 42));
    assert!(matches!(
        &out[3],
        Out::Input(Sub::Home, Input::Publish { .. })
    ));
    assert!(
        matches!(&out[4], Out::Input(Sub::Home, Input::Sync { token: 2, .. })),
        "the second declare follows a publish: another sync first: {out:?}"
    );
    assert_eq!(out.len(), 5);
    assert!(t.mux.is_holding());
}

#[test]
fn a_held_delivery_gets_its_tag_when_the_client_sees_it() {
    let mut t = T::open();
    // A queue this node's replica does not know yet: consumed on the leader session.
    t.method(1, consume("s", "cd"));
    t.sub(Sub::Leader, send(CLIENT, 1, consume_ok("cd")));
    let bind = Method::QueueBind(QueueBind {
        queue: "d".into(),
        exchange: "x".into(),
        ..Default::default()
    });
    t.method(1, bind);
    t.method(1, consume("u", "cu"));
    t.sub(Sub::Home, send(1001, 1, consume_ok("cu")));
    assert_eq!(
        t.sub(Sub::Home, deliver(1001, "cu", 1)),
        vec![],
        "held behind its consume-ok, itself behind the bind's reply"
    );
    assert_eq!(
        t.sub(Sub::Leader, deliver(CLIENT, "cd", 7)),
        vec![Out::Client(deliver(CLIENT, "cd", 1))],
        "the leader's delivery goes first, with the first tag"
    );
    let out = t.sub(
        Sub::Leader,
        send(CLIENT, 1, Method::QueueBindOk(QueueBindOk {})),
    );
    assert_eq!(
        out,
        vec![
            Out::Client(send(CLIENT, 1, Method::QueueBindOk(QueueBindOk {}))),
            Out::Client(send(CLIENT, 1, consume_ok("cu"))),
            Out::Client(deliver(CLIENT, "cu", 2)),
        ]
    );
}
