//! Poison messages in a quorum queue on a three-node cluster: the delivery count is replicated,
//! so a message given back by consumers is dead-lettered after `x-delivery-limit` returns even
//! when the leader dies in between, and each redelivery carries `x-delivery-count`.

use std::time::Duration;

use warren_tests as kit;
use warren_tests::cluster::Cluster;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::{AMQPValue, FieldTable, ShortString};
use warren_tests::lapin::{BasicProperties, Channel};
use warren_tests::within;

/// Takes the message of `queue` (unacked) and gives it back with nack+requeue; returns the
/// `x-delivery-count` it carried (None without).
async fn get_and_return(ch: &Channel, queue: &str) -> Option<i64> {
    let m = within(ch.basic_get(queue.into(), BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("the message is there");
    let count = m
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| {
            h.inner()
                .get(&ShortString::from("x-delivery-count"))
                .cloned()
        })
        .map(|v| match v {
            AMQPValue::LongLongInt(n) => n,
            other => panic!("x-delivery-count is a long, not {other:?}"),
        });
    within(ch.basic_nack(
        m.delivery.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    ))
    .await
    .expect("basic.nack");
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn the_delivery_count_survives_a_leader_kill_and_the_limit_dead_letters() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let conn = kit::connect(cluster.node(follower).uri()).await;
    let ch = kit::confirm_channel(&conn).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    kit::declare_queue(&ch, "poison-dlq", durable).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongInt(3));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("poison-dlq".into()),
    );
    within(ch.queue_declare("poison".into(), durable, arguments))
        .await
        .expect("declare the quorum queue");
    let props = BasicProperties::default().with_delivery_mode(2);
    assert!(kit::publish(&ch, "", "poison", b"bad", props)
        .await
        .is_ack());

    let worker = kit::channel(&conn).await;
    assert_eq!(get_and_return(&worker, "poison").await, None);
    assert_eq!(get_and_return(&worker, "poison").await, Some(1));
    // A nack has no reply: once its return is replicated, the leader dies.
    cluster
        .wait_applied_everywhere(Duration::from_secs(10))
        .expect("the returns reach every node");

    cluster
        .node_mut(leader)
        .kill9()
        .expect("kill -9 the leader");
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("a new leader");

    // The new leader knows the two returns: the next deliveries count on from there.
    let worker = kit::channel(&conn).await;
    assert_eq!(get_and_return(&worker, "poison").await, Some(2));
    assert_eq!(get_and_return(&worker, "poison").await, Some(3));
    // The fourth return passed the limit of 3: dead-lettered.
    let q = kit::declare_passive(&worker, "poison")
        .await
        .expect("poison");
    assert_eq!(q.message_count(), 0, "no longer in the quorum queue");
    let dead = within(worker.basic_get("poison-dlq".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .expect("dead-lettered");
    let reason = dead.delivery.properties.headers().as_ref().and_then(|h| {
        h.inner()
            .get(&ShortString::from("x-first-death-reason"))
            .cloned()
    });
    match reason {
        Some(AMQPValue::LongString(r)) => assert_eq!(r.as_bytes(), b"delivery_limit"),
        other => panic!("x-first-death-reason is delivery_limit, not {other:?}"),
    }
    assert_eq!(&dead.delivery.data[..], b"bad");
}
