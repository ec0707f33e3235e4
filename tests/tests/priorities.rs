//! Priority queues (`x-max-priority`) on a three-node cluster: the highest priority first,
//! FIFO within a priority, messages held by a consumer go back to their place within their
//! priority, and all of it survives the leader's death.

use std::time::Duration;

use warren_tests as kit;
use warren_tests::cluster::Cluster;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::{AMQPValue, FieldTable};
use warren_tests::lapin::{BasicProperties, Channel};
use warren_tests::within;

/// Takes every ready message with `basic.get` (acked): (body, redelivered) in delivery order.
async fn get_all(ch: &Channel, queue: &str) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        got.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery.redelivered,
        ));
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_priority_queue_keeps_its_order_through_a_leader_kill() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let conn = kit::connect(cluster.node(follower).uri()).await;
    let ch = kit::confirm_channel(&conn).await;

    for queue_type in ["quorum", "classic"] {
        let queue = format!("prio-{queue_type}");
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-priority".into(), AMQPValue::LongInt(10));
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(queue_type.into()),
        );
        within(ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        ))
        .await
        .expect("declare a priority queue");
        // Priorities 0, 3, 6, 9 and one above the maximum (counted as 10), in turns.
        for i in 0..20u8 {
            let priority = if i % 5 == 4 { 200 } else { (i % 5) * 3 };
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_priority(priority);
            let body = format!("p{priority:03}-{i:02}");
            let confirm = kit::publish(&ch, "", &queue, body.as_bytes(), props).await;
            assert!(confirm.is_ack(), "{body} confirmed");
        }
    }

    // A consumer on the other follower holds the three highest of the quorum queue, unacked.
    let other = (1..=3).find(|n| *n != leader && *n != follower).unwrap();
    let cconn = kit::connect(cluster.node(other).uri()).await;
    let cch = kit::channel(&cconn).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let m = within(cch.basic_get("prio-quorum".into(), BasicGetOptions::default()))
            .await
            .expect("basic.get")
            .expect("a message");
        held.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    assert_eq!(held, ["p200-04", "p200-09", "p200-14"], "highest first");

    cluster
        .node_mut(leader)
        .kill9()
        .expect("kill -9 the leader");
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("a new leader");
    // The held messages go back to their places when their consumer's channel closes.
    within(cch.close(200, "done".into())).await.expect("close");

    let expected = |held_back: bool| -> Vec<(String, bool)> {
        let mut all: Vec<(u8, u8)> = (0..20u8)
            .map(|i| (if i % 5 == 4 { 200 } else { (i % 5) * 3 }, i))
            .collect();
        all.sort_by_key(|&(p, i)| (std::cmp::Reverse(p), i));
        all.into_iter()
            .map(|(p, i)| {
                let redelivered = held_back && p == 200 && i < 15;
                (format!("p{p:03}-{i:02}"), redelivered)
            })
            .collect()
    };
    let reader = kit::channel(&conn).await;
    let quorum = get_all(&reader, "prio-quorum").await;
    let bodies: Vec<&str> = quorum.iter().map(|(b, _)| b.as_str()).collect();
    let want = expected(true);
    let want_bodies: Vec<&str> = want.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, want_bodies, "by priority, FIFO within one");
    for (body, redelivered) in &quorum[..3] {
        assert!(*redelivered, "{body} was delivered before: redelivered");
    }
    let classic = get_all(&reader, "prio-classic").await;
    let bodies: Vec<&str> = classic.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, want_bodies, "a durable classic queue too");
}
