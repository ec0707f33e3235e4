//! Three `warren` processes on loopback as one broker: clients at any node, a leader killed with
//! kill -9 in the middle of a publish stream, the whole cluster killed and restarted, and a
//! follower that was down for a long time catching up through a snapshot.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use warren_tests::cluster::Cluster;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use warren_tests::{declare_passive, within};

/// Connects to `uri`, retrying for up to 30 s (a node may be between leaders).
async fn connect_retrying(uri: &str) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(uri, ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(c)) => return c,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(e)) => panic!("cannot connect to {uri}: {e}"),
            Err(_) => panic!("cannot connect to {uri}: timed out"),
        }
    }
}

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    ch
}

/// Publishes `ids` persistently to `exchange`/`key` through `uri` with up to `window` confirms
/// outstanding, reconnecting and re-publishing whatever was not confirmed when the connection
/// fails. `on_progress(n)` runs after `n` confirms (it may kill nodes). Returns the ids
/// confirmed.
async fn publish_all(
    uri: &str,
    exchange: &str,
    key: &str,
    ids: Vec<u32>,
    window: usize,
    mut on_progress: impl FnMut(usize),
) -> BTreeSet<u32> {
    let mut confirmed = BTreeSet::new();
    let mut todo: std::collections::VecDeque<u32> = ids.into();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !todo.is_empty() {
        assert!(Instant::now() < deadline, "publishing took over 2 minutes");
        let conn = connect_retrying(uri).await;
        let Ok(Ok(ch)) = tokio::time::timeout(Duration::from_secs(10), async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, warren_tests::lapin::Error>(ch)
        })
        .await
        else {
            continue;
        };
        let mut in_flight = std::collections::VecDeque::new();
        let mut failed = false;
        while !failed && (!todo.is_empty() || !in_flight.is_empty()) {
            while in_flight.len() < window {
                let Some(id) = todo.pop_front() else { break };
                match ch
                    .basic_publish(
                        exchange.into(),
                        key.into(),
                        BasicPublishOptions::default(),
                        id.to_string().as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                {
                    Ok(c) => in_flight.push_back((id, c)),
                    Err(_) => {
                        todo.push_front(id);
                        failed = true;
                        break;
                    }
                }
            }
            let Some((id, c)) = in_flight.pop_front() else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(30), c).await {
                Ok(Ok(conf)) if conf.is_ack() => {
                    confirmed.insert(id);
                    on_progress(confirmed.len());
                }
                Ok(Ok(_)) => todo.push_back(id), // nacked: publish again
                _ => {
                    todo.push_front(id);
                    failed = true;
                }
            }
        }
        // Whatever is still in flight has an unknown outcome: publish it again.
        for (id, _) in in_flight.drain(..).rev() {
            todo.push_front(id);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
    }
    confirmed
}

