//! basic.* through lapin: publish and return, immediate, consume and cancel (client and server
//! side), consumer tags, qos, get, ack/nack/reject, recover, redelivery order and round-robin.

use warren_tests::lapin::message::Delivery;
use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::{BasicProperties, Channel, Connection};
use warren_tests::{
    body, channel, closed_with, confirm_channel, connection_error, consume, declare_passive,
    declare_queue, drain, next_delivery, publish, stays_quiet, unique, within, Broker,
};

/// A fresh queue owned by this connection, filled with "0".."n-1" through a confirm channel.
async fn filled_queue(conn: &Connection, n: usize) -> String {
    let ch = confirm_channel(conn).await;
    let q = unique("basic");
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    declare_queue(&ch, &q, options).await;
    for i in 0..n {
        let c = publish(
            &ch,
            "",
            &q,
            i.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await;
        assert!(c.is_ack());
    }
    q
}

async fn get(ch: &Channel, q: &str) -> Delivery {
    within(ch.basic_get(q.into(), BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("a message, not get-empty")
        .delivery
}

fn acked() -> BasicConsumeOptions {
    BasicConsumeOptions::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_mandatory_publish_is_returned_with_312_no_route() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let nowhere = unique("nowhere");
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let props = BasicProperties::default().with_message_id("m1".into());
    let confirm = within(ch.basic_publish(
        "".into(),
        nowhere.as_str().into(),
        mandatory,
        b"lost",
        props,
    ))
    .await
    .unwrap();
    let confirmation = within(confirm).await.unwrap();
    assert!(
        confirmation.is_ack(),
        "an unroutable message is still confirmed"
    );
    let returned = confirmation.take_message().expect("basic.return");
    assert_eq!(
        (returned.reply_code, returned.reply_text.as_str()),
        (312, "NO_ROUTE")
    );
    assert_eq!(
        (
            returned.delivery.exchange.as_str(),
            returned.delivery.routing_key.as_str()
        ),
        ("", nowhere.as_str())
    );
    assert_eq!(returned.delivery.data, b"lost");
    assert_eq!(
        returned
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("m1")
    );
    // Routable mandatory messages are not returned; unroutable non-mandatory ones are dropped.
    let q = filled_queue(&conn, 0).await;
    let confirm = within(ch.basic_publish(
        "".into(),
        q.as_str().into(),
        mandatory,
        b"kept",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    assert!(within(confirm).await.unwrap().take_message().is_none());
    let c = publish(&ch, "", &nowhere, b"dropped", BasicProperties::default()).await;
    assert!(c.is_ack() && c.take_message().is_none());
    assert_eq!(drain(&ch, &q).await, ["kept"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn immediate_publishes_close_the_connection_with_540() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let mut events = conn.events_listener();
    let ch = channel(&conn).await;
    let immediate = BasicPublishOptions {
        immediate: true,
        ..Default::default()
    };
    // The publish itself may succeed or fail locally; the connection.close is what counts.
    let _ = within(ch.basic_publish(
        "".into(),
        "q".into(),
        immediate,
        b"x",
        BasicProperties::default(),
    ))
    .await;
    let err = connection_error(&mut events).await;
    assert_eq!(
        closed_with(&err),
        (540, "NOT_IMPLEMENTED - immediate=true".into())
    );
    assert!(!conn.status().connected());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_consumer_tag_gets_a_server_generated_amq_ctag() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 1).await;
    let ch = channel(&conn).await;
    let mut a = consume(&ch, &q, "", acked()).await;
    let b = consume(&ch, &q, "", acked()).await;
    assert!(a.tag().as_str().starts_with("amq.ctag-"), "{}", a.tag());
    assert!(b.tag().as_str().starts_with("amq.ctag-"), "{}", b.tag());
    assert_ne!(a.tag(), b.tag());
    let d = next_delivery(&mut a).await;
    assert_eq!(body(&d), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exclusive_consumer_shuts_out_others_with_403() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let q = unique("excl-consume");
    declare_queue(
        &ch,
        &q,
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let _first = consume(&ch, &q, "first", exclusive).await;
    let in_exclusive_use = format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use");
    let other = broker.connect().await;
    let och = channel(&other).await;
    let err = within(och.basic_consume(
        q.as_str().into(),
        "second".into(),
        acked(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(closed_with(&err), (403, in_exclusive_use.clone()));
    // The other way round: an exclusive consume on a queue that already has a consumer.
    let q2 = unique("shared-consume");
    let ch2 = channel(&conn).await;
    declare_queue(
        &ch2,
        &q2,
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
    )
    .await;
    let _plain = consume(&ch2, &q2, "plain", acked()).await;
    let och = channel(&other).await;
    let err = within(och.basic_consume(
        q2.as_str().into(),
        "excl".into(),
        exclusive,
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            403,
            format!("ACCESS_REFUSED - queue '{q2}' in vhost '/' in exclusive use")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reusing_a_consumer_tag_on_a_channel_closes_the_connection_with_530() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 0).await;
    let ch = channel(&conn).await;
    let _mine = consume(&ch, &q, "mine", acked()).await;
    let err = within(ch.basic_consume(
        q.as_str().into(),
        "mine".into(),
        acked(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            530,
            "NOT_ALLOWED - attempt to reuse consumer tag 'mine'".into()
        )
    );
    assert!(!conn.status().connected(), "a connection-level error");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_deliveries() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 1).await;
    let ch = confirm_channel(&conn).await;
    let mut c = consume(
        &ch,
        &q,
        "c",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(body(&next_delivery(&mut c).await), "0");
    within(ch.basic_cancel("c".into(), BasicCancelOptions::default()))
        .await
        .unwrap();
    publish(&ch, "", &q, b"after cancel", BasicProperties::default()).await;
    let left = declare_passive(&ch, &q).await.unwrap();
    assert_eq!((left.message_count(), left.consumer_count()), (1, 0));
    // Cancelling a tag that does not exist is not an error.
    within(ch.basic_cancel("no-such-tag".into(), BasicCancelOptions::default()))
        .await
        .expect("basic.cancel-ok");
    assert_eq!(drain(&ch, &q).await, ["after cancel"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_queue_cancels_its_consumers_from_the_server() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let q = unique("deleted-under-consumer");
    declare_queue(&ch, &q, QueueDeclareOptions::default()).await;
    let mut c = consume(&ch, &q, "watcher", acked()).await;
    let other = broker.connect().await;
    let admin = channel(&other).await;
    within(admin.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert!(
        within(futures_lite::StreamExt::next(&mut c))
            .await
            .is_none(),
        "the consumer's stream ends on the server's basic.cancel"
    );
    // The channel itself stays open.
    let q2 = filled_queue(&conn, 1).await;
    assert_eq!(drain(&ch, &q2).await, ["0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_limits_each_consumer() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 10).await;
    let ch = channel(&conn).await;
    within(ch.basic_qos(3, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut a = consume(&ch, &q, "a", acked()).await;
    let mut b = consume(&ch, &q, "b", acked()).await;
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..3 {
        got_a.push(next_delivery(&mut a).await);
        got_b.push(next_delivery(&mut b).await);
    }
    assert!(
        stays_quiet(&mut a, 300).await,
        "a fourth delivery to a exceeds prefetch 3"
    );
    assert!(
        stays_quiet(&mut b, 50).await,
        "a fourth delivery to b exceeds prefetch 3"
    );
    within(got_a[0].acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    next_delivery(&mut a).await;
    assert!(stays_quiet(&mut a, 300).await, "one ack frees one slot");
    assert!(stays_quiet(&mut b, 50).await, "b's limit is its own");
    let left = declare_passive(&ch, &q).await.unwrap();
    assert_eq!(left.message_count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn global_prefetch_is_shared_by_the_channels_consumers() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 10).await;
    let ch = channel(&conn).await;
    within(ch.basic_qos(4, BasicQosOptions { global: true }))
        .await
        .unwrap();
    let mut a = consume(&ch, &q, "a", acked()).await;
    let mut b = consume(&ch, &q, "b", acked()).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        tokio::select! {
            d = next_delivery(&mut a) => held.push(d),
            d = next_delivery(&mut b) => held.push(d),
        }
    }
    assert!(
        stays_quiet(&mut a, 300).await && stays_quiet(&mut b, 50).await,
        "4 across both"
    );
    within(ch.basic_ack(held[3].delivery_tag, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    let mut more = 0;
    for _ in 0..4 {
        tokio::select! {
            _ = next_delivery(&mut a) => more += 1,
            _ = next_delivery(&mut b) => more += 1,
        }
    }
    assert_eq!(more, 4);
    assert!(stays_quiet(&mut a, 300).await && stays_quiet(&mut b, 50).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_returns_messages_in_order_then_get_empty() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 3).await;
    let ch = channel(&conn).await;
    for i in 0..3u32 {
        let m = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
            .expect("get-ok");
        assert_eq!(body(&m.delivery), i.to_string());
        assert_eq!(m.message_count, 2 - i, "messages left after this one");
        assert!(!m.delivery.redelivered);
        assert_eq!(m.delivery.routing_key.as_str(), q);
    }
    let empty = within(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .unwrap();
    assert!(empty.is_none(), "get-empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn ack_nack_and_reject_with_multiple_and_requeue() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 7).await;
    let ch = channel(&conn).await;
    let mut tags = Vec::new();
    for _ in 0..7 {
        tags.push(get(&ch, &q).await.delivery_tag);
    }
    assert_eq!(
        tags,
        (1..=7).collect::<Vec<u64>>(),
        "tags count from 1 per channel"
    );
    // ack 1..=2 (multiple); nack 3..=4 (multiple, requeue); reject 5 (drop);
    // nack 6 (drop); reject 7 (requeue).
    within(ch.basic_ack(tags[1], BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    within(ch.basic_nack(
        tags[3],
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    ))
    .await
    .unwrap();
    within(ch.basic_reject(tags[4], BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    within(ch.basic_nack(
        tags[5],
        BasicNackOptions {
            multiple: false,
            requeue: false,
        },
    ))
    .await
    .unwrap();
    within(ch.basic_reject(tags[6], BasicRejectOptions { requeue: true }))
        .await
        .unwrap();
    let mut back = Vec::new();
    while let Some(m) = within(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        assert!(
            m.delivery.redelivered,
            "requeued messages are marked redelivered"
        );
        back.push(body(&m.delivery));
    }
    assert_eq!(back, ["2", "3", "6"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_delivery_tag_closes_the_channel_with_406() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 1).await;
    let ch = channel(&conn).await;
    let tag = get(&ch, &q).await.delivery_tag;
    within(ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .unwrap();
    // basic.ack has no reply: the channel.close surfaces on the call queued right behind it.
    let (_, declared) = tokio::join!(
        ch.basic_ack(tag, BasicAckOptions::default()),
        declare_passive(&ch, &q)
    );
    assert_eq!(
        closed_with(&declared.unwrap_err()),
        (
            406,
            format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
        )
    );
    let ch = channel(&conn).await;
    let (_, declared) = tokio::join!(
        ch.basic_reject(9999, BasicRejectOptions { requeue: true }),
        declare_passive(&ch, &q)
    );
    assert_eq!(
        closed_with(&declared.unwrap_err()),
        (
            406,
            "PRECONDITION_FAILED - unknown delivery tag 9999".into()
        )
    );
    assert!(conn.status().connected(), "only the channel closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_redelivers_unacked_messages_marked_redelivered() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 3).await;
    let ch = channel(&conn).await;
    let mut c = consume(&ch, &q, "r", acked()).await;
    for i in 0..3 {
        let d = next_delivery(&mut c).await;
        assert_eq!(body(&d), i.to_string());
        assert!(!d.redelivered, "first delivery");
    }
    within(ch.basic_recover(BasicRecoverOptions { requeue: true }))
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut c).await;
        assert!(d.redelivered);
        again.push(body(&d));
        within(d.acker.ack(BasicAckOptions::default()))
            .await
            .unwrap();
    }
    assert_eq!(again, ["0", "1", "2"]);
    assert!(stays_quiet(&mut c, 300).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_consumers_take_turns() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 0).await;
    let (ch_a, ch_b) = (channel(&conn).await, channel(&conn).await);
    let mut a = consume(&ch_a, &q, "a", acked()).await;
    let mut b = consume(&ch_b, &q, "b", acked()).await;
    let pub_ch = confirm_channel(&conn).await;
    for i in 0..6 {
        publish(
            &pub_ch,
            "",
            &q,
            i.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for _ in 0..3 {
        from_a.push(body(&next_delivery(&mut a).await));
        from_b.push(body(&next_delivery(&mut b).await));
    }
    assert_eq!(
        (from_a, from_b),
        (
            vec!["0", "2", "4"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            vec!["1", "3", "5"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requeued_message_returns_to_its_original_position() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 5).await;
    let ch = channel(&conn).await;
    let d0 = get(&ch, &q).await;
    let _d1 = get(&ch, &q).await;
    let d2 = get(&ch, &q).await;
    // Requeue 2 before 0: the queue still hands out 0 first, then 2, then 3 and 4.
    within(ch.basic_reject(d2.delivery_tag, BasicRejectOptions { requeue: true }))
        .await
        .unwrap();
    within(ch.basic_reject(d0.delivery_tag, BasicRejectOptions { requeue: true }))
        .await
        .unwrap();
    assert_eq!(drain(&ch, &q).await, ["0", "2", "3", "4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unacked_messages_are_requeued_when_their_channel_closes() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let q = filled_queue(&conn, 4).await;
    let ch_a = channel(&conn).await;
    let mut a = consume(&ch_a, &q, "a", acked()).await;
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(next_delivery(&mut a).await);
    }
    within(first[1].acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within(ch_a.close(200, "bye".into())).await.unwrap();
    let ch_b = channel(&conn).await;
    let mut b = consume(&ch_b, &q, "b", acked()).await;
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut b).await;
        assert!(d.redelivered);
        again.push(body(&d));
    }
    assert_eq!(
        again,
        ["0", "2", "3"],
        "the acked one is gone; the rest keep their order"
    );
    assert!(stays_quiet(&mut b, 300).await);
}
