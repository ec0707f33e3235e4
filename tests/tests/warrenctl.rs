//! `warrenctl` against a three-node cluster: status, listings as tables and JSON, users,
//! vhosts, permissions, topic permissions, limits, queues, connections, definitions and
//! membership, through any node; a failure is one line on stderr and exit status 1.

use warren_tests::cluster::{connect_retrying, CliOutput, Cluster};
use warren_tests::lapin::options::QueueDeclareOptions;
use warren_tests::lapin::BasicProperties;
use warren_tests::management::{guest_api, warrenctl};
use warren_tests::serde_json::Value;
use warren_tests::{confirm_channel, declare_queue, publish, unique};

fn ok(out: CliOutput, what: &str) -> String {
    assert!(out.ok, "warrenctl {what} failed: {}", out.stderr);
    out.stdout
}

/// A failed command: exit status 1 and exactly one line on stderr; returns that line.
fn one_line_error(out: CliOutput) -> String {
    assert!(!out.ok, "expected a failure, got: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", out.stderr);
    assert!(lines[0].starts_with("warrenctl: "), "{}", lines[0]);
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn warrenctl_operates_the_cluster_through_any_node() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let node = cluster.node(follower);

    let status = ok(
        warrenctl(node, &["cluster", "status"]).expect("run"),
        "cluster status",
    );
    assert!(
        status.contains(&format!("leader warren@node{leader}")),
        "{status}"
    );
    assert_eq!(
        status.matches("warren@node").count(),
        5,
        "header + 3 rows:\n{status}"
    );
    assert!(
        status.contains("leader") && status.contains("voter"),
        "{status}"
    );

    // Users, vhosts, permissions.
    ok(
        warrenctl(node, &["add-vhost", "/shop"]).expect("run"),
        "add-vhost",
    );
    ok(
        warrenctl(
            node,
            &["add-user", "carol", "s3cret", "--tags", "monitoring"],
        )
        .expect("run"),
        "add-user",
    );
    ok(
        warrenctl(
            node,
            &["set-permissions", "-p", "/shop", "carol", ".*", ".*", ".*"],
        )
        .expect("run"),
        "set-permissions",
    );
    let users: Value = warren_tests::serde_json::from_str(&ok(
        warrenctl(node, &["list", "users", "--json"]).expect("run"),
        "list users",
    ))
    .expect("JSON");
    assert!(users.as_array().is_some_and(|a| a
        .iter()
        .any(|u| u["name"] == "carol" && u["tags"][0] == "monitoring")));
    let perms = ok(
        warrenctl(node, &["list", "permissions"]).expect("run"),
        "list permissions",
    );
    assert!(
        perms
            .lines()
            .any(|l| l.starts_with("carol") && l.contains("/shop")),
        "{perms}"
    );
    let uri = format!(
        "amqp://carol:s3cret@{}/%2Fshop",
        cluster.node(leader).addr()
    );
    let carol = connect_retrying(&uri)
        .await
        .expect("carol connects to /shop");
    drop(carol);

    // Topic permissions and limits.
    ok(
        warrenctl(
            node,
            &[
                "set-topic-permissions",
                "-p",
                "/shop",
                "carol",
                "amq.topic",
                "^carol\\.",
                ".*",
            ],
        )
        .expect("run"),
        "set-topic-permissions",
    );
    let topic = ok(
        warrenctl(node, &["list", "topic-permissions"]).expect("run"),
        "list topic-permissions",
    );
    assert!(
        topic
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["carol", "/shop", "amq.topic", "^carol\\.", ".*"]),
        "{topic}"
    );
    ok(
        warrenctl(node, &["set-vhost-limit", "-p", "/shop", "max-queues", "7"]).expect("run"),
        "set-vhost-limit",
    );
    ok(
        warrenctl(node, &["set-user-limit", "carol", "max-connections", "-1"]).expect("run"),
        "set-user-limit",
    );
    let limits = ok(
        warrenctl(node, &["list", "vhost-limits"]).expect("run"),
        "list vhost-limits",
    );
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("/shop") && l.ends_with('7')),
        "{limits}"
    );
    let limits = ok(
        warrenctl(node, &["list", "user-limits"]).expect("run"),
        "list user-limits",
    );
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("carol") && l.contains("-1")),
        "{limits}"
    );
    let err = one_line_error(
        warrenctl(node, &["set-user-limit", "carol", "max-queues", "1"]).expect("run"),
    );
    assert!(err.contains("unknown user limit 'max-queues'"), "{err}");
    ok(
        warrenctl(node, &["clear-vhost-limit", "-p", "/shop", "max-queues"]).expect("run"),
        "clear-vhost-limit",
    );
    ok(
        warrenctl(node, &["clear-topic-permissions", "-p", "/shop", "carol"]).expect("run"),
        "clear-topic-permissions",
    );
    let empty = ok(
        warrenctl(node, &["list", "topic-permissions"]).expect("run"),
        "list topic-permissions",
    );
    assert_eq!(empty.lines().count(), 1, "the header only: {empty}");

    // Queues: list as a table, purge, delete.
    let queue = unique("ctl");
    let conn = connect_retrying(cluster.node(leader).uri())
        .await
        .expect("connect");
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, &queue, QueueDeclareOptions::default()).await;
    for _ in 0..3 {
        publish(&ch, "", &queue, b"x", BasicProperties::default()).await;
    }
    let table = ok(
        warrenctl(node, &["list", "queues"]).expect("run"),
        "list queues",
    );
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("vhost") && header.contains("messages"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains(&queue))
        .unwrap_or_else(|| panic!("{queue} listed:\n{table}"));
    assert_eq!(row.split_whitespace().nth(2), Some("3"), "{row}");
    ok(
        warrenctl(node, &["purge-queue", &queue]).expect("run"),
        "purge-queue",
    );
    let q = guest_api(node)
        .get(&format!("/api/queues/%2F/{queue}"))
        .await
        .expect("GET queue");
    assert_eq!(q["messages"], 0);
    ok(
        warrenctl(node, &["delete-queue", &queue]).expect("run"),
        "delete-queue",
    );
    let err = one_line_error(warrenctl(node, &["delete-queue", &queue]).expect("run"));
    assert!(err.contains("404"), "{err}");
    for what in [
        "exchanges",
        "bindings",
        "connections",
        "channels",
        "consumers",
        "vhosts",
    ] {
        ok(warrenctl(node, &["list", what]).expect("run"), what);
    }

    // Close a connection by the name `list connections` shows.
    let conns: Value = warren_tests::serde_json::from_str(&ok(
        warrenctl(node, &["list", "connections", "--json"]).expect("run"),
        "list connections",
    ))
    .expect("JSON");
    let name = conns
        .as_array()
        .and_then(|a| a.iter().find(|c| c["protocol"] == "AMQP 0-9-1"))
        .and_then(|c| c["name"].as_str())
        .expect("the client's connection")
        .to_owned();
    let mut events = conn.events_listener();
    ok(
        warrenctl(node, &["close-connection", &name]).expect("run"),
        "close-connection",
    );
    let e = warren_tests::connection_error(&mut events).await;
    assert_eq!(warren_tests::reply_code(&e), Some(320));

    // Export, then import into the same cluster (idempotent).
    let file = std::env::temp_dir().join(format!("{}.json", unique("defs")));
    let path = file.to_string_lossy().into_owned();
    ok(warrenctl(node, &["export", &path]).expect("run"), "export");
    let defs: Value = warren_tests::serde_json::from_str(
        &std::fs::read_to_string(&file).expect("the file is written"),
    )
    .expect("JSON");
    assert!(defs["users"]
        .as_array()
        .is_some_and(|a| a.iter().any(|u| u["name"] == "carol")));
    ok(warrenctl(node, &["import", &path]).expect("run"), "import");
    let _ = std::fs::remove_file(&file);

    // Errors: one line, status 1.
    let err =
        one_line_error(warrenctl(node, &["--password", "nope", "list", "queues"]).expect("run"));
    assert!(err.contains("401") && err.contains("Login failed"), "{err}");
    let err = one_line_error(warrenctl(node, &["import", "/nonexistent/defs.json"]).expect("run"));
    assert!(err.contains("/nonexistent/defs.json"), "{err}");

    // Membership: a fourth node joins (learner, caught up, voter), then leaves.
    let id = cluster.start_joining(&[]).expect("node 4 starts");
    let spec = cluster.member_spec(id);
    let grpc = cluster.grpc_addr(follower);
    let joined = ok(
        warrenctl(cluster.node(follower), &["join", &spec, "--grpc", &grpc]).expect("run"),
        "join",
    );
    assert!(!joined.is_empty());
    let status = ok(
        warrenctl(cluster.node(follower), &["cluster", "status"]).expect("run"),
        "cluster status",
    );
    assert_eq!(
        status.matches("warren@node").count(),
        6,
        "4 members:\n{status}"
    );
    ok(
        warrenctl(
            cluster.node(follower),
            &["leave", &id.to_string(), "--grpc", &grpc],
        )
        .expect("run"),
        "leave",
    );
    let status = ok(
        warrenctl(cluster.node(follower), &["cluster", "status"]).expect("run"),
        "cluster status",
    );
    assert_eq!(
        status.matches("warren@node").count(),
        5,
        "3 members again:\n{status}"
    );
}
