//! RabbitMQ's resource alarms across a cluster, through lapin: a memory alarm on one node blocks
//! the publishers of every node (`connection.blocked` with RabbitMQ's reason, nothing more read
//! from them) while consumers go on; `warrenctl set-vm-memory-high-watermark` changes a node's
//! watermark at once; when the alarm clears, publishers get `connection.unblocked` and what they
//! sent is taken, nothing lost. `/api/nodes` and `/metrics` show every node's figures.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Event};
use warren_tests::cluster::Cluster;
use warren_tests::management::{guest_api, warrenctl};
use warren_tests::{confirm_channel, connect, within, STEP};

/// `warrenctl set-vm-memory-high-watermark ARGS --grpc` node `i`'s gRPC address.
fn set_watermark(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let grpc = cluster.grpc_addr(i);
    let mut all = vec!["set-vm-memory-high-watermark"];
    all.extend_from_slice(args);
    all.extend(["--grpc", &grpc]);
    let out = warrenctl(cluster.node(i), &all).expect("warrenctl runs");
    assert!(out.ok, "warrenctl failed: {}", out.stderr);
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_alarm_on_one_node_blocks_every_publisher_and_lets_consumers_go_on() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.wait_for_leader(STEP * 3).expect("a leader");
    let alarmed = (1..=3).find(|n| *n != leader).expect("a follower");
    let publisher_node = (1..=3).find(|n| *n != alarmed).expect("another node");
    let consumer_node = 6 - alarmed - publisher_node;

    let publisher = connect(cluster.node(publisher_node).uri()).await;
    let mut events = publisher.events_listener();
    let ch = confirm_channel(&publisher).await;
    within(ch.queue_declare(
        "alarmed".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("declare");
    let publish = |body: &'static [u8]| {
        ch.basic_publish(
            "".into(),
            "alarmed".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
    };
    assert!(within(within(publish(b"before")).await.expect("publish"))
        .await
        .expect("confirm")
        .is_ack());

    // Node `alarmed` gets a watermark below what it uses: its memory alarm goes on.
    let said = set_watermark(&cluster, alarmed, &["absolute", "1MB"]);
    assert!(said.contains("1000000 bytes"), "{said}");
    let api = guest_api(cluster.node(publisher_node));
    warren_tests::management::wait_for_json(&api, "/api/nodes", STEP, |nodes| {
        nodes.as_array().is_some_and(|ns| {
            ns.iter()
                .all(|n| n["mem_used"].as_u64().is_some_and(|m| m > 0))
                && ns.iter().any(|n| {
                    n["name"] == format!("warren@node{alarmed}").as_str()
                        && n["mem_alarm"] == true
                        && n["mem_limit"] == 1_000_000
                })
        })
    })
    .await
    .expect("/api/nodes shows the alarm and every node's memory");
    let metrics = metrics_of(&cluster, alarmed).await;
    assert!(
        metrics.contains("rabbitmq_alarms_memory_used_watermark 1"),
        "{metrics}"
    );

    // The publisher on another node is blocked at its next publish, with RabbitMQ's reason
    // (its node learns the alarm within a second or two: publish until it does).
    let deadline = Instant::now() + STEP;
    let mut held = Vec::new();
    let reason = loop {
        held.push(within(publish(b"held")).await.expect("publish"));
        match tokio::time::timeout(Duration::from_millis(300), events.next()).await {
            Ok(Some(Event::ConnectionBlocked(reason))) => break reason,
            // lapin reports the connection's opening too, whenever the listener sees it.
            Ok(Some(Event::Connected)) => {}
            Ok(Some(other)) => panic!("unexpected event {other:?}"),
            Ok(None) => panic!("the connection's events ended"),
            Err(_) => assert!(Instant::now() < deadline, "never blocked"),
        }
    };
    assert_eq!(reason, "low on memory");
    // What was read before the block is confirmed; the publish that met it waits (with any
    // sent after it, had the event been slow to arrive on a loaded machine).
    let mut pending = Vec::new();
    for confirm in held {
        let mut confirm = Box::pin(confirm);
        match tokio::time::timeout(Duration::from_secs(3), &mut confirm).await {
            Ok(c) => assert!(c.expect("confirm").is_ack()),
            Err(_) => pending.push(confirm),
        }
    }
    assert!(!pending.is_empty(), "the publish that met the block waits");

    // Consumers go on: a client of a third node gets the message published before the alarm.
    let consumer = connect(cluster.node(consumer_node).uri()).await;
    let cch = within(consumer.create_channel()).await.expect("channel");
    let got = within(cch.basic_get("alarmed".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .expect("a message");
    assert_eq!(got.delivery.data, b"before");

    // The publishes that met the block wait; they are not lost.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut pending[0])
            .await
            .is_err(),
        "no confirm while blocked"
    );

    // The watermark goes back up: unblocked, and the held publish is taken and confirmed.
    set_watermark(&cluster, alarmed, &["0.6"]);
    within(async { while !matches!(events.next().await, Some(Event::ConnectionUnblocked)) {} })
        .await;
    for confirm in pending {
        assert!(within(confirm).await.expect("confirm").is_ack());
    }
    let mut bodies = Vec::new();
    while let Some(m) = within(cch.basic_get("alarmed".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    assert!(
        !bodies.is_empty() && bodies.iter().all(|b| b == "held"),
        "{bodies:?}"
    );
}

/// `/metrics` of node `i`.
async fn metrics_of(cluster: &Cluster, i: usize) -> String {
    let api = guest_api(cluster.node(i));
    match api.request("GET", "/metrics", None).await {
        Ok((_, serde_json::Value::String(text))) => text,
        other => panic!("GET /metrics: {other:?}"),
    }
}
