//! Failover is quiet: when the leader of a three-node cluster is killed with kill -9, clients
//! connected to the other nodes keep their connections, channels, consumers and exclusive
//! queues; every publish in flight is confirmed (none nacked, none lost), and the consumer sees
//! what the dead leader had delivered but not seen acked again, marked redelivered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::stream::StreamExt;
use warren_tests as kit;
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

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// The last route line of node `i` says it serves clients itself.
fn serves(cluster: &Cluster, i: usize) -> bool {
    cluster
        .node(i)
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("client route"))
        .is_some_and(|l| l.contains("route=Local"))
}

/// How many times node `i` started serving clients as the leader (lines in its log).
fn times_led(cluster: &Cluster, i: usize) -> usize {
    cluster
        .node(i)
        .log()
        .matches("leading: serving clients")
        .count()
}

/// Pauses node `i` (SIGSTOP) and waits until another node is elected and serves clients (a
/// node that led before and has not logged that it stopped does not count); returns the
/// paused process and the node that leads now. The caller resumes it (SIGCONT).
async fn pause_until_another_leads(cluster: &Cluster, i: usize) -> (u32, usize) {
    let before: Vec<usize> = (1..=cluster.len()).map(|n| times_led(cluster, n)).collect();
    let pid = cluster.node(i).pid().expect("a process this test started");
    signal(pid, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = (1..=cluster.len())
            .find(|n| *n != i && times_led(cluster, *n) > before[n - 1] && serves(cluster, *n))
        {
            return (pid, n);
        }
        if Instant::now() > deadline {
            signal(pid, "-CONT");
            panic!("no other leader within 20 s of pausing node {i}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A leader paused (SIGSTOP) past the election timeout wakes up believing it still leads. What it
/// decides then must not reach a client: here the ack its consumer sent during the pause frees
/// the consumer's prefetch window, and the paused leader would hand it the next message, marked
/// never delivered, although the new leader has already given that message to another client,
/// which acked it. (Found by the chaos suite: a pause nemesis, then a delivery with
/// redelivered=false of a message already delivered and acked elsewhere.)
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_paused_past_its_lease_hands_out_nothing_when_it_wakes() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let old = cluster.leader().expect("a leader");
    let other = (1..=3).find(|n| *n != old).expect("another node");
    let queue = "paused-leader-work";

    // Two persistent messages, confirmed, through another node.
    let pc = connect(cluster.node(other).uri()).await;
    let pch = kit::confirm_channel(&pc).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    kit::declare_queue(&pch, queue, durable).await;
    for body in ["m1", "m2"] {
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let confirm = kit::publish(&pch, "", queue, body.as_bytes(), persistent).await;
        assert!(confirm.is_ack(), "{body} confirmed");
    }

    // A consumer on the leader with prefetch 1: it holds m1, m2 waits for its ack.
    let cc = connect(cluster.node(old).uri()).await;
    let cch = kit::channel(&cc).await;
    within(cch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = kit::consume(&cch, queue, "worker", BasicConsumeOptions::default()).await;
    let first = kit::next_delivery(&mut consumer).await;
    assert_eq!(&first.data[..], b"m1");
    assert!(
        kit::stays_quiet(&mut consumer, 300).await,
        "prefetch 1 holds m2 back"
    );

    // The leader is paused; another node takes over.
    let (pid, new) = pause_until_another_leads(&cluster, old).await;
    let deadline = Instant::now() + Duration::from_secs(20);

    // Through the new leader, another client takes both messages and acks them.
    let gc = connect(cluster.node(new).uri()).await;
    let gch = kit::channel(&gc).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match within(gch.basic_get(queue.into(), BasicGetOptions { no_ack: false }))
            .await
            .expect("basic.get")
        {
            Some(m) => {
                assert!(m.delivery.redelivered, "taken over from a paused leader");
                got.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
                within(m.delivery.ack(BasicAckOptions::default()))
                    .await
                    .expect("ack");
            }
            None => {
                assert!(Instant::now() < deadline, "the queue holds m1 and m2");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    got.sort();
    assert_eq!(got, ["m1", "m2"]);
    within(gc.close(200, "bye".into())).await.unwrap();

    // The consumer acks m1 while its node is paused (the ack waits in the node's socket), and
    // the node wakes up.
    within(first.ack(BasicAckOptions::default()))
        .await
        .expect("the ack is written");
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(pid, "-CONT");

    // m2 went to the other client and was acked: the consumer must not get it.
    let mut wrong = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(d)) = tokio::time::timeout_at(until.into(), consumer.next()).await {
        match d {
            Ok(d) => wrong.push((String::from_utf8_lossy(&d.data).into_owned(), d.redelivered)),
            Err(e) => panic!("the consumer's channel failed: {e}"),
        }
    }
    assert!(
        wrong.is_empty(),
        "the woken leader handed out (body, redelivered): {wrong:?}"
    );
    // The consumer's connection was resumed on the new leader and still works.
    kit::declare_passive(&cch, queue)
        .await
        .expect("the consumer's channel works after its node woke up");
}

/// A node killed as the leader and restarted alone comes back with its own committed vote, so
/// it first reports itself as the leader of its old term. That must not count as "the first
/// leader it saw": the next time it wins an election it takes over (as any new leader) instead
/// of recovering from a whole-cluster restart, which would drop every exclusive and non-durable
/// queue and every non-persistent message of the clients of the nodes that kept running.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_restarted_alone_takes_over_later_without_dropping_transient_state() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let first = cluster.leader().expect("a leader");

    // The leader is killed and restarted; the others elect a new one meanwhile.
    cluster.node_mut(first).kill9().expect("kill -9 the leader");
    let second = cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("a new leader");
    cluster
        .node_mut(first)
        .restart()
        .expect("restart the old leader");
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("the restarted node follows");

    // A client of the third node: an exclusive queue, a non-durable queue, and a durable
    // queue holding a non-persistent message (a restart of the whole cluster drops all three;
    // a take-over keeps them).
    let third = (1..=3).find(|n| *n != first && *n != second).unwrap();
    let conn = connect(cluster.node(third).uri()).await;
    let ch = kit::confirm_channel(&conn).await;
    let exclusive = kit::exclusive_queue(&ch).await;
    let transient = "restart-transient";
    kit::declare_queue(&ch, transient, QueueDeclareOptions::default()).await;
    let durable = "restart-durable";
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    kit::declare_queue(&ch, durable, options).await;
    let confirm = kit::publish(&ch, "", durable, b"kept", BasicProperties::default()).await;
    assert!(confirm.is_ack());

    // Pause whichever other node leads until the restarted node wins an election (each round
    // it is one of two candidates).
    let mut rounds = 0;
    loop {
        let leader = cluster
            .wait_for_leader(Duration::from_secs(20))
            .expect("a leader every node follows");
        if leader == first {
            break;
        }
        rounds += 1;
        assert!(rounds <= 12, "node {first} never won an election");
        let (pid, _) = pause_until_another_leads(&cluster, leader).await;
        signal(pid, "-CONT");
    }
    let log = cluster.node(first).log();
    let leading = log
        .lines()
        .rev()
        .find(|l| l.contains("leading: serving clients"))
        .expect("the restarted node leads");
    assert!(
        leading.contains("op=TakeOver"),
        "a node restarted alone took over as: {leading}"
    );

    // The client's queues and its message are still there.
    kit::declare_passive(&ch, &exclusive)
        .await
        .expect("the exclusive queue of a live connection is kept");
    kit::declare_passive(&ch, transient)
        .await
        .expect("the non-durable queue is kept");
    let q = kit::declare_passive(&ch, durable)
        .await
        .expect("the durable queue is kept");
    assert_eq!(q.message_count(), 1, "the non-persistent message is kept");
}

/// A publisher without confirms on a follower keeps publishing through a kill -9 of the
/// leader, and its channel goes on answering: its node logs its publishes, numbered though it
/// does not confirm, and sends again those the failover left unapplied, so none is stuck in
/// flight (which would hold the channel's later methods forever) and none is enqueued twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_without_confirms_keeps_its_channel_through_a_leader_kill() {
    const N: u32 = 3000;
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let conn = connect(cluster.node(follower).uri()).await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.queue_declare(
        "plain".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    for i in 0..N {
        within(ch.basic_publish(
            "".into(),
            "plain".into(),
            BasicPublishOptions::default(),
            i.to_string().as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        ))
        .await
        .expect("published");
        if i == N / 3 {
            cluster
                .node_mut(leader)
                .kill9()
                .expect("kill -9 the leader");
        }
    }
    // The same channel answers a passive declare (it waits until every publish before it is
    // applied) within a failover's time, and counts no message twice.
    let declared = tokio::time::timeout(
        Duration::from_secs(30),
        ch.queue_declare(
            "plain".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("the channel answers within 30 s")
    .expect("the queue is there");
    let count = declared.message_count();
    assert!(
        count <= N,
        "{count} messages for {N} publishes: some enqueued twice"
    );
    // Publishes sent before the kill reached the old leader's log and may be lost with it
    // (without confirms the client was never told they arrived); most are kept.
    assert!(count >= N / 2, "only {count} of {N} kept");
    // Every message at most once.
    let mut seen = std::collections::HashSet::new();
    while let Some(m) = within(ch.basic_get("plain".into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        let id: u32 = String::from_utf8_lossy(&m.delivery.data)
            .parse()
            .expect("id");
        assert!(seen.insert(id), "message {id} delivered twice");
    }
    // Seen in CI (2026-12-06, 2026-12-07): 3 000 counted, 2 928 and 2 910 got; in a loop of
    // this test, the other way round (2 944 counted, 3 000 got: a re-sent publish's second copy
    // counted as the channel's command applied let the declare through early, fixed). Whether
    // the rest are still there says which side is wrong.
    if seen.len() as u32 != count {
        let left = within(ch.queue_declare(
            "plain".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ))
        .await
        .map(|d| d.message_count().to_string())
        .unwrap_or_else(|e| e.to_string());
        let missing: Vec<u32> = (0..N).filter(|i| !seen.contains(i)).take(100).collect();
        panic!(
            "got {} of {count} counted; a passive declare now counts {left}; missing (first \
             100): {missing:?}; {}",
            seen.len(),
            cluster.post_mortem(60)
        );
    }
}

/// A stream's consumer on a follower reads that node's replica (issue 19, step 4): a leader
/// kill does not touch it. It reads every confirmed message once, in order, with its offset,
/// before and after the failover, on the same connection and channel.
#[tokio::test(flavor = "multi_thread")]
async fn a_streams_consumer_on_a_follower_reads_on_through_a_leader_kill() {
    const N: u32 = 600;
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let followers: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let (pub_node, con_node) = (followers[0], followers[1]);
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        warren_tests::lapin::types::AMQPValue::LongString("stream".into()),
    );
    let cc = connect(cluster.node(con_node).uri()).await;
    let cch = within(cc.create_channel()).await.unwrap();
    within(cch.queue_declare(
        "log".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    ))
    .await
    .unwrap();
    within(cch.basic_qos(100, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut offset = FieldTable::default();
    offset.insert(
        "x-stream-offset".into(),
        warren_tests::lapin::types::AMQPValue::LongString("first".into()),
    );
    let mut consumer = within(cch.basic_consume(
        "log".into(),
        "reader".into(),
        BasicConsumeOptions::default(),
        offset,
    ))
    .await
    .unwrap();

    let pc = connect(cluster.node(pub_node).uri()).await;
    let pch = within(pc.create_channel()).await.unwrap();
    within(pch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    for i in 0..N {
        if i == N / 2 {
            cluster
                .node_mut(leader)
                .kill9()
                .expect("kill -9 the leader");
        }
        let confirm = tokio::time::timeout(
            Duration::from_secs(30),
            pch.basic_publish(
                "".into(),
                "log".into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await
        .expect("published within 30 s")
        .expect("published");
        let confirmation = tokio::time::timeout(Duration::from_secs(30), confirm)
            .await
            .expect("confirmed within 30 s")
            .expect("confirmed");
        assert!(confirmation.is_ack(), "publish {i} nacked");
    }
    let mut next = 0u32;
    while next < N {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("message {next} within 30 s"))
            .expect("the consumer goes on")
            .expect("a delivery");
        let body: u32 = String::from_utf8_lossy(&delivery.data).parse().expect("id");
        // The publisher's channel may have re-sent a publish across the failover; the log
        // keeps it once, so the stream reads each exactly once, in order.
        assert_eq!(body, next, "in order, once each");
        let offset = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        assert_eq!(
            offset,
            Some(warren_tests::lapin::types::AMQPValue::LongLongInt(
                i64::from(next)
            )),
            "its offset"
        );
        within(delivery.ack(BasicAckOptions::default()))
            .await
            .expect("acked");
        next += 1;
    }
    assert!(cc.status().connected(), "the consumer kept its connection");
}
