//! The mux's routing, reply order, tag mapping, confirm joining and loss handling, without
//! sockets: client inputs in, the exact outputs out.

use bytes::Bytes;
use warren_core::{Effect, Input};
use warren_wire::*;

use super::*;

const CLIENT: ConnId = (1 << 52) | 100;

struct T {
    mux: Mux,
    next: ConnId,
}

/// The home session id given out: 1001.
impl T {
    fn new() -> T {
        T {
            mux: Mux::new(CLIENT),
            next: 1000,
        }
    }

    fn client(&mut self, input: Input) -> Vec<Out> {
        let mut next = self.next;
        let mut alloc = || {
            next += 1;
            next
        };
        self.mux.client_input(input, &mut alloc);
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
fn a_replicated_queue_is_consumed_got_from_and_purged_on_the_own_home_session() {
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
        vec![input(Sub::Home, 1001, purge)],
        "a purge too: the own broker proposes it (step 4)"
    );
    for method in [
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "x".into(),
            kind: "topic".into(),
            ..Default::default()
        }),
        Method::QueueDeclare(QueueDeclare::default()),
        Method::QueueBind(QueueBind {
            queue: "d".into(),
            exchange: "x".into(),
            ..Default::default()
        }),
        Method::QueueDelete(QueueDelete {
            queue: "d".into(),
            ..Default::default()
        }),
    ] {
        assert_eq!(
            t.method(1, method.clone()),
            vec![input(Sub::Home, 1001, method)],
            "and every topology method"
        );
    }
}

#[test]
fn replies_reach_the_client_in_request_order() {
    let mut t = T::open();
    let qos = Method::BasicQos(BasicQos {
        prefetch_count: 10,
        ..Default::default()
    });
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "t".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(
        t.method(1, qos.clone()),
        vec![
            input(Sub::Leader, CLIENT, qos.clone()),
            input(Sub::Home, 1001, qos)
        ],
        "qos on every session of the channel"
    );
    assert_eq!(
        t.method(1, passive.clone()),
        vec![input(Sub::Home, 1001, passive)]
    );
    let qos_ok = Method::BasicQosOk(BasicQosOk {});
    assert_eq!(t.sub(Sub::Home, send(1001, 1, qos_ok.clone())), vec![]);
    let declare_ok = Method::QueueDeclareOk(QueueDeclareOk {
        queue: "t".into(),
        message_count: 3,
        consumer_count: 0,
    });
    assert_eq!(
        t.sub(Sub::Home, send(1001, 1, declare_ok.clone())),
        vec![],
        "held behind the leader's qos-ok"
    );
    assert_eq!(
        t.sub(Sub::Leader, send(CLIENT, 1, qos_ok.clone())),
        vec![
            Out::Client(send(CLIENT, 1, qos_ok)),
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
fn a_request_after_publishes_goes_to_the_own_home_at_once_and_the_end_waits_for_a_sync() {
    let mut t = T::open();
    t.client(publish("a"));
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "d".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(
        t.method(1, passive.clone()),
        vec![input(Sub::Home, 1001, passive)],
        "the own home's channel orders it after the publish"
    );
    assert_eq!(
        t.client(Input::ConnectionClosed { conn: CLIENT }),
        vec![Out::Input(
            Sub::Home,
            Input::Sync {
                conn: 1001,
                token: 1
            }
        )],
        "the end waits until the own home has handed the publish on"
    );
    assert!(t.mux.is_holding());
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
    let mut next = 2000;
    let mut alloc = || {
        next += 1;
        next
    };
    t.mux.resume_held(&mut alloc);
    let out = t.mux.take();
    assert_eq!(
        out,
        vec![
            Out::Input(Sub::Leader, Input::ConnectionClosed { conn: CLIENT }),
            Out::Input(Sub::Home, Input::ConnectionClosed { conn: 1001 }),
        ]
    );
    assert!(!t.mux.is_holding());
}

#[test]
fn a_method_a_home_sends_back_goes_to_the_leader_in_its_place() {
    let mut t = T::open();
    assert_eq!(
        t.method(1, consume("s", "cs")),
        vec![input(Sub::Home, 1001, consume("s", "cs"))]
    );
    // A stream's consume: the home sends it back, with the log index it had applied.
    let redirect = Effect::Redirect {
        conn: 1001,
        channel: 1,
        method: consume("s", "cs"),
    };
    t.mux.observe_index(7, std::slice::from_ref(&redirect));
    assert_eq!(
        t.sub(Sub::Home, redirect),
        vec![
            Out::Barrier(Sub::Leader, 7),
            input(Sub::Leader, CLIENT, consume("s", "cs")),
        ]
    );
    assert_eq!(
        t.sub(Sub::Leader, send(CLIENT, 1, consume_ok("cs"))),
        vec![Out::Client(send(CLIENT, 1, consume_ok("cs")))]
    );
    assert_eq!(
        t.sub(Sub::Leader, deliver(CLIENT, "cs", 5)),
        vec![Out::Client(deliver(CLIENT, "cs", 1))],
        "its deliveries get the client's tags"
    );
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
    let qos = Method::BasicQos(BasicQos {
        prefetch_count: 10,
        ..Default::default()
    });
    t.method(1, qos);
    let qos_ok = Method::BasicQosOk(BasicQosOk {});
    t.sub(Sub::Home, send(1001, 1, qos_ok.clone()));
    let reply = send(CLIENT, 1, qos_ok);
    t.mux.observe_index(42, std::slice::from_ref(&reply));
    t.sub(Sub::Leader, reply);
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
    assert_eq!(
        t.method(1, consume("other", "c2")),
        vec![input(Sub::Home, 1001, consume("other", "c2"))]
    );
}

#[test]
fn a_held_delivery_gets_its_tag_when_the_client_sees_it() {
    let mut t = T::open();
    // A stream's consumer: sent back by the home, consumed on the leader session.
    t.method(1, consume("s", "cd"));
    t.sub(
        Sub::Home,
        Effect::Redirect {
            conn: 1001,
            channel: 1,
            method: consume("s", "cd"),
        },
    );
    t.sub(Sub::Leader, send(CLIENT, 1, consume_ok("cd")));
    let qos = Method::BasicQos(BasicQos {
        prefetch_count: 10,
        ..Default::default()
    });
    t.method(1, qos);
    let qos_ok = Method::BasicQosOk(BasicQosOk {});
    t.sub(Sub::Home, send(1001, 1, qos_ok.clone()));
    t.method(1, consume("u", "cu"));
    t.sub(Sub::Home, send(1001, 1, consume_ok("cu")));
    assert_eq!(
        t.sub(Sub::Home, deliver(1001, "cu", 1)),
        vec![],
        "held behind its consume-ok, itself behind the leader's qos-ok"
    );
    assert_eq!(
        t.sub(Sub::Leader, deliver(CLIENT, "cd", 7)),
        vec![Out::Client(deliver(CLIENT, "cd", 1))],
        "the leader's delivery goes first, with the first tag"
    );
    let out = t.sub(Sub::Leader, send(CLIENT, 1, qos_ok.clone()));
    assert_eq!(
        out,
        vec![
            Out::Client(send(CLIENT, 1, qos_ok)),
            Out::Client(send(CLIENT, 1, consume_ok("cu"))),
            Out::Client(deliver(CLIENT, "cu", 2)),
        ]
    );
}
