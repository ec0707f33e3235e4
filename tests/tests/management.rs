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

    // Nodes, health, metrics.
    let nodes = api3.get("/api/nodes").await.expect("nodes");
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), 3);
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
