//! Behaviour tests of the whole core: inputs in, the exact effects out. No sockets, no runtime.

use bytes::Bytes;
use warren_wire::*;

use super::*;
use std::sync::Arc;

use crate::{
    Destination, Effect, Input, Message, DEFAULT_PUBLISH_CREDIT as PUBLISH_CREDIT,
    DELIVERY_CREDIT_BYTES,
};

const C1: ConnId = 1;
const C2: ConnId = 2;

pub(super) fn caps() -> FieldTable {
    let mut caps = FieldTable::default();
    caps.insert("consumer_cancel_notify", FieldValue::Bool(true));
    let mut props = FieldTable::default();
    props.insert("capabilities", FieldValue::Table(caps));
    props
}

struct World {
    broker: Broker,
    now: Millis,
    /// The index of the last entry of the log of one (messages rest in their entry).
    log_index: u64,
}

impl World {
    fn new() -> World {
        let mut broker = Broker::new(BrokerConfig {
            ..BrokerConfig::default()
        });
        broker.set_leading(true);
        let mut w = World {
            broker,
            now: 1_000,
            log_index: 0,
        };
        w.connect(C1);
        w.connect(C2);
        w
    }

    /// Handles `input` as production does on a node that leads a cluster of one: every proposed
    /// command comes back applied at once (a log of one); the effects for clients, in order.
    fn input(&mut self, input: Input) -> Vec<Effect> {
        let mut pending = std::collections::VecDeque::from([input]);
        let mut client_effects = Vec::new();
        while let Some(input) = pending.pop_front() {
            let mut out = Vec::new();
            self.broker.handle(self.now, input, &mut out);
            self.broker.check_credit();
            for e in out {
                match e {
                    Effect::Propose { command } => {
                        self.log_index += 1;
                        pending.push_back(Input::Applied {
                            command,
                            index: self.log_index,
                        })
                    }
                    other => client_effects.push(other),
                }
            }
        }
        client_effects
    }

    fn connect(&mut self, conn: ConnId) {
        let e = self.input(Input::Login {
            conn,
            mechanism: "PLAIN".into(),
            username: "guest".into(),
            password: "guest".into(),
            peer_loopback: true,
            client_properties: caps(),
        });
        assert_eq!(
            e,
            vec![Effect::Authenticated {
                conn,
                user: "guest".into()
            }]
        );
        let e = self.input(Input::OpenVhost {
            conn,
            vhost: "/".into(),
        });
        assert_eq!(e.len(), 1);
        self.method(conn, 1, Method::ChannelOpen(ChannelOpen::default()));
    }

    fn method(&mut self, conn: ConnId, channel: ChannelId, method: Method) -> Vec<Effect> {
        self.input(Input::Method {
            conn,
            channel,
            method,
        })
    }

    fn publish(
        &mut self,
        conn: ConnId,
        exchange: &str,
        key: &str,
        body: &'static str,
    ) -> Vec<Effect> {
        self.publish_with(conn, exchange, key, body, false, BasicProperties::default())
    }

    fn publish_with(
        &mut self,
        conn: ConnId,
        exchange: &str,
        key: &str,
        body: &'static str,
        mandatory: bool,
        properties: BasicProperties,
    ) -> Vec<Effect> {
        self.input(Input::Publish {
            conn,
            channel: 1,
            publish: BasicPublish {
                ticket: 0,
                exchange: exchange.into(),
                routing_key: key.into(),
                mandatory,
                immediate: false,
            },
            properties,
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    fn declare(&mut self, conn: ConnId, name: &str) -> Vec<Effect> {
        self.method(
            conn,
            1,
            Method::QueueDeclare(QueueDeclare {
                queue: name.into(),
                ..Default::default()
            }),
        )
    }

    fn consume(&mut self, conn: ConnId, queue: &str, tag: &str, no_ack: bool) -> Vec<Effect> {
        self.method(
            conn,
            1,
            Method::BasicConsume(BasicConsume {
                queue: queue.into(),
                consumer_tag: tag.into(),
                no_ack,
                ..Default::default()
            }),
        )
    }
}

pub(super) fn send(conn: ConnId, method: Method) -> Effect {
    Effect::Send {
        conn,
        channel: 1,
        method,
    }
}

fn deliver(
    conn: ConnId,
    tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    key: &str,
    body: &'static str,
) -> Effect {
    Effect::SendContent {
        conn,
        channel: 1,
        method: Method::BasicDeliver(BasicDeliver {
            consumer_tag: tag.into(),
            delivery_tag,
            redelivered,
            exchange: "".into(),
            routing_key: key.into(),
        }),
        properties: BasicProperties::default(),
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// The bodies of the deliveries among `effects`, in order.
fn bodies(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendContent { body, .. } => Some(String::from_utf8_lossy(body).into_owned()),
            _ => None,
        })
        .collect()
}

fn close_channel(e: &[Effect]) -> Option<(u16, String)> {
    e.iter().find_map(|e| match e {
        Effect::CloseChannel { error, .. } => Some((error.code, error.text.clone())),
        _ => None,
    })
}

#[test]
fn wrong_password_is_refused_with_rabbitmq_text() {
    let mut w = World::new();
    let e = w.input(Input::Login {
        conn: 9,
        mechanism: "PLAIN".into(),
        username: "guest".into(),
        password: "nope".into(),
        peer_loopback: true,
        client_properties: FieldTable::default(),
    });
    assert_eq!(
        e,
        vec![Effect::CloseConnection {
            conn: 9,
            error: AmqpError {
                code: 403,
                text: "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".into(),
                class_id: 10,
                method_id: 11,
            }
        }]
    );
}

#[test]
fn guest_is_refused_from_a_remote_address() {
    let mut w = World::new();
    let e = w.input(Input::Login {
        conn: 9,
        mechanism: "AMQPLAIN".into(),
        username: "guest".into(),
        password: "guest".into(),
        peer_loopback: false,
        client_properties: FieldTable::default(),
    });
    assert!(matches!(&e[..], [Effect::CloseConnection { error, .. }] if error.code == 403));
}

#[test]
fn external_logs_in_an_existing_user_without_a_password_and_keeps_the_loopback_rule() {
    let external = |conn, user: &str, peer_loopback| Input::Login {
        conn,
        mechanism: "EXTERNAL".into(),
        username: user.into(),
        password: String::new(),
        peer_loopback,
        client_properties: FieldTable::default(),
    };
    let mut w = World::new();
    assert_eq!(
        w.input(external(9, "guest", true)),
        vec![Effect::Authenticated {
            conn: 9,
            user: "guest".into()
        }]
    );
    let refused = |conn| {
        vec![Effect::CloseConnection {
            conn,
            error: AmqpError {
                code: 403,
                text: "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile.".into(),
                class_id: 10,
                method_id: 11,
            },
        }]
    };
    // The certificate names a user that does not exist.
    assert_eq!(w.input(external(10, "ghost", true)), refused(10));
    // guest stays loopback-only, whatever the mechanism.
    assert_eq!(w.input(external(11, "guest", false)), refused(11));
}

#[test]
fn unknown_vhost_is_not_allowed() {
    let mut w = World::new();
    w.input(Input::Login {
        conn: 9,
        mechanism: "PLAIN".into(),
        username: "guest".into(),
        password: "guest".into(),
        peer_loopback: true,
        client_properties: FieldTable::default(),
    });
    let e = w.input(Input::OpenVhost {
        conn: 9,
        vhost: "nope".into(),
    });
    assert!(matches!(&e[..], [Effect::CloseConnection { error, .. }]
        if error.code == 530 && error.text == "NOT_ALLOWED - vhost nope not found"));
}

#[test]
fn declare_get_and_inequivalent_redeclare() {
    let mut w = World::new();
    assert_eq!(
        w.declare(C1, "orders"),
        vec![send(
            C1,
            Method::QueueDeclareOk(QueueDeclareOk {
                queue: "orders".into(),
                message_count: 0,
                consumer_count: 0
            })
        )]
    );
    assert_eq!(w.publish(C1, "", "orders", "o1"), vec![]);
    let e = w.method(
        C1,
        1,
        Method::BasicGet(BasicGet {
            queue: "orders".into(),
            no_ack: true,
            ..Default::default()
        }),
    );
    assert_eq!(
        e,
        vec![Effect::SendContent {
            conn: C1,
            channel: 1,
            method: Method::BasicGetOk(BasicGetOk {
                delivery_tag: 1,
                redelivered: false,
                exchange: "".into(),
                routing_key: "orders".into(),
                message_count: 0,
            }),
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"o1"),
        }]
    );
    let e = w.method(
        C1,
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "orders".into(),
            durable: true,
            ..Default::default()
        }),
    );
    assert_eq!(
        close_channel(&e),
        Some((
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'orders' in vhost '/': received 'true' but current is 'false'".into()
        ))
    );
}

#[test]
fn an_inequivalent_argument_names_its_types_only_when_one_side_has_none() {
    let mut w = World::new();
    let declare = |args: &[(&str, FieldValue)]| {
        Method::QueueDeclare(QueueDeclare {
            queue: "limited".into(),
            durable: true,
            arguments: args.iter().cloned().collect(),
            ..Default::default()
        })
    };
    let e = w.method(C1, 1, declare(&[("x-max-length", FieldValue::I64(10))]));
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
    // A signedint 10 is the long 10; an 11 is not, and RabbitMQ shows the values alone.
    let e = w.method(C1, 1, declare(&[("x-max-length", FieldValue::I32(10))]));
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
    let e = w.method(C1, 1, declare(&[("x-max-length", FieldValue::I32(11))]));
    assert_eq!(
        close_channel(&e),
        Some((
            406,
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'limited' in vhost '/': received '11' but current is '10'".into()
        ))
    );
    let e = w.method(C2, 1, declare(&[]));
    assert_eq!(
        close_channel(&e),
        Some((
            406,
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'limited' in vhost '/': received none but current is the value '10' of type 'long'".into()
        ))
    );
}

#[test]
fn passive_declare_of_missing_queue_is_not_found() {
    let mut w = World::new();
    let e = w.method(
        C1,
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "nope".into(),
            passive: true,
            ..Default::default()
        }),
    );
    assert_eq!(
        close_channel(&e),
        Some((404, "NOT_FOUND - no queue 'nope' in vhost '/'".into()))
    );
}

#[test]
fn server_named_queues_have_the_amq_gen_prefix() {
    let mut w = World::new();
    let e = w.declare(C1, "");
    let [Effect::Send {
        method: Method::QueueDeclareOk(ok),
        ..
    }] = &e[..]
    else {
        panic!("unexpected {e:?}");
    };
    assert!(
        ok.queue.starts_with("amq.gen-") && ok.queue.len() == 30,
        "{}",
        ok.queue
    );
}

#[test]
fn competing_consumers_get_messages_round_robin() {
    let mut w = World::new();
    w.declare(C1, "work");
    w.consume(C1, "work", "a", true);
    w.consume(C2, "work", "b", true);
    let mut e = Vec::new();
    for body in ["1", "2", "3", "4"] {
        e.extend(w.publish(C1, "", "work", body));
    }
    assert_eq!(
        e,
        vec![
            deliver(C1, "a", 1, false, "work", "1"),
            deliver(C2, "b", 1, false, "work", "2"),
            deliver(C1, "a", 2, false, "work", "3"),
            deliver(C2, "b", 2, false, "work", "4"),
        ]
    );
}

#[test]
fn prefetch_limits_unacked_deliveries_per_consumer() {
    let mut w = World::new();
    w.declare(C1, "work");
    w.method(
        C1,
        1,
        Method::BasicQos(BasicQos {
            prefetch_count: 2,
            ..Default::default()
        }),
    );
    w.consume(C1, "work", "a", false);
    let mut e = Vec::new();
    for body in ["1", "2", "3", "4", "5"] {
        e.extend(w.publish(C2, "", "work", body));
    }
    assert_eq!(bodies(&e), vec!["1", "2"]);
    let e = w.method(
        C1,
        1,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert_eq!(e, vec![deliver(C1, "a", 3, false, "work", "3")]);
    let e = w.method(
        C1,
        1,
        Method::BasicAck(BasicAck {
            delivery_tag: 3,
            multiple: true,
        }),
    );
    assert_eq!(bodies(&e), vec!["4", "5"]);
}

#[test]
fn global_qos_is_shared_by_the_channels_consumers() {
    let mut w = World::new();
    w.declare(C1, "q1");
    w.declare(C1, "q2");
    w.method(
        C1,
        1,
        Method::BasicQos(BasicQos {
            prefetch_count: 3,
            global: true,
            ..Default::default()
        }),
    );
    w.consume(C1, "q1", "a", false);
    w.consume(C1, "q2", "b", false);
    let mut e = Vec::new();
    for body in ["1", "2"] {
        e.extend(w.publish(C2, "", "q1", body));
        e.extend(w.publish(C2, "", "q2", body));
    }
    assert_eq!(e.len(), 3, "three deliveries across both consumers: {e:?}");
}

#[test]
fn unknown_delivery_tag_is_a_precondition_failure() {
    let mut w = World::new();
    let e = w.method(
        C1,
        1,
        Method::BasicAck(BasicAck {
            delivery_tag: 7,
            multiple: false,
        }),
    );
    assert_eq!(
        close_channel(&e),
        Some((406, "PRECONDITION_FAILED - unknown delivery tag 7".into()))
    );
}

#[test]
fn requeued_messages_keep_their_place_and_are_marked_redelivered() {
    let mut w = World::new();
    w.declare(C1, "q");
    for body in ["1", "2", "3"] {
        w.publish(C1, "", "q", body);
    }
    let get = |w: &mut World| {
        w.method(
            C1,
            1,
            Method::BasicGet(BasicGet {
                queue: "q".into(),
                no_ack: false,
                ..Default::default()
            }),
        )
    };
    get(&mut w);
    get(&mut w);
    w.method(
        C1,
        1,
        Method::BasicNack(BasicNack {
            delivery_tag: 2,
            multiple: true,
            requeue: true,
        }),
    );
    let e = w.consume(C1, "q", "c", true);
    let redelivered: Vec<_> = e
        .iter()
        .filter_map(|e| match e {
            Effect::SendContent {
                method: Method::BasicDeliver(d),
                body,
                ..
            } => Some((d.redelivered, body.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        redelivered,
        vec![
            (true, Bytes::from_static(b"1")),
            (true, Bytes::from_static(b"2")),
            (false, Bytes::from_static(b"3"))
        ]
    );
}

#[test]
fn closing_a_channel_requeues_its_unacked_messages_to_other_consumers() {
    let mut w = World::new();
    w.declare(C1, "q");
    w.method(
        C1,
        1,
        Method::BasicQos(BasicQos {
            prefetch_count: 1,
            ..Default::default()
        }),
    );
    w.consume(C1, "q", "a", false);
    w.publish(C2, "", "q", "m");
    w.consume(C2, "q", "b", false);
    let e = w.method(C1, 1, Method::ChannelClose(ChannelClose::default()));
    assert_eq!(
        e,
        vec![
            deliver(C2, "b", 1, true, "q", "m"),
            send(C1, Method::ChannelCloseOk(ChannelCloseOk {})),
        ]
    );
}

#[test]
fn publisher_confirms_and_mandatory_returns() {
    let mut w = World::new();
    w.method(
        C1,
        1,
        Method::ConfirmSelect(ConfirmSelect { nowait: false }),
    );
    w.declare(C1, "q");
    assert_eq!(
        w.publish(C1, "", "q", "x"),
        vec![send(
            C1,
            Method::BasicAck(BasicAck {
                delivery_tag: 1,
                multiple: false
            })
        )]
    );
    let e = w.publish_with(
        C1,
        "amq.direct",
        "nowhere",
        "y",
        true,
        BasicProperties::default(),
    );
    assert_eq!(
        e,
        vec![
            Effect::SendContent {
                conn: C1,
                channel: 1,
                method: Method::BasicReturn(BasicReturn {
                    reply_code: 312,
                    reply_text: "NO_ROUTE".into(),
                    exchange: "amq.direct".into(),
                    routing_key: "nowhere".into(),
                }),
                properties: BasicProperties::default(),
                body: Bytes::from_static(b"y"),
            },
            send(
                C1,
                Method::BasicAck(BasicAck {
                    delivery_tag: 2,
                    multiple: false
                })
            ),
        ]
    );
    let e = w.method(C1, 1, Method::TxSelect(TxSelect {}));
    assert_eq!(
        close_channel(&e),
        Some((
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode".into()
        ))
    );
}

#[test]
fn transactions_defer_publishes_until_commit() {
    let mut w = World::new();
    w.declare(C1, "q");
    w.consume(C2, "q", "c", true);
    w.method(C1, 1, Method::TxSelect(TxSelect {}));
    assert_eq!(w.publish(C1, "", "q", "dropped"), vec![]);
    assert_eq!(
        w.method(C1, 1, Method::TxRollback(TxRollback {})),
        vec![send(C1, Method::TxRollbackOk(TxRollbackOk {}))]
    );
    assert_eq!(w.publish(C1, "", "q", "kept"), vec![]);
    let e = w.method(C1, 1, Method::TxCommit(TxCommit {}));
    assert_eq!(
        e,
        vec![
            deliver(C2, "c", 1, false, "q", "kept"),
            send(C1, Method::TxCommitOk(TxCommitOk {}))
        ]
    );
}

#[test]
fn exclusive_queues_are_locked_to_their_connection_and_die_with_it() {
    let mut w = World::new();
    w.method(
        C1,
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            exclusive: true,
            ..Default::default()
        }),
    );
    let e = w.method(
        C2,
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            passive: true,
            ..Default::default()
        }),
    );
    assert_eq!(close_channel(&e).map(|(c, _)| c), Some(405));
    w.input(Input::ConnectionClosed { conn: C1 });
    w.method(C2, 2, Method::ChannelOpen(ChannelOpen::default()));
    let e = w.method(
        C2,
        2,
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            passive: true,
            ..Default::default()
        }),
    );
    assert_eq!(close_channel(&e).map(|(c, _)| c), Some(404));
}

