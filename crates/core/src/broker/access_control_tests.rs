//! Behaviour tests of topic permissions and vhost/user limits: inputs in, the exact effects out
//! (RabbitMQ's reply codes and texts, checked against RabbitMQ 3.10.8 and its source).

use bytes::Bytes;
use warren_wire::*;

use super::*;
use crate::limits::{MAX_CHANNELS, MAX_CONNECTIONS, MAX_QUEUES};
use crate::{ClientCounts, Effect, Input};

/// A broker, and the proposals it made waiting to be committed (unless it commits them at once).
struct Node {
    broker: Broker,
    proposed: Vec<Command>,
    /// A cluster of one: every proposal comes back applied at once (a log of one).
    commit_at_once: bool,
}

impl Node {
    /// A single node (the leader of a cluster of one: its changes are committed at once), with
    /// user `u` (password `p`, every permission on "/") besides guest.
    fn single() -> Node {
        Node::with(true)
    }

    /// The leader's broker of a cluster: its changes wait in `proposed` until committed.
    fn leader() -> Node {
        Node::with(false)
    }

    fn with(commit_at_once: bool) -> Node {
        let mut broker = Broker::new(BrokerConfig {
            ..BrokerConfig::default()
        });
        broker.set_leading(true);
        let mut n = Node {
            broker,
            proposed: Vec::new(),
            commit_at_once,
        };
        n.apply(Op::PutUser {
            name: "u".into(),
            password_hash: hash_password([1, 2, 3, 4], "p"),
            tags: vec![],
        });
        n.apply(Op::SetPermission {
            user: "u".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        });
        n
    }

    /// Handles `input`; returns the effects for clients and keeps the proposals (or, for a
    /// single node, applies them at once).
    fn input(&mut self, input: Input) -> Vec<Effect> {
        let mut pending = std::collections::VecDeque::from([input]);
        let mut client = Vec::new();
        while let Some(input) = pending.pop_front() {
            let mut out = Vec::new();
            self.broker.handle(1_000, input, &mut out);
            self.broker.check_credit();
            for e in out {
                match e {
                    Effect::Propose { command } if self.commit_at_once => {
                        pending.push_back(Input::Applied { command, index: 0 })
                    }
                    Effect::Propose { command } => self.proposed.push(command),
                    other => client.push(other),
                }
            }
        }
        client
    }

    /// Applies an operator's change (committed, as every replica applies it), after checking
    /// it as the Access service does.
    fn apply(&mut self, op: Op) -> Vec<Effect> {
        assert_eq!(self.broker.check_security_change(&op), Ok(()), "{op:?}");
        self.input(Input::Applied {
            index: 0,
            command: Command {
                version: STATE_MACHINE_VERSION,
                origin: None,
                number: None,
                issued_at: 1_000,
                op,
            },
        })
    }

    /// Commits the oldest proposal.
    fn commit_one(&mut self) -> Vec<Effect> {
        let command = self.proposed.remove(0);
        self.input(Input::Applied { command, index: 0 })
    }

    /// Logs `user` in on `conn` (password `p`, guest's is guest) and opens "/": the effects of
    /// `connection.open`.
    fn connect(&mut self, conn: ConnId, user: &str) -> Vec<Effect> {
        let password = if user == "guest" { "guest" } else { "p" };
        let e = self.input(Input::Login {
            conn,
            mechanism: "PLAIN".into(),
            username: user.into(),
            password: password.into(),
            peer_loopback: true,
            client_properties: FieldTable::default(),
        });
        assert_eq!(
            e,
            vec![Effect::Authenticated {
                conn,
                user: user.into()
            }]
        );
        self.input(Input::OpenVhost {
            conn,
            vhost: "/".into(),
        })
    }

    fn method(&mut self, conn: ConnId, channel: ChannelId, method: Method) -> Vec<Effect> {
        self.input(Input::Method {
            conn,
            channel,
            method,
        })
    }

    fn open_channel(&mut self, conn: ConnId, channel: ChannelId) -> Vec<Effect> {
        self.method(conn, channel, Method::ChannelOpen(ChannelOpen::default()))
    }

