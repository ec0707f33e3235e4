//! The management HTTP API against a three-node cluster: RabbitMQ's paths and JSON shapes,
//! values that follow the traffic of real AMQP clients, any node answering for the whole
//! cluster, the changes it makes (publish, get, purge, delete, close a connection, users,
//! definitions), and its refusals.

use std::time::Duration;

use warren_tests::cluster::{connect_retrying, Cluster};
use warren_tests::lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, ExchangeKind};
use warren_tests::management::{api, guest_api, segment, wait_for_json};
use warren_tests::serde_json::{json, Value};
use warren_tests::Broker;
use warren_tests::{
    closed_with, confirm_channel, connection_error, consume, publish, unique, within,
};

const WAIT: Duration = Duration::from_secs(15);

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn has_keys(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(*k).is_some(), "'{k}' missing in {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_shows_the_clusters_topology_traffic_and_clients_as_rabbitmq_does() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let other = (1..=3)
        .find(|n| *n != leader && *n != follower)
        .expect("a third node");
    let (exchange, queue) = (unique("mx"), unique("mq"));
    let q_path = format!("/api/queues/%2F/{}", segment(&queue));

    // A client of a follower declares, binds and publishes 20 confirmed messages.
    let conn = connect_retrying(cluster.node(follower).uri())
        .await
        .expect("connect");
    let ch = confirm_channel(&conn).await;
    within(ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("exchange.declare");
    within(ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("queue.declare");
    within(ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "k.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
    for i in 0..20 {
        publish(
            &ch,
            &exchange,
            "k.a",
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }

    // Every node answers with the same queue, in RabbitMQ's shape.
    for n in 1..=3 {
        let q = guest_api(cluster.node(n))
            .get(&q_path)
            .await
            .expect("GET queue");
        has_keys(
            &q,
            &[
                "name",
                "vhost",
                "durable",
                "auto_delete",
                "exclusive",
                "arguments",
                "consumers",
                "messages",
                "messages_ready",
                "messages_unacknowledged",
                "messages_details",
                "message_stats",
                "node",
                "state",
                "type",
                "leader",
                "members",
            ],
        );
        assert_eq!(q["messages"], 20, "node {n}: {q}");
        assert_eq!(q["messages_ready"], 20);
        assert_eq!(q["messages_unacknowledged"], 0);
        assert_eq!(q["message_stats"]["publish"], 20);
        assert_eq!(q["leader"], format!("warren@node{leader}"));
        assert_eq!(q["members"].as_array().map(Vec::len), Some(3));
    }
    let api3 = guest_api(cluster.node(other));
    let overview = api3.get("/api/overview").await.expect("overview");
    has_keys(
        &overview,
        &[
            "management_version",
            "rabbitmq_version",
            "cluster_name",
            "node",
            "message_stats",
            "queue_totals",
            "object_totals",
            "listeners",
            "contexts",
        ],
    );
    assert!(overview["queue_totals"]["messages"].as_u64() >= Some(20));
    assert!(overview["object_totals"]["connections"].as_u64() >= Some(1));
    assert_eq!(overview["node"], format!("warren@node{other}"));
    let exchanges = api3.get("/api/exchanges/%2F").await.expect("exchanges");
    let x = exchanges
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == exchange.as_str()))
        .expect("the exchange is listed");
    assert_eq!(x["type"], "topic");
    assert_eq!(x["message_stats"]["publish_in"], 20);
    assert!(names(&exchanges).contains(&"amq.topic".to_owned()));
    let bindings = api3.get("/api/bindings").await.expect("bindings");
    let bindings = bindings.as_array().expect("a list");
    assert!(bindings.iter().any(|b| b["source"] == exchange.as_str()
        && b["destination"] == queue.as_str()
        && b["destination_type"] == "queue"
        && b["routing_key"] == "k.#"));
    assert!(
        bindings
            .iter()
            .any(|b| b["source"] == "" && b["destination"] == queue.as_str()),
        "the default exchange's implicit binding is listed, as by RabbitMQ"
    );

    // Connections, channels and consumers of a follower's client, seen through another node.
    let consumer_ch = confirm_channel(&conn).await;
    within(consumer_ch.basic_qos(5, BasicQosOptions::default()))
        .await
        .expect("basic.qos");
    let _consumer = consume(
        &consumer_ch,
        &queue,
        "watcher",
        BasicConsumeOptions::default(),
    )
    .await;
    let q = wait_for_json(&api3, &q_path, WAIT, |q| q["messages_unacknowledged"] == 5)
        .await
        .expect("five deliveries are unacked (prefetch 5)");
    assert_eq!(q["consumers"], 1);
    assert_eq!(q["messages_ready"], 15);
    let connections = api3.get("/api/connections").await.expect("connections");
    let c = connections
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|c| c["node"] == format!("warren@node{follower}"))
        })
        .expect("the follower's client is listed");
    has_keys(
        c,
        &[
            "name",
            "node",
            "user",
            "vhost",
            "channels",
            "peer_host",
            "peer_port",
            "port",
            "protocol",
            "client_properties",
            "connected_at",
            "state",
        ],
    );
    assert_eq!(c["user"], "guest");
    assert_eq!(c["vhost"], "/");
    assert_eq!(c["channels"], 2);
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    assert_eq!(c["port"], cluster.node(follower).addr().port());
    let conn_name = c["name"].as_str().expect("a name").to_owned();
    assert!(conn_name.contains(" -> "), "{conn_name}");
    let channels = api3.get("/api/channels").await.expect("channels");
    assert!(channels
        .as_array()
        .is_some_and(|a| a
            .iter()
            .any(|ch| ch["connection_details"]["name"] == conn_name.as_str()
                && ch["prefetch_count"] == 5
                && ch["consumer_count"] == 1)));
    let consumers = api3.get("/api/consumers").await.expect("consumers");
    let k = consumers
        .as_array()
        .and_then(|a| a.iter().find(|k| k["consumer_tag"] == "watcher"))
        .expect("the consumer is listed");
    assert_eq!(k["queue"]["name"], queue.as_str());
    assert_eq!(k["ack_required"], true);
    assert_eq!(k["prefetch_count"], 5);

    // Rates follow traffic: publish for a while, then the queue shows a publish rate.
    let publisher = confirm_channel(&conn).await;
    let q = {
        let mut found = None;
        for i in 0..60 {
            publish(
                &publisher,
                &exchange,
                "k.b",
                b"tick",
                BasicProperties::default(),
            )
            .await;
            if i % 10 == 9 {
                let q = api3.get(&q_path).await.expect("GET queue");
                if q["message_stats"]["publish_details"]["rate"].as_f64() > Some(0.0) {
                    found = Some(q);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.expect("a publish rate above 0 within 60 publishes")
    };
    assert!(q["message_stats"]["publish"].as_u64() > Some(20));
    // Confirms are counted by the node whose client was confirmed (the follower's), and the
    // overview adds up every node's.
    let overview = wait_for_json(&api3, "/api/overview", WAIT, |o| {
        o["message_stats"]["confirm"].as_u64() > Some(20)
    })
    .await
    .expect("the overview counts the confirms");
    assert!(overview["message_stats"]["confirm_details"]["rate"].is_f64());

    // Nodes, health, metrics.
    let nodes = api3
        .get("/api/nodes?msg_rates_age=60&msg_rates_incr=5")
        .await
        .expect("nodes");
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), 3);
    // Each node's own clients: the follower's published and had confirmed what this test sent.
    let of = |n: usize| {
        nodes
            .iter()
            .find(|x| x["name"] == format!("warren@node{n}"))
            .unwrap_or_else(|| panic!("node {n} in {nodes:?}"))
    };
    let stats = &of(follower)["message_stats"];
    assert!(stats["publish"].as_u64() > Some(20), "{stats}");
    assert!(stats["confirm"].as_u64() > Some(20), "{stats}");
    assert!(stats["publish_details"]["samples"].is_array(), "{stats}");
    assert!(of(follower)["mem_used_details"]["samples"].is_array());
    // The replicated queues' messages are counted on the leader, which serves them.
    let queued = |n: usize| {
        of(n)["queue_totals"]["messages_ready"]
            .as_u64()
            .unwrap_or(0)
            + of(n)["queue_totals"]["messages_unacknowledged"]
                .as_u64()
                .unwrap_or(0)
    };
    assert!(queued(leader) > 20, "{:?}", of(leader)["queue_totals"]);
    assert_eq!(queued(follower), 0, "{:?}", of(follower)["queue_totals"]);
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n["raft"]["role"] == "leader")
            .count(),
        1
    );
    assert!(nodes
        .iter()
        .all(|n| n["running"] == true && n["raft"]["lag"].is_u64()));
    assert_eq!(
        api3.get("/api/healthchecks/node").await.expect("health"),
        json!({"status": "ok"})
    );
    let (status, metrics) = api3
        .request("GET", "/metrics", None)
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    let fsyncs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("warren_wal_fsync_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(fsyncs > 0, "the WAL was fsynced and timed:\n{metrics}");
    let leader_changes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("warren_raft_leader_changes_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        leader_changes >= 1,
        "the leader elected since the node started is counted:\n{metrics}"
    );
    for m in [
        "warren_connections ",
        "warren_queue_messages_ready ",
        "warren_messages_published_total ",
        "warren_raft_term ",
        "warren_raft_commit_index ",
        "warren_raft_leader_changes_total ",
        "warren_wal_fsync_seconds_bucket{le=\"+Inf\"} ",
        "warren_process_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(m), "{m} missing in:\n{metrics}");
    }
    let follower_metrics = guest_api(cluster.node(follower))
        .request("GET", "/metrics", None)
        .await
        .expect("metrics")
        .1;
    assert!(
        follower_metrics
            .as_str()
            .is_some_and(|m| m.contains("warren_connections 1\n")),
        "the follower counts its own client: {follower_metrics}"
    );

    // Publish and get through the API of another node.
    let api1 = guest_api(cluster.node(leader));
    let routed = api1
        .call(
            "POST",
            &format!("/api/exchanges/%2F/{}/publish", segment(&exchange)),
            Some(&json!({"routing_key": "k.api", "payload": "from the API", "payload_encoding": "string", "properties": {"content_type": "text/plain"}})),
        )
        .await
        .expect("publish");
    assert_eq!(routed, json!({"routed": true}));
    let unrouted = api1
        .call(
            "POST",
            &format!("/api/exchanges/%2F/{}/publish", segment(&exchange)),
            Some(&json!({"routing_key": "nowhere", "payload": "x", "payload_encoding": "string", "properties": {}})),
        )
        .await
        .expect("publish");
    assert_eq!(unrouted, json!({"routed": false}));
    let side = unique("side");
    api1.call(
        "PUT",
        &format!("/api/queues/%2F/{side}"),
        Some(&json!({"durable": true})),
    )
    .await
    .expect("declare");
    api1.call(
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        Some(&json!({"routing_key": side, "payload": "hello", "payload_encoding": "string", "properties": {}})),
    )
    .await
    .expect("publish to the default exchange");
    let got = api3
        .call(
            "POST",
            &format!("/api/queues/%2F/{side}/get"),
            Some(&json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})),
        )
        .await
        .expect("get");
    let got = got.as_array().expect("a list");
    assert_eq!(got.len(), 1);
    has_keys(
        &got[0],
        &[
            "payload",
            "payload_bytes",
            "payload_encoding",
            "redelivered",
            "exchange",
            "routing_key",
            "message_count",
            "properties",
        ],
    );
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["routing_key"], side.as_str());
    // ack_requeue_true leaves it in the queue, redelivered next time.
    let again = api3
        .call(
            "POST",
            &format!("/api/queues/%2F/{side}/get"),
            Some(&json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})),
        )
        .await
        .expect("get");
    assert_eq!(again[0]["redelivered"], true);
    wait_for_json(&api3, &format!("/api/queues/%2F/{side}"), WAIT, |q| {
        q["messages"] == 0
    })
    .await
    .expect("ack_requeue_false removes the message");

    // Purge and delete.
    let api2 = guest_api(cluster.node(follower));
    assert_eq!(
        api2.request("DELETE", &format!("{q_path}/contents"), None)
            .await
            .expect("purge")
            .0,
        204
    );
    let q = api2.get(&q_path).await.expect("GET queue");
    assert_eq!(q["messages_ready"], 0, "{q}");
    assert_eq!(
        api2.request("DELETE", &format!("/api/queues/%2F/{side}"), None)
            .await
            .expect("delete")
            .0,
        204
    );
    assert_eq!(
        api2.request("GET", &format!("/api/queues/%2F/{side}"), None)
            .await
            .expect("get")
            .0,
        404
    );

    // Closing the client's connection through a node that does not hold it.
    let mut events = conn.events_listener();
    let (status, _) = api1
        .request_with(
            "DELETE",
            &format!("/api/connections/{}", segment(&conn_name)),
            None,
            &[("x-reason", "maintenance")],
        )
        .await
        .expect("close connection");
    assert_eq!(status, 204);
    let err = connection_error(&mut events).await;
    assert_eq!(
        closed_with(&err),
        (320, "CONNECTION_FORCED - maintenance".into())
    );
    wait_for_json(&api3, "/api/connections", WAIT, |cs| {
        !names(cs).contains(&conn_name)
    })
    .await
    .expect("the closed connection is gone from the list");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_user_tags_decide_what_a_user_sees_and_does() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let admin = guest_api(cluster.node(follower));
    let refused = |r: (u16, Value)| (r.0, r.1["reason"].as_str().unwrap_or_default().to_owned());

    assert_eq!(
        refused(
            api(cluster.node(1), "guest", "wrong")
                .request("GET", "/api/overview", None)
                .await
                .expect("answer")
        ),
        (401, "Login failed".into())
    );
    assert_eq!(
        refused(
            api(cluster.node(1), "nobody", "x")
                .request("GET", "/api/queues", None)
                .await
                .expect("answer")
        ),
        (401, "Login failed".into())
    );

    // Users made through the API of a follower hold on every node at once.
    let other_vhost = unique("/v");
    admin
        .call(
            "PUT",
            &format!("/api/vhosts/{}", segment(&other_vhost)),
            None,
        )
        .await
        .expect("vhost");
    for (user, tags) in [("app", ""), ("mon", "monitoring"), ("dev", "management")] {
        let status = admin
            .request(
                "PUT",
                &format!("/api/users/{user}"),
                Some(&json!({"password": "pw", "tags": tags})),
            )
            .await
            .expect("PUT user")
            .0;
        assert_eq!(status, 201, "user {user} created");
        admin
            .call(
                "PUT",
                &format!("/api/permissions/%2F/{user}"),
                Some(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
            )
            .await
            .expect("permissions");
    }
    assert_eq!(
        refused(
            admin
                .request("PUT", "/api/users/notags", Some(&json!({"password": "pw"})))
                .await
                .expect("answer")
        ),
        (400, "tags_not_present".into()),
        "RabbitMQ requires the tags key"
    );
    admin
        .call(
            "PUT",
            &format!("/api/queues/{}/hidden", segment(&other_vhost)),
            Some(&json!({})),
        )
        .await
        .expect_err("guest has no permissions on the new vhost");
    admin
        .call(
            "PUT",
            &format!("/api/permissions/{}/guest", segment(&other_vhost)),
            Some(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .expect("permissions");
    admin
        .call(
            "PUT",
            &format!("/api/queues/{}/hidden", segment(&other_vhost)),
            Some(&json!({})),
        )
        .await
        .expect("declare in the other vhost");
    admin
        .call("PUT", "/api/queues/%2F/shown", Some(&json!({})))
        .await
        .expect("declare in /");

    let leader_node = cluster.node(leader);
    assert_eq!(
        refused(
            api(leader_node, "app", "pw")
                .request("GET", "/api/overview", None)
                .await
                .expect("answer")
        ),
        (401, "Not management user".into())
    );
    // Monitoring: sees every vhost, may not manage users.
    let mon = api(leader_node, "mon", "pw");
    let all = mon.get("/api/queues").await.expect("queues");
    assert!(
        names(&all).contains(&"hidden".to_owned()) && names(&all).contains(&"shown".to_owned())
    );
    assert_eq!(
        refused(
            mon.request("GET", "/api/users", None)
                .await
                .expect("answer")
        )
        .0,
        401
    );
    assert_eq!(
        refused(
            mon.request("PUT", "/api/users/x", Some(&json!({"password": "p"})))
                .await
                .expect("answer")
        ),
        (401, "Not administrator user".into())
    );
    // Management: only the vhosts it has permissions in.
    let dev = api(leader_node, "dev", "pw");
    let mine = dev.get("/api/queues").await.expect("queues");
    assert!(names(&mine).contains(&"shown".to_owned()));
    assert!(!names(&mine).contains(&"hidden".to_owned()), "{mine}");
    assert_eq!(
        dev.request(
            "GET",
            &format!("/api/queues/{}/hidden", segment(&other_vhost)),
            None
        )
        .await
        .expect("answer")
        .0,
        404
    );
    // Its AMQP permissions apply to what it does through the API.
    admin
        .call(
            "PUT",
            "/api/permissions/%2F/dev",
            Some(&json!({"configure": "^dev\\.", "write": ".*", "read": ".*"})),
        )
        .await
        .expect("narrow permissions");
    let (status, body) = dev
        .request("DELETE", "/api/queues/%2F/shown", None)
        .await
        .expect("answer");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("ACCESS_REFUSED")),
        "{body}"
    );
    // guest is a loopback user over HTTP too; the check is in `auth`'s unit test (the tests
    // reach the nodes over loopback only).

    // Deleting a user: 204, then 404.
    assert_eq!(
        admin
            .request("DELETE", "/api/users/app", None)
            .await
            .expect("answer")
            .0,
        204
    );
    assert_eq!(
        admin
            .request("GET", "/api/users/app", None)
            .await
            .expect("answer")
            .0,
        404
    );
}

