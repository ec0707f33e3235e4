//! Users, vhosts and permissions are replicated: changed through one node with the `warren`
//! command line, they hold on every node at once, survive a restart of the whole cluster, and
//! deleting a user closes its connections wherever they are.

use std::time::Duration;

use warren_tests::cluster::{warren_cli, Cluster};
use warren_tests::lapin::options::QueueDeclareOptions;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{Connection, ConnectionProperties};
use warren_tests::{reply_code, within};

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
    let leader = cluster.leader().expect("a leader");
    cli(&[
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