    fn publish(&mut self, conn: ConnId, exchange: &str, routing_key: &str) -> Vec<Effect> {
        self.input(Input::Publish {
            conn,
            channel: 1,
            publish: BasicPublish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                ..Default::default()
            },
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"m"),
        })
    }

    fn declare(&mut self, conn: ConnId, queue: &str) -> Vec<Effect> {
        self.method(
            conn,
            1,
            Method::QueueDeclare(QueueDeclare {
                queue: queue.into(),
                ..Default::default()
            }),
        )
    }

    fn bind(&mut self, conn: ConnId, queue: &str, exchange: &str, key: &str) -> Vec<Effect> {
        self.method(
            conn,
            1,
            Method::QueueBind(QueueBind {
                queue: queue.into(),
                exchange: exchange.into(),
                routing_key: key.into(),
                ..Default::default()
            }),
        )
    }
}

fn opened(conn: ConnId) -> Vec<Effect> {
    vec![Effect::Send {
        conn,
        channel: 0,
        method: Method::ConnectionOpenOk(ConnectionOpenOk::default()),
    }]
}

fn channel_opened(conn: ConnId, channel: ChannelId) -> Vec<Effect> {
    vec![Effect::Send {
        conn,
        channel,
        method: Method::ChannelOpenOk(ChannelOpenOk::default()),
    }]
}

fn error(code: u16, text: &str, class_id: u16, method_id: u16) -> AmqpError {
    AmqpError {
        code,
        text: text.into(),
        class_id,
        method_id,
    }
}

fn channel_closed(conn: ConnId, error: AmqpError) -> Vec<Effect> {
    vec![Effect::CloseChannel {
        conn,
        channel: 1,
        error,
    }]
}

fn connection_closed(conn: ConnId, error: AmqpError) -> Vec<Effect> {
    vec![Effect::CloseConnection { conn, error }]
}

fn topic_permission(exchange: &str, write: &str, read: &str) -> Op {
    Op::SetTopicPermission {
        user: "u".into(),
        vhost: "/".into(),
        exchange: exchange.into(),
        write: write.into(),
        read: read.into(),
    }
}

fn vhost_limit(name: &str, value: i64) -> Op {
    Op::SetVhostLimits {
        vhost: "/".into(),
        limits: vec![(name.into(), value)],
        replace: false,
    }
}

fn user_limit(name: &str, value: i64) -> Op {
    Op::SetUserLimits {
        user: "u".into(),
        limits: vec![(name.into(), value)],
        replace: false,
    }
}

#[test]
fn a_publish_to_a_topic_exchange_needs_its_routing_key_to_match_the_write_pattern() {
    let mut n = Node::single();
    n.apply(topic_permission("amq.topic", r"^a\.{username}\.", "^b"));
    assert_eq!(n.connect(1, "u"), opened(1));
    assert_eq!(n.open_channel(1, 1), channel_opened(1, 1));
    assert_eq!(n.connect(2, "guest"), opened(2));
    assert_eq!(n.open_channel(2, 1), channel_opened(2, 1));

    assert_eq!(n.publish(1, "amq.topic", "a.u.x"), vec![], "allowed");
    // Not a topic exchange, or no topic permission on that one: not restricted.
    assert_eq!(n.publish(1, "amq.direct", "anything"), vec![]);
    n.input(Input::Method {
        conn: 1,
        channel: 1,
        method: Method::ExchangeDeclare(ExchangeDeclare {
            exchange: "logs".into(),
            kind: "topic".into(),
            ..Default::default()
        }),
    });
    assert_eq!(n.publish(1, "logs", "anything"), vec![]);
    // Another user has no topic permission on amq.topic.
    assert_eq!(n.publish(2, "amq.topic", "c.d"), vec![]);

    assert_eq!(
        n.publish(1, "amq.topic", "c.d"),
        channel_closed(
            1,
            error(
                403,
                "ACCESS_REFUSED - write access to topic 'c.d' in exchange 'amq.topic' in vhost '/' refused for user 'u'",
                60,
                40
            )
        )
    );
}