#[test]
fn auto_delete_queue_goes_with_its_last_consumer_and_deleted_queues_cancel_consumers() {
    let mut w = World::new();
    w.method(
        C1,
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "tmp".into(),
            auto_delete: true,
            ..Default::default()
        }),
    );
    w.consume(C1, "tmp", "a", true);
    w.method(
        C1,
        1,
        Method::BasicCancel(BasicCancel {
            consumer_tag: "a".into(),
            nowait: false,
        }),
    );
    assert!(w.broker.queue_id(&"/".into(), "tmp").is_none());

    w.declare(C1, "doomed");
    w.consume(C2, "doomed", "b", true);
    let e = w.method(
        C1,
        1,
        Method::QueueDelete(QueueDelete {
            queue: "doomed".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        e,
        vec![
            send(
                C2,
                Method::BasicCancel(BasicCancel {
                    consumer_tag: "b".into(),
                    nowait: true
                })
            ),
            send(
                C1,
                Method::QueueDeleteOk(QueueDeleteOk { message_count: 0 })
            ),
        ]
    );
}

#[test]
fn topic_exchange_routes_by_pattern() {
    let mut w = World::new();
    for (q, pattern) in [("en", "*.en.#"), ("tw", "twitter.#")] {
        w.declare(C1, q);
        w.method(
            C1,
            1,
            Method::QueueBind(QueueBind {
                queue: q.into(),
                exchange: "amq.topic".into(),
                routing_key: pattern.into(),
                ..Default::default()
            }),
        );
    }
    w.publish(C1, "amq.topic", "news.en.uk", "a");
    w.publish(C1, "amq.topic", "twitter", "b");
    w.publish(C1, "amq.topic", "twitter.en", "c");
    let count = |w: &mut World, q: &str| {
        let e = w.method(
            C1,
            1,
            Method::QueueDeclare(QueueDeclare {
                queue: q.into(),
                passive: true,
                ..Default::default()
            }),
        );
        match &e[..] {
            [Effect::Send {
                method: Method::QueueDeclareOk(ok),
                ..
            }] => ok.message_count,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(count(&mut w, "en"), 2, "news.en.uk and twitter.en");
    assert_eq!(count(&mut w, "tw"), 2);
}

#[test]
fn direct_reply_to_round_trip() {
    let mut w = World::new();
    w.declare(C2, "rpc");
    w.consume(C2, "rpc", "server", true);
    w.consume(C1, "amq.rabbitmq.reply-to", "client", true);
    let props = BasicProperties {
        reply_to: Some("amq.rabbitmq.reply-to".into()),
        ..Default::default()
    };
    let e = w.publish_with(C1, "", "rpc", "ping", false, props);
    let reply_to = match &e[..] {
        [Effect::SendContent { properties, .. }] => properties.reply_to.clone().expect("rewritten"),
        other => panic!("{other:?}"),
    };
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > 23);
    let e = w.publish(C2, "", &reply_to, "pong");
    assert!(
        matches!(&e[..], [Effect::SendContent { conn: C1, method: Method::BasicDeliver(d), body, .. }]
        if d.consumer_tag.as_str() == "client" && body.as_ref() == b"pong")
    );
}

#[test]
fn rejected_messages_are_dead_lettered_with_x_death() {
    let mut w = World::new();
    w.declare(C1, "failures");
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange", FieldValue::LongStr("".into()));
    args.insert(
        "x-dead-letter-routing-key",
        FieldValue::LongStr("failures".into()),
    );
    w.method(
        C1,
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "stage1".into(),
            arguments: args,
            ..Default::default()
        }),
    );
    w.publish(C1, "", "stage1", "bad");
    w.method(
        C1,
        1,
        Method::BasicGet(BasicGet {
            queue: "stage1".into(),
            ..Default::default()
        }),
    );
    w.method(
        C1,
        1,
        Method::BasicReject(BasicReject {
            delivery_tag: 1,
            requeue: false,
        }),
    );
    let e = w.method(
        C1,
        1,
        Method::BasicGet(BasicGet {
            queue: "failures".into(),
            no_ack: true,
            ..Default::default()
        }),
    );
    let [Effect::SendContent {
        properties, body, ..
    }] = &e[..]
    else {
        panic!("{e:?}")
    };
    assert_eq!(body.as_ref(), b"bad");
    let headers = properties.headers.as_ref().expect("x-death");
    assert_eq!(
        headers
            .get("x-first-death-reason")
            .and_then(FieldValue::as_str),
        Some("rejected")
    );
    assert_eq!(
        headers
            .get("x-first-death-queue")
            .and_then(FieldValue::as_str),
        Some("stage1")
    );
}

#[test]
fn message_ttl_expires_messages_on_tick() {
    let mut w = World::new();
    let mut args = FieldTable::default();
    args.insert("x-message-ttl", FieldValue::I32(100));
    w.method(
        C1,
        1,
        Method::QueueDeclare(QueueDeclare {
            queue: "ttl".into(),
            arguments: args,
            ..Default::default()
        }),
    );
    w.publish(C1, "", "ttl", "old");
    w.now += 100;
    w.input(Input::Tick);
    let e = w.method(
        C1,
        1,
        Method::BasicGet(BasicGet {
            queue: "ttl".into(),
            no_ack: true,
            ..Default::default()
        }),
    );
    assert!(matches!(
        &e[..],
        [Effect::Send {
            method: Method::BasicGetEmpty(_),
            ..
        }]
    ));
}

#[test]
fn delivery_credit_bounds_what_is_in_flight_to_a_connection() {
    let mut w = World::new();
    w.declare(C1, "big");
    w.consume(C1, "big", "a", true);
    w.input(Input::Writable {
        conn: C1,
        writable: false,
    });
    static BODY: [u8; 64 * 1024] = [7; 64 * 1024];
    for _ in 0..40 {
        w.input(Input::Publish {
            conn: C2,
            channel: 1,
            publish: BasicPublish {
                routing_key: "big".into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(&BODY),
        });
    }
    let e = w.input(Input::Writable {
        conn: C1,
        writable: true,
    });
    let delivered = e
        .iter()
        .filter(|e| matches!(e, Effect::SendContent { .. }))
        .count();
    let per_message = BODY.len() as i64;
    assert_eq!(delivered as i64, DELIVERY_CREDIT_BYTES / per_message);
    assert_eq!(e.last(), Some(&Effect::AwaitWritable { conn: C1 }));
}

#[test]
fn reserved_names_and_immediate_are_refused() {
    let mut w = World::new();
    let e = w.method(
        C1,
        1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "amq.mine".into(),
            kind: "direct".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        close_channel(&e),
        Some((
            403,
            "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'".into()
        ))
    );
    let e = w.input(Input::Publish {
        conn: C2,
        channel: 1,
        publish: BasicPublish {
            immediate: true,
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::new(),
    });
    assert!(matches!(&e[..], [Effect::CloseConnection { error, .. }]
        if error.code == 540 && error.text == "NOT_IMPLEMENTED - immediate=true"));
}

#[test]
fn exchange_to_exchange_bindings_and_alternate_exchanges_route() {
    let mut w = World::new();
    w.declare(C1, "all");
    w.declare(C1, "lost");
    let mut args = FieldTable::default();
    args.insert("alternate-exchange", FieldValue::LongStr("ae".into()));
    w.method(
        C1,
        1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "ae".into(),
            kind: "fanout".into(),
            ..Default::default()
        }),
    );
    w.method(
        C1,
        1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "src".into(),
            kind: "direct".into(),
            arguments: args,
            ..Default::default()
        }),
    );
    w.method(
        C1,
        1,
        Method::ExchangeBind(ExchangeBind {
            destination: "amq.fanout".into(),
            source: "src".into(),
            routing_key: "k".into(),
            ..Default::default()
        }),
    );
    w.method(
        C1,
        1,
        Method::QueueBind(QueueBind {
            queue: "all".into(),
            exchange: "amq.fanout".into(),
            ..Default::default()
        }),
    );
    w.method(
        C1,
        1,
        Method::QueueBind(QueueBind {
            queue: "lost".into(),
            exchange: "ae".into(),
            ..Default::default()
        }),
    );
    w.publish(C1, "src", "k", "via-e2e");
    w.publish(C1, "src", "other", "via-ae");
    let get = |w: &mut World, q: &str| {
        bodies(&w.method(
            C1,
            1,
            Method::BasicGet(BasicGet {
                queue: q.into(),
                no_ack: true,
                ..Default::default()
            }),
        ))
    };
    assert_eq!(get(&mut w, "all"), vec!["via-e2e"]);
    assert_eq!(get(&mut w, "lost"), vec!["via-ae"]);
}

/// A replicated broker: every proposed command is "committed" at once and also recorded, as
/// the Raft log would record it.
struct Replicated {
    broker: Broker,
    log: Vec<Command>,
    now: Millis,
}

impl Replicated {
    /// The leader's broker: it decides, and holds the messages of local queues.
    fn new() -> Replicated {
        let mut r = Replicated::replica();
        r.broker.set_leading(true);
        r
    }

    /// A broker that only applies the log (a follower).
    fn replica() -> Replicated {
        Replicated::on_node(0)
    }

    /// A follower's broker on cluster node `node` (the home of its connections' transient
    /// queues).
    fn on_node(node: u64) -> Replicated {
        Replicated {
            broker: Broker::new(BrokerConfig {
                node,
                ..BrokerConfig::default()
            }),
            log: Vec::new(),
            now: 1_000,
        }
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        let mut pending = vec![input];
        let mut client_effects = Vec::new();
        while let Some(input) = pending.pop() {
            let mut out = Vec::new();
            self.broker.handle(self.now, input, &mut out);
            self.broker.check_credit();
            for e in out {
                match e {
                    Effect::Propose { command } => {
                        self.log.push(command.clone());
                        pending.push(Input::Applied { command, index: 0 });
                    }
                    other => client_effects.push(other),
                }
            }
        }
        client_effects
    }

    fn open(&mut self, conn: ConnId) {
        self.input(Input::Login {
            conn,
            mechanism: "PLAIN".into(),
            username: "guest".into(),
            password: "guest".into(),
            peer_loopback: true,
            client_properties: caps(),
        });
        self.input(Input::OpenVhost {
            conn,
            vhost: "/".into(),
        });
        self.input(Input::Method {
            conn,
            channel: 1,
            method: Method::ChannelOpen(ChannelOpen::default()),
        });
    }

    fn method(&mut self, conn: ConnId, method: Method) -> Vec<Effect> {
        self.input(Input::Method {
            conn,
            channel: 1,
            method,
        })
    }

    /// Publishes a persistent message to queue `key` through the default exchange.
    fn publish(&mut self, conn: ConnId, key: &str, body: &'static str) {
        self.publish_mode(conn, key, body, Some(2));
    }

    fn publish_mode(&mut self, conn: ConnId, key: &str, body: &'static str, mode: Option<u8>) {
        self.input(Input::Publish {
            conn,
            channel: 1,
            publish: BasicPublish {
                routing_key: key.into(),
                ..Default::default()
            },
            properties: BasicProperties {
                delivery_mode: mode,
                ..Default::default()
            },
            body: Bytes::from_static(body.as_bytes()),
        });
    }

    /// A leader's broker that applied `log`, then the `Recover` of a restart at `version`.
    fn recovered_from(log: &[Command], version: u32) -> Replicated {
        let mut b = Replicated::new();
        for command in log.iter().cloned() {
            b.input(Input::Applied { command, index: 0 });
        }
        b.input(Input::Applied {
            index: 0,
            command: Command {
                version,
                origin: None,
                number: None,
                issued_at: 2_000,
                op: Op::Recover,
            },
        });
        b
    }

    fn declare_durable(&mut self, conn: ConnId, queue: &str, arguments: FieldTable) {
        self.method(
            conn,
            Method::QueueDeclare(QueueDeclare {
                queue: queue.into(),
                durable: true,
                arguments,
                ..Default::default()
            }),
        );
    }

    fn bind(&mut self, conn: ConnId, queue: &str, exchange: &str, key: &str) {
        self.method(
            conn,
            Method::QueueBind(QueueBind {
                queue: queue.into(),
                exchange: exchange.into(),
                routing_key: key.into(),
                ..Default::default()
            }),
        );
    }

    fn get_all(&mut self, conn: ConnId, queue: &str) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let e = self.method(
                conn,
                Method::BasicGet(BasicGet {
                    queue: queue.into(),
                    no_ack: true,
                    ..Default::default()
                }),
            );
            match &e[..] {
                [Effect::SendContent { body, .. }] => {
                    got.push(String::from_utf8_lossy(body).into_owned())
                }
                _ => return got,
            }
        }
    }
}

/// A leader's broker whose proposals wait in `proposed` until a test commits them.
struct Manual {
    broker: Broker,
    proposed: Vec<Command>,
}

impl Manual {
    fn new() -> Manual {
        let mut broker = Broker::new(BrokerConfig {
            ..BrokerConfig::default()
        });
        broker.set_leading(true);
        Manual {
            broker,
            proposed: Vec::new(),
        }
    }

    /// Handles `input`; returns the effects for clients, keeps the proposals.
    fn step(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        self.broker.handle(1_000, input, &mut out);
        self.broker.check_credit();
        let mut client = Vec::new();
        for e in out {
            match e {
                Effect::Propose { command } => self.proposed.push(command),
                other => client.push(other),
            }
        }
        client
    }

    /// Commits the oldest proposal; returns the effects for clients.
    fn commit_one(&mut self) -> Vec<Effect> {
        let command = self.proposed.remove(0);
        self.step(Input::Applied { command, index: 0 })
    }

