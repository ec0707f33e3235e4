//! Failover is quiet: when the leader of a three-node cluster is killed with kill -9, clients
//! connected to the other nodes keep their connections, channels, consumers and exclusive
//! queues; every publish in flight is confirmed (none nacked, none lost), and the consumer sees
//! what the dead leader had delivered but not seen acked again, marked redelivered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::stream::StreamExt;
use warren_tests::cluster::Cluster;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_tests::within;

async fn connect(uri: &str) -> Connection {
    within(Connection::connect(uri, ConnectionProperties::default()))
        .await
        .expect("connect")
}

#[derive(Default)]
struct Seen {
    /// id → how many times it arrived, and whether a repeat came without redelivered=true.
    count: HashMap<u32, u32>,
    repeats_not_flagged: Vec<u32>,
    redelivered: usize,
    replies: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_on_surviving_nodes_keep_their_connections_through_a_leader_kill() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let followers: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let (pub_node, con_node) = (followers[0], followers[1]);

    // The consumer: a durable work queue with prefetch and manual acks, and an exclusive
    // server-named queue (an RPC client's reply queue) on the same connection.
    let cc = connect(cluster.node(con_node).uri()).await;
    let cch = within(cc.create_channel()).await.unwrap();
    within(cch.queue_declare(
        "jobs".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(cch.basic_qos(50, BasicQosOptions::default()))
        .await
        .unwrap();
    let reply_queue = within(cch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap()
    .name()
    .to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut jobs = within(cch.basic_consume(
        "jobs".into(),
        "worker".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let mut replies = within(cch.basic_consume(
        reply_queue.as_str().into(),
        "replies".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let consumer_failed = Arc::new(Mutex::new(None::<String>));
    let worker = {
        let (seen, failed) = (Arc::clone(&seen), Arc::clone(&consumer_failed));
        tokio::spawn(async move {
            while let Some(d) = jobs.next().await {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => {
                        *failed.lock().unwrap() = Some(e.to_string());
                        return;
                    }
                };
                let id: u32 = String::from_utf8_lossy(&d.data).parse().expect("id");
                {
                    let mut s = seen.lock().unwrap();
                    let n = s.count.entry(id).or_insert(0);
                    *n += 1;
                    if *n > 1 && !d.redelivered {
                        s.repeats_not_flagged.push(id);
                    }
                    if d.redelivered {
                        s.redelivered += 1;
                    }
                }
                if let Err(e) = d.ack(BasicAckOptions::default()).await {
                    *failed.lock().unwrap() = Some(format!("ack: {e}"));
                    return;
                }
            }
        })
    };
    let reply_reader = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let body = String::from_utf8_lossy(&d.data).into_owned();
                seen.lock().unwrap().replies.push(body);
            }
        })
    };

    // The publisher, on the other follower: persistent messages with confirms, 100 in flight;
    // the leader is killed with kill -9 after 1500 confirms. No reconnect: an error fails.
    let pc = connect(cluster.node(pub_node).uri()).await;
    let pch = within(pc.create_channel()).await.unwrap();
    within(pch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let n = 5000u32;
    let mut in_flight = std::collections::VecDeque::new();
    let (mut acked, mut nacked) = (0u32, 0u32);
    let mut killed_at = None;
    let mut longest_wait = Duration::ZERO;
    let started = Instant::now();
    let mut next = 1u32;
    while next <= n || !in_flight.is_empty() {
        while next <= n && in_flight.len() < 100 {
            let confirm = pch
                .basic_publish(
                    "".into(),
                    "jobs".into(),
                    BasicPublishOptions::default(),
                    next.to_string().as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publishing never fails: the connection is kept");
            in_flight.push_back(confirm);
            next += 1;
        }
        let Some(confirm) = in_flight.pop_front() else {
            break;
        };
        let waited = Instant::now();
        let c = tokio::time::timeout(Duration::from_secs(30), confirm)
            .await
            .expect("every publish is confirmed within 30 s")
            .expect("the publisher's connection is kept");
        longest_wait = longest_wait.max(waited.elapsed());
        if c.is_ack() {
            acked += 1;
        } else {
            nacked += 1;
        }
        if acked == 1500 && killed_at.is_none() {
            cluster
                .node_mut(leader)
                .kill9()
                .expect("kill -9 the leader");
            killed_at = Some(Instant::now());
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(
        (acked, nacked),
        (n, 0),
        "every publish confirmed, none nacked"
    );

    // A reply to the consumer's exclusive queue, published after the failover, arrives: the
    // queue survived with its connection.
    let c = within(pch.basic_publish(
        "".into(),
        reply_queue.as_str().into(),
        BasicPublishOptions::default(),
        b"reply after failover",
        BasicProperties::default(),
    ))
    .await
    .expect("publish the reply");
    assert!(within(c).await.unwrap().is_ack());

    // Every message arrives at the consumer that kept its connection.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (distinct, replies) = {
            let s = seen.lock().unwrap();
            (s.count.len(), s.replies.len())
        };
        if distinct == n as usize && replies == 1 {
            break;
        }
        if let Some(e) = consumer_failed.lock().unwrap().clone() {
            panic!("the consumer's connection failed: {e}");
        }
        assert!(
            Instant::now() < deadline,
            "the consumer got {distinct} of {n} and {replies} replies"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = seen.lock().unwrap();
    let ids: BTreeMap<u32, u32> = s.count.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(ids.len(), n as usize);
    assert!(ids.keys().copied().eq(1..=n), "exactly the ids published");
    assert!(
        s.repeats_not_flagged.is_empty(),
        "a repeat without redelivered=true: {:?}",
        s.repeats_not_flagged
    );
    let duplicates: u32 = ids.values().map(|c| c - 1).sum();
    eprintln!(
        "{n} published through node {pub_node} in {elapsed:?} with leader {leader} killed after 1500: \
         0 nacked, longest confirm wait {longest_wait:?}; consumer on node {con_node} kept its \
         connection: {duplicates} duplicates (all redelivered=true), {} redelivered",
        s.redelivered
    );
    assert!(pc.status().connected() && cc.status().connected());
    drop(s);
    worker.abort();
    reply_reader.abort();
}