/// Takes every message in `queue` through `ch` with no-ack gets; returns the bodies as numbers.
async fn take_all(ch: &Channel, queue: &str) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        out.push(
            String::from_utf8_lossy(&m.delivery.data)
                .parse()
                .expect("numeric body"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_serve_clients_anywhere_and_lose_nothing_confirmed_through_a_leader_kill_and_a_full_restart(
) {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let followers: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let (publisher, consumer) = (followers[0], followers[1]);

    // Topology declared on one node is usable at once on the others (read-your-writes).
    let c1 = connect_retrying(cluster.node(1).uri()).await;
    let c3 = connect_retrying(cluster.node(3).uri()).await;
    let ch1 = within(c1.create_channel()).await.unwrap();
    let ch3 = confirm_channel(&c3).await;
    within(ch1.exchange_declare(
        "orders".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(ch1.queue_declare("work".into(), durable, FieldTable::default()))
        .await
        .unwrap();
    within(ch1.queue_bind(
        "work".into(),
        "orders".into(),
        "order.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert_eq!(
        declare_passive(&ch3, "work").await.unwrap().message_count(),
        0
    );
    let c = within(ch3.basic_publish(
        "orders".into(),
        "order.first".into(),
        BasicPublishOptions::default(),
        b"0",
        BasicProperties::default().with_delivery_mode(2),
    ))
    .await
    .unwrap();
    assert!(within(c).await.unwrap().is_ack(), "routed through node 3");
    assert_eq!(
        declare_passive(&ch1, "work").await.unwrap().message_count(),
        1
    );
    drop((ch1, ch3));
    // Cleanup, bounded: once (CI, 2026-12-06, ac1240e+1) the close of c3 was never answered
    // and the test hung for 10 minutes; the server showed c3 open with no channel. Under
    // investigation (issue 19's closing note); the rest of the test does not need them closed.
    for (name, c) in [("c1", &c1), ("c3", &c3)] {
        if tokio::time::timeout(Duration::from_secs(10), c.close(200, "bye".into()))
            .await
            .is_err()
        {
            eprintln!("WARNING: the close of {name} was not answered within 10 s");
        }
    }

    // 10 000 persistent messages with confirms through a follower; the leader is killed with
    // kill -9 after 3000 confirms.
    let n = 10_000u32;
    let started = Instant::now();
    let uri = cluster.node(publisher).uri().to_string();
    let mut killed_at = None;
    let confirmed = publish_all(
        &uri,
        "orders",
        "order.new",
        (1..=n).collect(),
        200,
        |done| {
            if done == 3000 && killed_at.is_none() {
                cluster
                    .node_mut(leader)
                    .kill9()
                    .expect("kill -9 the leader");
                killed_at = Some(Instant::now());
            }
        },
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(
        confirmed.len(),
        n as usize,
        "every message was eventually confirmed"
    );
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    eprintln!(
        "published {n} with confirms through node {publisher} in {elapsed:?}, leader {leader} killed after 3000, new leader {new_leader}"
    );

    // Every confirmed message arrives at a consumer on the other follower.
    let cc = connect_retrying(cluster.node(consumer).uri()).await;
    let ch = within(cc.create_channel()).await.unwrap();
    let got = take_all(&ch, "work").await;
    let distinct: HashSet<u32> = got.iter().copied().collect();
    let missing: Vec<u32> = confirmed
        .iter()
        .filter(|id| !distinct.contains(id))
        .copied()
        .collect();
    assert!(missing.is_empty(), "confirmed but lost: {missing:?}");
    assert!(distinct.contains(&0));
    eprintln!(
        "consumed {} ({} distinct, {} duplicates from re-publishing unknown outcomes)",
        got.len(),
        distinct.len(),
        got.len() - distinct.len()
    );

    // 100 more; 50 of them acked (no-ack gets), then every node is killed and restarted.
    let late = publish_all(
        &uri,
        "orders",
        "order.late",
        (20_001..=20_100).collect(),
        50,
        |_| {},
    )
    .await;
    assert_eq!(late.len(), 100);
    for _ in 0..50 {
        within(ch.basic_get("work".into(), BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
            .expect("a message");
    }
    // Unacked at the crash: taken with manual ack and never acked.
    let unacked = within(ch.basic_get("work".into(), BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .expect("a message");
    assert!(!unacked.delivery.redelivered);
    cluster
        .node_mut(leader)
        .restart()
        .expect("the old leader restarts");
    for i in 1..=3 {
        cluster.node_mut(i).kill9().expect("kill -9");
    }
    for i in 1..=3 {
        cluster.node_mut(i).restart().expect("restart");
    }
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader after the full restart");
    let c = connect_retrying(cluster.node(1).uri()).await;
    let ch = confirm_channel(&c).await;
    within(ch.exchange_declare(
        "orders".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("the durable exchange is back");
    let left = take_all(&ch, "work").await;
    assert_eq!(
        left.len(),
        50,
        "the 50 not acked (one of them unacked at the crash) are back, nothing acked: {left:?}"
    );
    assert!(left.iter().all(|id| (20_001..=20_100).contains(id)));
    let c2 = within(ch.basic_publish(
        "orders".into(),
        "order.after".into(),
        BasicPublishOptions::default(),
        b"30000",
        BasicProperties::default().with_delivery_mode(2),
    ))
    .await
    .unwrap();
    assert!(within(c2).await.unwrap().is_ack());
    assert_eq!(
        declare_passive(&ch, "work").await.unwrap().message_count(),
        1,
        "the binding routes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_down_for_100_000_messages_catches_up_through_a_snapshot() {
    let mut cluster =
        Cluster::start(3, &["--snapshot-every", "2000"]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let down = (1..=3).find(|n| *n != leader).expect("a follower");
    let up = (1..=3)
        .find(|n| *n != leader && *n != down)
        .expect("another");
    cluster.node_mut(down).kill9().expect("kill -9 a follower");

    let c = connect_retrying(cluster.node(up).uri()).await;
    let ch = confirm_channel(&c).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(ch.queue_declare("backlog".into(), durable, FieldTable::default()))
        .await
        .unwrap();
    let uri = cluster.node(up).uri().to_string();
    let n = 100_000u32;
    let started = Instant::now();
    let confirmed = publish_all(&uri, "", "backlog", (0..n).collect(), 2000, |_| {}).await;
    assert_eq!(confirmed.len(), n as usize);
    eprintln!(
        "{n} confirmed through a follower of a 2-of-3 cluster in {:?}",
        started.elapsed()
    );

    cluster
        .node_mut(down)
        .restart()
        .expect("the follower restarts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.node(down).log().contains("snapshot installed") {
        assert!(
            Instant::now() < deadline,
            "no snapshot installed; log:\n{}",
            cluster.node(down).log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Make the caught-up node serve: kill the other two one at a time is not possible (no
    // quorum), so kill the leader and let the two left elect; whichever leads has everything.
    cluster
        .node_mut(leader)
        .kill9()
        .expect("kill -9 the leader");
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader of the two left");
    let c = connect_retrying(cluster.node(down).uri()).await;
    let ch = within(c.create_channel()).await.unwrap();
    assert_eq!(
        declare_passive(&ch, "backlog")
            .await
            .unwrap()
            .message_count(),
        n,
        "every message, through the node that caught up"
    );
    // The snapshot named the queued messages; the log entries holding them came with it.
    assert!(
        cluster
            .node(down)
            .log()
            .contains("kept the log entries shipped with a snapshot"),
        "{}",
        cluster.node(down).log()
    );
    // And every body is there, read back from where it rests (the log entries of whichever
    // of the two leads now: its own log, or those shipped with its snapshot).
    let got =
        warren_tests::cluster::consume_numbers(cluster.node(down).uri(), "backlog", &confirmed)
            .await
            .expect("consume");
    assert_eq!(got, confirmed, "every confirmed message, intact");
}

/// Issue 3, point 4: exclusive, auto-delete and non-durable queues live on the node of the
/// connection that declared them, their home: their messages stay out of the Raft log (only
/// their declaration is logged), and a leader's death does not touch them.
#[tokio::test(flavor = "multi_thread")]
async fn transient_queues_live_on_their_home_out_of_the_log_and_a_leader_kill_does_not_touch_them()
{
    const N: usize = 300;
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let conn = connect_retrying(cluster.node(follower).uri()).await;
    let ch = confirm_channel(&conn).await;
    let exclusive = warren_tests::exclusive_queue(&ch).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    warren_tests::declare_queue(&ch, "t-plain", QueueDeclareOptions::default()).await;
    warren_tests::declare_queue(&ch, "t-auto", auto_delete).await;
    warren_tests::declare_queue(&ch, "t-durable", durable).await;
    // "t-auto" is removed only after a consumer has come and gone: one stays on it.
    let other = within(conn.create_channel()).await.unwrap();
    within(other.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let _keep = within(other.basic_consume(
        "t-auto".into(),
        "keep".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();

    let publish_n = |queue: String, persistent: bool| {
        let ch = ch.clone();
        async move {
            let mut confirms = Vec::new();
            for i in 0..N {
                let props = if persistent {
                    BasicProperties::default().with_delivery_mode(2)
                } else {
                    BasicProperties::default()
                };
                confirms.push(
                    within(ch.basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        i.to_string().as_bytes(),
                        props,
                    ))
                    .await
                    .unwrap(),
                );
            }
            for c in confirms {
                assert!(within(c).await.unwrap().is_ack(), "{queue}: confirmed");
            }
        }
    };
    let before = cluster.committed(leader);
    for queue in [exclusive.as_str(), "t-plain"] {
        publish_n(queue.to_owned(), true).await;
    }
    // Acks of transient messages are not logged either.
    let got = take_all(&ch, "t-plain").await;
    assert_eq!(got.len(), N);
    let transient_entries = cluster.committed(leader) - before;
    assert!(
        transient_entries < 10,
        "{} transient publishes and {N} gets added {transient_entries} log entries",
        2 * N
    );
    publish_n("t-durable".to_owned(), true).await;
    let durable_entries = cluster.committed(leader) - before - transient_entries;
    assert!(
        durable_entries >= N as u64,
        "{N} durable publishes added only {durable_entries} log entries"
    );
    eprintln!(
        "log entries: {transient_entries} for {} transient publishes and {N} acks, \
         {durable_entries} for {N} durable publishes",
        2 * N
    );
    publish_n("t-plain".to_owned(), true).await;
    publish_n(exclusive.clone(), false).await;
    publish_n("t-auto".to_owned(), true).await;
    let q = declare_passive(&ch, "t-plain").await.unwrap();
    assert_eq!(q.message_count(), N as u32, "held by their home");
    let q = declare_passive(&ch, "t-auto").await.unwrap();
    assert_eq!(q.message_count(), N as u32 - 1, "one is with the consumer");

    // The leader dies: the client's connection (on a follower) resumes its leader session on
    // the new leader. Its transient queues live on the follower, their home: untouched, not a
    // message moved or redelivered, the consumer of "t-auto" still holding its one.
    cluster
        .node_mut(leader)
        .kill9()
        .expect("kill -9 the leader");
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("a new leader");
    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let counts = async {
            let mut counts = Vec::new();
            for q in ["t-plain", exclusive.as_str(), "t-auto", "t-durable"] {
                counts.push(declare_passive(&ch, q).await?.message_count());
            }
            Ok::<_, warren_tests::lapin::Error>(counts)
        }
        .await;
        match counts {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the failover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the client's queues after the failover: {e}"),
        }
    };
    // The exclusive queue got N persistent and N transient messages, none taken.
    assert_eq!(counts, [N as u32, 2 * N as u32, N as u32 - 1, N as u32]);
    // In their order, never delivered, so not redelivered.
    let mut got = Vec::new();
    while let Some(m) =
        within(ch.basic_get(exclusive.as_str().into(), BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
    {
        assert!(
            !m.delivery.redelivered,
            "a leader change does not touch a transient queue"
        );
        got.push(
            String::from_utf8_lossy(&m.delivery.data)
                .parse::<usize>()
                .unwrap(),
        );
    }
    assert_eq!(got, (0..N).chain(0..N).collect::<Vec<_>>());
    // The transient queues still work, and new messages go after the old.
    publish_n("t-plain".to_owned(), false).await;
    let got = take_all(&ch, "t-plain").await;
    assert_eq!(got.len(), 2 * N);
    assert_eq!(got[N..], (0..N as u32).collect::<Vec<_>>()[..]);
}