    /// Commits every proposal, and those that committing them makes.
    fn commit_all(&mut self) -> Vec<Effect> {
        let mut client = Vec::new();
        while !self.proposed.is_empty() {
            client.extend(self.commit_one());
        }
        client
    }

    fn method(&mut self, method: Method) -> Vec<Effect> {
        self.step(Input::Method {
            conn: C1,
            channel: 1,
            method,
        })
    }

    fn publish(&mut self, routing_key: &str, body: &'static str) -> Vec<Effect> {
        self.step(Input::Publish {
            conn: C1,
            channel: 1,
            publish: BasicPublish {
                routing_key: routing_key.into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    /// Logs C1 in and opens its channel 1.
    fn open(&mut self) {
        self.step(Input::Login {
            conn: C1,
            mechanism: "PLAIN".into(),
            username: "guest".into(),
            password: "guest".into(),
            peer_loopback: true,
            client_properties: caps(),
        });
        self.step(Input::OpenVhost {
            conn: C1,
            vhost: "/".into(),
        });
        self.method(Method::ChannelOpen(ChannelOpen::default()));
    }
}

#[test]
fn acks_rejects_and_no_ack_deliveries_are_replicated_so_a_replay_never_returns_them() {
    let mut a = Replicated::new();
    a.open(C1);
    let mut dlx_args = FieldTable::default();
    dlx_args.insert("x-dead-letter-exchange", FieldValue::from(""));
    dlx_args.insert("x-dead-letter-routing-key", FieldValue::from("dead"));
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "dead".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "work".into(),
            durable: true,
            arguments: dlx_args,
            ..Default::default()
        }),
    );
    for body in ["1", "2", "3", "4", "5", "6"] {
        a.publish(C1, "work", body);
    }
    // get 1..4 with acks pending, ack 1 and 2 (multiple), reject 3, requeue 4; get 5 with no-ack.
    for _ in 0..4 {
        a.method(
            C1,
            Method::BasicGet(BasicGet {
                queue: "work".into(),
                ..Default::default()
            }),
        );
    }
    a.method(
        C1,
        Method::BasicAck(BasicAck {
            delivery_tag: 2,
            multiple: true,
        }),
    );
    a.method(
        C1,
        Method::BasicReject(BasicReject {
            delivery_tag: 3,
            requeue: false,
        }),
    );
    a.method(
        C1,
        Method::BasicNack(BasicNack {
            delivery_tag: 4,
            multiple: false,
            requeue: true,
        }),
    );
    a.method(
        C1,
        Method::BasicGet(BasicGet {
            queue: "work".into(),
            no_ack: true,
            ..Default::default()
        }),
    );

    // Replay the log into a fresh broker: what it holds is what survives a restart.
    let mut b = Replicated::new();
    for command in a.log.clone() {
        b.input(Input::Applied { command, index: 0 });
    }
    b.open(C2);
    // 1 and 2 were acked, 3 rejected (dead-lettered); 4 was requeued to its old place, so the
    // no-ack get took 4 again: gone. 5 and 6 were never settled: still there, in order.
    assert_eq!(b.get_all(C2, "work"), ["5", "6"]);
    assert_eq!(b.get_all(C2, "dead"), ["3"]);
}

#[test]
fn a_channel_reads_its_own_writes_while_they_are_being_replicated() {
    // Commands are proposed but not committed until we say so.
    let mut m = Manual::new();
    m.open();
    let declare = Method::QueueDeclare(QueueDeclare {
        queue: "q".into(),
        durable: true,
        ..Default::default()
    });
    assert_eq!(m.method(declare), vec![], "declare-ok waits for the commit");
    assert_eq!(m.publish("q", "m"), vec![]);
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "q".into(),
        passive: true,
        ..Default::default()
    });
    assert_eq!(
        m.method(passive),
        vec![],
        "the passive declare waits for the channel's writes"
    );
    assert_eq!(
        m.proposed.len(),
        1,
        "the publish waits for the declare (a declare or bind in flight must be in place before \
         a publish is routed: its local part is enqueued at once)"
    );
    // Commit the declare: declare-ok, and the publish is proposed. Commit the publish: now the
    // passive declare runs and sees it.
    let declare_ok = |message_count| {
        vec![send(
            C1,
            Method::QueueDeclareOk(QueueDeclareOk {
                queue: "q".into(),
                message_count,
                consumer_count: 0,
            }),
        )]
    };
    assert_eq!(m.commit_one(), declare_ok(0));
    assert_eq!(op_names(&m.proposed), ["Publish"]);
    assert_eq!(m.commit_one(), declare_ok(1));
}

#[test]
fn recovery_keeps_every_message_of_a_quorum_queue_from_version_8() {
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
    let mut a = Replicated::new();
    a.open(C1);
    for (queue, arguments) in [("qq", quorum), ("classic", FieldTable::default())] {
        a.declare_durable(C1, queue, arguments);
        a.publish_mode(C1, queue, "not persistent", None);
    }
    let recovered = |version: u32| {
        let b = Replicated::recovered_from(&a.log, version);
        let view = b.broker.view();
        let count = |name: &str| {
            view.queues
                .iter()
                .find(|q| q.name == name)
                .map(|q| q.messages_ready)
        };
        (count("qq"), count("classic"))
    };
    // As RabbitMQ: a quorum queue persists every message, a classic queue only persistent ones.
    assert_eq!(recovered(STATE_MACHINE_VERSION), (Some(1), Some(0)));
    // A log written before version 8 replays as it did.
    assert_eq!(recovered(7), (Some(0), Some(0)));
}

#[test]
fn recovery_keeps_durable_entities_and_persistent_messages_only() {
    let mut a = Replicated::new();
    a.open(C1);
    a.method(
        C1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "keep-x".into(),
            kind: "fanout".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "lose-x".into(),
            kind: "fanout".into(),
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "keep".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "lose".into(),
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            durable: true,
            exclusive: true,
            ..Default::default()
        }),
    );
    a.publish(C1, "keep", "persistent");
    a.publish_mode(C1, "keep", "transient", Some(1));
    let mut b = Replicated::recovered_from(&a.log, STATE_MACHINE_VERSION);
    b.open(C2);
    let passive = |b: &mut Replicated, q: &str| {
        let e = b.method(
            C2,
            Method::QueueDeclare(QueueDeclare {
                queue: q.into(),
                passive: true,
                ..Default::default()
            }),
        );
        let code = close_channel(&e).map(|(code, _)| code);
        if code.is_some() {
            b.input(Input::Method {
                conn: C2,
                channel: 1,
                method: Method::ChannelCloseOk(Default::default()),
            });
            b.input(Input::Method {
                conn: C2,
                channel: 1,
                method: Method::ChannelOpen(ChannelOpen::default()),
            });
        }
        code
    };
    assert_eq!(passive(&mut b, "keep"), None);
    assert_eq!(passive(&mut b, "lose"), Some(404));
    assert_eq!(passive(&mut b, "mine"), Some(404));
    let e = b.method(
        C2,
        Method::BasicGet(BasicGet {
            queue: "keep".into(),
            no_ack: true,
            ..Default::default()
        }),
    );
    match &e[..] {
        [Effect::SendContent {
            method: Method::BasicGetOk(ok),
            body,
            ..
        }] => {
            assert_eq!(&body[..], b"persistent");
            assert!(
                ok.redelivered,
                "it may have been delivered before the restart"
            );
            assert_eq!(
                ok.message_count, 0,
                "the non-persistent message did not survive"
            );
        }
        other => panic!("{other:?}"),
    }
    let e = b.method(
        C2,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "lose-x".into(),
            kind: "fanout".into(),
            passive: true,
            ..Default::default()
        }),
    );
    assert_eq!(close_channel(&e).map(|(code, _)| code), Some(404));
}

#[test]
fn queues_that_go_by_themselves_go_in_the_log_too_so_a_replay_agrees() {
    let mut a = Replicated::new();
    a.open(C1);
    // An auto-delete queue goes with its last consumer; a new queue of the same name follows.
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "jobs".into(),
            durable: true,
            auto_delete: true,
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::BasicConsume(BasicConsume {
            queue: "jobs".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::BasicCancel(BasicCancel {
            consumer_tag: "c".into(),
            nowait: false,
        }),
    );
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "jobs".into(),
            durable: true,
            ..Default::default()
        }),
    );
    for body in ["1", "2"] {
        a.publish(C1, "jobs", body);
    }
    a.method(
        C1,
        Method::BasicGet(BasicGet {
            queue: "jobs".into(),
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    // An exclusive queue goes with its connection; another connection declares the name again.
    a.open(C2);
    a.method(
        C2,
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            exclusive: true,
            ..Default::default()
        }),
    );
    a.input(Input::ConnectionClosed { conn: C2 });
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.publish(C1, "mine", "m");

    let mut b = Replicated::new();
    for command in a.log.clone() {
        b.input(Input::Applied { command, index: 0 });
    }
    b.open(C2);
    assert_eq!(
        b.get_all(C2, "jobs"),
        ["2"],
        "the acked message is gone on the replica too"
    );
    assert_eq!(b.get_all(C2, "mine"), ["m"]);
}

#[test]
fn message_expiry_is_logged_and_dead_letters_in_the_same_order_on_replay() {
    let mut a = Replicated::new();
    a.open(C1);
    let mut args = FieldTable::default();
    args.insert("x-message-ttl", FieldValue::I32(100));
    args.insert("x-dead-letter-exchange", FieldValue::from(""));
    args.insert("x-dead-letter-routing-key", FieldValue::from("expired"));
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "expired".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "short".into(),
            durable: true,
            arguments: args,
            ..Default::default()
        }),
    );
    a.publish(C1, "short", "old");
    a.now += 1_000;
    a.input(Input::Tick);
    a.publish(C1, "expired", "direct");
    a.method(
        C1,
        Method::BasicGet(BasicGet {
            queue: "expired".into(),
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    let mut b = Replicated::new();
    for command in a.log.clone() {
        b.input(Input::Applied { command, index: 0 });
    }
    b.open(C2);
    // On both, "old" was dead-lettered before "direct" arrived, and the ack took "old".
    assert_eq!(b.get_all(C2, "expired"), ["direct"]);
    assert_eq!(b.get_all(C2, "short"), Vec::<String>::new());
}

/// The replicated state reads time only from the log (as `rabbit_fifo` reads `system_time`
/// from the entry): the same log applied by a follower whose clock runs far behind and by a
/// replay long after builds the same state, the `x-death` time of a dead-lettered message and
/// the expiry of its copy included.
#[test]
fn the_same_log_applied_at_two_clocks_builds_the_same_state() {
    let mut a = Replicated::new();
    a.open(C1);
    // "short" dead-letters what expires into "graveyard", which has a TTL of its own.
    let mut graveyard = FieldTable::default();
    graveyard.insert("x-message-ttl", FieldValue::I32(60_000));
    let mut short = FieldTable::default();
    short.insert("x-message-ttl", FieldValue::I32(100));
    short.insert("x-dead-letter-exchange", FieldValue::from(""));
    short.insert("x-dead-letter-routing-key", FieldValue::from("graveyard"));
    for (queue, arguments) in [("graveyard", graveyard), ("short", short)] {
        a.declare_durable(C1, queue, arguments);
    }
    a.publish(C1, "short", "old");
    a.now += 1_000;
    a.input(Input::Tick);
    let expired_at = a
        .log
        .iter()
        .find(|c| matches!(c.op, Op::Expire { .. }))
        .map(|c| c.issued_at)
        .expect("the leader logged the expiry");

    let replay = |now: Millis| {
        let mut r = Replicated::replica();
        r.now = now;
        for command in a.log.clone() {
            r.input(Input::Applied { command, index: 0 });
        }
        r.broker.snapshot()
    };
    let (behind, later) = (replay(3), replay(86_400_000));
    assert_eq!(
        behind, later,
        "the same log, the same state, whatever the clock"
    );
    assert_eq!(behind, a.broker.snapshot(), "and the leader's own");

    // The dead-lettered copy: died when the log says, expires 60 s after that.
    let queue = behind
        .queues
        .iter()
        .find(|q| q.name.as_str() == "graveyard")
        .expect("graveyard");
    let entries = queue.entries.to_vec().expect("entries");
    let [entry] = entries[..] else {
        panic!("one dead-lettered message: {entries:?}")
    };
    assert_eq!(entry.expires_at, Some(expired_at + 60_000));
    let headers = behind.messages[entry.message as usize]
        .properties
        .headers
        .as_ref()
        .expect("x-death");
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else {
        panic!("no x-death: {headers:?}")
    };
    let Some(FieldValue::Table(death)) = deaths.first() else {
        panic!("an x-death entry: {deaths:?}")
    };
    assert_eq!(
        death.get("time"),
        Some(&FieldValue::Timestamp(expired_at / 1_000))
    );
}

#[test]
fn a_snapshot_plus_the_log_after_it_rebuilds_the_same_state_as_the_whole_log() {
    let mut a = Replicated::new();
    a.open(C1);
    for (queue, durable) in [("work", true), ("other", false)] {
        a.method(
            C1,
            Method::QueueDeclare(QueueDeclare {
                queue: queue.into(),
                durable,
                ..Default::default()
            }),
        );
    }
    a.method(
        C1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "logs".into(),
            kind: "topic".into(),
            durable: true,
            ..Default::default()
        }),
    );
    for key in ["a.*", "#"] {
        a.bind(C1, "work", "logs", key);
    }
    a.bind(C1, "other", "logs", "#");
    // Routed to both queues: one message shared by two queues.
    a.input(Input::Publish {
        conn: C1,
        channel: 1,
        publish: BasicPublish {
            exchange: "logs".into(),
            routing_key: "a.b".into(),
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"shared"),
    });
    for body in ["1", "2", "3"] {
        a.publish(C1, "work", body);
    }
    // One message checked out (unacked) when the snapshot is taken.
    a.method(
        C1,
        Method::BasicGet(BasicGet {
            queue: "work".into(),
            ..Default::default()
        }),
    );
    let cut = a.log.len();
    let snap = a.broker.snapshot();
    assert_eq!(snap.messages.len(), 4, "the shared message is listed once");
    assert_eq!(snap.queues.len(), 2);
    // After the snapshot: ack the checked-out one and publish more.
    a.method(
        C1,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    a.publish(C1, "work", "4");

    // Whole log replayed vs. snapshot restored plus the rest of the log: the same state.
    let mut whole = Replicated::new();
    for command in a.log.clone() {
        whole.input(Input::Applied { command, index: 0 });
    }
    let mut restored = Replicated::new();
    let mut out = Vec::new();
    restored
        .broker
        .restore(snap.clone(), &mut out)
        .expect("restores");
    assert!(out.is_empty(), "no connections to close");
    assert_eq!(restored.broker.snapshot(), snap);
    for command in a.log[cut..].iter().cloned() {
        restored.input(Input::Applied { command, index: 0 });
    }
    assert_eq!(restored.broker.snapshot(), whole.broker.snapshot());
    restored.open(C2);
    // The get took "shared" from work, and it was acked after the snapshot.
    assert_eq!(restored.get_all(C2, "work"), ["1", "2", "3", "4"]);
    // "other" is not durable: its message lived only in the leader's broker, not in the log
    // or the snapshot.
    assert_eq!(restored.get_all(C2, "other"), Vec::<String>::new());
    a.open(C2);
    assert_eq!(a.get_all(C2, "other"), ["shared"]);
    // The topic bindings came back: a new publish routes through them.
    restored.input(Input::Publish {
        conn: C2,
        channel: 1,
        publish: BasicPublish {
            exchange: "logs".into(),
            routing_key: "a.c".into(),
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"after"),
    });
    assert_eq!(restored.get_all(C2, "work"), ["after"]);
}

#[test]
fn restoring_a_snapshot_keeps_the_connections_and_closes_those_it_would_orphan() {
    let mut a = Replicated::new();
    a.open(C1);
    a.input(committed(None, Op::PutVhost { name: "v".into() }));
    a.input(committed(
        None,
        Op::SetPermission {
            user: "guest".into(),
            vhost: "v".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        },
    ));
    a.broker.connections.get_mut(&C1).expect("open").vhost = Some("v".into());
    a.open(C2);
    let snap = Broker::new(BrokerConfig::default()).snapshot();
    let mut out = Vec::new();
    a.broker.restore(snap, &mut out).expect("restores");
    assert!(
        matches!(
            &out[..],
            [Effect::CloseConnection { conn: C1, error }] if error.code == 320
        ),
        "the one whose vhost the snapshot lacks: {out:?}"
    );
    assert!(
        a.broker.connections.contains_key(&C2),
        "the other one stays"
    );
}

/// (delivery tag, redelivered, body) of each delivery among `effects`.
fn deliveries(effects: &[Effect]) -> Vec<(u64, bool, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendContent {
                method: Method::BasicDeliver(d),
                body,
                ..
            } => Some((
                d.delivery_tag,
                d.redelivered,
                String::from_utf8_lossy(body).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

fn confirms(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                method: Method::BasicAck(a),
                ..
            } => Some(a.delivery_tag),
            _ => None,
        })
        .collect()
}

#[test]
fn confirm_numbers_start_afresh_on_a_reopened_channel_without_being_taken_for_resends() {
    let mut a = Replicated::new();
    a.open(C1);
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "q".into(),
            durable: true,
            ..Default::default()
        }),
    );
    for body in ["first life", "second life"] {
        a.method(C1, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
        a.publish(C1, "q", body);
        a.method(C1, Method::ChannelClose(ChannelClose::default()));
        a.method(C1, Method::ChannelOpen(ChannelOpen::default()));
    }
    // A replica that replays the log holds both (seq 1 twice, with a confirm.select between).
    let mut b = Replicated::new();
    for command in a.log.clone() {
        b.input(Input::Applied { command, index: 0 });
    }
    b.open(C2);
    assert_eq!(b.get_all(C2, "q"), ["first life", "second life"]);
}