/// A definitions file as RabbitMQ 3.10 exports it (user tags as a list, or as the older
/// comma-separated string), with a salted SHA-256 hash RabbitMQ produced for "test12".
const RABBIT_DEFINITIONS: &str = r#"{
  "rabbit_version": "3.10.8",
  "rabbitmq_version": "3.10.8",
  "product_name": "RabbitMQ",
  "product_version": "3.10.8",
  "users": [
    {"name": "imported", "password_hash": "ytUIm2F9eV3qWWARNnCjyAl43Ykoi8RM6UsDGYNU4KCxHspv",
     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"],
     "limits": {"max-channels": 5}},
    {"name": "ops", "password_hash": "ytUIm2F9eV3qWWARNnCjyAl43Ykoi8RM6UsDGYNU4KCxHspv",
     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator,monitoring", "limits": {}}
  ],
  "vhosts": [{"name": "/", "limits": [], "metadata": {"description": "Default virtual host", "tags": []}}],
  "permissions": [
    {"user": "imported", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
    {"user": "ops", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
  ],
  "topic_permissions": [
    {"user": "imported", "vhost": "/", "exchange": "shop", "write": "^order\\.", "read": ".*"}
  ],
  "parameters": [
    {"value": {"max-connections": 50}, "vhost": "/", "component": "vhost-limits", "name": "limits"}
  ],
  "global_parameters": [{"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-x"}],
  "policies": [],
  "queues": [
    {"name": "orders", "vhost": "/", "durable": true, "auto_delete": false,
     "arguments": {"x-queue-type": "classic", "x-max-length": 1000}}
  ],
  "exchanges": [
    {"name": "shop", "vhost": "/", "type": "topic", "durable": true, "auto_delete": false,
     "internal": false, "arguments": {}}
  ],
  "bindings": [
    {"source": "shop", "vhost": "/", "destination": "orders", "destination_type": "queue",
     "routing_key": "order.*", "arguments": {}}
  ]
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_definitions_import_and_export_round_trip() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let admin = guest_api(cluster.node(2));
    let defs: Value = warren_tests::serde_json::from_str(RABBIT_DEFINITIONS).expect("JSON");
    assert_eq!(
        admin
            .request("POST", "/api/definitions", Some(&defs))
            .await
            .expect("import")
            .0,
        204
    );
    // The imported user logs in over AMQP (its RabbitMQ hash) and over HTTP, on another node.
    let ops = api(cluster.node(3), "ops", "test12");
    let me = ops.get("/api/whoami").await.expect("ops logs in");
    assert_eq!(me["tags"], json!(["administrator", "monitoring"]));
    let uri = format!("amqp://imported:test12@{}/%2F", cluster.node(1).addr());
    let conn = connect_retrying(&uri)
        .await
        .expect("imported user connects over AMQP");
    let ch = confirm_channel(&conn).await;
    publish(&ch, "shop", "order.new", b"o1", BasicProperties::default()).await;
    let q = wait_for_json(&ops, "/api/queues/%2F/orders", WAIT, |q| q["messages"] == 1)
        .await
        .expect("the imported binding routes");
    assert_eq!(q["arguments"]["x-max-length"], 1000);
    // RabbitMQ 3.10's places for topic permissions and limits.
    assert_eq!(
        ops.get("/api/topic-permissions").await.expect("GET"),
        json!([{"user": "imported", "vhost": "/", "exchange": "shop",
                "write": "^order\\.", "read": ".*"}])
    );
    assert_eq!(
        ops.get("/api/user-limits").await.expect("GET"),
        json!([{"user": "imported", "value": {"max-channels": 5}}])
    );
    assert_eq!(
        ops.get("/api/vhost-limits").await.expect("GET"),
        json!([{"vhost": "/", "value": {"max-connections": 50}}])
    );

    let export = ops.get("/api/definitions").await.expect("export");
    has_keys(
        &export,
        &[
            "rabbit_version",
            "users",
            "vhosts",
            "permissions",
            "queues",
            "exchanges",
            "bindings",
            "policies",
        ],
    );
    assert!(names(&export["queues"]).contains(&"orders".to_owned()));
    assert!(names(&export["exchanges"]).contains(&"shop".to_owned()));
    assert!(
        !names(&export["exchanges"])
            .iter()
            .any(|n| n.starts_with("amq.") || n.is_empty()),
        "predeclared exchanges are not exported"
    );
    let user = export["users"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "imported"))
        .expect("the user is exported");
    assert_eq!(
        user["password_hash"],
        "ytUIm2F9eV3qWWARNnCjyAl43Ykoi8RM6UsDGYNU4KCxHspv"
    );
    assert!(export["bindings"].as_array().is_some_and(|a| a
        .iter()
        .any(|b| b["source"] == "shop" && b["routing_key"] == "order.*")));
    // An export imports again unchanged (idempotent).
    assert_eq!(
        admin
            .request("POST", "/api/definitions", Some(&export))
            .await
            .expect("import")
            .0,
        204
    );
    assert_eq!(
        admin
            .request("POST", "/api/definitions", Some(&json!([1, 2])))
            .await
            .expect("answer")
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_without_members_serves_the_api_too() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    // The node forms its group of one just after it listens.
    let nodes = wait_for_json(&admin, "/api/nodes", WAIT, |n| {
        n.as_array().is_some_and(|a| a.len() == 1)
    })
    .await
    .expect("one node");
    assert_eq!(nodes[0]["raft"]["role"], "leader");
    admin
        .call(
            "PUT",
            "/api/users/solo",
            Some(&json!({"password": "pw", "tags": "management"})),
        )
        .await
        .expect("a user is added without a gRPC service");
    admin
        .call(
            "PUT",
            "/api/permissions/%2F/solo",
            Some(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .expect("permissions");
    let solo = api(&node, "solo", "pw");
    solo.call(
        "PUT",
        "/api/queues/%2F/solo-q",
        Some(&json!({"durable": false})),
    )
    .await
    .expect("declare through a direct connection");
    let q = solo.get("/api/queues/%2F/solo-q").await.expect("GET queue");
    assert_eq!(
        (q["durable"].clone(), q["messages"].clone()),
        (json!(false), json!(0))
    );
    let (status, body) = api(&node, "solo", "pw")
        .request("GET", "/", None)
        .await
        .expect("console");
    assert_eq!(status, 200);
    assert!(
        body.as_str().is_some_and(|html| html.contains("app.js")),
        "the console page"
    );
}

/// A transient queue's numbers and consumers are its home node's: any node's API shows them,
/// and names that node as the queue's.
#[tokio::test(flavor = "multi_thread")]
async fn a_transient_queues_numbers_and_consumers_come_from_its_home_node() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let home = (1..=3).find(|n| *n != leader).expect("a follower");
    let other = (1..=3)
        .find(|n| *n != leader && *n != home)
        .expect("a third node");
    let queue = unique("tq");
    let q_path = format!("/api/queues/%2F/{}", segment(&queue));
    // A client of `home` declares a non-durable queue and publishes 7 messages to it.
    let owner = connect_retrying(cluster.node(home).uri())
        .await
        .expect("connect");
    let ch = confirm_channel(&owner).await;
    within(ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.declare");
    for i in 0..7 {
        publish(
            &ch,
            "",
            &queue,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    // A client of the leader consumes two of them (prefetch 2), through a home session there.
    let worker = connect_retrying(cluster.node(leader).uri())
        .await
        .expect("connect");
    let wch = confirm_channel(&worker).await;
    within(wch.basic_qos(2, BasicQosOptions::default()))
        .await
        .expect("basic.qos");
    let _consumer = consume(&wch, &queue, "remote", BasicConsumeOptions::default()).await;

    let api = guest_api(cluster.node(other));
    let q = wait_for_json(&api, &q_path, WAIT, |q| q["messages_unacknowledged"] == 2)
        .await
        .expect("two deliveries unacked on the home");
    assert_eq!(q["messages"], 7, "{q}");
    assert_eq!(q["messages_ready"], 5);
    assert_eq!(q["consumers"], 1);
    assert_eq!(q["durable"], false);
    assert_eq!(q["node"], format!("warren@node{home}"));
    let consumers = api.get("/api/consumers").await.expect("consumers");
    let k = consumers
        .as_array()
        .and_then(|a| a.iter().find(|k| k["consumer_tag"] == "remote"))
        .expect("the consumer is listed");
    assert_eq!(k["queue"]["name"], queue.as_str());
    assert_eq!(
        k["channel_details"]["node"],
        format!("warren@node{leader}"),
        "{k}"
    );
    let channels = api.get("/api/channels").await.expect("channels");
    assert!(
        channels.as_array().is_some_and(|a| a
            .iter()
            .any(|c| c["node"] == format!("warren@node{leader}")
                && c["consumer_count"] == 1
                && c["messages_unacknowledged"] == 2)),
        "the worker's channel counts its consumer and deliveries: {channels}"
    );
}

/// Topic permissions and vhost/user limits through RabbitMQ's paths and JSON, set through one
/// node, read through another, enforced for AMQP clients of a third, and carried by the
/// definitions export and import.
#[tokio::test(flavor = "multi_thread")]
async fn topic_permissions_and_limits_through_the_api_hold_on_every_node() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let (admin, other) = (guest_api(cluster.node(2)), guest_api(cluster.node(3)));
    admin
        .call(
            "PUT",
            "/api/users/tp",
            Some(&json!({"password": "pw", "tags": ""})),
        )
        .await
        .expect("user");
    admin
        .call("PUT", "/api/vhosts/%2Flim", None)
        .await
        .expect("vhost");
    for vhost in ["%2F", "%2Flim"] {
        admin
            .call(
                "PUT",
                &format!("/api/permissions/{vhost}/tp"),
                Some(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
            )
            .await
            .expect("permissions");
    }

    // Topic permissions: 201 for the user's first in the vhost, 204 after.
    let put =
        |exchange: &str, write: &str| json!({"exchange": exchange, "write": write, "read": ".*"});
    let path = "/api/topic-permissions/%2F/tp";
    let (status, _) = admin
        .request("PUT", path, Some(&put("amq.topic", r"^tp\.")))
        .await
        .expect("PUT");
    assert_eq!(status, 201);
    let (status, _) = admin
        .request("PUT", path, Some(&put("logs", "")))
        .await
        .expect("PUT");
    assert_eq!(status, 204);
    let expected = json!([
        {"user": "tp", "vhost": "/", "exchange": "amq.topic", "write": r"^tp\.", "read": ".*"},
        {"user": "tp", "vhost": "/", "exchange": "logs", "write": "", "read": ".*"},
    ]);
    assert_eq!(other.get(path).await.expect("GET"), expected);
    assert_eq!(
        other
            .get("/api/users/tp/topic-permissions")
            .await
            .expect("GET"),
        expected
    );
    assert_eq!(
        other
            .get("/api/vhosts/%2F/topic-permissions")
            .await
            .expect("GET"),
        expected
    );
    for (body, status, reason) in [
        (
            json!({"write": "", "read": ""}),
            400,
            "[{key_missing,exchange}]",
        ),
        (
            put("amq.topic", "("),
            400,
            "invalid regular expression '(': unclosed group",
        ),
    ] {
        let (got, answer) = admin
            .request("PUT", path, Some(&body))
            .await
            .expect("answer");
        assert_eq!((got, answer["reason"].as_str()), (status, Some(reason)));
    }
    let (status, _) = admin
        .request("GET", "/api/topic-permissions/%2F/guest", None)
        .await
        .expect("answer");
    assert_eq!(status, 404, "guest has none");
    // Enforced for a client of the third node.
    let uri = format!("amqp://tp:pw@{}/%2F", cluster.node(1).addr());
    let conn = connect_retrying(&uri).await.expect("tp connects");
    let ch = confirm_channel(&conn).await;
    let confirm = within(ch.basic_publish(
        "amq.topic".into(),
        "not-tp".into(),
        Default::default(),
        b"m",
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish");
    let err = within(confirm).await.expect_err("refused");
    assert_eq!(closed_with(&err).0, 403);

    // Vhost limits: set one at a time (the others stay), listed as RabbitMQ lists them.
    let limit = "/api/vhost-limits/%2Flim";
    for (name, value) in [("max-connections", 1), ("max-queues", 10)] {
        let (status, _) = admin
            .request(
                "PUT",
                &format!("{limit}/{name}"),
                Some(&json!({ "value": value })),
            )
            .await
            .expect("PUT");
        assert_eq!(status, 204);
    }
    let listed = json!([{"vhost": "/lim", "value": {"max-connections": 1, "max-queues": 10}}]);
    assert_eq!(other.get(limit).await.expect("GET"), listed);
    assert_eq!(other.get("/api/vhost-limits").await.expect("GET"), listed);
    for (path, body, status) in [
        (format!("{limit}/max-queues"), json!({"value": "x"}), 400),
        (format!("{limit}/max-channels"), json!({"value": 1}), 400),
        (
            "/api/vhost-limits/nowhere/max-queues".to_owned(),
            json!({"value": 1}),
            404,
        ),
    ] {
        let (got, _) = admin
            .request("PUT", &path, Some(&body))
            .await
            .expect("answer");
        assert_eq!(got, status, "PUT {path} {body}");
    }
    let lim_uri = format!("amqp://tp:pw@{}/%2Flim", cluster.node(1).addr());
    let _first = connect_retrying(&lim_uri)
        .await
        .expect("the one connection");
    let err = within(warren_tests::lapin::Connection::connect(
        &format!("amqp://tp:pw@{}/%2Flim", cluster.node(3).addr()),
        Default::default(),
    ))
    .await
    .expect_err("over max-connections");
    assert_eq!(
        closed_with(&err),
        (
            530,
            "NOT_ALLOWED - access to vhost '/lim' refused for user 'tp': connection limit (1) is reached".into()
        )
    );

    // User limits, shown with the user too.
    let (status, _) = admin
        .request(
            "PUT",
            "/api/user-limits/tp/max-channels",
            Some(&json!({"value": 5})),
        )
        .await
        .expect("PUT");
    assert_eq!(status, 204);
    assert_eq!(
        other.get("/api/user-limits/tp").await.expect("GET"),
        json!([{"user": "tp", "value": {"max-channels": 5}}])
    );
    assert_eq!(
        other.get("/api/users/tp").await.expect("GET")["limits"],
        json!({"max-channels": 5})
    );
    assert_eq!(
        other.get("/api/user-limits/guest").await.expect("GET"),
        json!([])
    );

    // The definitions carry them; cleared, an import brings them back.
    let export = admin.get("/api/definitions").await.expect("export");
    assert_eq!(export["topic_permissions"], expected);
    assert!(export["parameters"]
        .as_array()
        .is_some_and(|a| a.contains(&json!({
            "value": {"max-connections": 1, "max-queues": 10}, "vhost": "/lim",
            "component": "vhost-limits", "name": "limits",
        }))));
    admin.call("DELETE", path, None).await.expect("DELETE");
    admin
        .call("DELETE", &format!("{limit}/max-connections"), None)
        .await
        .expect("DELETE");
    admin
        .call("DELETE", "/api/user-limits/tp/max-channels", None)
        .await
        .expect("DELETE");
    assert_eq!(
        admin.request("GET", path, None).await.expect("answer").0,
        404
    );
    assert_eq!(
        other.get(limit).await.expect("GET"),
        json!([{"vhost": "/lim", "value": {"max-queues": 10}}])
    );
    let (status, _) = admin
        .request("POST", "/api/definitions", Some(&export))
        .await
        .expect("import");
    assert_eq!(status, 204);
    assert_eq!(other.get(path).await.expect("GET"), expected);
    assert_eq!(other.get(limit).await.expect("GET"), listed);
    assert_eq!(
        other.get("/api/user-limits").await.expect("GET"),
        json!([{"user": "tp", "value": {"max-channels": 5}}])
    );
}

// ---- Issue 18: list parameters, bindings of one object, aliveness, queue types, long names,
// ---- user_provided_name, and RabbitMQ's Prometheus metrics.

/// `GET path` answered with an error: its status and JSON body.
async fn refused(
    api: &warren_tests::management::ApiClient,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, body) = api.request(method, path, body).await.expect("an answer");
    assert!(status >= 400, "{method} {path} answered {status}: {body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_are_sorted_cut_to_columns_and_paged_as_rabbitmq_does() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    let prefix = unique("pg");
    let conn = node.connect().await;
    let ch = confirm_channel(&conn).await;
    for (suffix, messages) in [("a", 3), ("b", 1), ("c", 2)] {
        let q = format!("{prefix}-{suffix}");
        warren_tests::declare_queue(
            &ch,
            &q,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await;
        for _ in 0..messages {
            publish(&ch, "", &q, b"m", BasicProperties::default()).await;
        }
    }
    let q = |s: &str| format!("{prefix}-{s}");

    // A page: RabbitMQ's object, filtered by name, sorted by the column asked for, cut to columns.
    let page = admin
        .get(&format!(
            "/api/queues/%2F?page=1&page_size=2&name={prefix}&sort=messages&sort_reverse=true&columns=name,messages"
        ))
        .await
        .expect("a page");
    assert_eq!(
        page,
        json!({
            "filtered_count": 3, "item_count": 2, "page": 1, "page_count": 2, "page_size": 2,
            "total_count": 3,
            "items": [{"name": q("a"), "messages": 3}, {"name": q("c"), "messages": 2}],
        })
    );
    let page = admin
        .get("/api/queues?page=2&page_size=2&sort=messages&sort_reverse=true&columns=name")
        .await
        .expect("the second page");
    assert_eq!(page["items"], json!([{"name": q("b")}]));
    let page = admin
        .get(&format!(
            "/api/queues?page=1&name=^{}-[AB]$&use_regex=true&columns=name",
            prefix.to_uppercase()
        ))
        .await
        .expect("a page filtered by a regular expression, case ignored");
    assert_eq!(
        (
            page["items"].clone(),
            page["filtered_count"].clone(),
            page["page_size"].clone()
        ),
        (
            json!([{"name": q("a")}, {"name": q("b")}]),
            json!(2),
            json!(100)
        )
    );
    // Without `page`: a plain list, sorted and cut all the same (`name` filters pages only).
    let list = admin
        .get("/api/queues?sort=name&sort_reverse=true&columns=name,message_stats.publish&name=zzz")
        .await
        .expect("a list");
    assert_eq!(
        list,
        json!([
            {"name": q("c"), "message_stats": {"publish": 2}},
            {"name": q("b"), "message_stats": {"publish": 1}},
            {"name": q("a"), "message_stats": {"publish": 3}},
        ])
    );
    // The other paged lists.
    assert_eq!(
        admin
            .get("/api/vhosts?page=1&columns=name")
            .await
            .expect("vhosts")["items"],
        json!([{"name": "/"}])
    );
    assert_eq!(
        admin
            .get("/api/users?page=1&columns=name,tags")
            .await
            .expect("users")["items"],
        json!([{"name": "guest", "tags": ["administrator"]}])
    );
    for path in ["/api/exchanges", "/api/connections", "/api/channels"] {
        let page = admin
            .get(&format!("{path}?page=1&page_size=500"))
            .await
            .expect("a page");
        assert!(
            page["total_count"].as_u64() >= Some(1) && page["items"].is_array(),
            "{path}: {page}"
        );
    }
    let bindings = admin
        .get("/api/bindings/%2F?page=1&columns=destination&sort=destination&sort_reverse=true")
        .await
        .expect("bindings are not paged, as RabbitMQ's");
    assert_eq!(
        bindings,
        json!([{"destination": q("c")}, {"destination": q("b")}, {"destination": q("a")}])
    );

    // RabbitMQ's refusals.
    assert_eq!(
        refused(&admin, "GET", "/api/queues?page=1&page_size=501", None).await,
        (
            400,
            json!({"error": "invalid_pagination_parameters",
                   "reason": "Invalid pagination parameters: page number 1, page size 501"})
        )
    );
    assert_eq!(
        refused(&admin, "GET", "/api/exchanges?page=0", None).await,
        (
            400,
            json!({"error": "invalid_pagination_parameters",
                   "reason": "Invalid pagination parameters: page number 0, page size undefined"})
        )
    );
    assert_eq!(
        refused(&admin, "GET", "/api/queues?page=one", None).await,
        (
            400,
            json!({"error": "bad_request", "reason": "Pagination parameters are invalid"})
        )
    );
    assert_eq!(
        refused(&admin, "GET", "/api/queues/%2F?page=3&page_size=2", None).await,
        (
            400,
            json!({"error": "page_out_of_range",
                   "reason": "Page out of range, page: 3 page size: 2, len: 3"})
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quorum_queues_bindings_of_one_object_and_the_aliveness_test_are_rabbitmqs() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    let conn = node.connect().await;
    let ch = confirm_channel(&conn).await;
    let (quorum, classic) = (unique("qq"), unique("cq"));
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        warren_tests::lapin::types::AMQPValue::LongString("quorum".into()),
    );
    within(ch.queue_declare(
        quorum.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    ))
    .await
    .expect("a quorum queue");
    warren_tests::declare_queue(&ch, &classic, QueueDeclareOptions::default()).await;
    let q = admin
        .get(&format!("/api/queues/%2F/{}", segment(&quorum)))
        .await
        .expect("GET the quorum queue");
    assert_eq!(
        (q["type"].clone(), q["arguments"]["x-queue-type"].clone()),
        (json!("quorum"), json!("quorum"))
    );
    let types: Vec<(String, String)> = admin
        .get("/api/queues?columns=name,type")
        .await
        .expect("queues")
        .as_array()
        .expect("a list")
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap_or_default().to_owned(),
                q["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        types.contains(&(quorum.clone(), "quorum".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&(classic.clone(), "classic".into())),
        "{types:?}"
    );

    // Bindings of one queue, from one exchange, to one exchange.
    let (source, sink) = (unique("src"), unique("sink"));
    for x in [&source, &sink] {
        within(ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("exchange.declare");
    }
    within(ch.queue_bind(
        quorum.as_str().into(),
        source.as_str().into(),
        "orders.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
    within(ch.exchange_bind(
        sink.as_str().into(),
        source.as_str().into(),
        "audit".into(),
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.bind");
    let edges = |v: Value| -> Vec<(String, String, String, String)> {
        v.as_array()
            .expect("a list of bindings")
            .iter()
            .map(|b| {
                let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
                (
                    s("source"),
                    s("destination"),
                    s("destination_type"),
                    s("routing_key"),
                )
            })
            .collect()
    };
    let t = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned())
    };
    assert_eq!(
        edges(
            admin
                .get(&format!("/api/queues/%2F/{}/bindings", segment(&quorum)))
                .await
                .expect("queue bindings")
        ),
        [
            t("", &quorum, "queue", &quorum),
            t(&source, &quorum, "queue", "orders.#")
        ]
    );
    assert_eq!(
        edges(
            admin
                .get(&format!(
                    "/api/exchanges/%2F/{}/bindings/source",
                    segment(&source)
                ))
                .await
                .expect("source bindings")
        ),
        // Sorted as RabbitMQ sorts them: by source, then destination.
        [
            t(&source, &quorum, "queue", "orders.#"),
            t(&source, &sink, "exchange", "audit")
        ]
    );
    assert_eq!(
        edges(
            admin
                .get(&format!(
                    "/api/exchanges/%2F/{}/bindings/destination",
                    segment(&sink)
                ))
                .await
                .expect("destination bindings")
        ),
        [t(&source, &sink, "exchange", "audit")]
    );
    assert_eq!(
        edges(
            admin
                .get(&format!(
                    "/api/exchanges/%2F/{}/bindings/destination",
                    segment(&source)
                ))
                .await
                .expect("none")
        ),
        []
    );
    let implicit = edges(
        admin
            .get("/api/exchanges/%2F/amq.default/bindings/source")
            .await
            .expect("the default exchange's"),
    );
    assert!(
        implicit.contains(&t("", &classic, "queue", &classic)),
        "{implicit:?}"
    );
    // As RabbitMQ's: a queue that does not exist has its implicit binding, an exchange none.
    assert_eq!(
        edges(
            admin
                .get("/api/queues/%2F/no-such-queue/bindings")
                .await
                .expect("no refusal")
        ),
        [t("", "no-such-queue", "queue", "no-such-queue")]
    );
    assert_eq!(
        edges(
            admin
                .get("/api/exchanges/%2F/no-such-exchange/bindings/source")
                .await
                .expect("no refusal")
        ),
        []
    );
    assert_eq!(
        refused(&admin, "GET", "/api/queues/nowhere/x/bindings", None)
            .await
            .0,
        404
    );

    // The aliveness test declares `aliveness-test`, publishes to it and gets the message back.
    assert_eq!(
        admin
            .get("/api/aliveness-test/%2F")
            .await
            .expect("aliveness"),
        json!({"status": "ok"})
    );
    assert_eq!(
        admin.get("/api/aliveness-test/%2F").await.expect("again"),
        json!({"status": "ok"})
    );
    let q = admin
        .get("/api/queues/%2F/aliveness-test")
        .await
        .expect("its queue stays");
    assert_eq!(
        (q["durable"].clone(), q["messages"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(
        refused(&admin, "GET", "/api/aliveness-test/nowhere", None)
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_longer_than_255_bytes_is_refused_and_nothing_is_stored() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    let long = "q".repeat(10_000);
    let (status, body) = refused(
        &admin,
        "PUT",
        &format!("/api/queues/%2F/{long}"),
        Some(&json!({"durable": true})),
    )
    .await;
    assert_eq!(
        (status, body["reason"].clone()),
        (
            400,
            json!("queue name is 10000 bytes long; the limit is 255 bytes")
        )
    );
    let names_now = names(&admin.get("/api/queues").await.expect("queues"));
    assert!(
        names_now.iter().all(|n| !n.starts_with("qqq")),
        "nothing stored, not even cut: {names_now:?}"
    );
    let exactly = "é".repeat(127) + "q";
    assert_eq!(exactly.len(), 255);
    let path = format!("/api/queues/%2F/{}", segment(&exactly));
    admin
        .call("PUT", &path, Some(&json!({"durable": true})))
        .await
        .expect("255 bytes fit");
    assert_eq!(
        admin.get(&path).await.expect("GET")["name"],
        exactly.as_str()
    );
    admin
        .call("DELETE", &path, None)
        .await
        .expect("and it can be deleted");
    let x256 = "x".repeat(256);
    for (path, body) in [
        (
            format!("/api/exchanges/%2F/{x256}"),
            json!({"type": "direct"}),
        ),
        (format!("/api/vhosts/{x256}"), json!({})),
        (
            format!("/api/users/{x256}"),
            json!({"password": "p", "tags": ""}),
        ),
    ] {
        assert_eq!(
            refused(&admin, "PUT", &path, Some(&body)).await.0,
            400,
            "PUT {path}"
        );
    }
    assert_eq!(
        refused(
            &admin,
            "POST",
            "/api/bindings/%2F/e/amq.topic/q/aliveness-test",
            Some(&json!({"routing_key": x256}))
        )
        .await
        .0,
        400
    );
    // A definitions file with one name too long imports nothing.
    let vhost = unique("defs");
    let (status, _) = refused(
        &admin,
        "POST",
        "/api/definitions",
        Some(&json!({"vhosts": [{"name": vhost}], "queues": [{"name": long, "vhost": "/", "durable": true}]})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        refused(
            &admin,
            "GET",
            &format!("/api/vhosts/{}", segment(&vhost)),
            None
        )
        .await
        .0,
        404
    );
}

// ---- Exchanges by URL name: `amq.default` is the default exchange for DELETE and PUT as for
// ---- GET, a missing exchange is 404, and the exchanges RabbitMQ keeps are refused.

/// RabbitMQ's 404 for an object (or its vhost) that does not exist.
fn object_not_found() -> Value {
    json!({"error": "Object Not Found", "reason": "Not Found"})
}

/// An AMQP `ACCESS_REFUSED` (403) as the API answers it: 401 with the AMQP reply text.
fn access_refused(text: &str) -> (u16, Value) {
    (401, json!({"error": "not_authorised", "reason": text}))
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_exchange_answers_404_when_it_is_missing_and_refuses_the_ones_rabbitmq_keeps() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    let x = unique("gone");
    let x_path = format!("/api/exchanges/%2F/{}", segment(&x));

    // One that exists: 204, then it is gone, and a second DELETE is 404 as RabbitMQ's.
    assert_eq!(
        admin
            .request("PUT", &x_path, Some(&json!({"type": "fanout"})))
            .await
            .expect("an answer"),
        (201, Value::Null)
    );
    assert_eq!(
        admin
            .request("DELETE", &x_path, None)
            .await
            .expect("an answer"),
        (204, Value::Null)
    );
    assert_eq!(
        refused(&admin, "GET", &x_path, None).await,
        (404, object_not_found())
    );
    assert_eq!(
        refused(&admin, "DELETE", &x_path, None).await,
        (404, object_not_found())
    );
    // An exchange in a vhost that does not exist.
    assert_eq!(
        refused(
            &admin,
            "DELETE",
            &format!("/api/exchanges/{}/x", segment(&unique("no-vhost"))),
            None
        )
        .await,
        (404, object_not_found())
    );

    // `amq.default` names the default exchange, which `exchange.delete` refuses; so are the
    // `amq.*` exchanges. Both stay.
    assert_eq!(
        refused(&admin, "DELETE", "/api/exchanges/%2F/amq.default", None).await,
        access_refused("ACCESS_REFUSED - operation not permitted on the default exchange")
    );
    assert_eq!(
        refused(&admin, "DELETE", "/api/exchanges/%2F/amq.direct", None).await,
        access_refused(
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
        )
    );
    for name in ["amq.default", "amq.direct"] {
        let path = format!("/api/exchanges/%2F/{name}");
        assert_eq!(
            admin
                .request("GET", &path, None)
                .await
                .expect("an answer")
                .0,
            200,
            "GET {path}"
        );
    }
    // An `amq.*` name that no exchange has is missing before it is reserved.
    assert_eq!(
        refused(&admin, "DELETE", "/api/exchanges/%2F/amq.nothing", None).await,
        (404, object_not_found())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn put_on_amq_default_is_a_declare_of_the_default_exchange_and_is_refused() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    let direct = json!({"type": "direct", "durable": true});
    assert_eq!(
        refused(
            &admin,
            "PUT",
            "/api/exchanges/%2F/amq.default",
            Some(&direct)
        )
        .await,
        access_refused("ACCESS_REFUSED - operation not permitted on the default exchange")
    );
    // A predeclared `amq.*` exchange declared as it is: it existed, so 204.
    assert_eq!(
        admin
            .request("PUT", "/api/exchanges/%2F/amq.direct", Some(&direct))
            .await
            .expect("an answer"),
        (204, Value::Null)
    );
    // A new name with the reserved prefix is refused, as `exchange.declare` refuses it.
    let reserved = unique("amq.mine");
    assert_eq!(
        refused(
            &admin,
            "PUT",
            &format!("/api/exchanges/%2F/{}", segment(&reserved)),
            Some(&direct)
        )
        .await,
        access_refused(&format!(
            "ACCESS_REFUSED - exchange name '{reserved}' contains reserved prefix 'amq.*'"
        ))
    );
    // Nothing was declared: the default exchange is as it was, and no exchange is named
    // `amq.default` or the reserved name.
    let x = admin
        .get("/api/exchanges/%2F/amq.default")
        .await
        .expect("the default exchange");
    assert_eq!(
        (x["name"].clone(), x["type"].clone(), x["durable"].clone()),
        (json!(""), json!("direct"), json!(true))
    );
    let listed = names(&admin.get("/api/exchanges/%2F").await.expect("exchanges"));
    assert!(
        !listed.iter().any(|n| n == "amq.default" || *n == reserved),
        "{listed:?}"
    );
}

/// `path` (`/metrics`, `/metrics/per-object`) of a node, as text.
async fn metrics_text(node: &Broker, path: &str) -> String {
    match guest_api(node).request("GET", path, None).await {
        Ok((200, Value::String(text))) => text,
        other => panic!("GET {path}: {other:?}"),
    }
}

/// The value of the sample `series` (a metric name with its labels, as served), if served.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A metric the shared list (`tests/data/rabbitmq-prometheus-metrics.md`) names: the names it may
/// have (a suffix such as `_closed_total` read in both ways the list can mean it), its
/// type if the list gives one, and labels it must have.
#[derive(Debug)]
struct Listed {
    names: Vec<String>,
    kind: Option<String>,
    labels: Vec<String>,
}

/// A piece of a line of the list: a `code` token, or a parenthesis with the tokens in it.
enum Piece {
    Token(String),
    Paren(String, Vec<String>),
}

fn pieces(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '`' => out.push(Piece::Token(
                chars.by_ref().take_while(|c| *c != '`').collect(),
            )),
            '(' => {
                let (mut inner, mut tokens, mut code, mut token) =
                    (String::new(), Vec::new(), false, String::new());
                for c in chars.by_ref() {
                    match c {
                        '`' if code => {
                            tokens.push(std::mem::take(&mut token));
                            code = false;
                        }
                        '`' => code = true,
                        ')' if !code => break,
                        c if code => token.push(c),
                        c => inner.push(c),
                    }
                }
                out.push(Piece::Paren(inner, tokens));
            }
            _ => {}
        }
    }
    out
}

/// The full names a token of the list stands for, `base` being the last full name before it:
/// `rabbitmq_x` itself; `_suffix` or `…suffix` replacing the end of `base`.
fn names_of(token: &str, base: Option<&str>) -> Vec<String> {
    if token.contains('*') || token.contains(' ') || ["_bucket", "_sum", "_count"].contains(&token)
    {
        return vec![];
    }
    if token.starts_with("rabbitmq_") {
        return vec![token.to_owned()];
    }
    let (Some(base), true) = (base, token.starts_with('_') || token.starts_with('…')) else {
        return vec![];
    };
    let tail: Vec<&str> = token
        .trim_start_matches('…')
        .trim_start_matches('_')
        .split('_')
        .collect();
    let segments: Vec<&str> = base.split('_').collect();
    // The same number of segments replaced (`…_opened_total`, `_closed_total`)...
    let same = segments.len().saturating_sub(tail.len());
    // ...or what comes before the segments both end with (`…_log_snapshot_index`).
    let common = segments
        .iter()
        .rev()
        .zip(tail.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    [same, segments.len() - common]
        .into_iter()
        .map(|keep| [&segments[..keep], &tail[..]].concat().join("_"))
        .collect()
}

/// Every metric the shared list names: its table rows (type from the Type column), its bullets
/// and prose (a type in parentheses names the tokens before it; labels in parentheses, the
/// metric before them).
fn listed_metrics(md: &str) -> Vec<Listed> {
    const TYPES: [&str; 5] = ["gauge", "counter", "untyped", "histogram", "summary"];
    let mut blocks: Vec<(String, Option<String>)> = Vec::new();
    let mut prose = String::new();
    for line in md.lines() {
        let row = line.starts_with("| ") && line[2..].starts_with(|c: char| c.is_ascii_digit());
        if row || line.starts_with("- ") || line.trim().is_empty() {
            blocks.push((std::mem::take(&mut prose), None));
        }
        if row {
            let cells: Vec<&str> = line.split('|').collect();
            let kind = cells
                .get(3)
                .and_then(|t| t.split_whitespace().next())
                .map(str::to_owned);
            blocks.push((cells.get(2).copied().unwrap_or_default().to_owned(), kind));
        } else if !line.starts_with('|') {
            // A bullet or a paragraph, with the lines that continue it.
            prose.push(' ');
            prose.push_str(line);
        }
    }
    blocks.push((prose, None));
    let mut listed: Vec<Listed> = Vec::new();
    for (text, kind) in blocks {
        let (mut base, mut last, mut pending): (Option<String>, Option<usize>, Vec<usize>) =
            (None, None, Vec::new());
        let add = |token: &str, base: &mut Option<String>, listed: &mut Vec<Listed>| {
            let names = names_of(token, base.as_deref());
            if names.is_empty() {
                return None;
            }
            if token.starts_with("rabbitmq_") {
                *base = Some(token.to_owned());
            }
            listed.push(Listed {
                names,
                kind: kind.clone(),
                labels: vec![],
            });
            Some(listed.len() - 1)
        };
        for piece in pieces(&text) {
            match piece {
                Piece::Token(t) => {
                    if let Some(i) = add(&t, &mut base, &mut listed) {
                        last = Some(i);
                        pending.push(i);
                    }
                }
                Piece::Paren(inner, tokens) if inner.contains("labels") => {
                    if let Some(i) = last {
                        listed[i].labels.extend(tokens);
                    }
                }
                Piece::Paren(inner, tokens) => {
                    for t in tokens {
                        add(&t, &mut base, &mut listed);
                    }
                    let named = inner
                        .split(|c: char| !c.is_ascii_alphanumeric())
                        .find(|w| TYPES.contains(w));
                    if let (Some(k), None) = (named, &kind) {
                        for i in pending.drain(..) {
                            listed[i].kind = Some(k.to_owned());
                        }
                    }
                }
            }
        }
    }
    listed
}

#[test]
fn the_shared_list_of_rabbitmq_metrics_is_read_whole() {
    let md = "| 17 | `rabbitmq_a_get_manual_ack_total` / `_get_auto_ack_total` | counter | x |\n\
              | 21 | `rabbitmq_connections_opened_total`, `_closed_total` | counter | x |\n\
              | 2 | `rabbitmq_build_info` (+`rabbitmq_version`/`erlang_version` labels) | gauge (info) | x |\n\
              | 27 | `rabbitmq_raft_last_written_index` (≤4.1: `…_log_last_written_index`) | counter | x |\n\
              | 25 | `rabbitmq_message_size_bytes` (`_bucket`/`_sum`/`_count`) | histogram | x |\n\
              \n\
              - `rabbitmq_x`, `rabbitmq_y`\n  (4.2+), `rabbitmq_z` (gauge), `rabbitmq_w`.\n\
              - `rabbitmq_v` (untyped 0/1).\n";
    let got: Vec<(Vec<String>, Option<String>, Vec<String>)> = listed_metrics(md)
        .into_iter()
        .map(|l| (l.names, l.kind, l.labels))
        .collect();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let k = |k: &str| Some(k.to_owned());
    assert_eq!(
        got,
        [
            (
                s(&["rabbitmq_a_get_manual_ack_total"]),
                k("counter"),
                vec![]
            ),
            (
                s(&[
                    "rabbitmq_a_get_auto_ack_total",
                    "rabbitmq_a_get_manual_get_auto_ack_total"
                ]),
                k("counter"),
                vec![]
            ),
            (
                s(&["rabbitmq_connections_opened_total"]),
                k("counter"),
                vec![]
            ),
            (
                s(&[
                    "rabbitmq_connections_closed_total",
                    "rabbitmq_connections_opened_closed_total"
                ]),
                k("counter"),
                vec![]
            ),
            (
                s(&["rabbitmq_build_info"]),
                k("gauge"),
                s(&["rabbitmq_version", "erlang_version"])
            ),
            (
                s(&["rabbitmq_raft_last_written_index"]),
                k("counter"),
                vec![]
            ),
            (
                s(&[
                    "rabbitmq_log_last_written_index",
                    "rabbitmq_raft_log_last_written_index"
                ]),
                k("counter"),
                vec![]
            ),
            (s(&["rabbitmq_message_size_bytes"]), k("histogram"), vec![]),
            (s(&["rabbitmq_x"]), k("gauge"), vec![]),
            (s(&["rabbitmq_y"]), k("gauge"), vec![]),
            (s(&["rabbitmq_z"]), k("gauge"), vec![]),
            (s(&["rabbitmq_w"]), None, vec![]),
            (s(&["rabbitmq_v"]), k("untyped"), vec![]),
        ]
    );
}

/// The list of the metrics RabbitMQ's dashboards query (`WARREN_RABBITMQ_METRICS_MD`, else
/// `tests/data/rabbitmq-prometheus-metrics.md`, a copy of the project's shared list kept in the
/// repository so that a clean clone tests it).
fn shared_metric_list() -> String {
    let path = std::env::var("WARREN_RABBITMQ_METRICS_MD").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/rabbitmq-prometheus-metrics.md"
        )
        .to_owned()
    });
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the list of RabbitMQ's metrics at {path}: {e}"))
}

/// Every metric of the shared list is served with its type (and its labels).
fn assert_serves_every_listed_metric(metrics: &str) {
    let listed = listed_metrics(&shared_metric_list());
    assert!(listed.len() > 40, "the list was read: {listed:?}");
    for l in &listed {
        let served = l.names.iter().find_map(|name| {
            let prefix = format!("# TYPE {name} ");
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .map(|kind| (name, kind.trim()))
        });
        let Some((name, kind)) = served else {
            panic!("{:?} is not served:\n{metrics}", l.names);
        };
        if let Some(want) = &l.kind {
            assert_eq!(kind, want, "the type of {name}");
        }
        for label in &l.labels {
            assert!(
                metrics
                    .lines()
                    .any(|line| line.starts_with(&format!("{name}{{"))
                        && line.contains(&format!("{label}=\""))),
                "{name} has no label {label}:\n{metrics}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_serve_rabbitmqs_names_and_types_with_warrens_figures() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let before = metrics_text(&node, "/metrics").await;
    assert_serves_every_listed_metric(&before);
    assert_eq!(
        sample(&before, "rabbitmq_identity_info{rabbitmq_node=\"warren@node1\",rabbitmq_cluster=\"warren\",rabbitmq_endpoint=\"aggregated\"}"),
        Some(1.0),
        "{before}"
    );
    let received = "rabbitmq_global_messages_received_total{protocol=\"amqp091\"}";
    let delivered = "rabbitmq_global_messages_delivered_total{protocol=\"amqp091\",queue_type=\"rabbit_quorum_queue\"}";
    let (received_before, delivered_before) =
        (sample(&before, received), sample(&before, delivered));

    // Five messages to a quorum queue; two taken by a consumer that acks neither.
    let conn = node.connect().await;
    let ch = confirm_channel(&conn).await;
    let queue = unique("metered");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        warren_tests::lapin::types::AMQPValue::LongString("quorum".into()),
    );
    within(ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    ))
    .await
    .expect("queue.declare");
    for i in 0..5 {
        publish(
            &ch,
            "",
            &queue,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let consumer_ch = confirm_channel(&conn).await;
    within(consumer_ch.basic_qos(2, BasicQosOptions::default()))
        .await
        .expect("basic.qos");
    let _consumer = consume(
        &consumer_ch,
        &queue,
        "metered-consumer",
        BasicConsumeOptions::default(),
    )
    .await;
    let per_queue = |name: &str| format!("{name}{{vhost=\"/\",queue=\"{queue}\"}}");
    wait_for_json(
        &guest_api(&node),
        &format!("/api/queues/%2F/{}", segment(&queue)),
        WAIT,
        |q| q["messages_unacknowledged"] == 2,
    )
    .await
    .expect("two deliveries unacked");
    let objects = metrics_text(&node, "/metrics/per-object").await;
    assert_eq!(
        sample(&objects, &per_queue("rabbitmq_queue_messages_ready")),
        Some(3.0),
        "{objects}"
    );
    assert_eq!(
        sample(&objects, &per_queue("rabbitmq_queue_messages_unacked")),
        Some(2.0)
    );
    assert_eq!(
        sample(&objects, &per_queue("rabbitmq_queue_messages")),
        Some(5.0)
    );
    assert_eq!(
        sample(&objects, &per_queue("rabbitmq_queue_consumers")),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &objects,
            &per_queue("rabbitmq_queue_messages_published_total")
        ),
        Some(5.0)
    );
    assert!(
        sample(&objects, &per_queue("rabbitmq_queue_messages_bytes")) == Some(2.0 * 3.0),
        "three ready messages of two bytes: {objects}"
    );

    let after = metrics_text(&node, "/metrics").await;
    assert_serves_every_listed_metric(&after);
    let grew = |series: &str, before: Option<f64>| {
        sample(&after, series).unwrap_or(0.0) - before.unwrap_or(0.0)
    };
    assert_eq!(grew(received, received_before), 5.0, "{after}");
    assert_eq!(
        grew(
            "rabbitmq_global_messages_routed_total{protocol=\"amqp091\"}",
            sample(
                &before,
                "rabbitmq_global_messages_routed_total{protocol=\"amqp091\"}"
            )
        ),
        5.0
    );
    assert_eq!(grew(delivered, delivered_before), 2.0);
    assert_eq!(sample(&after, "rabbitmq_queue_messages_ready"), Some(3.0));
    assert_eq!(sample(&after, "rabbitmq_queue_messages_unacked"), Some(2.0));
    assert_eq!(sample(&after, "rabbitmq_queues"), Some(1.0));
    assert_eq!(sample(&after, "rabbitmq_connections"), Some(1.0));
    assert_eq!(sample(&after, "rabbitmq_channels"), Some(2.0));
    assert_eq!(
        sample(&after, "rabbitmq_global_consumers{protocol=\"amqp091\"}"),
        Some(1.0)
    );
    assert!(
        sample(&after, "rabbitmq_raft_commit_index")
            > sample(&before, "rabbitmq_raft_commit_index"),
        "the declare and publishes were committed"
    );
    assert!(sample(&after, "rabbitmq_raft_term") >= Some(1.0));
    assert!(sample(&after, "rabbitmq_process_resident_memory_bytes") > Some(0.0));
    assert!(sample(&after, "rabbitmq_process_open_fds") > Some(0.0));
    assert!(sample(&after, "rabbitmq_erlang_uptime_seconds") > Some(0.0));
    // The commit latency is measured: from the node's append of an entry to its apply, the
    // latest entry's and the largest of the last seconds, and as a histogram.
    assert!(after.contains("# TYPE rabbitmq_raft_entry_commit_latency_seconds gauge\n"));
    let latest = sample(&after, "rabbitmq_raft_commit_latency_seconds").expect("a commit latency");
    let largest = sample(&after, "rabbitmq_raft_max_commit_latency_seconds").expect("a maximum");
    assert!(latest > 0.0 && latest < 10.0, "{latest}");
    assert!(largest >= latest, "{largest} < {latest}");
    assert_eq!(
        sample(&after, "rabbitmq_raft_entry_commit_latency_seconds"),
        Some(latest)
    );
    assert!(sample(&after, "warren_raft_commit_seconds_count") >= Some(1.0));
    // Every publish of this test was routed: none dropped.
    assert_eq!(
        sample(
            &after,
            "rabbitmq_global_messages_unroutable_dropped_total{protocol=\"amqp091\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_node_serves_its_own_share_of_rabbitmqs_metrics_and_names_its_clients() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let other = (1..=3)
        .find(|n| *n != leader && *n != follower)
        .expect("a third node");

    // A named client on a follower, an unnamed one on the leader.
    let named = within(warren_tests::lapin::Connection::connect(
        cluster.node(follower).uri(),
        warren_tests::lapin::ConnectionProperties::default()
            .with_connection_name("billing-worker".into()),
    ))
    .await
    .expect("connect with a connection name");
    let unnamed = connect_retrying(cluster.node(leader).uri())
        .await
        .expect("connect");
    let ch = confirm_channel(&named).await;
    let _other_ch = confirm_channel(&unnamed).await;
    let queue = unique("shared");
    warren_tests::declare_queue(
        &ch,
        &queue,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await;
    for _ in 0..5 {
        publish(&ch, "", &queue, b"m", BasicProperties::default()).await;
    }

    // Any node names the follower's client as it named itself; the other has no such field.
    let connections = guest_api(cluster.node(other))
        .get("/api/connections")
        .await
        .expect("connections");
    let connections = connections.as_array().expect("a list");
    let on = |n: usize| {
        connections
            .iter()
            .find(|c| c["node"] == format!("warren@node{n}") && c["type"] == "network")
            .unwrap_or_else(|| panic!("a client of node {n}: {connections:?}"))
    };
    assert_eq!(on(follower)["user_provided_name"], "billing-worker");
    assert_eq!(
        on(follower)["client_properties"]["connection_name"],
        "billing-worker"
    );
    assert!(
        on(leader).get("user_provided_name").is_none(),
        "absent when not sent: {}",
        on(leader)
    );

    // The dashboards add the nodes up: every figure is served once.
    let mut metrics = std::collections::BTreeMap::new();
    for n in 1..=3 {
        let text = metrics_text(cluster.node(n), "/metrics").await;
        assert_serves_every_listed_metric(&text);
        assert_eq!(
            sample(&text, &format!("rabbitmq_identity_info{{rabbitmq_node=\"warren@node{n}\",rabbitmq_cluster=\"warren\",rabbitmq_endpoint=\"aggregated\"}}")),
            Some(1.0)
        );
        metrics.insert(n, text);
    }
    let of = |n: usize, series: &str| sample(&metrics[&n], series);
    assert_eq!(
        of(leader, "rabbitmq_queue_messages_ready"),
        Some(5.0),
        "the leader hosts the replicated queue"
    );
    for n in [follower, other] {
        assert_eq!(
            of(n, "rabbitmq_queue_messages_ready"),
            Some(0.0),
            "node {n}"
        );
        assert_eq!(of(n, "rabbitmq_queues"), Some(0.0), "node {n}");
        assert_eq!(
            of(
                n,
                "rabbitmq_global_messages_routed_total{protocol=\"amqp091\"}"
            ),
            None,
            "routing is counted by the leader: node {n} serves the family without a sample"
        );
    }
    assert!(
        of(
            leader,
            "rabbitmq_global_messages_routed_total{protocol=\"amqp091\"}"
        ) >= Some(5.0)
    );
    // What a client did is counted where its socket is: the follower's client published.
    let received = "rabbitmq_global_messages_received_total{protocol=\"amqp091\"}";
    assert_eq!(
        (
            of(leader, received),
            of(follower, received),
            of(other, received)
        ),
        (Some(0.0), Some(5.0), Some(0.0))
    );
    assert_eq!(
        (
            of(leader, "rabbitmq_connections"),
            of(follower, "rabbitmq_connections"),
            of(other, "rabbitmq_connections")
        ),
        (Some(1.0), Some(1.0), Some(0.0)),
        "each node counts the clients whose socket it holds"
    );
    assert_eq!(of(follower, "rabbitmq_channels"), Some(1.0));
    // The aliveness test passes on every node (its queue lives where it was first declared).
    for n in 1..=3 {
        assert_eq!(
            guest_api(cluster.node(n))
                .get("/api/aliveness-test/%2F")
                .await
                .expect("aliveness"),
            json!({"status": "ok"}),
            "node {n}"
        );
    }
    let terms: Vec<Option<f64>> = (1..=3).map(|n| of(n, "rabbitmq_raft_term")).collect();
    assert!(terms.iter().all(|t| *t >= Some(1.0)), "{terms:?}");
}

/// Waits until `/metrics` of `node` has every sample of `expected` at its value (or [`WAIT`]
/// passes), then checks each: the counters move as the node handles frames, a moment after the
/// client sent or got them.
async fn assert_metrics_reach(node: &Broker, expected: &[(&str, f64)]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = metrics_text(node, "/metrics").await;
        let reached = expected
            .iter()
            .all(|(series, value)| sample(&text, series) == Some(*value));
        if reached || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(*value), "{series} in:\n{text}");
    }
}

/// RabbitMQ's counters of what clients do (`rabbit_global_counters`, churn, logins, message
/// sizes), counted by the node that holds the client's socket, after a known workload through
/// lapin: exact values.
#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_clients_are_counted_as_rabbitmqs_channels_count_them() {
    use warren_tests::lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
    let node = Broker::start_own(&[]).expect("warren starts");
    // The kit's readiness probe, a TCP connection that never spoke AMQP, is a connection
    // closed and never opened, as RabbitMQ's reader counts it.
    assert_metrics_reach(
        &node,
        &[
            ("rabbitmq_connections_closed_total", 1.0),
            ("rabbitmq_connections_opened_total", 0.0),
        ],
    )
    .await;

    // A confirm channel: three messages (10, 500 and 20 000 bytes), one mandatory and
    // unroutable (returned, and confirmed), two of 100 bytes for basic.get.
    let conn = node.connect().await;
    let ch = confirm_channel(&conn).await;
    let (queue, polled, auto) = (unique("counted"), unique("polled"), unique("auto"));
    for q in [&queue, &polled, &auto] {
        warren_tests::declare_queue(&ch, q, QueueDeclareOptions::default()).await;
    }
    for size in [10, 500, 20_000] {
        let c = publish(
            &ch,
            "",
            &queue,
            &vec![b'x'; size],
            BasicProperties::default(),
        )
        .await;
        assert!(c.is_ack());
    }
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = within(ch.basic_publish(
        "".into(),
        unique("nowhere").as_str().into(),
        mandatory,
        b"r",
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish");
    let confirmation = within(confirm).await.expect("a confirm");
    assert!(confirmation.is_ack() && confirmation.take_message().is_some());
    for _ in 0..2 {
        publish(&ch, "", &polled, &[b'g'; 100], BasicProperties::default()).await;
    }

    // A channel without confirms: one publish of 2 000 bytes, for an auto-ack consumer; three
    // deliveries to a manual-ack consumer acked with one multiple ack; a get acked, a get with
    // no-ack, an empty get.
    let plain = warren_tests::channel(&conn).await;
    publish(
        &plain,
        "",
        &auto,
        &[b'a'; 2_000],
        BasicProperties::default(),
    )
    .await;
    let mut manual = consume(&plain, &queue, "manual", BasicConsumeOptions::default()).await;
    let mut last = 0;
    for _ in 0..3 {
        last = warren_tests::next_delivery(&mut manual).await.delivery_tag;
    }
    within(plain.basic_ack(last, BasicAckOptions { multiple: true }))
        .await
        .expect("basic.ack");
    let got = within(plain.basic_get(polled.as_str().into(), BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("a message");
    within(plain.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default()))
        .await
        .expect("basic.ack");
    let no_ack = BasicGetOptions { no_ack: true };
    let got = within(plain.basic_get(polled.as_str().into(), no_ack))
        .await
        .expect("basic.get");
    assert!(got.is_some());
    let got = within(plain.basic_get(polled.as_str().into(), no_ack))
        .await
        .expect("basic.get");
    assert!(got.is_none(), "get-empty");
    // Unroutable and not mandatory: dropped. The emptied queue deleted.
    within(plain.basic_publish(
        "".into(),
        unique("nowhere").as_str().into(),
        BasicPublishOptions::default(),
        b"d",
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish");
    within(plain.queue_delete(polled.as_str().into(), Default::default()))
        .await
        .expect("queue.delete");
    let auto_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut automatic = consume(&plain, &auto, "", auto_ack).await;
    warren_tests::next_delivery(&mut automatic).await;
    within(plain.close(200, "bye".into()))
        .await
        .expect("channel.close");
    within(conn.close(200, "bye".into()))
        .await
        .expect("connection.close");

    // A login refused.
    let bad = node.uri().replacen("guest:guest", "guest:wrong", 1);
    within(warren_tests::lapin::Connection::connect(
        &bad,
        warren_tests::lapin::ConnectionProperties::default(),
    ))
    .await
    .expect_err("login refused");

    let amqp = |name: &str| format!("{name}{{protocol=\"amqp091\"}}");
    let global = |name: &str| amqp(&format!("rabbitmq_global_messages_{name}_total"));
    let size = |le: &str| {
        format!("rabbitmq_message_size_bytes_bucket{{protocol=\"amqp091\",le=\"{le}\"}}")
    };
    let expected: Vec<(String, f64)> = vec![
        (global("received"), 8.0),
        (global("unroutable_dropped"), 1.0),
        ("rabbitmq_queues_declared_total".into(), 3.0),
        ("rabbitmq_queues_created_total".into(), 3.0),
        ("rabbitmq_queues_deleted_total".into(), 1.0),
        (global("received_confirm"), 6.0),
        (global("confirmed"), 6.0),
        (global("unroutable_returned"), 1.0),
        (global("delivered_consume_manual_ack"), 3.0),
        (global("delivered_consume_auto_ack"), 1.0),
        (global("delivered_get_manual_ack"), 1.0),
        (global("delivered_get_auto_ack"), 1.0),
        (global("get_empty"), 1.0),
        (global("acknowledged"), 4.0),
        ("rabbitmq_connections_opened_total".into(), 1.0),
        // The probe, the client, the refused login.
        ("rabbitmq_connections_closed_total".into(), 3.0),
        ("rabbitmq_channels_opened_total".into(), 2.0),
        ("rabbitmq_channels_closed_total".into(), 2.0),
        (amqp("rabbitmq_auth_attempts_total"), 2.0),
        (amqp("rabbitmq_auth_attempts_succeeded_total"), 1.0),
        (amqp("rabbitmq_auth_attempts_failed_total"), 1.0),
        // 1, 1, 10, 100 and 100 bytes; 500; 2 000; 20 000.
        (size("100"), 5.0),
        (size("1000"), 6.0),
        (size("10000"), 7.0),
        (size("100000"), 8.0),
        (size("100000000"), 8.0),
        (size("+Inf"), 8.0),
        (amqp("rabbitmq_message_size_bytes_count"), 8.0),
        (
            amqp("rabbitmq_message_size_bytes_sum"),
            (1 + 1 + 10 + 100 + 100 + 500 + 2_000 + 20_000) as f64,
        ),
    ];
    let expected: Vec<(&str, f64)> = expected.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    assert_metrics_reach(&node, &expected).await;
}

/// A single-active-consumer queue names its active consumer, and its consumers say which one
/// receives (`active`, `activity_status`), as RabbitMQ's API does.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_active_consumer_queue_shows_who_receives() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    let conn = node.connect().await;
    let ch = confirm_channel(&conn).await;
    let queue = unique("sac");
    let mut args = FieldTable::default();
    args.insert(
        "x-single-active-consumer".into(),
        warren_tests::lapin::types::AMQPValue::Boolean(true),
    );
    within(ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    ))
    .await
    .expect("a single-active-consumer queue");
    // Kept: a lapin consumer dropped is cancelled.
    let mut consumers = Vec::new();
    for tag in ["first", "second"] {
        consumers.push(
            within(ch.basic_consume(
                queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ))
            .await
            .expect("basic.consume"),
        );
    }
    let q = wait_for_json(
        &admin,
        &format!("/api/queues/%2F/{}", segment(&queue)),
        WAIT,
        |q| q["consumers"] == json!(2),
    )
    .await
    .expect("GET the queue with its two consumers");
    assert_eq!(q["single_active_consumer_tag"], json!("first"), "{q}");
    let mut details: Vec<(String, bool, String)> = q["consumer_details"]
        .as_array()
        .expect("consumer details")
        .iter()
        .map(|k| {
            (
                k["consumer_tag"].as_str().unwrap_or_default().to_owned(),
                k["active"].as_bool().unwrap_or_default(),
                k["activity_status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    details.sort();
    assert_eq!(
        details,
        [
            ("first".into(), true, "single_active".into()),
            ("second".into(), false, "waiting".into())
        ]
    );
    let consumers = admin.get("/api/consumers").await.expect("consumers");
    let listed: Vec<(String, bool)> = consumers
        .as_array()
        .expect("a list")
        .iter()
        .filter(|k| k["queue"]["name"] == json!(queue))
        .map(|k| {
            (
                k["consumer_tag"].as_str().unwrap_or_default().to_owned(),
                k["active"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert!(listed.contains(&("second".into(), false)), "{listed:?}");
    drop(consumers);
}

// ---- Issue 18 point 5: policies and operator policies through the API, definitions and
// ---- warrenctl, acting on queues and exchanges that AMQP clients use.

mod policies {
    use super::*;
    use warren_tests::lapin::options::{BasicGetOptions, BasicRejectOptions};
    use warren_tests::management::{warrenctl, ApiClient};
    use warren_tests::{channel, declare_queue, drain};

    /// `PUT path` with `body`: the status and the JSON answer.
    async fn put(api: &ApiClient, path: &str, body: Value) -> (u16, Value) {
        api.request("PUT", path, Some(&body))
            .await
            .expect("an answer")
    }

    async fn status_of(api: &ApiClient, method: &str, path: &str) -> u16 {
        api.request(method, path, None).await.expect("an answer").0
    }

    /// Publishes `bodies` to `queue` through the default exchange, each confirmed.
    async fn publish_all(ch: &warren_tests::lapin::Channel, queue: &str, bodies: &[&str]) {
        for b in bodies {
            publish(ch, "", queue, b.as_bytes(), BasicProperties::default()).await;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_policy_and_an_operator_policy_limit_a_queue_declared_without_arguments() {
        let node = Broker::start_own(&[]).expect("warren starts");
        let admin = guest_api(&node);
        let q_path = "/api/queues/%2F/lim.a";
        let conn = node.connect().await;
        let ch = confirm_channel(&conn).await;
        declare_queue(
            &ch,
            "lim.a",
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await;

        let body =
            json!({"pattern": "^lim\\.", "definition": {"max-length": 2}, "apply-to": "queues"});
        assert_eq!(
            put(&admin, "/api/policies/%2F/lim", body.clone()).await.0,
            201
        );
        assert_eq!(
            put(&admin, "/api/policies/%2F/lim", body).await.0,
            204,
            "the same PUT again updates"
        );
        let shown = json!({"vhost": "/", "name": "lim", "pattern": "^lim\\.",
                           "apply-to": "queues", "definition": {"max-length": 2}, "priority": 0});
        assert_eq!(
            admin.get("/api/policies/%2F/lim").await.expect("GET"),
            shown
        );
        assert_eq!(
            admin.get("/api/policies").await.expect("GET"),
            json!([shown])
        );
        assert_eq!(
            admin.get("/api/policies/%2F").await.expect("GET"),
            json!([shown])
        );

        // An existing queue follows the policy at once: 5 published, the oldest 3 dropped.
        publish_all(&ch, "lim.a", &["m0", "m1", "m2", "m3", "m4"]).await;
        let q = wait_for_json(&admin, q_path, WAIT, |q| q["messages"] == 2)
            .await
            .expect("the policy's max-length holds");
        assert_eq!(q["policy"], "lim", "{q}");
        assert_eq!(q["operator_policy"], Value::Null);
        assert_eq!(q["effective_policy_definition"], json!({"max-length": 2}));
        assert_eq!(
            q["arguments"],
            json!({}),
            "the queue's own arguments are unchanged"
        );
        let ch_get = channel(&conn).await;
        assert_eq!(drain(&ch_get, "lim.a").await, ["m3", "m4"], "drop-head");

        // An operator policy with a lower max-length wins; with a higher one, the policy's.
        let cap = |n: i64| json!({"pattern": "^lim\\.", "definition": {"max-length": n}, "apply-to": "queues"});
        assert_eq!(
            put(&admin, "/api/operator-policies/%2F/cap", cap(1))
                .await
                .0,
            201
        );
        let q = wait_for_json(&admin, q_path, WAIT, |q| q["operator_policy"] == "cap")
            .await
            .expect("the operator policy applies");
        assert_eq!(q["policy"], "lim");
        assert_eq!(q["effective_policy_definition"], json!({"max-length": 1}));
        publish_all(&ch, "lim.a", &["o0", "o1", "o2"]).await;
        wait_for_json(&admin, q_path, WAIT, |q| q["messages"] == 1)
            .await
            .expect("the lower limit of the two");
        assert_eq!(drain(&ch_get, "lim.a").await, ["o2"]);
        assert_eq!(
            put(&admin, "/api/operator-policies/%2F/cap", cap(10))
                .await
                .0,
            204
        );
        wait_for_json(&admin, q_path, WAIT, |q| {
            q["effective_policy_definition"] == json!({"max-length": 2})
        })
        .await
        .expect("the policy's lower limit wins over the operator's higher one");
        assert_eq!(
            admin
                .get("/api/operator-policies/%2F/cap")
                .await
                .expect("GET")["definition"],
            json!({"max-length": 10})
        );
        publish_all(&ch, "lim.a", &["p0", "p1", "p2", "p3"]).await;
        wait_for_json(&admin, q_path, WAIT, |q| q["messages"] == 2)
            .await
            .expect("max-length 2 again");

        // Cleared: the limit is gone.
        assert_eq!(
            status_of(&admin, "DELETE", "/api/operator-policies/%2F/cap").await,
            204
        );
        assert_eq!(
            status_of(&admin, "DELETE", "/api/policies/%2F/lim").await,
            204
        );
        assert_eq!(
            status_of(&admin, "DELETE", "/api/policies/%2F/lim").await,
            404
        );
        assert_eq!(status_of(&admin, "GET", "/api/policies/%2F/lim").await, 404);
        let q = wait_for_json(&admin, q_path, WAIT, |q| q["policy"].is_null())
            .await
            .expect("no policy any more");
        assert_eq!(q["operator_policy"], Value::Null);
        assert_eq!(q["effective_policy_definition"], json!({}));
        publish_all(&ch, "lim.a", &["r0", "r1", "r2"]).await;
        wait_for_json(&admin, q_path, WAIT, |q| q["messages"] == 5)
            .await
            .expect("the queue grows past the old limit");
        assert_eq!(admin.get("/api/policies").await.expect("GET"), json!([]));
        assert_eq!(
            admin.get("/api/operator-policies").await.expect("GET"),
            json!([])
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn policies_dead_letter_rejected_messages_and_give_exchanges_an_alternate() {
        let node = Broker::start_own(&[]).expect("warren starts");
        let admin = guest_api(&node);
        let conn = node.connect().await;
        let ch = confirm_channel(&conn).await;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let queue_options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (exchange, queue) in [("dlx", "dead"), ("ae", "unrouted")] {
            within(ch.exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            ))
            .await
            .expect("exchange.declare");
            declare_queue(&ch, queue, queue_options).await;
            within(ch.queue_bind(
                queue.into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ))
            .await
            .expect("queue.bind");
        }
        within(ch.exchange_declare(
            "orders".into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        ))
        .await
        .expect("exchange.declare");
        declare_queue(&ch, "work.a", queue_options).await;

        let (status, _) = put(
            &admin,
            "/api/policies/%2F/dl",
            json!({"pattern": "^work\\.", "definition": {"dead-letter-exchange": "dlx"},
                   "apply-to": "queues"}),
        )
        .await;
        assert_eq!(status, 201);
        let (status, _) = put(
            &admin,
            "/api/policies/%2F/ae",
            json!({"pattern": "^orders$", "definition": {"alternate-exchange": "ae"},
                   "apply-to": "exchanges", "priority": 5}),
        )
        .await;
        assert_eq!(status, 201);

        // A rejected message of a queue with no x-dead-letter-exchange goes to the policy's.
        wait_for_json(&admin, "/api/queues/%2F/work.a", WAIT, |q| {
            q["policy"] == "dl"
        })
        .await
        .expect("the queue follows the policy");
        publish_all(&ch, "work.a", &["bad job"]).await;
        let got = within(ch.basic_get("work.a".into(), BasicGetOptions { no_ack: false }))
            .await
            .expect("basic.get")
            .expect("a message");
        within(ch.basic_reject(
            got.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        ))
        .await
        .expect("basic.reject");
        wait_for_json(&admin, "/api/queues/%2F/dead", WAIT, |q| q["messages"] == 1)
            .await
            .expect("dead-lettered through the policy's exchange");
        assert_eq!(drain(&ch, "dead").await, ["bad job"]);

        // An unroutable message to an exchange without alternate-exchange argument goes to the
        // policy's alternate exchange.
        let x = admin.get("/api/exchanges/%2F/orders").await.expect("GET");
        assert_eq!(x["policy"], "ae", "{x}");
        assert_eq!(x["arguments"], json!({}));
        publish(
            &ch,
            "orders",
            "nowhere",
            b"lost order",
            BasicProperties::default(),
        )
        .await;
        wait_for_json(&admin, "/api/queues/%2F/unrouted", WAIT, |q| {
            q["messages"] == 1
        })
        .await
        .expect("routed to the alternate exchange");
        assert_eq!(drain(&ch, "unrouted").await, ["lost order"]);
        assert_eq!(
            admin.get("/api/exchanges/%2F/ae").await.expect("GET")["policy"],
            Value::Null,
            "a policy for ^orders$ only"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_policies_are_refused_with_a_reason_and_change_nothing() {
        let node = Broker::start_own(&[]).expect("warren starts");
        let admin = guest_api(&node);
        let keep = json!({"pattern": "^keep", "definition": {"max-length": 7}, "apply-to": "queues",
                          "priority": 3});
        assert_eq!(
            put(&admin, "/api/policies/%2F/keep", keep.clone()).await.0,
            201
        );
        let kept = admin.get("/api/policies/%2F/keep").await.expect("GET");

        let bad = [
            (
                json!({"pattern": "^a", "definition": {"no-such-key": 1}}),
                "not recognised",
            ),
            (
                json!({"pattern": "(", "definition": {"max-length": 1}}),
                "regex",
            ),
            (
                json!({"pattern": "^a", "definition": {"max-length": 1}, "apply-to": "tables"}),
                "apply-to",
            ),
            (
                json!({"pattern": "^a", "definition": {"max-length": -1}}),
                "max-length",
            ),
            (
                json!({"pattern": "^a", "definition": {"max-length": "2"}}),
                "max-length",
            ),
            (
                json!({"pattern": "^a", "definition": {"overflow": "drop-tail"}}),
                "overflow",
            ),
            (json!({"pattern": "^a", "definition": {}}), "no policy"),
            (json!({"pattern": "^a", "definition": 5}), "dictionary"),
            (
                json!({"pattern": "^a", "definition": {"max-length": 1}, "priority": "high"}),
                "priority",
            ),
            (
                json!({"definition": {"max-length": 1}}),
                "key_missing,pattern",
            ),
        ];
        for (body, why) in &bad {
            for path in ["/api/policies/%2F/new", "/api/policies/%2F/keep"] {
                let (status, answer) = refused(&admin, "PUT", path, Some(body)).await;
                assert_eq!(status, 400, "{body}: {answer}");
                assert_eq!(answer["error"], "bad_request");
                let reason = answer["reason"].as_str().unwrap_or_default();
                assert!(
                    reason.contains(why),
                    "{body}: reason {reason:?} names {why}"
                );
            }
        }
        // Operator policies take limits only.
        let (status, answer) = refused(
            &admin,
            "PUT",
            "/api/operator-policies/%2F/op",
            Some(&json!({"pattern": ".*", "definition": {"dead-letter-exchange": "x"}})),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("operator policy")));
        // An unknown vhost is 404 as RabbitMQ's.
        let (status, answer) = refused(&admin, "PUT", "/api/policies/nowhere/p", Some(&keep)).await;
        assert_eq!(
            (status, answer),
            (
                404,
                json!({"error": "not_found", "reason": "vhost_not_found"})
            )
        );
        assert_eq!(status_of(&admin, "GET", "/api/policies/nowhere").await, 404);

        // Nothing was stored, and the policy of that name is as it was.
        assert_eq!(
            admin.get("/api/policies").await.expect("GET"),
            json!([kept])
        );
        assert_eq!(
            admin.get("/api/operator-policies").await.expect("GET"),
            json!([])
        );

        // ha-* keys of classic mirroring are accepted, have no effect, and are logged.
        let (status, _) = put(
            &admin,
            "/api/policies/%2F/mirrored",
            json!({"pattern": "^ha\\.", "definition": {"ha-mode": "all"}}),
        )
        .await;
        assert_eq!(status, 201);
        assert!(
            node.log().contains("classic queue mirroring is gone"),
            "a warning is logged"
        );

        // Who may: administrators; policymakers in the vhosts they have permissions in;
        // operator policies: administrators only.
        admin
            .call("PUT", "/api/vhosts/other", None)
            .await
            .expect("vhost");
        for (user, tags, vhost) in [
            ("pm", "policymaker", "%2F"),
            ("pm-other", "policymaker", "other"),
            ("mg", "management", "%2F"),
        ] {
            admin
                .call(
                    "PUT",
                    &format!("/api/users/{user}"),
                    Some(&json!({"password": "pw", "tags": tags})),
                )
                .await
                .expect("user");
            admin
                .call(
                    "PUT",
                    &format!("/api/permissions/{vhost}/{user}"),
                    Some(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
                )
                .await
                .expect("permissions");
        }
        let pm = api(&node, "pm", "pw");
        let body = json!({"pattern": "^pm", "definition": {"max-length": 1}});
        assert_eq!(put(&pm, "/api/policies/%2F/pm", body.clone()).await.0, 201);
        assert_eq!(status_of(&pm, "GET", "/api/policies/%2F/pm").await, 200);
        assert_eq!(
            put(&pm, "/api/operator-policies/%2F/pm", body.clone())
                .await
                .0,
            401
        );
        let (status, answer) = put(
            &api(&node, "pm-other", "pw"),
            "/api/policies/%2F/x",
            body.clone(),
        )
        .await;
        assert_eq!(
            (status, answer["reason"].clone()),
            (401, json!("User not authorised to access object"))
        );
        let mg = api(&node, "mg", "pw");
        assert_eq!(put(&mg, "/api/policies/%2F/x", body).await.0, 401);
        assert_eq!(status_of(&mg, "DELETE", "/api/policies/%2F/pm").await, 401);
        let listed = mg
            .get("/api/policies")
            .await
            .expect("management users list policies");
        let mut listed = names(&listed);
        listed.sort();
        assert_eq!(listed, ["keep", "mirrored", "pm"]);
        assert_eq!(status_of(&pm, "DELETE", "/api/policies/%2F/pm").await, 204);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_policy_set_through_one_node_acts_on_every_node_and_survives_definitions() {
        let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
        let leader = cluster.leader().expect("a leader");
        let follower = (1..=3).find(|n| *n != leader).expect("a follower");
        let other = (1..=3)
            .find(|n| *n != leader && *n != follower)
            .expect("a third node");
        let through = guest_api(cluster.node(follower));
        let policy = json!({"vhost": "/", "name": "cl", "pattern": "^cl\\.", "apply-to": "queues",
                            "definition": {"max-length": 2, "message-ttl": 600000}, "priority": 1});
        let (status, answer) = put(&through, "/api/policies/%2F/cl", policy.clone()).await;
        assert_eq!(status, 201, "{answer}");
        let cap = json!({"vhost": "/", "name": "cap", "pattern": "^cl\\.", "apply-to": "all",
                         "definition": {"max-length-bytes": 1000000}, "priority": 0});
        let (status, answer) = put(
            &guest_api(cluster.node(other)),
            "/api/operator-policies/%2F/cap",
            json!({"pattern": "^cl\\.", "definition": {"max-length-bytes": 1000000}}),
        )
        .await;
        assert_eq!(status, 201, "{answer}");

        // A client of the third node declares, a client of the leader publishes.
        let declarer = connect_retrying(cluster.node(other).uri())
            .await
            .expect("connect");
        let ch = confirm_channel(&declarer).await;
        declare_queue(
            &ch,
            "cl.q",
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await;
        let publisher = connect_retrying(cluster.node(leader).uri())
            .await
            .expect("connect");
        let pch = confirm_channel(&publisher).await;
        publish_all(&pch, "cl.q", &["a", "b", "c", "d", "e"]).await;
        for n in 1..=3 {
            let api_n = guest_api(cluster.node(n));
            let q = wait_for_json(&api_n, "/api/queues/%2F/cl.q", WAIT, |q| q["messages"] == 2)
                .await
                .unwrap_or_else(|e| panic!("node {n}: {e}"));
            assert_eq!(
                (q["policy"].clone(), q["operator_policy"].clone()),
                (json!("cl"), json!("cap")),
                "node {n}"
            );
            assert_eq!(
                q["effective_policy_definition"],
                json!({"max-length": 2, "message-ttl": 600000, "max-length-bytes": 1000000}),
                "node {n}"
            );
            assert_eq!(
                api_n.get("/api/policies/%2F/cl").await.expect("GET"),
                policy
            );
            assert_eq!(
                api_n
                    .get("/api/operator-policies/%2F/cap")
                    .await
                    .expect("GET"),
                cap
            );
        }

        // Definitions: policies as RabbitMQ's, operator policies as its runtime parameters.
        let export = guest_api(cluster.node(leader))
            .get("/api/definitions")
            .await
            .expect("export");
        assert_eq!(export["policies"], json!([policy]));
        let op_param = export["parameters"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["component"] == "operator_policy"))
            .cloned()
            .expect("the operator policy is exported");
        assert_eq!(
            op_param,
            json!({"vhost": "/", "component": "operator_policy", "name": "cap",
                   "value": {"pattern": "^cl\\.", "apply-to": "all",
                             "definition": {"max-length-bytes": 1000000}, "priority": 0}})
        );
        assert_eq!(
            status_of(&through, "DELETE", "/api/policies/%2F/cl").await,
            204
        );
        assert_eq!(
            status_of(&through, "DELETE", "/api/operator-policies/%2F/cap").await,
            204
        );
        wait_for_json(
            &guest_api(cluster.node(other)),
            "/api/queues/%2F/cl.q",
            WAIT,
            |q| q["policy"].is_null() && q["operator_policy"].is_null(),
        )
        .await
        .expect("cleared everywhere");
        let (status, answer) = through
            .request("POST", "/api/definitions", Some(&export))
            .await
            .expect("import");
        assert_eq!(status, 204, "{answer}");
        for n in 1..=3 {
            let api_n = guest_api(cluster.node(n));
            assert_eq!(
                api_n.get("/api/policies").await.expect("GET"),
                json!([policy])
            );
            assert_eq!(
                api_n.get("/api/operator-policies").await.expect("GET"),
                json!([cap])
            );
            wait_for_json(&api_n, "/api/queues/%2F/cl.q", WAIT, |q| {
                q["policy"] == "cl"
            })
            .await
            .unwrap_or_else(|e| panic!("node {n}: {e}"));
        }

        // A file with a bad policy imports nothing.
        let bad = json!({
            "vhosts": [{"name": "fresh"}],
            "policies": [{"vhost": "fresh", "name": "bad", "pattern": "^x",
                          "definition": {"max-length": "many"}}],
        });
        let (status, answer) = through
            .request("POST", "/api/definitions", Some(&bad))
            .await
            .expect("an answer");
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["reason"]
                .as_str()
                .is_some_and(|r| r.contains("(vhost: \"fresh\" key: \"bad\")")),
            "{answer}"
        );
        assert_eq!(status_of(&through, "GET", "/api/vhosts/fresh").await, 404);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn warrenctl_sets_lists_and_clears_policies_as_rabbitmqctl() {
        let node = Broker::start_own(&[]).expect("warren starts");
        let admin = guest_api(&node);
        let run = |args: &[&str]| {
            let out = warrenctl(&node, args).expect("warrenctl runs");
            assert!(out.ok, "warrenctl {args:?}: {}", out.stderr);
            out.stdout
        };
        let said = run(&[
            "set-policy",
            "ctl",
            "^ctl\\.",
            r#"{"max-length": 3}"#,
            "--priority",
            "7",
            "--apply-to",
            "queues",
        ]);
        assert!(said.starts_with("Setting policy \"ctl\""), "{said}");
        run(&[
            "set-operator-policy",
            "cap",
            "^ctl\\.",
            r#"{"max-length": 1}"#,
        ]);
        admin
            .call(
                "PUT",
                "/api/queues/%2F/ctl.q",
                Some(&json!({"durable": true})),
            )
            .await
            .expect("declare");
        let q = wait_for_json(&admin, "/api/queues/%2F/ctl.q", WAIT, |q| {
            q["policy"] == "ctl" && q["operator_policy"] == "cap"
        })
        .await
        .expect("the queue follows both");
        assert_eq!(q["effective_policy_definition"], json!({"max-length": 1}));

        let table = run(&["list", "policies"]);
        let mut lines = table.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "vhost",
                "name",
                "pattern",
                "apply-to",
                "definition",
                "priority"
            ]
        );
        let row: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            ["/", "ctl", "^ctl\\.", "queues", "{\"max-length\":3}", "7"]
        );
        let listed: Value =
            warren_tests::serde_json::from_str(&run(&["list", "policies", "--json"]))
                .expect("JSON");
        assert_eq!(listed[0]["definition"], json!({"max-length": 3}));
        assert!(run(&["list", "operator_policies"]).contains("cap"));

        assert!(run(&["clear-policy", "ctl"]).starts_with("Clearing policy \"ctl\""));
        run(&["clear-operator-policy", "cap"]);
        assert_eq!(
            run(&["list", "policies"]).lines().count(),
            1,
            "the header only"
        );
        wait_for_json(&admin, "/api/queues/%2F/ctl.q", WAIT, |q| {
            q["policy"].is_null()
        })
        .await
        .expect("cleared");

        // Failures: one line, exit status 1.
        for (args, expected) in [
            (vec!["clear-policy", "ctl"], "warrenctl: 404: Not Found"),
            (
                vec!["set-policy", "p", ".*", r#"{"no-such-key": 1}"#],
                "warrenctl: 400: Validation failed: ",
            ),
            (
                vec!["set-policy", "p", ".*", "max-length=1"],
                "warrenctl: DEFINITION is not JSON",
            ),
        ] {
            let out = warrenctl(&node, &args).expect("warrenctl runs");
            assert!(!out.ok, "{args:?} fails");
            assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
            assert!(out.stderr.starts_with(expected), "{args:?}: {}", out.stderr);
        }
    }
}

/// Credit flow: a publisher without confirms on a follower, with a credit of 4 publishes, is
/// paused while its publishes travel into the log, and while they travel to a transient queue
/// on another node (the API shows its connection in state `flow`, its node counts the pauses);
/// it loses nothing, and is read again once they are in.
#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_that_outruns_the_log_or_a_link_is_paused_by_credit_flow_and_loses_nothing() {
    let cluster = Cluster::start(3, &["--publish-credit", "4"]).expect("three nodes");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let node = cluster.node(follower);
    let api = guest_api(node);
    let conn = connect_retrying(node.uri()).await.expect("connect");
    let ch = warren_tests::channel(&conn).await;
    let durable = unique("flow");
    let durable_options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    warren_tests::declare_queue(&ch, &durable, durable_options).await;
    // A transient queue homed on the leader: the follower forwards what is published to it.
    let there = connect_retrying(cluster.node(leader).uri())
        .await
        .expect("connect");
    let transient = unique("flow-transient");
    warren_tests::declare_queue(
        &warren_tests::channel(&there).await,
        &transient,
        QueueDeclareOptions::default(),
    )
    .await;

    let mut pauses = 0.0;
    for queue in [&durable, &transient] {
        let states = publish_watching_states(&api, &ch, queue, 3_000).await;
        assert!(states.contains("flow"), "{queue}: states seen: {states:?}");
        let text = metrics_text(node, "/metrics").await;
        let now = sample(&text, "warren_connections_flow_paused_total").unwrap_or(0.0);
        assert!(
            now > pauses,
            "{queue}: pauses counted: {now}, before: {pauses}"
        );
        pauses = now;
    }
    // Everything is in: the connection is read again and goes on.
    wait_for_json(&api, "/api/connections", WAIT, |cs| {
        cs.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|c| c["state"] == "running"))
    })
    .await
    .expect("running again");
    let confirms = confirm_channel(&conn).await;
    let c = publish(
        &confirms,
        "",
        &durable,
        b"after",
        BasicProperties::default(),
    )
    .await;
    assert!(c.is_ack());
}

/// Publishes `count` messages of 1 kB without confirms on `ch` to `queue`, watching the
/// connections' states (`/api/connections`) until all are in the queue: the states seen.
async fn publish_watching_states(
    api: &warren_tests::management::ApiClient,
    ch: &warren_tests::lapin::Channel,
    queue: &str,
    count: usize,
) -> std::collections::BTreeSet<String> {
    use warren_tests::lapin::options::BasicPublishOptions;
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let watcher_api = api.clone();
    let watcher = tokio::spawn(async move {
        let mut states = std::collections::BTreeSet::new();
        while !*stop.borrow() {
            if let Ok(Value::Array(cs)) = watcher_api.get("/api/connections").await {
                states.extend(
                    cs.iter()
                        .filter_map(|c| c["state"].as_str().map(str::to_owned)),
                );
            }
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        states
    });
    let body = vec![b'f'; 1024];
    for _ in 0..count {
        within(ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_delivery_mode(2),
        ))
        .await
        .expect("basic.publish");
    }
    let q_path = format!("/api/queues/%2F/{}", segment(queue));
    wait_for_json(api, &q_path, WAIT, |q| q["messages"] == count)
        .await
        .expect("every message is in the queue");
    let _ = stop_tx.send(true);
    watcher.await.expect("the watcher")
}

/// A consumer acking each message on its own does not make a log entry per ack: the node holds
/// its settles a few milliseconds and logs one per queue for all of them (every log entry costs
/// an fsync on every node: issue 17, bytes written per message). Before, the commit index grew
/// by one per ack.
#[tokio::test(flavor = "multi_thread")]
async fn acks_of_one_message_each_share_log_entries() {
    use futures_lite::StreamExt;
    use warren_tests::lapin::options::BasicAckOptions;
    const N: usize = 500;
    const WINDOW: u16 = 50;
    let node = Broker::start_own(&[]).expect("warren starts");
    let conn = node.connect().await;
    let ch = confirm_channel(&conn).await;
    let queue = unique("acked");
    within(ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("queue.declare");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    for i in 0..N {
        publish(
            &ch,
            "",
            &queue,
            format!("{i}").as_bytes(),
            persistent.clone(),
        )
        .await;
    }
    let commit_index = |metrics: &str| {
        sample(metrics, "rabbitmq_raft_commit_index").expect("the commit index is served")
    };
    let before = commit_index(&metrics_text(&node, "/metrics").await);

    within(ch.basic_qos(WINDOW, BasicQosOptions::default()))
        .await
        .expect("basic.qos");
    let mut consumer = within(ch.basic_consume(
        queue.as_str().into(),
        "acker".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("basic.consume");
    // A prefetch window at a time, each delivery acked on its own (multiple=false).
    for _ in 0..N / usize::from(WINDOW) {
        let mut window = Vec::new();
        for _ in 0..WINDOW {
            let delivery = within(consumer.next())
                .await
                .expect("a delivery")
                .expect("not an error");
            window.push(delivery);
        }
        for d in window {
            within(d.ack(BasicAckOptions::default()))
                .await
                .expect("basic.ack");
        }
    }
    wait_for_json(
        &guest_api(&node),
        &format!("/api/queues/%2F/{}", segment(&queue)),
        WAIT,
        |q| q["messages"] == 0,
    )
    .await
    .expect("every ack settled in the log");
    let entries = commit_index(&metrics_text(&node, "/metrics").await) - before;
    assert!(
        entries >= 1.0 && entries <= (N / 5) as f64,
        "{N} acks, {} windows of {WINDOW}, made {entries} log entries",
        N / usize::from(WINDOW)
    );
}

/// RabbitMQ's `if-empty=true` and `if-unused=true` on DELETE: a queue with messages, and an
/// exchange that is a binding's source, stay (400 with the AMQP reason); without them, deleted.
#[tokio::test(flavor = "multi_thread")]
async fn delete_with_if_empty_or_if_unused_keeps_what_is_in_use() {
    let node = Broker::start_own(&[]).expect("warren starts");
    let admin = guest_api(&node);
    let (q, x) = (unique("kept"), unique("source"));
    let q_path = format!("/api/queues/%2F/{}", segment(&q));
    let x_path = format!("/api/exchanges/%2F/{}", segment(&x));
    for (path, body) in [
        (&q_path, json!({"durable": true})),
        (&x_path, json!({"type": "fanout"})),
    ] {
        let (status, _) = admin
            .request("PUT", path, Some(&body))
            .await
            .expect("an answer");
        assert_eq!(status, 201, "PUT {path}");
    }
    let (status, _) = admin
        .request(
            "POST",
            &format!("/api/bindings/%2F/e/{}/q/{}", segment(&x), segment(&q)),
            Some(&json!({"routing_key": ""})),
        )
        .await
        .expect("an answer");
    assert_eq!(status, 201, "bind");
    let (status, routed) = admin
        .request(
            "POST",
            &format!("{x_path}/publish"),
            Some(&json!({"routing_key": "", "payload": "m", "payload_encoding": "string", "properties": {}})),
        )
        .await
        .expect("an answer");
    assert_eq!((status, routed), (200, json!({"routed": true})));
    wait_for_json(&admin, &q_path, WAIT, |v| v["messages"] == 1)
        .await
        .expect("the message is queued");

    let bad = |reason: String| (400, json!({"error": "bad_request", "reason": reason}));
    assert_eq!(
        refused(&admin, "DELETE", &format!("{q_path}?if-empty=true"), None).await,
        bad(format!(
            "PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"
        ))
    );
    assert_eq!(
        refused(&admin, "DELETE", &format!("{x_path}?if-unused=true"), None).await,
        bad(format!(
            "PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use"
        ))
    );
    for path in [&q_path, &x_path] {
        let (status, _) = admin.request("GET", path, None).await.expect("an answer");
        assert_eq!(status, 200, "{path} is still there");
    }
    // The queue has no consumer: `if-unused` lets it go; the exchange goes without the flag.
    for path in [format!("{q_path}?if-unused=true"), x_path.clone()] {
        assert_eq!(
            admin
                .request("DELETE", &path, None)
                .await
                .expect("an answer"),
            (204, Value::Null),
            "DELETE {path}"
        );
    }
    assert_eq!(
        refused(&admin, "GET", &q_path, None).await.0,
        404,
        "the queue is gone"
    );
}