#[test]
fn binding_to_a_topic_exchange_needs_the_binding_key_to_match_the_read_pattern() {
    let mut n = Node::single();
    n.apply(topic_permission("amq.topic", "", r"^b\."));
    n.connect(1, "u");
    n.open_channel(1, 1);
    n.declare(1, "q");
    assert_eq!(
        n.bind(1, "q", "amq.topic", "b.1"),
        vec![Effect::Send {
            conn: 1,
            channel: 1,
            method: Method::QueueBindOk(QueueBindOk {})
        }]
    );
    let refused = |key: &str, class_id, method_id| {
        channel_closed(
            1,
            error(
                403,
                &format!("ACCESS_REFUSED - read access to topic '{key}' in exchange 'amq.topic' in vhost '/' refused for user 'u'"),
                class_id,
                method_id,
            ),
        )
    };
    assert_eq!(n.bind(1, "q", "amq.topic", "c.2"), refused("c.2", 50, 20));

    n.open_channel(1, 1);
    let unbind = n.method(
        1,
        1,
        Method::QueueUnbind(QueueUnbind {
            queue: "q".into(),
            exchange: "amq.topic".into(),
            routing_key: "c.2".into(),
            ..Default::default()
        }),
    );
    assert_eq!(unbind, refused("c.2", 50, 50));

    n.open_channel(1, 1);
    let xbind = n.method(
        1,
        1,
        Method::ExchangeBind(ExchangeBind {
            destination: "amq.fanout".into(),
            source: "amq.topic".into(),
            routing_key: "c.3".into(),
            ..Default::default()
        }),
    );
    assert_eq!(xbind, refused("c.3", 40, 30));

    // The write pattern is empty: only the empty routing key may be published.
    n.open_channel(1, 1);
    assert_eq!(n.publish(1, "amq.topic", ""), vec![]);
}

#[test]
fn clearing_topic_permissions_lifts_them_and_deleting_the_user_or_vhost_takes_them() {
    let mut n = Node::single();
    n.apply(topic_permission("amq.topic", "^a", "^a"));
    n.apply(topic_permission("other", "^a", "^a"));
    n.connect(1, "u");
    n.open_channel(1, 1);
    n.apply(Op::ClearTopicPermission {
        user: "u".into(),
        vhost: "/".into(),
        exchange: Some("amq.topic".into()),
    });
    assert_eq!(n.publish(1, "amq.topic", "zzz"), vec![]);
    assert_eq!(n.broker.view().topic_permissions.len(), 1);
    n.apply(Op::ClearTopicPermission {
        user: "u".into(),
        vhost: "/".into(),
        exchange: None,
    });
    assert_eq!(n.broker.view().topic_permissions, vec![]);
    assert_eq!(
        n.broker.check_security_change(&Op::ClearTopicPermission {
            user: "u".into(),
            vhost: "/".into(),
            exchange: None,
        }),
        Err("user 'u' has no topic permissions in vhost '/'".into())
    );

    n.apply(topic_permission("amq.topic", "^a", "^a"));
    n.apply(user_limit(MAX_CHANNELS, 5));
    n.apply(Op::PutVhost { name: "v".into() });
    n.apply(Op::SetVhostLimits {
        vhost: "v".into(),
        limits: vec![(MAX_QUEUES.into(), 1)],
        replace: true,
    });
    n.apply(Op::DeleteVhost { name: "v".into() });
    assert_eq!(n.broker.view().vhost_limits, vec![]);
    n.apply(Op::DeleteUser { name: "u".into() });
    let view = n.broker.view();
    assert_eq!((view.topic_permissions, view.user_limits), (vec![], vec![]));
}

#[test]
fn an_operators_bad_change_is_refused_before_it_is_proposed() {
    let n = Node::single();
    let check = |op: Op| n.broker.check_security_change(&op);
    assert_eq!(
        check(topic_permission("amq.topic", "(", "")),
        Err("invalid regular expression '(': unclosed group".into())
    );
    assert_eq!(
        check(Op::SetTopicPermission {
            user: "nobody".into(),
            vhost: "/".into(),
            exchange: "amq.topic".into(),
            write: ".*".into(),
            read: ".*".into(),
        }),
        Err("user 'nobody' does not exist".into())
    );
    assert_eq!(
        check(Op::SetVhostLimits {
            vhost: "nowhere".into(),
            limits: vec![],
            replace: true,
        }),
        Err("vhost 'nowhere' does not exist".into())
    );
    assert_eq!(
        check(vhost_limit(MAX_CHANNELS, 1)),
        Err("unknown vhost limit 'max-channels' (known: max-connections, max-queues)".into())
    );
    assert_eq!(
        check(user_limit(MAX_QUEUES, 1)),
        Err("unknown user limit 'max-queues' (known: max-connections, max-channels)".into())
    );
    assert_eq!(
        check(Op::ClearUserLimits {
            user: "nobody".into(),
            names: vec![],
        }),
        Err("user 'nobody' does not exist".into())
    );
    // A pattern with a variable compiles as RabbitMQ reads it.
    assert_eq!(
        check(topic_permission("amq.topic", "^{client_id}", "")),
        Ok(())
    );
}