#[test]
fn an_exclusive_queue_whose_connection_closed_mid_commit_is_created_everywhere_then_swept() {
    // Commands are committed only when we say so.
    let mut leader = Broker::new(BrokerConfig {
        ..BrokerConfig::default()
    });
    let mut log: Vec<Command> = Vec::new();
    let step = |broker: &mut Broker, now: Millis, input: Input, log: &mut Vec<Command>| {
        let mut out = Vec::new();
        broker.handle(now, input, &mut out);
        broker.check_credit();
        for e in out {
            if let Effect::Propose { command } = e {
                log.push(command);
            }
        }
    };
    for conn in [C1, C2] {
        step(
            &mut leader,
            1_000,
            Input::Login {
                conn,
                mechanism: "PLAIN".into(),
                username: "guest".into(),
                password: "guest".into(),
                peer_loopback: true,
                client_properties: caps(),
            },
            &mut log,
        );
        step(
            &mut leader,
            1_000,
            Input::OpenVhost {
                conn,
                vhost: "/".into(),
            },
            &mut log,
        );
        step(
            &mut leader,
            1_000,
            Input::Method {
                conn,
                channel: 1,
                method: Method::ChannelOpen(ChannelOpen::default()),
            },
            &mut log,
        );
    }
    let declare = |conn: ConnId, name: &str, exclusive: bool| Input::Method {
        conn,
        channel: 1,
        method: Method::QueueDeclare(QueueDeclare {
            queue: name.into(),
            durable: !exclusive,
            exclusive,
            ..Default::default()
        }),
    };
    step(&mut leader, 1_000, declare(C1, "x", true), &mut log);
    step(
        &mut leader,
        1_000,
        Input::ConnectionClosed { conn: C1 },
        &mut log,
    );
    let mut applied = 0;
    let commit = |leader: &mut Broker, log: &mut Vec<Command>, applied: &mut usize| {
        while *applied < log.len() {
            let command = log[*applied].clone();
            *applied += 1;
            let mut out = Vec::new();
            leader.handle(1_000, Input::Applied { command, index: 0 }, &mut out);
            log.extend(out.into_iter().filter_map(|e| match e {
                Effect::Propose { command } => Some(command),
                _ => None,
            }));
        }
    };
    commit(&mut leader, &mut log, &mut applied);
    // An exclusive queue of a live connection: a replica has no connections at all, yet must
    // create it too (and give the next queue the same id as the leader).
    step(&mut leader, 1_000, declare(C2, "y", true), &mut log);
    commit(&mut leader, &mut log, &mut applied);
    step(&mut leader, 1_000, declare(C2, "d", false), &mut log);
    commit(&mut leader, &mut log, &mut applied);
    // The next tick sweeps the orphan, through the log.
    step(&mut leader, 2_000, Input::Tick, &mut log);
    commit(&mut leader, &mut log, &mut applied);
    assert!(leader.queue_id(&"/".into(), "x").is_none(), "swept");
    // A replica that applied the same log holds the same queues under the same ids.
    let mut replica = Broker::new(BrokerConfig {
        ..BrokerConfig::default()
    });
    for command in log {
        replica.handle(1_000, Input::Applied { command, index: 0 }, &mut Vec::new());
    }
    assert_eq!(replica.snapshot(), leader.snapshot());
    assert!(replica.queue_id(&"/".into(), "d").is_some());
    assert!(replica.queue_id(&"/".into(), "y").is_some());
}

#[test]
fn users_vhosts_and_permissions_are_log_commands_and_travel_in_snapshots() {
    let mut a = Replicated::new();
    let admin = |op: Op| Input::Applied {
        index: 0,
        command: Command {
            version: STATE_MACHINE_VERSION,
            origin: None,
            number: None,
            issued_at: 1_000,
            op,
        },
    };
    let put_user = Op::PutUser {
        name: "alice".into(),
        password_hash: hash_password([1, 2, 3, 4], "secret"),
        tags: vec!["monitoring".into()],
    };
    let set = Op::SetPermission {
        user: "alice".into(),
        vhost: "/orders".into(),
        configure: "^alice\\.".into(),
        write: ".*".into(),
        read: ".*".into(),
    };
    assert!(
        a.broker.check_security_change(&set).is_err(),
        "no such user or vhost yet"
    );
    for op in [
        Op::PutVhost {
            name: "/orders".into(),
        },
        put_user.clone(),
    ] {
        assert_eq!(a.broker.check_security_change(&op), Ok(()));
        a.input(admin(op));
    }
    assert_eq!(a.broker.check_security_change(&set), Ok(()));
    let bad = Op::SetPermission {
        user: "alice".into(),
        vhost: "/orders".into(),
        configure: "(".into(),
        write: "".into(),
        read: "".into(),
    };
    assert!(a.broker.check_security_change(&bad).is_err(), "bad regex");
    a.input(admin(set));
    let login = |conn, password: &str| Input::Login {
        conn,
        mechanism: "PLAIN".into(),
        username: "alice".into(),
        password: password.into(),
        peer_loopback: false,
        client_properties: caps(),
    };
    assert_eq!(
        a.input(login(C1, "secret")),
        vec![Effect::Authenticated {
            conn: C1,
            user: "alice".into()
        }]
    );
    let e = a.input(Input::OpenVhost {
        conn: C1,
        vhost: "/orders".into(),
    });
    assert!(matches!(&e[..], [Effect::Send { .. }]), "open-ok: {e:?}");
    a.input(Input::Method {
        conn: C1,
        channel: 1,
        method: Method::ChannelOpen(ChannelOpen::default()),
    });
    let e = a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "alice.jobs".into(),
            durable: true,
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
        "allowed by the configure pattern: {e:?}"
    );

    // A snapshot carries all of it: a broker restored from it lets alice in too.
    let mut b = Replicated::new();
    b.broker
        .restore(a.broker.snapshot(), &mut Vec::new())
        .expect("restore");
    assert_eq!(b.broker.snapshot(), a.broker.snapshot());
    assert!(matches!(
        &b.input(login(C2, "secret"))[..],
        [Effect::Authenticated { .. }]
    ));

    // Deleting the vhost closes alice's connection there and takes its queues along.
    let e = a.input(admin(Op::DeleteVhost {
        name: "/orders".into(),
    }));
    assert!(
        e.iter()
            .any(|e| matches!(e, Effect::CloseConnection { conn: C1, error } if error.code == 320)),
        "{e:?}"
    );
    assert!(a.broker.queue_id(&"/orders".into(), "alice.jobs").is_none());
    a.input(admin(Op::DeleteUser {
        name: "alice".into(),
    }));
    let e = a.input(login(C2, "secret"));
    assert!(
        matches!(&e[..], [Effect::CloseConnection { error, .. }] if error.code == 403),
        "{e:?}"
    );
}

#[test]
fn a_publish_refused_then_proposed_again_after_a_later_one_is_enqueued_not_taken_for_a_resend() {
    let mut a = Replicated::new();
    a.open(C1);
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "q".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.method(C1, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    for body in ["1", "2", "3"] {
        a.publish(C1, "q", body);
    }
    let n = a.log.len();
    let (head, publishes) = a.log.split_at(n - 3);
    let (p1, p2, p3) = (
        publishes[0].clone(),
        publishes[1].clone(),
        publishes[2].clone(),
    );
    // Raft refused 2 (its leader's lease had expired) and took 3; 2 was proposed again, then a
    // resumed client re-sent 2 and 3. The log holds 1, 3, 2, 2, 3.
    let replay = |p2: &Command, p3: &Command| {
        let mut b = Replicated::new();
        for command in head.iter().cloned() {
            b.input(Input::Applied { command, index: 0 });
        }
        let mut acks = Vec::new();
        for command in [&p1, p3, p2, p2, p3] {
            acks.extend(confirms(&b.input(Input::Applied {
                index: 0,
                command: command.clone(),
            })));
        }
        b.open(C2);
        (b.get_all(C2, "q"), acks)
    };
    let (bodies, acks) = replay(&p2, &p3);
    assert_eq!(bodies, ["1", "3", "2"], "each message once, 2 after 3");
    assert_eq!(
        acks,
        Vec::<u64>::new(),
        "a broker without the publishing channel confirms nothing"
    );
    // Under version 2 semantics the late 2 was taken for a re-send and lost.
    let old = |c: &Command| Command {
        version: 2,
        ..c.clone()
    };
    let (bodies, _) = replay(&old(&p2), &old(&p3));
    assert_eq!(bodies, ["1", "3"]);
}

// --- The operator's view (management API) ---

#[test]
fn the_view_lists_topology_depths_counters_and_connections() {
    let mut w = World::new();
    w.declare(C1, "orders");
    w.method(
        C1,
        1,
        Method::QueueBind(QueueBind {
            queue: "orders".into(),
            exchange: "amq.direct".into(),
            routing_key: "o".into(),
            ..Default::default()
        }),
    );
    w.publish(C1, "amq.direct", "o", "one");
    w.publish(C1, "", "orders", "two");
    w.publish(C1, "amq.direct", "nowhere", "lost");
    w.consume(C2, "orders", "c2", false);
    let view = w.broker.view();

    let q = view
        .queues
        .iter()
        .find(|q| q.name == "orders")
        .expect("queue listed");
    assert_eq!(
        (q.messages_ready, q.messages_unacknowledged, q.consumers),
        (0, 2, 1)
    );
    assert_eq!(
        q.counters,
        crate::view::QueueCounters {
            published: 2,
            delivered: 2,
            redelivered: 0,
            acked: 0
        }
    );
    assert_eq!(
        q.published_from,
        vec![("".to_owned(), 1), ("amq.direct".to_owned(), 1)]
    );
    let direct = view
        .exchanges
        .iter()
        .find(|x| x.name == "amq.direct")
        .expect("exchange listed");
    assert_eq!((direct.publish_in, direct.publish_out), (2, 1));
    assert!(view.bindings.iter().any(|b| b.source == "amq.direct"
        && b.destination == "orders"
        && b.destination_type == "queue"
        && b.routing_key == "o"));
    assert_eq!(view.connections.len(), 2);
    assert_eq!(view.connections[0].user, "guest");
    assert_eq!(view.connections[0].vhost.as_deref(), Some("/"));
    assert_eq!(view.connections[0].connected_at, 1_000);
    assert_eq!(view.channels.len(), 2);
    assert_eq!(view.channels[1].messages_unacknowledged, 2);
    assert_eq!(view.consumers.len(), 1);
    assert_eq!(
        (
            view.consumers[0].tag.as_str(),
            view.consumers[0].queue.as_str(),
            view.consumers[0].ack_required
        ),
        ("c2", "orders", true)
    );
    assert_eq!(view.users.len(), 1);
    assert_eq!(view.users[0].tags, vec!["administrator".to_owned()]);
    assert_eq!(view.permissions[0].configure, ".*");

    w.method(
        C2,
        1,
        Method::BasicAck(BasicAck {
            delivery_tag: 2,
            multiple: true,
        }),
    );
    let q = w
        .broker
        .view()
        .queues
        .into_iter()
        .find(|q| q.name == "orders")
        .expect("queue listed");
    assert_eq!((q.messages_unacknowledged, q.counters.acked), (0, 2));
}

#[test]
fn an_operator_closes_a_connection_with_connection_forced() {
    assert_eq!(
        AmqpError::new(320, "x").text,
        "CONNECTION_FORCED - x",
        "the reply name is prefixed once"
    );
    let mut w = World::new();
    let e = w.input(Input::CloseConnection {
        conn: C2,
        reason: "Closed via management plugin".into(),
    });
    assert_eq!(
        e,
        vec![Effect::CloseConnection {
            conn: C2,
            error: AmqpError::new(320, "Closed via management plugin"),
        }]
    );
    assert_eq!(w.broker.view().connections.len(), 1);
    // Unknown connections are ignored.
    assert_eq!(
        w.input(Input::CloseConnection {
            conn: 99,
            reason: "x".into()
        }),
        vec![]
    );
}

#[test]
fn the_connection_name_property_names_the_connection_and_is_not_shown() {
    let mut w = World::new();
    let mut props = caps();
    props.insert(
        CONNECTION_NAME_PROPERTY,
        FieldValue::LongStr("127.0.0.1:5000 -> 127.0.0.1:5672".into()),
    );
    w.input(Input::Login {
        conn: 7,
        mechanism: "PLAIN".into(),
        username: "guest".into(),
        password: "guest".into(),
        peer_loopback: true,
        client_properties: props,
    });
    let view = w.broker.view();
    let c = view
        .connections
        .iter()
        .find(|c| c.conn == 7)
        .expect("listed");
    assert_eq!(c.name, "127.0.0.1:5000 -> 127.0.0.1:5672");
    assert_eq!(c.vhost, None);
    assert!(c.client_properties.iter().all(|(k, _)| k == "capabilities"));
}

/// The ops of a log, for asserting what went through it.
fn op_names(log: &[Command]) -> Vec<&'static str> {
    log.iter()
        .map(|c| match &c.op {
            Op::Publish { .. } => "Publish",
            Op::Settle { .. } => "Settle",
            Op::Reject { .. } => "Reject",
            Op::Expire { .. } => "Expire",
            Op::DeclareQueue { .. } => "DeclareQueue",
            Op::Bind { .. } => "Bind",
            Op::ConfirmSelect => "ConfirmSelect",
            _ => "other",
        })
        .collect()
}

