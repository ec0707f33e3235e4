//! What survives `kill -9` of a node: every durable entity and every confirmed persistent
//! message that was not acked; nothing acked comes back; transient state is gone, as after a
//! RabbitMQ restart. These tests kill their own `warren` process.

use futures_lite::StreamExt;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, ExchangeKind};
use warren_tests::{
    confirm_channel, declare_passive, declare_queue, disk_usage, reply_code, within, Broker,
};

#[tokio::test(flavor = "multi_thread")]
async fn confirmed_messages_and_durable_topology_survive_kill_9_and_acked_ones_do_not_return() {
    let mut broker = Broker::start_own(&[]).expect("warren starts");
    {
        let conn = broker.connect().await;
        let ch = within(conn.create_channel()).await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        within(ch.exchange_declare(
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
        within(ch.queue_declare("kept".into(), durable, FieldTable::default()))
            .await
            .unwrap();
        within(ch.queue_bind(
            "kept".into(),
            "orders".into(),
            "order.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .await
        .unwrap();
        within(ch.queue_declare(
            "transient".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ))
        .await
        .unwrap();
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for i in 0..500u32 {
            let props = BasicProperties::default().with_delivery_mode(2);
            confirms.push(
                within(ch.basic_publish(
                    "orders".into(),
                    "order.new".into(),
                    BasicPublishOptions::default(),
                    i.to_string().as_bytes(),
                    props,
                ))
                .await
                .unwrap(),
            );
        }
        // A non-persistent message: lost on restart, as in RabbitMQ.
        confirms.push(
            within(ch.basic_publish(
                "orders".into(),
                "order.new".into(),
                BasicPublishOptions::default(),
                b"not persistent",
                BasicProperties::default(),
            ))
            .await
            .unwrap(),
        );
        for c in confirms {
            assert!(within(c).await.unwrap().is_ack());
        }
        // Consume and ack the first 100.
        let consumer_ch = within(conn.create_channel()).await.unwrap();
        within(consumer_ch.basic_qos(100, BasicQosOptions::default()))
            .await
            .unwrap();
        let mut consumer = within(consumer_ch.basic_consume(
            "kept".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await
        .unwrap();
        let mut last_tag = 0;
        for i in 0..100 {
            let d = within(consumer.next()).await.unwrap().unwrap();
            assert_eq!(d.data, i.to_string().as_bytes());
            last_tag = d.delivery_tag;
        }
        within(consumer_ch.basic_ack(last_tag, BasicAckOptions { multiple: true }))
            .await
            .unwrap();
        // The ack is a replicated command, held a few milliseconds to share a log entry with
        // others (crates/server/src/settles.rs) and sent before any other command: a durable
        // declare answered after it was logged after it. (A publish to a transient queue is no
        // such barrier: it is confirmed without the log, and a kill -9 a few milliseconds
        // later could come before the ack's entry; RabbitMQ does not promise an ack is on
        // disk before anything either.)
        within(ch.queue_declare("after-the-ack".into(), durable, FieldTable::default()))
            .await
            .unwrap();
        // 500 persistent + 1 non-persistent, 100 acked, the next 100 out to the consumer
        // (prefetch 100) and not acked: 301 ready.
        assert_eq!(
            declare_passive(&ch, "kept").await.unwrap().message_count(),
            301
        );
    }
    broker
        .kill9_and_restart()
        .expect("warren restarts after kill -9");
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = declare_passive(&ch, "kept")
        .await
        .expect("the durable queue is back");
    assert_eq!(
        q.message_count(),
        400,
        "every confirmed persistent message not acked, and nothing else"
    );
    let first = within(ch.basic_get("kept".into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.delivery.data, b"100",
        "acked messages 0..99 did not come back"
    );
    assert!(first.delivery.redelivered);
    // The durable binding still routes.
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let c = within(ch.basic_publish(
        "orders".into(),
        "order.late".into(),
        BasicPublishOptions::default(),
        b"late",
        BasicProperties::default().with_delivery_mode(2),
    ))
    .await
    .unwrap();
    assert!(within(c).await.unwrap().is_ack());
    // 399 left after the get, plus the late one.
    assert_eq!(
        declare_passive(&ch, "kept").await.unwrap().message_count(),
        400
    );
    // Transient state is gone.
    let err = declare_passive(&ch, "transient").await.unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    // And it survives a second kill: the recovery itself is in the log.
    drop(conn);
    broker.kill9_and_restart().expect("warren restarts again");
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    assert_eq!(
        declare_passive(&ch, "kept").await.unwrap().message_count(),
        400
    );
}

/// With snapshots every 500 log entries, a drained queue gives its disk back (the log is purged
/// behind each snapshot and compacted), and a node restarted from a snapshot plus the log after
/// it has exactly the messages that were not acked.
#[tokio::test(flavor = "multi_thread")]
async fn disk_use_falls_after_a_drain_and_a_restart_from_a_snapshot_loses_nothing() {
    const N: usize = 3000;
    const KEEP: usize = 100;
    let mut broker = Broker::start_own(&["--snapshot-every", "500"]).expect("warren starts");
    let raft_dir = broker.data_dir().expect("own node").join("raft");
    // Incompressible bodies (RocksDB compresses its tables): a simple LCG.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let body: Vec<u8> = (0..4096)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as u8
        })
        .collect();
    {
        let conn = broker.connect().await;
        let ch = within(conn.create_channel()).await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        within(ch.queue_declare("big".into(), durable, FieldTable::default()))
            .await
            .unwrap();
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .unwrap();
        publish_persistent(
            &ch,
            "big",
            (0..N).map(|i| {
                let mut payload = format!("{i:05}").into_bytes();
                payload.extend_from_slice(&body);
                payload
            }),
        )
        .await;
        let full = disk_usage(&raft_dir);
        assert!(
            full > (N * 4096) as u64,
            "{N} messages of 4 KiB are on disk: {full} bytes"
        );

        // Drain all but the last KEEP, acking in batches of 50.
        within(ch.basic_qos(200, BasicQosOptions::default()))
            .await
            .unwrap();
        let mut consumer = within(ch.basic_consume(
            "big".into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await
        .unwrap();
        for i in 0..N - KEEP {
            let d = within(consumer.next()).await.unwrap().unwrap();
            assert_eq!(&d.data[..5], format!("{i:05}").as_bytes());
            if (i + 1) % 50 == 0 {
                within(ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true }))
                    .await
                    .unwrap();
            }
        }
        within(ch.basic_cancel("drain".into(), BasicCancelOptions::default()))
            .await
            .unwrap();
        within(ch.close(200, "bye".into())).await.unwrap();
        // More traffic that does not stay: enough log entries for a snapshot after the drain
        // (into a durable queue: a non-durable one's messages are not logged).
        let ch = within(conn.create_channel()).await.unwrap();
        within(ch.queue_declare("scratch".into(), durable, FieldTable::default()))
            .await
            .unwrap();
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for _ in 0..1200 {
            confirms.push(
                within(ch.basic_publish(
                    "".into(),
                    "scratch".into(),
                    BasicPublishOptions::default(),
                    b"s",
                    BasicProperties::default(),
                ))
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            within(c).await.unwrap();
        }
        within(ch.queue_purge("scratch".into(), QueuePurgeOptions::default()))
            .await
            .unwrap();
        // The snapshot, purge and compaction run in the background: poll.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut now_used = disk_usage(&raft_dir);
        while now_used > full / 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            now_used = disk_usage(&raft_dir);
        }
        assert!(
            now_used <= full / 3,
            "disk use fell from {full} to {now_used} bytes only; files:\n{}\nlog:\n{}",
            String::from_utf8_lossy(
                &std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("du -ab {}", raft_dir.display()))
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            ),
            broker.log()
        );
        assert!(
            broker.log().contains("snapshot written"),
            "a snapshot was taken"
        );
    }
    broker.kill9_and_restart().expect("warren restarts");
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    assert_eq!(
        declare_passive(&ch, "big").await.unwrap().message_count(),
        KEEP as u32
    );
    let got = drain_bodies(&ch, "big").await;
    let expected: Vec<String> = (N - KEEP..N).map(|i| format!("{i:05}")).collect();
    assert_eq!(got, expected, "exactly the unacked messages, in order");
    assert!(broker.log().contains("snapshot installed"));
}

/// The first 5 bytes of every message left in `queue`, taken with no-ack gets.
async fn drain_bodies(ch: &warren_tests::lapin::Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        assert!(
            m.delivery.redelivered,
            "may have been delivered before the restart"
        );
        out.push(String::from_utf8_lossy(&m.delivery.data[..5]).into_owned());
    }
    out
}

/// Issue 17: a durable queue's messages rest in the log, not in memory or in snapshots. With a
/// body cache far smaller than the backlog, every message is read back from the log for
/// delivery, in order and intact, before and after `kill -9`; the snapshot names the messages
/// instead of holding them.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_larger_than_the_body_cache_is_read_back_from_the_log_before_and_after_a_restart()
{
    const N: usize = 3000;
    const SIZE: usize = 1024;
    let mut broker = Broker::start_own(&["--snapshot-every", "500", "--body-cache", "64KiB"])
        .expect("warren starts");
    let snapshot_file = broker
        .data_dir()
        .expect("own node")
        .join("raft")
        .join("snapshots")
        .join("current");
    let body = |i: usize| {
        let mut b = format!("{i:05}").into_bytes();
        b.resize(SIZE, b'a' + (i % 26) as u8);
        b
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    {
        let conn = broker.connect().await;
        let ch = confirm_channel(&conn).await;
        declare_queue(&ch, "backlog", durable).await;
        publish_persistent(&ch, "backlog", (0..N).map(body)).await;
        // The first half, read back from the log (the cache holds about 50 of them).
        for i in 0..N / 2 {
            let m = within(ch.basic_get("backlog".into(), BasicGetOptions { no_ack: true }))
                .await
                .unwrap()
                .expect("a message");
            assert!(m.delivery.data == body(i), "message {i} intact");
        }
        // A no-ack get is settled through the log after the message went out (as a consumer's
        // no-ack delivery may come again after a crash). A confirmed publish logged after the
        // settles means they are on disk too: the kill below cannot bring those messages back.
        declare_queue(&ch, "marker", durable).await;
        publish_persistent(&ch, "marker", [b"after the gets".to_vec()]).await;
        assert_eq!(
            declare_passive(&ch, "backlog")
                .await
                .unwrap()
                .message_count(),
            (N - N / 2) as u32
        );
        let snapshot = std::fs::metadata(&snapshot_file)
            .expect("a snapshot was written")
            .len();
        assert!(
            snapshot < (N * SIZE / 10) as u64,
            "the snapshot names messages, it does not hold them: {snapshot} bytes"
        );
    }
    broker.kill9_and_restart().expect("warren restarts");
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    assert_eq!(
        declare_passive(&ch, "backlog")
            .await
            .unwrap()
            .message_count(),
        (N - N / 2) as u32
    );
    for i in N / 2..N {
        let m = within(ch.basic_get("backlog".into(), BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
            .expect("a message");
        assert!(
            m.delivery.data == body(i),
            "message {i} intact after the restart"
        );
    }
    assert!(
        !broker.log().contains("could not be read back"),
        "{}",
        broker.log()
    );
}

/// Publishes `bodies` as persistent messages to `queue` through the default exchange on a
/// confirm channel, all in flight at once, and checks that every one is confirmed.
async fn publish_persistent(
    ch: &warren_tests::lapin::Channel,
    queue: &str,
    bodies: impl IntoIterator<Item = Vec<u8>>,
) {
    let mut confirms = Vec::new();
    for body in bodies {
        confirms.push(
            within(ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            ))
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(within(c).await.unwrap().is_ack());
    }
}
