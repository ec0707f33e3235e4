//! Users, vhosts and permissions are replicated: changed through one node with the `warren`
//! command line, they hold on every node at once, survive a restart of the whole cluster, and
//! deleting a user closes its connections wherever they are. Topic permissions restrict
//! publishing and binding on topic exchanges, and vhost and user limits are counted over the
//! whole cluster's clients, with RabbitMQ's refusals.

use std::time::Duration;

use warren_tests::cluster::{connect_retrying, warren_cli, Cluster};
use warren_tests::lapin::options::{
    BasicPublishOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren_tests::management::{guest_api, wait_for_json};
use warren_tests::{channel, closed_with, confirm_channel, publish, reply_code, within};

fn cli(args: &[&str]) -> String {
    let out = warren_cli(args).expect("run warren");
    assert!(out.ok, "warren {args:?} failed: {}", out.stderr);
    out.stdout
}

async fn connect_as(cluster: &Cluster, node: usize, user: &str, pass: &str) -> Connection {
    let uri = format!(
        "amqp://{user}:{pass}@{}/%2Forders",
        cluster.node(node).addr()
    );
    within(Connection::connect(&uri, ConnectionProperties::default()))
        .await
        .unwrap_or_else(|e| panic!("{user} logs in through node {node}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn users_vhosts_and_permissions_changed_through_one_node_hold_on_every_node() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    // Changes go through a follower (forwarded to the leader).
    let via = cluster.grpc_addr(follower);
    cli(&["vhost", "add", "/orders", "--grpc", &via]);
    cli(&[
        "user",
        "add",
        "alice",
        "--password",
        "s3cret",
        "--tags",
        "monitoring",
        "--grpc",
        &via,
    ]);
    cli(&[
        "permissions",
        "set",
        "alice",
        "/orders",
        "^alice\\.",
        ".*",
        ".*",
        "--grpc",
        &via,
    ]);
    // Refusals are one line and a non-zero exit.
    for bad in [
        vec!["permissions", "set", "alice", "/orders", "(", "", ""],
        vec!["permissions", "set", "bob", "/orders", ".*", "", ""],
        vec!["vhost", "delete", "/nowhere"],
    ] {
        let mut args = bad.clone();
        args.extend(["--grpc", &via]);
        let out = warren_cli(&args).expect("run warren");
        assert!(!out.ok, "{bad:?} must fail");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{:?}", out.stderr);
    }

    // Every node lets alice in at once, with exactly her permissions.
    for node in 1..=3 {
        let conn = connect_as(&cluster, node, "alice", "s3cret").await;
        let ch = within(conn.create_channel()).await.unwrap();
        within(ch.queue_declare(
            format!("alice.jobs{node}").as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ))
        .await
        .expect("her own queue");
        let refused = within(ch.queue_declare(
            "other".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect_err("not hers");
        assert_eq!(reply_code(&refused), Some(403));
        let _ = conn.close(200, "bye".into()).await;
    }

    // The whole cluster restarts: alice, /orders and her permissions are back.
    for node in 1..=3 {
        cluster.node_mut(node).kill9().expect("kill -9");
    }
    for node in 1..=3 {
        cluster.node_mut(node).restart().expect("restart");
    }
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader again");
    let mut kept = None;
    for _ in 0..50 {
        let uri = format!(
            "amqp://alice:s3cret@{}/%2Forders",
            cluster.node(follower).addr()
        );
        if let Ok(Ok(c)) = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await
        {
            kept = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let conn = kept.expect("alice logs in after the restart");

    // Deleting her closes that connection (320) and refuses her from then on.
    // (A node logs its clients in as soon as it has applied the log: the leader may still be
    // committing its take-over, and then asks to try again.)
    let leader = cluster.leader().expect("a leader");
    cli_retrying(&[
        "user",
        "delete",
        "alice",
        "--grpc",
        &cluster.grpc_addr(leader),
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.status().connected() {
        assert!(
            std::time::Instant::now() < deadline,
            "her connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let uri = format!(
        "amqp://alice:s3cret@{}/%2Forders",
        cluster.node(leader).addr()
    );
    assert!(
        within(Connection::connect(&uri, ConnectionProperties::default()))
            .await
            .is_err(),
        "a deleted user is refused"
    );
    let out = cli(&["status", "--grpc", &cluster.grpc_addr(leader)]);
    assert!(out.contains("leader"), "{out}");
}

/// `warren ARGS`, which must succeed, tried again for a while when the cluster has no leader
/// serving yet.
fn cli_retrying(args: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let out = warren_cli(args).expect("run warren");
        if out.ok {
            return out.stdout;
        }
        assert!(
            out.stderr.contains("try again") && std::time::Instant::now() < deadline,
            "warren {args:?} failed: {}",
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `warren ARGS --grpc ADDR`, which must succeed.
fn cli_at(addr: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--grpc", addr]);
    cli(&all)
}

/// Adds user `u` (password `p`) with every permission on `vhost` (created if not "/"), through
/// the node at `addr`.
fn add_user_u(addr: &str, vhost: &str) {
    if vhost != "/" {
        cli_at(addr, &["vhost", "add", vhost]);
    }
    cli_at(addr, &["user", "add", "u", "--password", "p"]);
    cli_at(addr, &["permissions", "set", "u", vhost, ".*", ".*", ".*"]);
}

/// `amqp://u:p@NODE/VHOST` (the vhost percent-encoded).
fn uri_of_u(cluster: &Cluster, node: usize, vhost: &str) -> String {
    let encoded = vhost.replace('/', "%2F");
    format!("amqp://u:p@{}/{encoded}", cluster.node(node).addr())
}

/// Publishes on a confirm channel; the refusal that closed the channel, if any.
async fn publish_refusal(ch: &Channel, exchange: &str, key: &str) -> Option<(u16, String)> {
    let confirm = within(ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish");
    match within(confirm).await {
        Ok(_) => None,
        Err(e) => Some(closed_with(&e)),
    }
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), (u16, String)> {
    within(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .map_err(|e| closed_with(&e))
}

async fn declare(ch: &Channel, queue: &str) -> Result<(), (u16, String)> {
    within(ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .map(|_| ())
    .map_err(|e| closed_with(&e))
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_permissions_restrict_publishing_and_binding_on_topic_exchanges() {
    let cluster = Cluster::start(1, &[]).expect("one node");
    let addr = cluster.grpc_addr(1);
    add_user_u(&addr, "/");
    cli_at(
        &addr,
        &[
            "permissions",
            "set-topic",
            "u",
            "/",
            "amq.topic",
            r"^{username}\.",
            r"^feed\.",
        ],
    );
    // A pattern that does not compile is the operator's error: one line, exit 1.
    let out = warren_cli(&[
        "permissions",
        "set-topic",
        "u",
        "/",
        "amq.topic",
        "(",
        "",
        "--grpc",
        &addr,
    ])
    .expect("run warren");
    assert!(!out.ok);
    assert_eq!(
        out.stderr.trim(),
        "warren: invalid regular expression '(': unclosed group"
    );

    let conn = connect_retrying(&uri_of_u(&cluster, 1, "/"))
        .await
        .expect("u connects");
    let ch = confirm_channel(&conn).await;
    assert_eq!(publish_refusal(&ch, "amq.topic", "u.orders").await, None);
    assert_eq!(
        publish_refusal(&ch, "amq.direct", "anything").await,
        None,
        "only topic exchanges are restricted"
    );
    assert_eq!(
        publish_refusal(&ch, "amq.topic", "bob.orders").await,
        Some((
            403,
            "ACCESS_REFUSED - write access to topic 'bob.orders' in exchange 'amq.topic' in vhost '/' refused for user 'u'".into()
        ))
    );

    let ch = channel(&conn).await;
    let q = "u-feed";
    declare(&ch, q).await.expect("queue.declare");
    bind(&ch, q, "amq.topic", "feed.#").await.expect("allowed");
    assert_eq!(
        bind(&ch, q, "amq.topic", "#").await,
        Err((
            403,
            "ACCESS_REFUSED - read access to topic '#' in exchange 'amq.topic' in vhost '/' refused for user 'u'".into()
        ))
    );

    // Cleared, they restrict nothing any more.
    cli_at(&addr, &["permissions", "clear-topic", "u", "/"]);
    let ch = confirm_channel(&conn).await;
    assert_eq!(publish_refusal(&ch, "amq.topic", "bob.orders").await, None);
    bind(&ch, q, "amq.topic", "#").await.expect("allowed now");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vhosts_max_queues_refuses_new_queues_with_406_and_frees_a_place_when_one_goes() {
    let cluster = Cluster::start(1, &[]).expect("one node");
    let addr = cluster.grpc_addr(1);
    add_user_u(&addr, "/q");
    cli_at(
        &addr,
        &["vhost", "set-limits", "/q", r#"{"max-queues": 2}"#],
    );
    let conn = connect_retrying(&uri_of_u(&cluster, 1, "/q"))
        .await
        .expect("u connects");
    let ch = channel(&conn).await;
    declare(&ch, "a").await.expect("first");
    declare(&ch, "b").await.expect("second");
    declare(&ch, "a")
        .await
        .expect("an existing queue is no new one");
    assert_eq!(
        declare(&ch, "c").await,
        Err((
            406,
            "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/q' (2) is reached".into()
        ))
    );
    let ch = channel(&conn).await;
    within(ch.queue_delete("a".into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete");
    declare(&ch, "c").await.expect("a place is free again");
    // A negative limit is none.
    cli_at(
        &addr,
        &["vhost", "set-limits", "/q", r#"{"max-queues": -1}"#],
    );
    declare(&ch, "d").await.expect("no limit");
}

/// Connects `u` to `node`, expecting a 530 refusal; returns its text.
async fn refused(cluster: &Cluster, node: usize, vhost: &str) -> String {
    let err = within(Connection::connect(
        &uri_of_u(cluster, node, vhost),
        ConnectionProperties::default(),
    ))
    .await
    .expect_err("refused");
    let (code, text) = closed_with(&err);
    assert_eq!(code, 530, "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_count_every_nodes_clients_once_and_still_after_a_leader_change() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let followers: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    // Set through a follower (forwarded to the leader).
    let via = cluster.grpc_addr(f1);
    add_user_u(&via, "/lim");
    cli_at(
        &via,
        &["vhost", "set-limits", "/lim", r#"{"max-connections": 2}"#],
    );
    cli_at(&via, &["user", "set-limits", "u", r#"{"max-channels": 3}"#]);

    // One client on each follower, three channels between them.
    let a = connect_retrying(&uri_of_u(&cluster, f1, "/lim"))
        .await
        .expect("a on a follower");
    let a1 = channel(&a).await;
    let _a2 = channel(&a).await;
    let b = connect_retrying(&uri_of_u(&cluster, f2, "/lim"))
        .await
        .expect("b on the other follower");
    let _b1 = channel(&b).await;
    // Each node counts its own clients and tells the others: every node refuses a third.
    assert_eq!(
        refused(&cluster, leader, "/lim").await,
        "NOT_ALLOWED - access to vhost '/lim' refused for user 'u': connection limit (2) is reached"
    );
    assert_eq!(
        refused(&cluster, f1, "/lim").await,
        "NOT_ALLOWED - access to vhost '/lim' refused for user 'u': connection limit (2) is reached"
    );
    // A fourth channel of the user, wherever it is opened, closes that connection.
    let err = within(b.create_channel())
        .await
        .expect_err("over max-channels");
    assert_eq!(
        closed_with(&err),
        (
            530,
            "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (3)".into()
        )
    );
    assert!(!b.status().connected());
    // b's place is free again (once the leader has heard of it from b's node).
    let c = connect_retrying(&uri_of_u(&cluster, leader, "/lim"))
        .await
        .expect("c on the leader, in b's place");
    drop(c);

    // The leader dies: a keeps its connection on its node, which still counts it; c went with
    // the old leader, whose counts the others drop.
    cluster.node_mut(leader).kill9().expect("kill -9");
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a new leader");
    let admin = guest_api(cluster.node(f2));
    wait_for_json(&admin, "/api/connections", Duration::from_secs(30), |v| {
        v.as_array()
            .is_some_and(|a| a.iter().filter(|c| c["vhost"] == "/lim").count() == 1)
    })
    .await
    .expect("a alone is connected to /lim");
    assert!(a.status().connected(), "a kept its connection");
    let d = connect_retrying(&uri_of_u(&cluster, new_leader, "/lim"))
        .await
        .expect("d takes the second place");
    assert_eq!(
        refused(&cluster, f2, "/lim").await,
        "NOT_ALLOWED - access to vhost '/lim' refused for user 'u': connection limit (2) is reached",
        "a and d fill the vhost"
    );
    // a's two channels and d's first count against max-channels.
    let _d1 = channel(&d).await;
    let err = within(d.create_channel())
        .await
        .expect_err("over max-channels");
    assert_eq!(closed_with(&err).0, 530);
    // a still works.
    let q = "a-still-here";
    declare(&a1, q)
        .await
        .expect("a's channel works after the failover");
    publish(
        &confirm_channel(&a).await,
        "",
        q,
        b"x",
        BasicProperties::default(),
    )
    .await;
}