#[test]
fn a_local_queue_keeps_its_messages_out_of_the_log_and_out_of_the_replicas() {
    let mut a = Replicated::new();
    a.open(C1);
    for (queue, durable, exclusive, auto_delete) in [
        ("work", true, false, false),
        ("tmp", false, false, false),
        ("mine", true, true, false),
        ("auto", true, false, true),
    ] {
        a.method(
            C1,
            Method::QueueDeclare(QueueDeclare {
                queue: queue.into(),
                durable,
                exclusive,
                auto_delete,
                ..Default::default()
            }),
        );
    }
    a.method(C1, Method::ConfirmSelect(ConfirmSelect { nowait: false }));
    let declared = a.log.len();
    // Confirmed at once, without a command: the queue's contents are not replicated.
    for (n, queue) in ["tmp", "mine", "auto"].into_iter().enumerate() {
        let e = a.input(Input::Publish {
            conn: C1,
            channel: 1,
            publish: BasicPublish {
                routing_key: queue.into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"transient"),
        });
        assert_eq!(
            e,
            [send(
                C1,
                Method::BasicAck(BasicAck {
                    delivery_tag: n as u64 + 1,
                    multiple: false,
                })
            )]
        );
    }
    assert_eq!(op_names(&a.log[declared..]), Vec::<&str>::new());
    a.publish(C1, "work", "durable");
    assert_eq!(op_names(&a.log[declared..]), ["Publish"]);
    // Fetching with acks: only the durable queue's ack is a command.
    for queue in ["tmp", "work"] {
        a.method(
            C1,
            Method::BasicGet(BasicGet {
                queue: queue.into(),
                ..Default::default()
            }),
        );
    }
    a.method(
        C1,
        Method::BasicAck(BasicAck {
            delivery_tag: 0,
            multiple: true,
        }),
    );
    assert_eq!(op_names(&a.log[declared..]), ["Publish", "Settle"]);

    // A follower applied the same log: it has every queue, and none of the local messages.
    let mut follower = Replicated::replica();
    for command in a.log.clone() {
        follower.input(Input::Applied { command, index: 0 });
    }
    assert_eq!(follower.broker.snapshot(), a.broker.snapshot());
    // It becomes the leader: the local queues are there, empty.
    follower.broker.set_leading(true);
    follower.open(C2);
    for queue in ["tmp", "auto"] {
        assert_eq!(follower.get_all(C2, queue), Vec::<String>::new());
    }
    assert_eq!(a.get_all(C1, "mine"), ["transient"]);
    assert_eq!(a.get_all(C1, "auto"), ["transient"]);
}

#[test]
fn a_publish_to_a_local_queue_waits_behind_the_channels_commands_in_flight() {
    // Commands are committed only when we say so.
    let mut m = Manual::new();
    m.open();
    m.method(Method::QueueDeclare(QueueDeclare {
        queue: "t".into(),
        ..Default::default()
    }));
    m.commit_all();
    // A bind is in flight: the next publish waits for it, then goes straight into the queue.
    m.method(Method::QueueBind(QueueBind {
        queue: "t".into(),
        exchange: "amq.fanout".into(),
        ..Default::default()
    }));
    m.publish("t", "first");
    assert_eq!(op_names(&m.proposed), ["Bind"]);
    m.commit_all();
    assert!(m.proposed.is_empty(), "no publish in the log");
    // Nothing in flight: straight into the queue.
    m.publish("t", "second");
    assert!(m.proposed.is_empty());
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(bodies(&m.method(Method::BasicGet(BasicGet {
            queue: "t".into(),
            no_ack: true,
            ..Default::default()
        }))));
    }
    assert_eq!(got, ["first", "second"]);
}

#[test]
fn a_local_queue_dead_letters_into_a_replicated_one_through_the_log_once() {
    let mut a = Replicated::new();
    a.open(C1);
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "dead".into(),
            durable: true,
            ..Default::default()
        }),
    );
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange", FieldValue::from("amq.fanout"));
    args.insert("x-message-ttl", FieldValue::I32(100));
    a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "short".into(),
            arguments: args,
            ..Default::default()
        }),
    );
    // The fanout reaches the durable "dead", and "short" itself (skipped: expired there).
    for queue in ["dead", "short"] {
        a.bind(C1, queue, "amq.fanout", "");
    }
    let before = a.log.len();
    a.publish(C1, "short", "late");
    assert_eq!(op_names(&a.log[before..]), Vec::<&str>::new());
    a.now += 200;
    a.input(Input::Tick);
    // The expiry itself is local; the copy into "dead" is a logged publish.
    assert_eq!(op_names(&a.log[before..]), ["Publish"]);
    let mut follower = Replicated::replica();
    for command in a.log.clone() {
        follower.input(Input::Applied { command, index: 0 });
    }
    assert_eq!(follower.broker.snapshot(), a.broker.snapshot());
    a.open(C2);
    assert_eq!(a.get_all(C2, "short"), Vec::<String>::new());
    assert_eq!(a.get_all(C2, "dead"), ["late"]);
    follower.broker.set_leading(true);
    follower.open(C2);
    assert_eq!(follower.get_all(C2, "dead"), ["late"]);
}

#[test]
fn a_conditional_queue_delete_is_decided_by_the_leader_so_replicas_agree() {
    let mut a = Replicated::new();
    a.open(C1);
    a.open(C2);
    for (queue, durable) in [("used", true), ("full", false)] {
        a.method(
            C1,
            Method::QueueDeclare(QueueDeclare {
                queue: queue.into(),
                durable,
                ..Default::default()
            }),
        );
    }
    a.input(Input::Method {
        conn: C2,
        channel: 1,
        method: Method::BasicConsume(BasicConsume {
            queue: "used".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        }),
    });
    a.publish(C1, "full", "kept");
    // Consumers and local messages exist only on the leader: refused here, it must not be
    // deleted on a replica either.
    for (queue, if_unused, if_empty) in [("used", true, false), ("full", false, true)] {
        let e = a.method(
            C1,
            Method::QueueDelete(QueueDelete {
                queue: queue.into(),
                if_unused,
                if_empty,
                ..Default::default()
            }),
        );
        assert!(
            matches!(&e[..], [Effect::CloseChannel { error, .. }] if error.code == 406),
            "{queue}: {e:?}"
        );
        a.method(C1, Method::ChannelOpen(ChannelOpen::default()));
    }
    let mut follower = Replicated::replica();
    for command in a.log.clone() {
        follower.input(Input::Applied { command, index: 0 });
    }
    // What only the leader tracks aside (as the state digest of `warren status` does).
    let replicated = |mut s: crate::snapshot::Snapshot| {
        for q in &mut s.queues {
            q.had_consumer = false;
        }
        s
    };
    assert_eq!(
        replicated(follower.broker.snapshot()),
        replicated(a.broker.snapshot())
    );
    assert!(follower.broker.queue_id(&"/".into(), "used").is_some());
    assert!(follower.broker.queue_id(&"/".into(), "full").is_some());
}

/// A connection id of cluster node `node` (the top bits name it).
fn conn_on(node: u64, n: u64) -> ConnId {
    (node << 52) | n
}

/// A committed command as every replica applies it.
fn committed(origin: Option<(ConnId, ChannelId)>, op: Op) -> Input {
    Input::Applied {
        index: 0,
        command: Command {
            version: STATE_MACHINE_VERSION,
            origin: origin.map(|(conn, channel)| Origin { conn, channel }),
            number: None,
            issued_at: 1_000,
            op,
        },
    }
}

fn declare_op(name: &str, durable: bool) -> Op {
    Op::DeclareQueue {
        vhost: "/".into(),
        name: name.into(),
        durable,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::default(),
        nowait: true,
    }
}

fn fanout_bind_op(queue: &str) -> Op {
    Op::Bind {
        vhost: "/".into(),
        source: "amq.fanout".into(),
        destination: Destination::Queue(queue.into()),
        routing_key: "".into(),
        arguments: FieldTable::default(),
        nowait: true,
    }
}

/// Node 2's broker, not leading: a durable queue `d`, a non-durable queue `t` declared by a
/// client `c` of node 2 (homed here) and `u` declared by a client of node 3, all bound to
/// `amq.fanout`; and a client connection `h` of node 2 with channel 1 open.
fn node_two_with_a_home_session() -> (Replicated, ConnId, ConnId) {
    let mut r = Replicated::on_node(2);
    let (c, h, other) = (conn_on(2, 1), conn_on(2, 2), conn_on(3, 1));
    r.input(committed(Some((c, 1)), declare_op("d", true)));
    r.input(committed(Some((c, 1)), declare_op("t", false)));
    r.input(committed(Some((other, 1)), declare_op("u", false)));
    for q in ["d", "t", "u"] {
        r.input(committed(None, fanout_bind_op(q)));
    }
    r.open(h);
    (r, c, h)
}

#[test]
fn a_home_session_declares_an_exclusive_queue_it_owns_and_its_client_closing_removes_it() {
    let (mut r, _c, h) = node_two_with_a_home_session();
    let e = r.method(
        h,
        Method::QueueDeclare(QueueDeclare {
            queue: "mine".into(),
            exclusive: true,
            ..Default::default()
        }),
    );
    let name = match &e[..] {
        [Effect::Send {
            conn,
            method: Method::QueueDeclareOk(ok),
            ..
        }] if *conn == h => ok.queue.clone(),
        _ => panic!("declare-ok through the home session: {e:?}"),
    };
    let declare = r.log.last().expect("proposed by the home session");
    assert_eq!(declare.origin.map(|o| o.conn), Some(h));
    assert_eq!(declare.number, Some(1));
    let id = r.broker.queue_id(&"/".into(), &name).expect("declared");
    assert_eq!(r.broker.queues[&id].home, 2, "homed on the client's node");
    // Its own: redeclared, consumed; another connection's channel is refused.
    let e = r.method(
        h,
        Method::QueueDeclare(QueueDeclare {
            queue: name.clone(),
            exclusive: true,
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
    let e = r.method(
        h,
        Method::BasicConsume(BasicConsume {
            queue: name.clone(),
            consumer_tag: "c".into(),
            ..Default::default()
        }),
    );
    assert!(
        matches!(
            &e[..],
            [Effect::Send {
                method: Method::BasicConsumeOk(_),
                ..
            }]
        ),
        "{e:?}"
    );
    r.now += 10_000;
    r.input(Input::Tick);
    assert!(
        r.broker.queue_id(&"/".into(), &name).is_some(),
        "not taken for an orphan: its owner, the home session, is here"
    );
    let other = conn_on(2, 3);
    r.open(other);
    let e = r.method(
        other,
        Method::QueueDeclare(QueueDeclare {
            queue: name.clone(),
            passive: true,
            ..Default::default()
        }),
    );
    assert!(
        matches!(&e[..], [Effect::CloseChannel { error, .. }] if error.code == 405),
        "{e:?}"
    );
    // The connection closes: the queue goes.
    r.input(Input::ConnectionClosed { conn: h });
    assert!(
        r.broker.queue_id(&"/".into(), &name).is_none(),
        "removed with its owner"
    );
}

#[test]
fn a_home_session_serves_local_queues_here_forwards_others_and_logs_the_replicated_part() {
    let (mut r, _c, h) = node_two_with_a_home_session();
    r.method(h, Method::ConfirmSelect(ConfirmSelect { nowait: true }));
    assert!(
        r.log.is_empty(),
        "a home session's confirm.select is not logged"
    );
    let e = r.input(Input::Publish {
        conn: h,
        channel: 1,
        publish: BasicPublish {
            exchange: "amq.fanout".into(),
            mandatory: true,
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"m"),
    });
    let message = Arc::new(Message {
        exchange: "amq.fanout".into(),
        routing_key: "".into(),
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"m"),
    });
    let u = r.broker.queue_id(&"/".into(), "u").expect("u");
    assert_eq!(
        e,
        vec![
            Effect::Forward {
                home: 3,
                queue: u,
                message,
            },
            send(
                h,
                Method::BasicAck(BasicAck {
                    delivery_tag: 1,
                    multiple: false
                })
            ),
        ],
        "u forwarded to node 3; the replicated part logged from here and confirmed when \
         applied here (the harness applies at once)"
    );
    let d = r.broker.queue_id(&"/".into(), "d").expect("d");
    assert_eq!(
        r.log,
        vec![Command {
            version: STATE_MACHINE_VERSION,
            origin: Some(Origin {
                conn: h,
                channel: 1
            }),
            number: None,
            issued_at: r.now,
            op: Op::Publish {
                vhost: "/".into(),
                exchange: "amq.fanout".into(),
                routing_key: "".into(),
                mandatory: false,
                confirm: Some(1),
                properties: BasicProperties::default(),
                body: Bytes::from_static(b"m"),
                queues: Some(vec![d]),
            },
        }],
        "one logged publish, numbered for the log, naming the replicated queue it was routed \
         to, not mandatory any more (a local queue took it)"
    );
    assert_eq!(
        r.broker.queues[&d].ready_count(),
        1,
        "d has it from the log"
    );
    assert_eq!(r.get_all(h, "t"), ["m"], "t holds it here");
    let get = Method::BasicGet(BasicGet {
        queue: "d".into(),
        ..Default::default()
    });
    let e = r.method(h, get.clone());
    assert!(
        matches!(
            &e[..],
            [Effect::Send {
                method: Method::BasicGetEmpty(_),
                ..
            }]
        ),
        "no leader known: only the next one knows what is ready, so nothing is: {e:?}"
    );
    r.input(Input::Leader { node: Some(1) });
    let e = r.method(h, get);
    assert!(
        matches!(
            &e[..],
            [Effect::ToOwner {
                node: 1,
                command: crate::QueueCommand::Get { .. }
            }]
        ),
        "with a leader known, the get goes to it: {e:?}"
    );
}

#[test]
fn a_channels_logged_publishes_are_numbered_without_gaps_across_its_lives_and_confirmed_with_the_clients_numbers(
) {
    let (mut r, _c, h) = node_two_with_a_home_session();
    let publish = |r: &mut Replicated, queue: &str| {
        r.input(Input::Publish {
            conn: h,
            channel: 1,
            publish: BasicPublish {
                routing_key: queue.into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"m"),
        })
    };
    let logged_numbers = |r: &Replicated| -> Vec<Option<u64>> {
        r.log
            .iter()
            .filter_map(|c| match c.op {
                Op::Publish { confirm, .. } => Some(confirm),
                _ => None,
            })
            .collect()
    };
    r.method(h, Method::ConfirmSelect(ConfirmSelect { nowait: true }));
    // Client publishes 1 (local queue t: no log entry) and 2 (replicated d: log number 1).
    assert_eq!(confirms(&publish(&mut r, "t")), vec![1]);
    assert_eq!(confirms(&publish(&mut r, "d")), vec![2]);
    assert_eq!(
        logged_numbers(&r),
        vec![Some(1)],
        "no gap for the local one"
    );
    // A copy of log entry 1 applied again (the proposer sent it again after a leader change):
    // recognised, neither enqueued nor confirmed a second time.
    let again = r.log[r.log.len() - 1].clone();
    let e = r.input(Input::Applied {
        command: again,
        index: 0,
    });
    assert_eq!(confirms(&e), Vec::<u64>::new());
    let d = r.broker.queue_id(&"/".into(), "d").expect("d");
    assert_eq!(r.broker.queues[&d].ready_count(), 1);
    // The channel closes and opens again: the client numbers from 1, the log goes on from 2,
    // so the new publish is not taken for a re-send of entry 1.
    r.method(h, Method::ChannelClose(ChannelClose::default()));
    r.method(h, Method::ChannelOpen(ChannelOpen::default()));
    r.method(h, Method::ConfirmSelect(ConfirmSelect { nowait: true }));
    assert_eq!(confirms(&publish(&mut r, "d")), vec![1]);
    assert_eq!(logged_numbers(&r), vec![Some(1), Some(2)]);
    assert_eq!(r.broker.queues[&d].ready_count(), 2, "enqueued");
    // A channel without confirms numbers its logged publishes too (a copy sent again after a
    // leader change must be known), and confirms nothing.
    r.input(Input::Method {
        conn: h,
        channel: 2,
        method: Method::ChannelOpen(ChannelOpen::default()),
    });
    let e = r.input(Input::Publish {
        conn: h,
        channel: 2,
        publish: BasicPublish {
            routing_key: "d".into(),
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"plain"),
    });
    assert_eq!(confirms(&e), Vec::<u64>::new());
    assert_eq!(logged_numbers(&r), vec![Some(1), Some(2), Some(1)]);
    let again = r.log[r.log.len() - 1].clone();
    r.input(Input::Applied {
        command: again,
        index: 0,
    });
    assert_eq!(
        r.broker.queues[&d].ready_count(),
        3,
        "the copy is not enqueued"
    );
}

#[test]
fn a_sync_is_answered_once_the_home_sessions_logged_publishes_are_applied() {
    let (mut r, _c, h) = node_two_with_a_home_session();
    r.method(h, Method::ConfirmSelect(ConfirmSelect { nowait: true }));
    // The publish to the replicated queue d is proposed, not applied yet.
    let mut out = Vec::new();
    r.broker.handle(
        r.now,
        Input::Publish {
            conn: h,
            channel: 1,
            publish: BasicPublish {
                routing_key: "d".into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"m"),
        },
        &mut out,
    );
    let command = match &out[..] {
        [Effect::Propose { command }] => command.clone(),
        other => panic!("expected one proposal: {other:?}"),
    };
    let mut out = Vec::new();
    r.broker
        .handle(r.now, Input::Sync { conn: h, token: 7 }, &mut out);
    assert_eq!(out, vec![], "the sync waits for the publish");
    let e = r.input(Input::Applied { command, index: 0 });
    assert_eq!(
        e,
        vec![
            send(
                h,
                Method::BasicAck(BasicAck {
                    delivery_tag: 1,
                    multiple: false
                })
            ),
            Effect::Synced { conn: h, token: 7 },
        ],
        "applied: confirmed, then the sync answered"
    );
    // With nothing in flight a sync is answered at once.
    assert_eq!(
        r.input(Input::Sync { conn: h, token: 8 }),
        vec![Effect::Synced { conn: h, token: 8 }]
    );
}

#[test]
fn a_copy_of_a_publish_sent_again_does_not_count_as_a_later_publish_applied() {
    // After a leader change the proposer sends unapplied publishes again; when both copies
    // commit, the second is confirmed and dropped — and must not let a sync through while a
    // later publish of the channel is still on its way (seen in failover tests: a passive
    // declare through the new leader counted 2 944 of 3 000 messages).
    let (mut r, _c, h) = node_two_with_a_home_session();
    let mut proposed = Vec::new();
    for body in [b"m1", b"m2"] {
        let mut out = Vec::new();
        r.broker.handle(
            r.now,
            Input::Publish {
                conn: h,
                channel: 1,
                publish: BasicPublish {
                    routing_key: "d".into(),
                    ..Default::default()
                },
                properties: BasicProperties::default(),
                body: Bytes::from_static(body),
            },
            &mut out,
        );
        match &out[..] {
            [Effect::Propose { command }] => proposed.push(command.clone()),
            other => panic!("expected one proposal: {other:?}"),
        }
    }
    let mut out = Vec::new();
    r.broker
        .handle(r.now, Input::Sync { conn: h, token: 7 }, &mut out);
    assert_eq!(out, vec![]);
    let first = proposed[0].clone();
    r.input(Input::Applied {
        command: first.clone(),
        index: 0,
    });
    let e = r.input(Input::Applied {
        command: first,
        index: 0,
    });
    assert_eq!(e, vec![], "m2 is not applied yet: the sync still waits");
    let d = r.broker.queue_id(&"/".into(), "d").expect("d");
    assert_eq!(
        r.broker.queues[&d].ready_count(),
        1,
        "the copy is not enqueued"
    );
    let e = r.input(Input::Applied {
        command: proposed[1].clone(),
        index: 0,
    });
    assert_eq!(e, vec![Effect::Synced { conn: h, token: 7 }]);
}

#[test]
fn a_logged_publish_fills_only_replicated_queues_and_a_forwarded_one_its_local_queue() {
    let (mut r, c, h) = node_two_with_a_home_session();
    // The leader logged the replicated part of a publish to amq.fanout.
    r.input(committed(
        Some((c, 1)),
        Op::Publish {
            vhost: "/".into(),
            exchange: "amq.fanout".into(),
            routing_key: "".into(),
            mandatory: false,
            confirm: None,
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"logged"),
            queues: None,
        },
    ));
    let t = r.broker.queue_id(&"/".into(), "t").expect("t");
    let d = r.broker.queue_id(&"/".into(), "d").expect("d");
    assert_eq!(
        r.broker.queues[&d].ready_count(),
        1,
        "the replica has it in d"
    );
    assert_eq!(r.broker.queues[&t].ready_count(), 0, "never from the log");
    // Node 3 forwards a message for t; a refused one is reported back.
    let forwarded = |body: &'static str| Input::Forwarded {
        from: 3,
        seq: 7,
        queue: t,
        message: Message {
            exchange: "".into(),
            routing_key: "t".into(),
            properties: BasicProperties::default(),
            body: Bytes::from_static(body.as_bytes()),
        },
    };
    assert_eq!(r.input(forwarded("f")), vec![]);
    assert_eq!(r.get_all(h, "t"), ["f"]);
    // Make t refuse: x-max-length 0 with reject-publish (set directly: a test of the refusal).
    if let Some(q) = r.broker.queues.get_mut(&t) {
        q.args.max_length = Some(0);
        q.args.overflow = Some(crate::queue::Overflow::RejectPublish);
    }
    assert_eq!(
        r.input(forwarded("g")),
        vec![Effect::ForwardRefused { to: 3, seq: 7 }]
    );
}

