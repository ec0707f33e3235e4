//! basic.* through lapin: publish/return, consume/cancel, qos, get, ack/nack/reject, recover,
//! redelivery order, round-robin, requeue on channel close, server-sent cancel.

use std::time::Duration;

use futures_lite::StreamExt;
use warren_tests::lapin::message::Delivery;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, Channel, Consumer, Event};
use warren_tests::{declare_passive, reply_code, reply_text, unique, within, Broker};

async fn declare(ch: &Channel, name: &str) {
    within(ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
}

async fn publish(ch: &Channel, q: &str, body: &str) {
    within(ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    ))
    .await
    .unwrap();
}

async fn consume(ch: &Channel, q: &str, tag: &str, no_ack: bool) -> Consumer {
    within(ch.basic_consume(
        q.into(),
        tag.into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap()
}

async fn next(c: &mut Consumer) -> Delivery {
    within(c.next())
        .await
        .expect("consumer ended")
        .expect("delivery")
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

/// Whether another delivery arrives within `ms`.
async fn quiet(c: &mut Consumer, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), c.next())
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn mandatory_unroutable_is_returned_with_312_and_immediate_is_refused() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let confirm = within(ch.basic_publish(
        "".into(),
        unique("nowhere").as_str().into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"lost",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let returned = within(confirm)
        .await
        .unwrap()
        .take_message()
        .expect("returned");
    assert_eq!(
        (returned.reply_code, returned.reply_text.as_str()),
        (312, "NO_ROUTE")
    );
    assert_eq!(returned.delivery.data, b"lost");
    let mut events = conn.events_listener();
    let ch = within(conn.create_channel()).await.unwrap();
    let _ = ch
        .basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions {
                immediate: true,
                ..Default::default()
            },
            b"x",
            BasicProperties::default(),
        )
        .await;
    let err = loop {
        match within(events.next())
            .await
            .expect("events end only after an error")
        {
            Event::Error(e) => break e,
            _ => continue,
        }
    };
    assert_eq!(reply_code(&err), Some(540));
    assert_eq!(
        reply_text(&err).unwrap(),
        "NOT_IMPLEMENTED - immediate=true"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_tags_exclusive_consume_cancel_and_server_cancel() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("cq");
    declare(&ch, &q).await;
    let generated = consume(&ch, &q, "", false).await;
    assert!(
        generated.tag().as_str().starts_with("amq.ctag-"),
        "{}",
        generated.tag()
    );
    let other = broker.connect().await;
    let och = within(other.create_channel()).await.unwrap();
    let err = within(och.basic_consume(
        q.as_str().into(),
        "x".into(),
        BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        reply_text(&err).unwrap(),
        format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
    );
    // Reusing a consumer tag on a channel is a connection error (530).
    let _mine = consume(&ch, &q, "mine", false).await;
    let err = within(ch.basic_consume(
        q.as_str().into(),
        "mine".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(530));
    assert_eq!(
        reply_text(&err).unwrap(),
        "NOT_ALLOWED - attempt to reuse consumer tag 'mine'"
    );
    drop(generated);
    let conn = other;
    // Server-sent basic.cancel when the queue is deleted: the consumer's stream ends.
    let ch = within(conn.create_channel()).await.unwrap();
    let q2 = unique("gone");
    declare(&ch, &q2).await;
    let mut c = consume(&ch, &q2, "watcher", false).await;
    let admin = within(conn.create_channel()).await.unwrap();
    within(admin.queue_delete(q2.as_str().into(), QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert!(
        within(c.next()).await.is_none(),
        "stream ends on server cancel"
    );
    // An explicit cancel stops deliveries.
    let q3 = unique("cancel");
    declare(&ch, &q3).await;
    let mut c = consume(&ch, &q3, "c", true).await;
    publish(&ch, &q3, "one").await;
    assert_eq!(body(&next(&mut c).await), "one");
    within(ch.basic_cancel("c".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    publish(&ch, &q3, "two").await;
    let left = declare_passive(&ch, &q3).await.unwrap();
    assert_eq!(left.message_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_per_consumer_and_global_per_channel() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("qos");
    declare(&ch, &q).await;
    for i in 0..10 {
        publish(&ch, &q, &i.to_string()).await;
    }
    within(ch.basic_qos(3, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c = consume(&ch, &q, "p", false).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut c).await);
    }
    assert!(
        quiet(&mut c, 300).await,
        "a fourth delivery exceeds prefetch 3"
    );
    within(got[0].acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert_eq!(body(&d), "3");
    // global=true: one limit shared by the channel's consumers (Celery relies on this).
    let ch2 = within(conn.create_channel()).await.unwrap();
    let q2 = unique("global");
    declare(&ch2, &q2).await;
    for i in 0..10 {
        publish(&ch2, &q2, &i.to_string()).await;
    }
    within(ch2.basic_qos(4, BasicQosOptions { global: true }))
        .await
        .unwrap();
    let mut a = consume(&ch2, &q2, "a", false).await;
    let mut b = consume(&ch2, &q2, "b", false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut n = 0;
    while tokio::time::timeout(Duration::from_millis(100), a.next())
        .await
        .is_ok()
    {
        n += 1;
    }
    while tokio::time::timeout(Duration::from_millis(100), b.next())
        .await
        .is_ok()
    {
        n += 1;
    }
    assert_eq!(n, 4, "4 unacked deliveries across both consumers");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_ack_nack_reject_multiple_and_unknown_tags() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("acks");
    declare(&ch, &q).await;
    assert!(
        within(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
            .await
            .unwrap()
            .is_none(),
        "get-empty"
    );
    for i in 0..5 {
        publish(&ch, &q, &i.to_string()).await;
    }
    let mut tags = Vec::new();
    for i in 0..5 {
        let m = within(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.message_count, 4 - i);
        tags.push(m.delivery.delivery_tag);
    }
    // ack 1,2 with multiple; nack 3 requeue; reject 4 without requeue; nack 5 requeue.
    within(ch.basic_ack(tags[1], BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    within(ch.basic_nack(
        tags[2],
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    ))
    .await
    .unwrap();
    within(ch.basic_reject(tags[3], BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    within(ch.basic_nack(
        tags[4],
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    ))
    .await
    .unwrap();
    let mut back = Vec::new();
    while let Some(m) = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        assert!(m.delivery.redelivered);
        back.push(body(&m.delivery));
    }
    assert_eq!(
        back,
        ["2", "4"],
        "requeued messages keep their original order"
    );
    // Queue the declare right behind the bad ack, so it is pending when the channel closes.
    let (_, declared) = tokio::join!(
        ch.basic_ack(9999, BasicAckOptions::default()),
        declare_passive(&ch, &q)
    );
    let err = declared.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert_eq!(
        reply_text(&err).unwrap(),
        "PRECONDITION_FAILED - unknown delivery tag 9999"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_requeue_position_and_channel_close_requeues() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = unique("rr");
    declare(&ch, &q).await;
    let ch_a = within(conn.create_channel()).await.unwrap();
    let ch_b = within(conn.create_channel()).await.unwrap();
    let mut a = consume(&ch_a, &q, "a", false).await;
    let mut b = consume(&ch_b, &q, "b", false).await;
    for i in 0..6 {
        publish(&ch, &q, &i.to_string()).await;
    }
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for _ in 0..3 {
        from_a.push(next(&mut a).await);
        from_b.push(next(&mut b).await);
    }
    let bodies_a: Vec<String> = from_a.iter().map(body).collect();
    let bodies_b: Vec<String> = from_b.iter().map(body).collect();
    assert_eq!(
        (bodies_a, bodies_b),
        (
            vec!["0".to_string(), "2".into(), "4".into()],
            vec!["1".to_string(), "3".into(), "5".into()]
        )
    );
    // Closing b's channel requeues 1, 3, 5 to a, marked redelivered, in their original order.
    within(ch_b.close(200, "bye".into())).await.unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next(&mut a).await;
        assert!(d.redelivered);
        again.push(body(&d));
    }
    assert_eq!(again, ["1", "3", "5"]);
    // basic.recover requeues a's unacked deliveries to it again.
    within(ch_a.basic_recover(BasicRecoverOptions { requeue: true }))
        .await
        .unwrap();
    let mut recovered = Vec::new();
    for _ in 0..6 {
        let d = next(&mut a).await;
        assert!(d.redelivered);
        recovered.push(body(&d));
    }
    recovered.sort();
    assert_eq!(recovered, ["0", "1", "2", "3", "4", "5"]);
}