#[test]
fn a_vhosts_max_connections_refuses_connection_open_with_530() {
    let mut n = Node::single();
    n.apply(vhost_limit(MAX_CONNECTIONS, 2));
    assert_eq!(n.connect(1, "u"), opened(1));
    assert_eq!(n.connect(2, "guest"), opened(2));
    let refused = error(
        530,
        "NOT_ALLOWED - access to vhost '/' refused for user 'u': connection limit (2) is reached",
        10,
        40,
    );
    assert_eq!(n.connect(3, "u"), connection_closed(3, refused));
    // A closed connection gives its place back.
    n.input(Input::ConnectionClosed { conn: 2 });
    assert_eq!(n.connect(3, "u"), opened(3));
    // Negative: no limit; 0: none allowed.
    n.apply(vhost_limit(MAX_CONNECTIONS, -1));
    assert_eq!(n.connect(4, "u"), opened(4));
    n.apply(vhost_limit(MAX_CONNECTIONS, 0));
    let refused = error(
        530,
        "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (0) is reached",
        10,
        40,
    );
    assert_eq!(n.connect(5, "guest"), connection_closed(5, refused));
    n.apply(Op::ClearVhostLimits {
        vhost: "/".into(),
        names: vec![],
    });
    assert_eq!(n.connect(5, "guest"), opened(5));
}

#[test]
fn a_users_max_connections_counts_the_users_connections_only() {
    let mut n = Node::single();
    n.apply(user_limit(MAX_CONNECTIONS, 1));
    assert_eq!(n.connect(1, "u"), opened(1));
    assert_eq!(n.connect(2, "guest"), opened(2), "another user");
    let refused = error(
        530,
        "NOT_ALLOWED - connection refused for user 'u': user connection limit (1) is reached",
        10,
        40,
    );
    assert_eq!(n.connect(3, "u"), connection_closed(3, refused));
}

#[test]
fn a_users_max_channels_counts_every_connection_of_the_user_and_closes_the_connection() {
    let mut n = Node::single();
    n.apply(user_limit(MAX_CHANNELS, 2));
    n.connect(1, "u");
    n.connect(2, "u");
    assert_eq!(n.open_channel(1, 1), channel_opened(1, 1));
    assert_eq!(n.open_channel(2, 7), channel_opened(2, 7));
    let refused = error(
        530,
        "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (2)",
        0,
        0,
    );
    assert_eq!(n.open_channel(1, 2), connection_closed(1, refused));
    // Connection 1 and its channel are gone: a place is free.
    assert_eq!(n.open_channel(2, 8), channel_opened(2, 8));
    // A closed channel gives its place back.
    n.method(2, 8, Method::ChannelClose(ChannelClose::default()));
    assert_eq!(n.open_channel(2, 9), channel_opened(2, 9));
}

#[test]
fn a_vhosts_max_queues_refuses_a_new_queue_with_406_and_lets_a_redeclare_through() {
    let mut n = Node::single();
    n.apply(vhost_limit(MAX_QUEUES, 1));
    n.connect(1, "u");
    n.open_channel(1, 1);
    let ok = |queue: &str| {
        vec![Effect::Send {
            conn: 1,
            channel: 1,
            method: Method::QueueDeclareOk(QueueDeclareOk {
                queue: queue.into(),
                message_count: 0,
                consumer_count: 0,
            }),
        }]
    };
    assert_eq!(n.declare(1, "q1"), ok("q1"));
    assert_eq!(
        n.declare(1, "q1"),
        ok("q1"),
        "an existing queue is no new one"
    );
    assert_eq!(
        n.declare(1, "q2"),
        channel_closed(
            1,
            error(
                406,
                "PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '/' (1) is reached",
                50,
                10
            )
        )
    );
}

#[test]
fn two_declares_racing_for_the_last_queue_are_decided_in_the_logs_order() {
    let mut n = Node::leader();
    n.apply(vhost_limit(MAX_QUEUES, 1));
    n.connect(1, "u");
    n.open_channel(1, 1);
    n.connect(2, "u");
    n.open_channel(2, 1);
    // Both pass the channel's checks before either is applied.
    assert_eq!(n.declare(1, "a"), vec![]);
    assert_eq!(n.declare(2, "b"), vec![]);
    assert_eq!(n.proposed.len(), 2);
    assert_eq!(
        n.commit_one(),
        vec![Effect::Send {
            conn: 1,
            channel: 1,
            method: Method::QueueDeclareOk(QueueDeclareOk {
                queue: "a".into(),
                message_count: 0,
                consumer_count: 0,
            }),
        }]
    );
    assert_eq!(
        n.commit_one(),
        vec![Effect::CloseChannel {
            conn: 2,
            channel: 1,
            error: error(
                406,
                "PRECONDITION_FAILED - cannot declare queue 'b': queue limit in vhost '/' (1) is reached",
                50,
                10
            ),
        }]
    );
}