#[test]
fn a_local_queue_goes_when_its_removal_is_applied_and_its_delete_ok_with_it() {
    let (mut r, _c, h) = node_two_with_a_home_session();
    // Not leading and proposals not committed: hold what the home proposes.
    let mut out = Vec::new();
    r.broker.handle(
        r.now,
        Input::Method {
            conn: h,
            channel: 1,
            method: Method::QueueDelete(QueueDelete {
                queue: "t".into(),
                ..Default::default()
            }),
        },
        &mut out,
    );
    let t = r.broker.queue_id(&"/".into(), "t").expect("still there");
    assert_eq!(
        out,
        vec![Effect::Propose {
            command: Command {
                version: STATE_MACHINE_VERSION,
                origin: None,
                number: None,
                issued_at: r.now,
                op: Op::RemoveQueue { queue: t },
            }
        }],
        "only the removal is proposed; no delete-ok yet"
    );
    // Meanwhile the channel's next method waits (it must see the queue gone), and so does
    // another channel's: the queue is going, which clients no longer see.
    let passive = Method::QueueDeclare(QueueDeclare {
        queue: "t".into(),
        passive: true,
        ..Default::default()
    });
    r.input(Input::Method {
        conn: h,
        channel: 2,
        method: Method::ChannelOpen(ChannelOpen::default()),
    });
    let mut later = Vec::new();
    for channel in [1, 2] {
        r.broker.handle(
            r.now,
            Input::Method {
                conn: h,
                channel,
                method: passive.clone(),
            },
            &mut later,
        );
    }
    assert_eq!(later, vec![]);
    let e = r.input(committed(None, Op::RemoveQueue { queue: t }));
    let gone = |channel| Effect::CloseChannel {
        conn: h,
        channel,
        error: AmqpError::not_found("no queue 't' in vhost '/'").caused_by(50, 10),
    };
    assert_eq!(
        e,
        vec![
            send(h, Method::QueueDeleteOk(QueueDeleteOk { message_count: 0 })),
            gone(1),
            gone(2),
        ],
        "delete-ok when applied; the passive declares run again here and find it gone"
    );
}

#[test]
fn stepping_down_keeps_the_home_sessions_and_the_local_queues_homed_here() {
    let (mut r, c, h) = node_two_with_a_home_session();
    r.broker.set_leading(true);
    // The client's leader session lives here too while this node leads.
    r.open(c);
    r.input(committed(
        Some((c, 1)),
        Op::Publish {
            vhost: "/".into(),
            exchange: "".into(),
            routing_key: "d".into(),
            mandatory: false,
            confirm: None,
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"durable"),
            queues: None,
        },
    ));
    r.input(Input::Forwarded {
        from: 3,
        seq: 1,
        queue: r.broker.queue_id(&"/".into(), "t").expect("t"),
        message: Message {
            exchange: "".into(),
            routing_key: "t".into(),
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"transient"),
        },
    });
    let consume = |queue: &str| {
        Method::BasicConsume(BasicConsume {
            queue: queue.into(),
            consumer_tag: queue.into(),
            ..Default::default()
        })
    };
    assert_eq!(deliveries(&r.method(c, consume("d"))).len(), 1);
    assert_eq!(deliveries(&r.method(h, consume("t"))).len(), 1);
    r.broker.step_down();
    assert!(
        r.broker.connections.contains_key(&c) && r.broker.connections.contains_key(&h),
        "this node's client connections stay"
    );
    let d = r.broker.queue_id(&"/".into(), "d").expect("d");
    let t = r.broker.queue_id(&"/".into(), "t").expect("t");
    assert_eq!(
        r.broker.queues[&d].ready_count(),
        1,
        "ready again for the next leader"
    );
    assert_eq!(r.broker.queues[&d].consumer_count(), 0);
    assert_eq!(
        r.broker.queues[&t].unacked_count(),
        1,
        "still with its consumer"
    );
    assert_eq!(r.broker.queues[&t].consumer_count(), 1);
    // The home session goes on: acking its delivery works.
    let e = r.method(
        h,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert_eq!(e, vec![]);
    assert_eq!(r.broker.queues[&t].unacked_count(), 0);
}

/// A replicated (durable) queue keeps only a reference to the log entry of each message; the
/// message is read back through the records port when it is delivered or dead-lettered, and a
/// snapshot names the entries instead of holding the messages.
#[test]
fn a_replicated_queue_keeps_log_references_and_reads_messages_back() {
    let mut w = World::new();
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange", FieldValue::LongStr("".into()));
    args.insert(
        "x-dead-letter-routing-key",
        FieldValue::LongStr("failures".into()),
    );
    for (name, arguments) in [("failures", FieldTable::default()), ("work", args)] {
        w.method(
            C1,
            1,
            Method::QueueDeclare(QueueDeclare {
                queue: name.into(),
                durable: true,
                arguments,
                ..Default::default()
            }),
        );
    }
    let persistent = BasicProperties {
        delivery_mode: Some(2),
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    for body in ["one", "two"] {
        w.publish_with(C1, "", "work", body, false, persistent.clone());
    }
    let snap = w.broker.snapshot();
    let work = snap
        .queues
        .iter()
        .find(|q| q.name.as_str() == "work")
        .expect("work");
    assert_eq!(work.entries.len(), 2);
    assert!(
        work.entries
            .iter()
            .all(|e| e.is_ok_and(|e| e.stored.is_some_and(|r| r.persistent && r.len == 3))),
        "{work:?}"
    );
    assert!(snap.messages.is_empty(), "{:?}", snap.messages);

    let get = |w: &mut World, queue: &str| {
        w.method(
            C1,
            1,
            Method::BasicGet(BasicGet {
                queue: queue.into(),
                ..Default::default()
            }),
        )
    };
    let e = get(&mut w, "work");
    let [Effect::SendContent {
        method: Method::BasicGetOk(ok),
        properties,
        body,
        ..
    }] = &e[..]
    else {
        panic!("{e:?}")
    };
    assert_eq!(body.as_ref(), b"one");
    assert_eq!(ok.routing_key.as_str(), "work");
    assert_eq!(properties.content_type, persistent.content_type);

    // Rejected: the dead-lettered copy (new properties: x-death) is held in memory.
    w.method(
        C1,
        1,
        Method::BasicReject(BasicReject {
            delivery_tag: 1,
            requeue: false,
        }),
    );
    let snap = w.broker.snapshot();
    assert_eq!(snap.messages.len(), 1, "the dead-lettered copy");
    assert_eq!(snap.messages[0].body.as_ref(), b"one");
    let e = get(&mut w, "failures");
    let [Effect::SendContent {
        properties, body, ..
    }] = &e[..]
    else {
        panic!("{e:?}")
    };
    assert_eq!(body.as_ref(), b"one");
    assert!(properties
        .headers
        .as_ref()
        .is_some_and(|h| h.get("x-death").is_some()));
    let e = get(&mut w, "work");
    assert_eq!(bodies(&e), vec!["two".to_string()]);
}

#[test]
fn a_priority_queue_delivers_by_priority_through_the_log_a_snapshot_and_an_older_log() {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-priority", FieldValue::I32(5));
    let mut a = Replicated::new();
    a.open(C1);
    a.declare_durable(C1, "pq", arguments);
    for (body, priority) in [
        ("a0", None),
        ("b5", Some(5)),
        ("c9", Some(9)),
        ("d1", Some(1)),
        ("e0", Some(0)),
    ] {
        a.input(Input::Publish {
            conn: C1,
            channel: 1,
            publish: BasicPublish {
                routing_key: "pq".into(),
                ..Default::default()
            },
            properties: BasicProperties {
                delivery_mode: Some(2),
                priority,
                ..Default::default()
            },
            body: Bytes::from_static(body.as_bytes()),
        });
    }
    // A snapshot taken with the messages queued restores their levels (9 counts as 5).
    let mut restored = Replicated::new();
    restored
        .broker
        .restore(a.broker.snapshot(), &mut Vec::new())
        .expect("restores");
    assert_eq!(restored.broker.snapshot(), a.broker.snapshot());
    restored.open(C2);
    assert_eq!(restored.get_all(C2, "pq"), ["b5", "c9", "d1", "a0", "e0"]);
    // A log written before version 9 replays in arrival order, as it was delivered then.
    let older: Vec<Command> = a
        .log
        .iter()
        .cloned()
        .map(|mut c| {
            c.version = 8;
            c
        })
        .collect();
    let mut replayed = Replicated::new();
    for command in older {
        replayed.input(Input::Applied { command, index: 0 });
    }
    replayed.open(C2);
    assert_eq!(replayed.get_all(C2, "pq"), ["a0", "b5", "c9", "d1", "e0"]);
    // The leader itself.
    a.open(C2);
    assert_eq!(a.get_all(C2, "pq"), ["b5", "c9", "d1", "a0", "e0"]);
}

#[test]
fn the_highest_priority_consumer_with_credit_gets_the_message() {
    const C3: ConnId = 3;
    let mut a = Replicated::new();
    for conn in [C1, C2, C3] {
        a.open(conn);
    }
    a.declare_durable(C1, "work", FieldTable::default());
    let consume = |a: &mut Replicated, conn, tag: &str, priority: Option<i32>, prefetch| {
        a.method(
            conn,
            Method::BasicQos(warren_wire::BasicQos {
                prefetch_count: prefetch,
                ..Default::default()
            }),
        );
        let mut arguments = FieldTable::default();
        if let Some(p) = priority {
            arguments.insert("x-priority", FieldValue::I32(p));
        }
        a.method(
            conn,
            Method::BasicConsume(BasicConsume {
                queue: "work".into(),
                consumer_tag: tag.into(),
                arguments,
                ..Default::default()
            }),
        )
    };
    // C2 consumes at priority 10 with room for two; C3 at the default priority 0.
    consume(&mut a, C3, "low", None, 10);
    consume(&mut a, C2, "high", Some(10), 2);
    let to = |a: &mut Replicated, body: &'static str| -> Vec<ConnId> {
        let effects = a.input(Input::Publish {
            conn: C1,
            channel: 1,
            publish: BasicPublish {
                routing_key: "work".into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(body.as_bytes()),
        });
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::SendContent {
                    conn,
                    method: Method::BasicDeliver(_),
                    ..
                } => Some(*conn),
                _ => None,
            })
            .collect()
    };
    assert_eq!(to(&mut a, "1"), [C2]);
    assert_eq!(to(&mut a, "2"), [C2]);
    // The high one has no credit left: the low one gets what comes.
    assert_eq!(to(&mut a, "3"), [C3]);
    assert_eq!(to(&mut a, "4"), [C3]);
    // An ack frees the high one's window: it is offered the next again.
    a.method(
        C2,
        Method::BasicAck(BasicAck {
            delivery_tag: 1,
            multiple: false,
        }),
    );
    assert_eq!(to(&mut a, "5"), [C2]);
    // A consumer priority that is not an integer is refused as RabbitMQ refuses it.
    let mut arguments = FieldTable::default();
    arguments.insert("x-priority", FieldValue::LongStr("high".into()));
    let e = a.method(
        C3,
        Method::BasicConsume(BasicConsume {
            queue: "work".into(),
            consumer_tag: "worse".into(),
            arguments,
            ..Default::default()
        }),
    );
    assert!(
        e.iter().any(|e| matches!(e, Effect::CloseChannel { error, .. } if error.code == 406
            && error.text.contains("invalid arg 'x-priority' for queue 'work' in vhost '/': {unacceptable_type,longstr}"))),
        "{e:?}"
    );
}

