//! Transient queues on their home node, across three real nodes: RPC and pub/sub between
//! clients on different nodes go from home to home without the Raft log, and a home that dies
//! takes its transient queues with it, telling their consumers elsewhere (issue 3, point 4).

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use warren_tests::cluster::{connect_retrying, Cluster};
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::{AMQPValue, FieldTable, ShortString};
use warren_tests::lapin::{BasicProperties, Connection, ExchangeKind};
use warren_tests::{
    closed_with, confirm_channel, consume, declare_passive, declare_queue, exclusive_queue, within,
};

async fn connect(cluster: &Cluster, i: usize) -> Connection {
    connect_retrying(cluster.node(i).uri())
        .await
        .expect("connected")
}

/// Waits (up to `timeout`) until a passive declare of `queue` through `conn` says it does not
/// exist; returns whether meanwhile one said its home node was down.
async fn wait_until_gone(conn: &Connection, queue: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let gone = format!("NOT_FOUND - no queue '{queue}' in vhost '/'");
    let mut said_down = false;
    loop {
        let ch = within(conn.create_channel()).await.unwrap();
        match declare_passive(&ch, queue).await {
            Err(e) if closed_with(&e).1 == gone => return said_down,
            Err(e) if closed_with(&e).1.contains("is down or inaccessible") => said_down = true,
            other => assert!(
                Instant::now() < deadline,
                "{queue} is still declared: {:?}",
                other.map(|q| q.message_count())
            ),
        }
        assert!(Instant::now() < deadline, "{queue} is still declared");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The three nodes in the order (leader, follower, other follower).
fn roles(cluster: &Cluster) -> (usize, usize, usize) {
    let leader = cluster.leader().expect("a leader");
    let mut followers = (1..=3).filter(|n| *n != leader);
    let a = followers.next().expect("a follower");
    let b = followers.next().expect("another follower");
    (leader, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_and_pub_sub_between_nodes_go_from_home_to_home_without_the_log() {
    const CALLS: usize = 200;
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let (leader, a, b) = roles(&cluster);

    // The RPC server on follower b: a non-durable request queue, homed on b.
    let server = connect(&cluster, b).await;
    let sch = within(server.create_channel()).await.unwrap();
    declare_queue(&sch, "rpc_queue", QueueDeclareOptions::default()).await;
    within(sch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut requests = consume(&sch, "rpc_queue", "server", BasicConsumeOptions::default()).await;
    let serving = tokio::spawn(async move {
        let mut served = 0;
        while let Some(Ok(d)) = requests.next().await {
            let n: u64 = String::from_utf8_lossy(&d.data).parse().unwrap();
            let reply_to = d.properties.reply_to().clone().expect("reply_to");
            let props = BasicProperties::default().with_correlation_id(
                d.properties
                    .correlation_id()
                    .clone()
                    .expect("correlation_id"),
            );
            sch.basic_publish(
                "".into(),
                reply_to.as_str().into(),
                BasicPublishOptions::default(),
                (n * n).to_string().as_bytes(),
                props,
            )
            .await
            .unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
            served += 1;
        }
        served
    });

    // The client on follower a: its private reply queue is homed on a.
    let client = connect(&cluster, a).await;
    let cch = confirm_channel(&client).await;
    let reply_queue = exclusive_queue(&cch).await;
    let mut replies = within(cch.basic_consume(
        reply_queue.as_str().into(),
        "client".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let before = cluster.committed(leader);
    let started = Instant::now();
    for i in 0..CALLS as u64 {
        let id = format!("call-{i}");
        let props = BasicProperties::default()
            .with_reply_to(ShortString::from(reply_queue.clone()))
            .with_correlation_id(ShortString::from(id.clone()));
        let confirm = within(cch.basic_publish(
            "".into(),
            "rpc_queue".into(),
            BasicPublishOptions::default(),
            i.to_string().as_bytes(),
            props,
        ))
        .await
        .unwrap();
        assert!(
            within(confirm).await.unwrap().is_ack(),
            "request {i} confirmed"
        );
        let reply = within(replies.next()).await.expect("a reply").unwrap();
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some(id.as_str())
        );
        assert_eq!(String::from_utf8_lossy(&reply.data), (i * i).to_string());
    }
    let elapsed = started.elapsed();
    let entries = cluster.committed(leader) - before;
    eprintln!(
        "{CALLS} calls from node {a} to node {b} in {elapsed:?} ({:.2} ms each); {entries} log entries",
        elapsed.as_secs_f64() * 1000.0 / CALLS as f64
    );
    assert!(
        entries < 10,
        "{CALLS} requests and replies between homes added {entries} log entries"
    );

    // Pub/sub: a fanout exchange, one exclusive subscriber queue on each node, the publisher on
    // follower a: every subscriber gets every message, in order.
    let publisher = confirm_channel(&client).await;
    within(publisher.exchange_declare(
        "logs".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let mut subscribers = Vec::new();
    for node in [leader, a, b] {
        let conn = connect(&cluster, node).await;
        let ch = within(conn.create_channel()).await.unwrap();
        let q = exclusive_queue(&ch).await;
        within(ch.queue_bind(
            q.as_str().into(),
            "logs".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .await
        .unwrap();
        let consumer = within(ch.basic_consume(
            q.as_str().into(),
            "sub".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ))
        .await
        .unwrap();
        subscribers.push((node, conn, consumer));
    }
    // The publisher's node routes with the bindings it has applied: the subscribers' binds,
    // made by other connections, reach it within a replication round trip (docs/compatibility.md,
    // "Bindings seen from other nodes"). Nothing links the publisher to them, so wait for it.
    cluster
        .wait_applied_everywhere(Duration::from_secs(10))
        .expect("every node applies the binds");
    let mut confirms = Vec::new();
    for i in 0..50 {
        confirms.push(
            within(publisher.basic_publish(
                "logs".into(),
                "".into(),
                BasicPublishOptions::default(),
                format!("log-{i}").as_bytes(),
                BasicProperties::default(),
            ))
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(within(c).await.unwrap().is_ack());
    }
    for (node, _conn, consumer) in &mut subscribers {
        for i in 0..50 {
            let d = within(consumer.next()).await.expect("a log line").unwrap();
            assert_eq!(
                String::from_utf8_lossy(&d.data),
                format!("log-{i}"),
                "subscriber on node {node}"
            );
        }
    }
    within(server.close(200, "done".into())).await.unwrap();
    let served = within(serving).await.unwrap();
    assert_eq!(served, CALLS, "every request was served once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_home_that_dies_takes_its_transient_queues_and_tells_their_consumers_elsewhere() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let (leader, a, b) = roles(&cluster);
    // "jobs" is declared by a client of follower b: b is its home.
    let owner = connect(&cluster, b).await;
    let och = within(owner.create_channel()).await.unwrap();
    declare_queue(&och, "jobs", QueueDeclareOptions::default()).await;
    // A consumer on the leader, and a publisher with confirms on follower a.
    let consumer_conn = connect(&cluster, leader).await;
    let cch = within(consumer_conn.create_channel()).await.unwrap();
    let mut jobs = consume(&cch, "jobs", "worker", BasicConsumeOptions::default()).await;
    let publisher = connect(&cluster, a).await;
    let pch = confirm_channel(&publisher).await;
    let publish = |body: &'static str| {
        let pch = pch.clone();
        async move {
            within(pch.basic_publish(
                "".into(),
                "jobs".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            ))
            .await
            .unwrap()
            .await
            .unwrap()
        }
    };
    assert!(publish("first").await.is_ack());
    let d = within(jobs.next()).await.expect("a job").unwrap();
    assert_eq!(d.data, b"first");
    d.ack(BasicAckOptions::default()).await.unwrap();

    // The home dies: the consumer elsewhere is told its queue is gone (basic.cancel), and a
    // publish to the queue is nacked, never confirmed with nobody holding it.
    cluster.node_mut(b).kill9().expect("kill -9 the home");
    let ended = tokio::time::timeout(Duration::from_secs(10), jobs.next()).await;
    assert!(
        matches!(ended, Ok(None)),
        "the consumer was cancelled: {ended:?}"
    );
    let outcome = publish("lost").await;
    assert!(outcome.is_nack(), "published to a dead home: {outcome:?}");

    // Until the leader notices, the queue's home is down (RabbitMQ's 404 for a queue whose node
    // is down); then the leader removes the dead home's transient queues: the name is free
    // again, and declared on a, it lives there.
    let said_down = wait_until_gone(&publisher, "jobs", Duration::from_secs(40)).await;
    assert!(
        said_down,
        "a use of the queue while its home was down said so"
    );
    let pch = confirm_channel(&publisher).await;
    declare_queue(&pch, "jobs", QueueDeclareOptions::default()).await;
    let confirm = within(pch.basic_publish(
        "".into(),
        "jobs".into(),
        BasicPublishOptions::default(),
        b"again",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    assert!(within(confirm).await.unwrap().is_ack());
    let got = within(pch.basic_get("jobs".into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_home_restarted_drops_the_transient_queues_of_its_earlier_life() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let (leader, a, _) = roles(&cluster);
    let conn = connect(&cluster, a).await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare_queue(&ch, "scratch", QueueDeclareOptions::default()).await;
    // kill -9 and start again at once (well before the leader would call it down): the node
    // itself finds, in its replica of the log, a transient queue of its earlier life, and
    // removes it, as RabbitMQ drops a node's transient queues when it restarts.
    cluster
        .node_mut(a)
        .kill9_and_restart()
        .expect("restart the home");
    let elsewhere = connect(&cluster, leader).await;
    wait_until_gone(&elsewhere, "scratch", Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_rejected_on_a_followers_transient_queue_is_dead_lettered_into_a_replicated_one()
{
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let (leader, a, b) = roles(&cluster);
    // The dead-letter queue is durable (replicated); "work" is non-durable, homed on a.
    let conn = connect(&cluster, a).await;
    let ch = confirm_channel(&conn).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue(&ch, "work-failed", durable).await;
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text("work-failed"));
    within(ch.queue_declare("work".into(), QueueDeclareOptions::default(), args))
        .await
        .unwrap();
    let confirm = within(ch.basic_publish(
        "".into(),
        "work".into(),
        BasicPublishOptions::default(),
        b"poison",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    assert!(within(confirm).await.unwrap().is_ack());
    // A worker on b rejects it: the home (a, not the leader) dead-letters it through the log.
    let worker = connect(&cluster, b).await;
    let wch = within(worker.create_channel()).await.unwrap();
    let got = within(wch.basic_get("work".into(), BasicGetOptions::default()))
        .await
        .unwrap()
        .expect("the message");
    within(got.delivery.reject(BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    // Read back through the leader, from the replicated queue.
    let reader = connect(&cluster, leader).await;
    let rch = within(reader.create_channel()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        if let Some(m) =
            within(rch.basic_get("work-failed".into(), BasicGetOptions { no_ack: true }))
                .await
                .unwrap()
        {
            break m;
        }
        assert!(Instant::now() < deadline, "nothing dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.delivery.data, b"poison");
    let death = dead
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-first-death-queue").cloned());
    assert_eq!(death, Some(AMQPValue::LongString("work".into())));
}

/// A publish that reaches a replicated queue and a transient queue homed on another node is
/// confirmed when its log entry is applied on the publisher's node, and not before that other
/// home took its copy: a home that refuses it (`reject-publish`) makes the confirm a nack,
/// although the replicated queue has the message.
#[tokio::test(flavor = "multi_thread")]
async fn a_confirm_waits_for_the_copy_forwarded_to_another_home_even_when_the_log_has_the_rest() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let (_leader, a, b) = roles(&cluster);
    // On b: a non-durable queue that takes nothing (homed on b), bound to a fanout.
    let owner = connect(&cluster, b).await;
    let och = within(owner.create_channel()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    within(och.queue_declare("full".into(), QueueDeclareOptions::default(), args))
        .await
        .unwrap();
    within(och.exchange_declare(
        "both".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(och.queue_bind(
        "full".into(),
        "both".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    // A durable (replicated) queue on the same fanout.
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue(&och, "kept", durable).await;
    within(och.queue_bind(
        "kept".into(),
        "both".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    // A publisher on a: its node logs the replicated part and forwards the copy to b.
    let publisher = connect(&cluster, a).await;
    let pch = confirm_channel(&publisher).await;
    let confirm = within(pch.basic_publish(
        "both".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    assert!(
        within(confirm).await.unwrap().is_nack(),
        "b refused its copy: nacked"
    );
    // The replicated queue has it all the same (a nack says "publish again", not "lost").
    let q = declare_passive(&pch, "kept").await.expect("kept exists");
    assert_eq!(q.message_count(), 1);
    // And one only the log holds is acked (unbound through the publisher's own connection:
    // its node routes the next publish with a replica that has seen the unbind).
    within(pch.queue_unbind(
        "full".into(),
        "both".into(),
        "".into(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let confirm = within(pch.basic_publish(
        "both".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"n",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    assert!(within(confirm).await.unwrap().is_ack());
}