#[test]
fn the_limits_count_the_connections_and_channels_of_every_node() {
    let mut n = Node::leader();
    n.apply(vhost_limit(MAX_CONNECTIONS, 2));
    n.apply(user_limit(MAX_CHANNELS, 2));
    assert_eq!(n.connect(1, "u"), opened(1));
    assert_eq!(n.open_channel(1, 1), channel_opened(1, 1));
    // This node's counts, to share with the others.
    let counts = n.broker.take_changed_counts().expect("changed");
    assert_eq!(counts.vhost_connections.get("/"), Some(&1));
    assert_eq!(counts.user_connections.get("u"), Some(&1));
    assert_eq!(counts.user_channels.get("u"), Some(&1));
    assert_eq!(
        n.broker.take_changed_counts(),
        None,
        "nothing changed since"
    );
    // Node 3 has one connection of user u with one channel open.
    let mut theirs = ClientCounts::default();
    theirs.vhost_connections.insert("/".into(), 1);
    theirs.user_connections.insert("u".into(), 1);
    theirs.user_channels.insert("u".into(), 1);
    n.input(Input::PeerCounts {
        node: 3,
        counts: theirs,
    });
    let e = n.connect(2, "guest");
    assert_eq!(
        e,
        connection_closed(
            2,
            error(
                530,
                "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (2) is reached",
                10,
                40
            )
        ),
        "one connection here and one on node 3"
    );
    assert_eq!(
        n.open_channel(1, 2),
        connection_closed(
            1,
            error(
                530,
                "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (2)",
                0,
                0
            )
        ),
        "node 3's channel counts"
    );
    // Node 3's stream broke: what it said is forgotten.
    n.input(Input::PeerLost { node: 3 });
    assert_eq!(n.connect(2, "guest"), opened(2));
}

#[test]
fn a_peers_empty_counts_or_its_removal_forget_it() {
    let mut n = Node::leader();
    n.apply(user_limit(MAX_CONNECTIONS, 1));
    let mut theirs = ClientCounts::default();
    theirs.user_connections.insert("u".into(), 1);
    n.input(Input::PeerCounts {
        node: 2,
        counts: theirs.clone(),
    });
    assert!(n
        .connect(1, "u")
        .iter()
        .any(|e| matches!(e, Effect::CloseConnection { .. })));
    n.input(Input::PeerCounts {
        node: 2,
        counts: ClientCounts::default(),
    });
    assert_eq!(n.connect(1, "u"), opened(1));
    n.input(Input::ConnectionClosed { conn: 1 });
    n.input(Input::PeerCounts {
        node: 2,
        counts: theirs,
    });
    n.input(Input::NodeDown { node: 2 });
    assert_eq!(
        n.connect(1, "u"),
        opened(1),
        "a removed node counts no more"
    );
}

#[test]
fn topic_permissions_and_limits_travel_in_snapshots() {
    let mut n = Node::single();
    n.apply(topic_permission("amq.topic", "^a", "^b"));
    n.apply(vhost_limit(MAX_QUEUES, 3));
    n.apply(user_limit(MAX_CONNECTIONS, -1));
    let snapshot = n.broker.snapshot();
    let mut restored = Broker::new(BrokerConfig {
        ..BrokerConfig::default()
    });
    let mut out = Vec::new();
    restored.restore(snapshot, &mut out).expect("restores");
    let (a, b) = (n.broker.view(), restored.view());
    assert_eq!(
        (a.topic_permissions, a.vhost_limits, a.user_limits),
        (b.topic_permissions, b.vhost_limits, b.user_limits)
    );
    // And the restored permission is enforced.
    restored.set_leading(true);
    let mut r = Node {
        broker: restored,
        proposed: Vec::new(),
        commit_at_once: true,
    };
    r.connect(1, "u");
    r.open_channel(1, 1);
    assert_eq!(r.publish(1, "amq.topic", "b").len(), 1, "refused");
}