#[test]
fn a_quorum_queue_counts_deliveries_and_dead_letters_past_its_limit_on_every_replica() {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
    arguments.insert("x-delivery-limit", FieldValue::I32(2));
    arguments.insert("x-dead-letter-exchange", FieldValue::LongStr("".into()));
    arguments.insert(
        "x-dead-letter-routing-key",
        FieldValue::LongStr("dlq".into()),
    );
    let mut a = Replicated::new();
    a.open(C1);
    a.declare_durable(C1, "dlq", FieldTable::default());
    a.declare_durable(C1, "poison", arguments);
    a.publish(C1, "poison", "bad");
    // (x-delivery-count, redelivered) of each basic.get; each is nacked with requeue.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = a.method(
            C1,
            Method::BasicGet(BasicGet {
                queue: "poison".into(),
                ..Default::default()
            }),
        );
        let (tag, count, redelivered) = match &e[..] {
            [Effect::SendContent {
                method: Method::BasicGetOk(ok),
                properties,
                ..
            }] => (
                ok.delivery_tag,
                properties
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("x-delivery-count").cloned()),
                ok.redelivered,
            ),
            other => panic!("a get-ok, not {other:?}"),
        };
        seen.push((count, redelivered));
        a.method(
            C1,
            Method::BasicNack(warren_wire::BasicNack {
                delivery_tag: tag,
                multiple: false,
                requeue: true,
            }),
        );
    }
    assert_eq!(
        seen,
        [
            (None, false),
            (Some(FieldValue::I64(1)), true),
            (Some(FieldValue::I64(2)), true)
        ]
    );
    // The third return passes the limit of 2: the message is dead-lettered, not requeued.
    let view = a.broker.view();
    let ready = |name: &str| {
        view.queues
            .iter()
            .find(|q| q.name == name)
            .map(|q| q.messages_ready)
    };
    assert_eq!((ready("poison"), ready("dlq")), (Some(0), Some(1)));
    let e = a.method(
        C1,
        Method::BasicGet(BasicGet {
            queue: "dlq".into(),
            no_ack: true,
            ..Default::default()
        }),
    );
    let reason = match &e[..] {
        [Effect::SendContent { properties, .. }] => properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-death"))
            .map(|d| format!("{d:?}")),
        other => panic!("a get-ok, not {other:?}"),
    };
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("delivery_limit")),
        "{reason:?}"
    );
    // A replica that applied the same log holds the same state (the count is replicated).
    let replica = a.replayed();
    assert_eq!(replica.broker.snapshot().queues, a.broker.snapshot().queues);
}

#[test]
fn a_quorum_queue_defaults_to_a_delivery_limit_of_20_and_counts_across_a_snapshot() {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
    let mut a = Replicated::new();
    a.open(C1);
    a.declare_durable(C1, "qq", arguments);
    a.publish(C1, "qq", "m");
    let mut gets = 0;
    loop {
        let e = a.method(
            C1,
            Method::BasicGet(BasicGet {
                queue: "qq".into(),
                ..Default::default()
            }),
        );
        let [Effect::SendContent {
            method: Method::BasicGetOk(ok),
            ..
        }] = &e[..]
        else {
            break;
        };
        gets += 1;
        if gets == 10 {
            // Half-way, a follower restored from a snapshot agrees on the count so far.
            let mut restored = Replicated::replica();
            restored
                .broker
                .restore(a.broker.snapshot(), &mut Vec::new())
                .expect("restores");
            assert_eq!(restored.broker.snapshot(), a.broker.snapshot());
        }
        a.method(
            C1,
            Method::BasicNack(warren_wire::BasicNack {
                delivery_tag: ok.delivery_tag,
                multiple: false,
                requeue: true,
            }),
        );
    }
    // Delivered 21 times (20 returns allowed), then dropped: no dead-letter exchange.
    assert_eq!(gets, 21);
}

#[test]
fn a_single_active_consumer_queue_delivers_to_its_first_consumer_until_it_goes() {
    const C3: ConnId = 3;
    let mut a = Replicated::new();
    for conn in [C1, C2, C3] {
        a.open(conn);
    }
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer", FieldValue::Bool(true));
    a.declare_durable(C1, "sac", arguments);
    for (conn, tag) in [(C2, "first"), (C3, "second")] {
        a.method(
            conn,
            Method::BasicConsume(BasicConsume {
                queue: "sac".into(),
                consumer_tag: tag.into(),
                ..Default::default()
            }),
        );
    }
    let receivers = |effects: &[Effect]| -> Vec<(ConnId, String)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::SendContent {
                    conn,
                    method: Method::BasicDeliver(_),
                    body,
                    ..
                } => Some((*conn, String::from_utf8_lossy(body).into_owned())),
                _ => None,
            })
            .collect()
    };
    let mut got = Vec::new();
    for body in ["1", "2", "3"] {
        got.extend(receivers(&a.input(Input::Publish {
            conn: C1,
            channel: 1,
            publish: BasicPublish {
                routing_key: "sac".into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(body.as_bytes()),
        })));
    }
    assert_eq!(
        got,
        [(C2, "1".into()), (C2, "2".into()), (C2, "3".into())],
        "only the first consumer receives"
    );
    let view = a.broker.view();
    let q = view.queues.iter().find(|q| q.name == "sac").expect("sac");
    assert_eq!(q.single_active_consumer_tag.as_deref(), Some("first"));
    let active: Vec<(String, bool)> = view
        .consumers
        .iter()
        .map(|k| (k.tag.clone(), k.active))
        .collect();
    assert!(active.contains(&("first".into(), true)) && active.contains(&("second".into(), false)));
    // The active consumer's channel closes: its unacked messages go back in order, to the next.
    let e = a.method(
        C2,
        Method::ChannelClose(warren_wire::ChannelClose {
            reply_code: 200,
            ..Default::default()
        }),
    );
    assert_eq!(
        receivers(&e),
        [(C3, "1".into()), (C3, "2".into()), (C3, "3".into())],
        "the next consumer takes over, in order"
    );
    let view = a.broker.view();
    let q = view.queues.iter().find(|q| q.name == "sac").expect("sac");
    assert_eq!(q.single_active_consumer_tag.as_deref(), Some("second"));
}

#[test]
fn a_consumer_that_holds_a_delivery_past_its_timeout_is_cancelled_and_the_message_returns() {
    let mut a = Replicated::new();
    a.open(C1);
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
    a.declare_durable(C1, "slow", quorum);
    let mut arguments = FieldTable::default();
    arguments.insert("x-consumer-timeout", FieldValue::I32(1_000));
    a.method(
        C1,
        Method::BasicConsume(BasicConsume {
            queue: "slow".into(),
            consumer_tag: "c".into(),
            arguments,
            ..Default::default()
        }),
    );
    a.publish(C1, "slow", "m");
    a.now += 1_000;
    assert!(
        a.input(Input::Tick).is_empty(),
        "not late yet at exactly the timeout"
    );
    a.now += 1;
    let e = a.input(Input::Tick);
    assert!(
        e.iter().any(|e| matches!(e, Effect::Send { conn: C1, method: Method::BasicCancel(c), .. } if c.consumer_tag.as_str() == "c")),
        "{e:?}"
    );
    // The message is back, counted as returned (a quorum queue), and the channel is open.
    let view = a.broker.view();
    let q = view.queues.iter().find(|q| q.name == "slow").expect("slow");
    assert_eq!(
        (q.messages_ready, q.messages_unacknowledged, q.consumers),
        (1, 0, 0)
    );
    assert_eq!(a.get_all(C1, "slow"), ["m"]);
}

