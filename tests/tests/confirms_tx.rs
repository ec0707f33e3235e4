//! Publisher confirms and transactions: what gets confirmed and how, confirm/tx exclusivity, and
//! when transactional publishes and acks take effect.

use std::collections::BTreeSet;
use std::time::Duration;

use warren_tests::lapin::options::*;
use warren_tests::lapin::{BasicProperties, Channel};
use warren_tests::raw::{basic_publish, body_frame, content_header, method_frame, Args};
use warren_tests::{
    channel, closed_with, confirm_channel, declare_passive, declare_queue, drain, unique, within,
    Broker, RawConn,
};

async fn ready(ch: &Channel, q: &str) -> u32 {
    declare_passive(ch, q).await.unwrap().message_count()
}

async fn send(ch: &Channel, q: &str, body: &str) {
    within(ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish");
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_publish_is_confirmed_with_an_ack() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let q = unique("confirm");
    declare_queue(&ch, &q, exclusive()).await;
    let mut confirms = Vec::new();
    for i in 0..500u32 {
        let props = BasicProperties::default().with_delivery_mode(2);
        let confirm = within(ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            props,
        ))
        .await
        .unwrap();
        confirms.push(confirm);
    }
    for c in confirms {
        let confirmation = within(c).await.unwrap();
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
    assert!(within(ch.wait_for_confirms()).await.unwrap().is_empty());
    assert_eq!(ready(&ch, &q).await, 500);
}

/// On the wire: confirm.select-ok, then basic.ack frames whose delivery tags (single or
/// `multiple`) cover every publish exactly, in increasing order, with no basic.nack; a burst's
/// confirms, ready together, come as `multiple` acks, as RabbitMQ sends them.
#[test]
fn confirm_tags_count_publishes_from_one_and_ack_several_at_once() {
    let broker = Broker::start();
    let mut raw = RawConn::open(broker.addr());
    let declare = Args::new()
        .u16(0)
        .short("")
        .bits(&[false, false, true, false, false]) // passive, durable, exclusive, auto-delete, no-wait
        .empty_table();
    raw.send(&method_frame(1, 50, 10, &declare.0));
    let declare_ok = raw.expect_method(1, (50, 11));
    let queue = declare_ok.args().short();
    raw.send(&method_frame(1, 85, 10, &Args::new().bits(&[false]).0));
    raw.expect_method(1, (85, 11));
    const N: u64 = 50;
    let mut burst = Vec::new();
    for i in 0..N {
        let body = i.to_string();
        burst.extend(basic_publish(1, "", &queue));
        burst.extend(content_header(1, body.len() as u64));
        burst.extend(body_frame(1, body.as_bytes()));
    }
    raw.send(&burst);
    let mut confirmed = BTreeSet::new();
    let mut last = 0;
    let mut frames = 0;
    while confirmed.len() < N as usize {
        frames += 1;
        let f = raw
            .read_frame(Duration::from_secs(10))
            .expect("confirms keep coming");
        assert_eq!(f.method_id(), Some((60, 80)), "only basic.ack: {f:?}");
        let mut args = f.args();
        let (tag, multiple) = (args.u64(), args.octet() & 1 == 1);
        assert!(tag > last && tag <= N, "tag {tag} after {last}");
        let from = if multiple { last + 1 } else { tag };
        for t in from..=tag {
            assert!(confirmed.insert(t), "tag {t} confirmed twice");
        }
        last = tag;
    }
    assert_eq!(confirmed, (1..=N).collect());
    assert!(
        frames < N,
        "{N} publishes sent at once were confirmed in {frames} frames: none coalesced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn confirm_and_tx_modes_exclude_each_other() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let err = within(ch.tx_select()).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode".into()
        )
    );
    let ch = channel(&conn).await;
    within(ch.tx_select()).await.unwrap();
    let err = within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode".into()
        )
    );
    assert!(conn.status().connected(), "channel errors only");
}

#[tokio::test(flavor = "multi_thread")]
async fn transactional_publishes_are_invisible_until_commit_and_rollback_discards_them() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let observer = channel(&conn).await;
    let q = unique("tx");
    declare_queue(&ch, &q, exclusive()).await;
    within(ch.tx_select()).await.unwrap();
    send(&ch, &q, "a").await;
    send(&ch, &q, "b").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ready(&observer, &q).await, 0, "invisible before commit");
    within(ch.tx_commit()).await.unwrap();
    assert_eq!(ready(&observer, &q).await, 2);
    send(&ch, &q, "c").await;
    within(ch.tx_rollback()).await.unwrap();
    // Still transactional after commit and rollback: the next publish waits for a commit too.
    send(&ch, &q, "d").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        ready(&observer, &q).await,
        2,
        "c rolled back, d not yet committed"
    );
    within(ch.tx_commit()).await.unwrap();
    assert_eq!(drain(&observer, &q).await, ["a", "b", "d"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn transactional_acks_take_effect_at_commit() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let setup = confirm_channel(&conn).await;
    let q = unique("tx-acks");
    declare_queue(&setup, &q, exclusive()).await;
    for b in ["m1", "m2", "m3"] {
        warren_tests::publish(&setup, "", &q, b.as_bytes(), BasicProperties::default()).await;
    }
    let ch = channel(&conn).await;
    within(ch.tx_select()).await.unwrap();
    let mut tags = Vec::new();
    for _ in 0..3 {
        let m = within(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
            .await
            .unwrap()
            .expect("a message");
        tags.push(m.delivery.delivery_tag);
    }
    // ack m1 and roll it back; ack m2 and commit; leave m3 unacked.
    within(ch.basic_ack(tags[0], BasicAckOptions::default()))
        .await
        .unwrap();
    within(ch.tx_rollback()).await.unwrap();
    within(ch.basic_ack(tags[1], BasicAckOptions::default()))
        .await
        .unwrap();
    within(ch.tx_commit()).await.unwrap();
    // Closing the channel requeues what was not acked by a commit.
    within(ch.close(200, "bye".into())).await.unwrap();
    assert_eq!(drain(&setup, &q).await, ["m1", "m3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_or_rollback_without_select_is_406() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let err = within(ch.tx_commit()).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            "PRECONDITION_FAILED - channel is not transactional".into()
        )
    );
    let ch = channel(&conn).await;
    let err = within(ch.tx_rollback()).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            "PRECONDITION_FAILED - channel is not transactional".into()
        )
    );
}