#[test]
fn a_client_without_cancel_notify_loses_its_channel_after_the_node_timeout() {
    let mut a = Replicated::new();
    a.open(C1);
    // C2 announces no capabilities.
    a.input(Input::Login {
        conn: C2,
        mechanism: "PLAIN".into(),
        username: "guest".into(),
        password: "guest".into(),
        peer_loopback: true,
        client_properties: FieldTable::default(),
    });
    a.input(Input::OpenVhost {
        conn: C2,
        vhost: "/".into(),
    });
    a.method(C2, Method::ChannelOpen(ChannelOpen::default()));
    a.declare_durable(C1, "work", FieldTable::default());
    a.publish(C1, "work", "1");
    a.publish(C1, "work", "2");
    a.method(
        C2,
        Method::BasicConsume(BasicConsume {
            queue: "work".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        }),
    );
    a.now += crate::DEFAULT_CONSUMER_TIMEOUT + 1;
    let e = a.input(Input::Tick);
    let closed: Vec<(ConnId, u16, String)> = e
        .iter()
        .filter_map(|e| match e {
            Effect::CloseChannel { conn, error, .. } => {
                Some((*conn, error.code, error.text.to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        closed,
        [(
            C2,
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value \
             used: 1800000 ms. This timeout value can be configured, see consumers doc guide to \
             learn more"
                .into()
        )]
    );
    let view = a.broker.view();
    let q = view.queues.iter().find(|q| q.name == "work").expect("work");
    assert_eq!((q.messages_ready, q.messages_unacknowledged), (2, 0));
}

fn policy_command(op: Op) -> Command {
    Command {
        version: STATE_MACHINE_VERSION,
        origin: None,
        number: None,
        issued_at: 1_000,
        op,
    }
}

impl Replicated {
    /// A replica that applied this broker's log from the start.
    fn replayed(&self) -> Replicated {
        let mut replica = Replicated::replica();
        for command in self.log.iter().cloned() {
            replica.input(Input::Applied { command, index: 0 });
        }
        replica
    }

    /// Applies an operator's command (as the access service commits it), in the log too.
    fn commit(&mut self, command: Command) {
        self.log.push(command.clone());
        self.input(Input::Applied { command, index: 0 });
    }
}

fn set_policy(
    name: &str,
    operator: bool,
    pattern: &str,
    definition: &[(&str, FieldValue)],
) -> Command {
    let mut table = FieldTable::default();
    for (k, v) in definition {
        table.insert(*k, v.clone());
    }
    policy_command(Op::SetPolicy {
        vhost: "/".into(),
        name: name.into(),
        operator,
        pattern: pattern.into(),
        apply_to: "queues".into(),
        priority: 0,
        definition: table,
    })
}

#[test]
fn a_policy_applies_to_existing_and_future_queues_at_once_and_goes_when_cleared() {
    let mut a = Replicated::new();
    a.open(C1);
    a.declare_durable(C1, "lim.old", FieldTable::default());
    for body in ["1", "2", "3", "4"] {
        a.publish(C1, "lim.old", body);
    }
    a.commit(set_policy(
        "cap",
        false,
        "^lim\\.",
        &[("max-length", FieldValue::I32(2))],
    ));
    let ready = |a: &Replicated, name: &str| {
        a.broker
            .view()
            .queues
            .iter()
            .find(|q| q.name == name)
            .map(|q| (q.messages_ready, q.policy.clone()))
    };
    // The existing queue is cut to the limit at once (drop-head): the oldest go.
    assert_eq!(ready(&a, "lim.old"), Some((2, Some("cap".into()))));
    a.declare_durable(C1, "lim.new", FieldTable::default());
    a.declare_durable(C1, "other", FieldTable::default());
    for body in ["1", "2", "3"] {
        a.publish(C1, "lim.new", body);
        a.publish(C1, "other", body);
    }
    assert_eq!(ready(&a, "lim.new"), Some((2, Some("cap".into()))));
    assert_eq!(ready(&a, "other"), Some((3, None)));
    // An operator policy with a lower limit wins; the queue's own argument counts too.
    a.commit(set_policy(
        "ops",
        true,
        ".*",
        &[("max-length", FieldValue::I32(1))],
    ));
    let view = a.broker.view();
    let q = view
        .queues
        .iter()
        .find(|q| q.name == "lim.new")
        .expect("lim.new");
    assert_eq!(
        (q.messages_ready, q.operator_policy.as_deref()),
        (1, Some("ops"))
    );
    assert_eq!(
        q.effective_policy_definition,
        [("max-length".to_string(), crate::view::ArgValue::Int(1))]
    );
    // Both cleared: no limit any more.
    for (name, operator) in [("cap", false), ("ops", true)] {
        a.commit(policy_command(Op::ClearPolicy {
            vhost: "/".into(),
            name: name.into(),
            operator,
        }));
    }
    for body in ["4", "5", "6"] {
        a.publish(C1, "lim.new", body);
    }
    assert_eq!(ready(&a, "lim.new"), Some((4, None)));
    // A replica that applied the same log agrees; so does a restore from a snapshot.
    let replica = a.replayed();
    assert_eq!(replica.broker.snapshot().queues, a.broker.snapshot().queues);
}

#[test]
fn policies_survive_a_snapshot_and_a_policy_alternate_exchange_routes() {
    let mut a = Replicated::new();
    a.open(C1);
    a.method(
        C1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "orders".into(),
            kind: "direct".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.method(
        C1,
        Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "catch-all".into(),
            kind: "fanout".into(),
            durable: true,
            ..Default::default()
        }),
    );
    a.declare_durable(C1, "unrouted", FieldTable::default());
    a.bind(C1, "unrouted", "catch-all", "");
    let mut ae = FieldTable::default();
    ae.insert(
        "alternate-exchange",
        FieldValue::LongStr("catch-all".into()),
    );
    a.commit(policy_command(Op::SetPolicy {
        vhost: "/".into(),
        name: "ae".into(),
        operator: false,
        pattern: "^orders$".into(),
        apply_to: "exchanges".into(),
        priority: 1,
        definition: ae,
    }));
    a.commit(set_policy(
        "ttl",
        false,
        "^unrouted$",
        &[("message-ttl", FieldValue::I32(60_000))],
    ));
    let mut restored = Replicated::new();
    restored
        .broker
        .restore(a.broker.snapshot(), &mut Vec::new())
        .expect("restores");
    assert_eq!(restored.broker.snapshot(), a.broker.snapshot());
    let view = restored.broker.view();
    assert_eq!(view.policies.len(), 2);
    let x = view
        .exchanges
        .iter()
        .find(|x| x.name == "orders")
        .expect("orders");
    assert_eq!(x.policy.as_deref(), Some("ae"));
    // The policy's alternate exchange takes what orders cannot route. (Another connection:
    // the snapshot remembers C1's channel 1 as a numbered publisher.)
    restored.open(C2);
    restored.input(Input::Publish {
        conn: C2,
        channel: 1,
        publish: BasicPublish {
            exchange: "orders".into(),
            routing_key: "unrouted".into(),
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"m"),
    });
    assert_eq!(restored.get_all(C2, "unrouted"), ["m"]);
}

/// (consumer connection, x-stream-offset, body) of each delivery among `effects`.
fn stream_deliveries(effects: &[Effect]) -> Vec<(ConnId, i64, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendContent {
                conn,
                method: Method::BasicDeliver(_),
                properties,
                body,
                ..
            } => {
                let offset = match properties
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("x-stream-offset"))
                {
                    Some(FieldValue::I64(n)) => *n,
                    other => panic!("a stream delivery carries its offset, not {other:?}"),
                };
                Some((*conn, offset, String::from_utf8_lossy(body).into_owned()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_stream_keeps_its_messages_and_each_consumer_reads_from_its_own_offset() {
    const C3: ConnId = 3;
    let mut a = Replicated::new();
    for conn in [C1, C2, C3] {
        a.open(conn);
    }
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type", FieldValue::LongStr("stream".into()));
    arguments.insert("x-max-length-bytes", FieldValue::I32(5));
    a.declare_durable(C1, "s", arguments);
    for body in ["0", "1", "2"] {
        a.publish(C1, "s", body);
    }
    let consume = |a: &mut Replicated, conn, offset: FieldValue, prefetch| {
        a.method(
            conn,
            Method::BasicQos(warren_wire::BasicQos {
                prefetch_count: prefetch,
                ..Default::default()
            }),
        );
        let mut arguments = FieldTable::default();
        arguments.insert("x-stream-offset", offset);
        a.method(
            conn,
            Method::BasicConsume(BasicConsume {
                queue: "s".into(),
                consumer_tag: "c".into(),
                arguments,
                ..Default::default()
            }),
        )
    };
    // From the first offset, two at a time (prefetch 2).
    let e = consume(&mut a, C2, FieldValue::LongStr("first".into()), 2);
    assert_eq!(
        stream_deliveries(&e),
        [(C2, 0, "0".into()), (C2, 1, "1".into())]
    );
    // From offset 1, and from what comes next.
    let e = consume(&mut a, C3, FieldValue::I64(1), 10);
    assert_eq!(
        stream_deliveries(&e),
        [(C3, 1, "1".into()), (C3, 2, "2".into())]
    );
    // An ack frees the window and removes nothing.
    let e = a.method(
        C2,
        Method::BasicAck(BasicAck {
            delivery_tag: 2,
            multiple: true,
        }),
    );
    assert_eq!(stream_deliveries(&e), [(C2, 2, "2".into())]);
    let e = a.input(Input::Publish {
        conn: C1,
        channel: 1,
        publish: BasicPublish {
            routing_key: "s".into(),
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"3"),
    });
    // C2's window is full (offset 2 unacked... and 3 fits: prefetch 2); C3 reads on.
    let mut got = stream_deliveries(&e);
    got.sort();
    assert_eq!(got, [(C2, 3, "3".into()), (C3, 3, "3".into())]);
    let view = a.broker.view();
    let q = view.queues.iter().find(|q| q.name == "s").expect("s");
    assert_eq!(q.messages_ready, 4, "nothing consumed away");
    // Retention: 5 bytes at most; two more messages push the oldest out.
    a.publish(C1, "s", "4");
    a.publish(C1, "s", "5");
    let view = a.broker.view();
    let q = view.queues.iter().find(|q| q.name == "s").expect("s");
    assert_eq!(q.messages_ready, 5);
    // basic.get is refused.
    let refused = a.method(
        C1,
        Method::BasicGet(BasicGet {
            queue: "s".into(),
            ..Default::default()
        }),
    );
    assert!(
        refused
            .iter()
            .any(|e| matches!(e, Effect::CloseChannel { error, .. } if error.code == 406)),
        "{refused:?}"
    );
    // A replica agrees on what the stream holds (the log is the same).
    let replica = a.replayed();
    let held = |b: &Broker| {
        b.snapshot()
            .queues
            .into_iter()
            .map(|q| (q.name, q.next_seq, q.entries))
            .collect::<Vec<_>>()
    };
    assert_eq!(held(&replica.broker), held(&a.broker));
}

#[test]
fn a_stream_refuses_what_rabbitmq_refuses() {
    let mut a = Replicated::new();
    a.open(C1);
    let mut stream = FieldTable::default();
    stream.insert("x-queue-type", FieldValue::LongStr("stream".into()));
    let e = a.method(
        C1,
        Method::QueueDeclare(QueueDeclare {
            queue: "s".into(),
            durable: false,
            arguments: stream.clone(),
            ..Default::default()
        }),
    );
    assert!(
        e.iter().any(|e| matches!(e, Effect::CloseChannel { error, .. }
            if error.code == 406 && error.text.contains("invalid property 'non-durable' for queue 's' in vhost '/'"))),
        "{e:?}"
    );
    a.method(C1, Method::ChannelOpen(ChannelOpen::default()));
    a.declare_durable(C1, "s", stream);
    // No prefetch: refused.
    let e = a.method(
        C1,
        Method::BasicConsume(BasicConsume {
            queue: "s".into(),
            ..Default::default()
        }),
    );
    assert!(
        e.iter()
            .any(|e| matches!(e, Effect::CloseChannel { error, .. }
            if error.code == 406 && error.text.contains("consumer prefetch count is not set"))),
        "{e:?}"
    );
}

#[test]
fn a_consumer_timeout_set_by_policy_applies_to_the_queues_it_matches() {
    let mut a = Replicated::new();
    a.open(C1);
    a.declare_durable(C1, "slow.jobs", FieldTable::default());
    a.commit(set_policy(
        "timeouts",
        false,
        "^slow\\.",
        &[("consumer-timeout", FieldValue::I32(500))],
    ));
    a.method(
        C1,
        Method::BasicConsume(BasicConsume {
            queue: "slow.jobs".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        }),
    );
    a.publish(C1, "slow.jobs", "m");
    a.now += 501;
    let e = a.input(Input::Tick);
    assert!(
        e.iter().any(|e| matches!(e, Effect::Send { method: Method::BasicCancel(c), .. } if c.consumer_tag.as_str() == "c")),
        "{e:?}"
    );
}

#[test]
fn a_connection_with_its_publish_credit_in_the_log_is_paused_until_half_is_applied() {
    let flows = |effects: &[Effect]| -> Vec<bool> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Flow { conn, paused } if *conn == C1 => Some(*paused),
                _ => None,
            })
            .collect()
    };
    let mut m = Manual::new();
    m.open();
    m.method(Method::QueueDeclare(QueueDeclare {
        queue: "q".into(),
        durable: true,
        ..Default::default()
    }));
    m.commit_all();
    let mut seen = Vec::new();
    for _ in 1..PUBLISH_CREDIT {
        seen.extend(flows(&m.publish("q", "m")));
    }
    assert_eq!(
        seen,
        Vec::<bool>::new(),
        "paused before the credit was spent"
    );
    assert_eq!(flows(&m.publish("q", "m")), [true]);
    assert!(m.broker.view().in_flow.contains(&C1));
    // Publishes read meanwhile are still handled, and pause nothing more.
    assert_eq!(flows(&m.publish("q", "m")), Vec::<bool>::new());
    assert_eq!(m.proposed.len() as u32, PUBLISH_CREDIT + 1);
    // The channel closes with its publishes in the log: they still count until applied.
    m.method(Method::ChannelClose(ChannelClose::default()));
    let mut resumed_after = None;
    let mut applied = 0;
    while !m.proposed.is_empty() {
        let effects = m.commit_one();
        applied += 1;
        let f = flows(&effects);
        if !f.is_empty() {
            assert_eq!((f, resumed_after), (vec![false], None));
            resumed_after = Some(applied);
        }
    }
    // Resumed once half the credit is left in flight.
    assert_eq!(resumed_after, Some(PUBLISH_CREDIT + 1 - PUBLISH_CREDIT / 2));
    assert!(m.broker.view().in_flow.is_empty());
}

#[test]
fn queue_churn_and_dropped_publishes_are_counted_for_this_nodes_clients_only() {
    let mut a = Replicated::new();
    a.open(C1);
    // "kept" declared twice: created once.
    for (queue, durable) in [("kept", true), ("kept", true), ("gone", false)] {
        a.method(
            C1,
            Method::QueueDeclare(QueueDeclare {
                queue: queue.into(),
                durable,
                ..Default::default()
            }),
        );
    }
    a.method(
        C1,
        Method::QueueDelete(QueueDelete {
            queue: "gone".into(),
            ..Default::default()
        }),
    );
    // Unroutable: dropped if not mandatory (a mandatory one is returned, counted at the socket).
    a.publish(C1, "nowhere", "dropped");
    a.input(Input::Publish {
        conn: C1,
        channel: 1,
        publish: BasicPublish {
            routing_key: "nowhere".into(),
            mandatory: true,
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"returned"),
    });
    a.publish(C1, "kept", "routed");
    assert_eq!(
        a.broker.take_churn(),
        Churn {
            queues_created: 2,
            queues_deleted: 1,
            unroutable_dropped: 1,
        }
    );
    assert!(a.broker.take_churn().is_empty(), "taken once");

    // Another replica of this process applying the log counts the queues (the control for
    // what follows); dropped publishes are not in the log.
    let replay = |config: BrokerConfig| {
        let mut b = Broker::new(config);
        let mut out = Vec::new();
        for command in a.log.clone() {
            b.handle(5_000, Input::Applied { command, index: 0 }, &mut out);
        }
        b.take_churn()
    };
    assert_eq!(
        replay(BrokerConfig::default()),
        Churn {
            queues_created: 2,
            queues_deleted: 1,
            unroutable_dropped: 0,
        }
    );
    // The same log replayed by the next run of the process (its connections start above C1)
    // or by another node counts nothing.
    for config in [
        BrokerConfig {
            first_conn: C1 + 1_000,
            ..BrokerConfig::default()
        },
        BrokerConfig {
            node: 2,
            ..BrokerConfig::default()
        },
    ] {
        assert!(replay(config).is_empty());
    }
}

#[test]
fn a_publish_is_routed_once_where_it_was_published_and_applied_into_the_queues_it_names() {
    let mut m = Manual::new();
    m.open();
    for q in ["kept", "unbound", "deleted"] {
        m.method(Method::QueueDeclare(QueueDeclare {
            queue: q.into(),
            durable: true,
            ..Default::default()
        }));
        m.method(Method::QueueBind(QueueBind {
            queue: q.into(),
            exchange: "amq.fanout".into(),
            ..Default::default()
        }));
    }
    m.commit_all();
    m.method(Method::ConfirmSelect(ConfirmSelect::default()));
    m.commit_all();
    let id = |m: &Manual, q: &str| m.broker.queue_id(&"/".into(), q).expect("declared");
    let (kept, unbound, deleted) = (id(&m, "kept"), id(&m, "unbound"), id(&m, "deleted"));
    let e = m.step(Input::Publish {
        conn: C1,
        channel: 1,
        publish: BasicPublish {
            exchange: "amq.fanout".into(),
            mandatory: true,
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"m"),
    });
    assert_eq!(
        e,
        vec![],
        "nothing for the client before the publish is applied"
    );
    match &m.proposed[..] {
        [Command {
            op: Op::Publish { queues, .. },
            ..
        }] => assert_eq!(
            queues.as_deref(),
            Some(&[kept, unbound, deleted][..]),
            "the logged publish names the queues it was routed to"
        ),
        other => panic!("expected one logged publish, got {other:?}"),
    }
    // Before it is applied, another client unbinds one queue and deletes another.
    let publish = m.proposed.remove(0);
    for op in [
        Op::Unbind {
            vhost: "/".into(),
            source: "amq.fanout".into(),
            destination: Destination::Queue("unbound".into()),
            routing_key: "".into(),
            arguments: FieldTable::default(),
            nowait: true,
        },
        Op::DeleteQueue {
            vhost: "/".into(),
            name: "deleted".into(),
            if_unused: false,
            if_empty: false,
            nowait: true,
        },
    ] {
        m.step(Input::Applied {
            command: Command {
                version: STATE_MACHINE_VERSION,
                origin: None,
                number: None,
                issued_at: 1_000,
                op,
            },
            index: 0,
        });
    }
    let e = m.step(Input::Applied {
        command: publish,
        index: 0,
    });
    assert_eq!(
        e,
        vec![send(
            C1,
            Method::BasicAck(BasicAck {
                delivery_tag: 1,
                multiple: false
            })
        )],
        "confirmed, not returned: it reached queues"
    );
    assert_eq!(m.broker.queues[&kept].ready_count(), 1, "kept has it");
    assert_eq!(
        m.broker.queues[&unbound].ready_count(),
        1,
        "routed where it was published: the unbind that came later does not take it back"
    );
    assert!(!m.broker.queues.contains_key(&deleted), "deleted is gone");

    // A mandatory publish whose every queue went before it was applied is returned.
    m.step(Input::Publish {
        conn: C1,
        channel: 1,
        publish: BasicPublish {
            routing_key: "kept".into(),
            mandatory: true,
            ..Default::default()
        },
        properties: BasicProperties::default(),
        body: Bytes::from_static(b"late"),
    });
    let publish = m.proposed.remove(0);
    m.step(Input::Applied {
        command: Command {
            version: STATE_MACHINE_VERSION,
            origin: None,
            number: None,
            issued_at: 1_000,
            op: Op::DeleteQueue {
                vhost: "/".into(),
                name: "kept".into(),
                if_unused: false,
                if_empty: false,
                nowait: true,
            },
        },
        index: 0,
    });
    let e = m.step(Input::Applied {
        command: publish,
        index: 0,
    });
    assert!(
        matches!(
            &e[..],
            [
                Effect::SendContent {
                    method: Method::BasicReturn(_),
                    ..
                },
                Effect::Send {
                    method: Method::BasicAck(BasicAck {
                        delivery_tag: 2,
                        ..
                    }),
                    ..
                }
            ]
        ),
        "returned, then confirmed: {e:?}"
    );
}

#[test]
fn a_home_sessions_stream_consumer_on_a_follower_survives_a_snapshot_install() {
    let (mut r, c, h) = node_two_with_a_home_session();
    let mut args = FieldTable::default();
    args.insert("x-queue-type", FieldValue::LongStr("stream".into()));
    r.input(committed(
        Some((c, 1)),
        Op::DeclareQueue {
            vhost: "/".into(),
            name: "s".into(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: args,
            nowait: true,
        },
    ));
    let publish = |body: &'static str| {
        committed(
            None,
            Op::Publish {
                vhost: "/".into(),
                exchange: "".into(),
                routing_key: "s".into(),
                mandatory: false,
                confirm: None,
                properties: BasicProperties::default(),
                body: Bytes::from_static(body.as_bytes()),
                queues: None,
            },
        )
    };
    r.input(publish("m1"));
    r.method(
        h,
        Method::BasicQos(BasicQos {
            prefetch_count: 10,
            ..Default::default()
        }),
    );
    let mut offset = FieldTable::default();
    offset.insert("x-stream-offset", FieldValue::LongStr("first".into()));
    let e = r.method(
        h,
        Method::BasicConsume(BasicConsume {
            queue: "s".into(),
            consumer_tag: "c".into(),
            arguments: offset,
            ..Default::default()
        }),
    );
    assert_eq!(
        stream_deliveries(&e),
        [(h, 0, "m1".to_owned())],
        "served by this node's broker, which does not lead"
    );
    let snapshot = r.broker.snapshot();
    r.broker
        .restore(snapshot, &mut Vec::new())
        .expect("restores");
    let e = r.input(publish("m2"));
    assert_eq!(
        stream_deliveries(&e),
        [(h, 1, "m2".to_owned())],
        "still consuming, from where it was"
    );
}
