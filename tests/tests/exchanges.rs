//! Exchanges and routing through lapin: every exchange type, exchange-to-exchange bindings,
//! alternate exchanges, internal exchanges, if-unused, reserved names.

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::{AMQPValue, FieldTable, ShortString};
use warren_tests::lapin::{BasicProperties, Channel, ExchangeKind};
use warren_tests::{exclusive_queue, reply_code, reply_text, unique, within, Broker};

async fn bind(ch: &Channel, q: &str, x: &str, key: &str, args: FieldTable) {
    within(ch.queue_bind(
        q.into(),
        x.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    ))
    .await
    .unwrap();
}

async fn publish(ch: &Channel, x: &str, key: &str, body: &[u8], props: BasicProperties) {
    within(ch.basic_publish(
        x.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    ))
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Every body in the queue, in order (basic.get until get-empty).
async fn bodies(ch: &Channel, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(q.into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), AMQPValue::LongString((*v).into()));
    }
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn predeclared_exchanges_exist_and_route_by_type() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    for (x, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        within(ch.exchange_declare(
            x.into(),
            kind,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{x}: {e}"));
    }
    let (d, f1, f2, t, h_all, h_any) = (
        exclusive_queue(&ch).await,
        exclusive_queue(&ch).await,
        exclusive_queue(&ch).await,
        exclusive_queue(&ch).await,
        exclusive_queue(&ch).await,
        exclusive_queue(&ch).await,
    );
    bind(&ch, &d, "amq.direct", "red", FieldTable::default()).await;
    bind(&ch, &f1, "amq.fanout", "", FieldTable::default()).await;
    bind(&ch, &f2, "amq.fanout", "ignored", FieldTable::default()).await;
    bind(&ch, &t, "amq.topic", "*.en.#", FieldTable::default()).await;
    bind(
        &ch,
        &h_all,
        "amq.headers",
        "",
        table(&[("x-match", "all"), ("a", "1"), ("b", "2")]),
    )
    .await;
    bind(
        &ch,
        &h_any,
        "amq.headers",
        "",
        table(&[("x-match", "any"), ("a", "1"), ("b", "2")]),
    )
    .await;
    publish(&ch, "amq.direct", "red", b"red", BasicProperties::default()).await;
    publish(
        &ch,
        "amq.direct",
        "blue",
        b"blue",
        BasicProperties::default(),
    )
    .await;
    publish(
        &ch,
        "amq.fanout",
        "whatever",
        b"all",
        BasicProperties::default(),
    )
    .await;
    for key in ["news.en", "news.en.uk.sport", "news.de", "en", "a.b.en"] {
        publish(
            &ch,
            "amq.topic",
            key,
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    publish(
        &ch,
        "amq.headers",
        "",
        b"ab",
        BasicProperties::default().with_headers(table(&[("a", "1"), ("b", "2")])),
    )
    .await;
    publish(
        &ch,
        "amq.headers",
        "",
        b"a",
        BasicProperties::default().with_headers(table(&[("a", "1")])),
    )
    .await;
    publish(
        &ch,
        "amq.headers",
        "",
        b"b",
        BasicProperties::default().with_headers(table(&[("b", "2"), ("c", "3")])),
    )
    .await;
    assert_eq!(bodies(&ch, &d).await, ["red"]);
    assert_eq!(bodies(&ch, &f1).await, ["all"]);
    assert_eq!(bodies(&ch, &f2).await, ["all"]);
    assert_eq!(bodies(&ch, &t).await, ["news.en", "news.en.uk.sport"]);
    assert_eq!(bodies(&ch, &h_all).await, ["ab"]);
    assert_eq!(bodies(&ch, &h_any).await, ["ab", "a", "b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_hash_matches_zero_words() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, "amq.topic", "logs.#.error", FieldTable::default()).await;
    for key in [
        "logs.error",
        "logs.app.db.error",
        "logs.warn",
        "logs.error.x",
    ] {
        publish(
            &ch,
            "amq.topic",
            key,
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    assert_eq!(bodies(&ch, &q).await, ["logs.error", "logs.app.db.error"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_to_exchange_bindings_and_alternate_exchanges() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let (src, dst, ae) = (unique("src"), unique("dst"), unique("ae"));
    within(ch.exchange_declare(
        ae.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let args = table(&[("alternate-exchange", ae.as_str())]);
    within(ch.exchange_declare(
        src.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        args,
    ))
    .await
    .unwrap();
    within(ch.exchange_declare(
        dst.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.exchange_bind(
        dst.as_str().into(),
        src.as_str().into(),
        "orders.*".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let (q_dst, q_ae) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &q_dst, &dst, "orders.new", FieldTable::default()).await;
    bind(&ch, &q_ae, &ae, "", FieldTable::default()).await;
    publish(
        &ch,
        &src,
        "orders.new",
        b"via e2e",
        BasicProperties::default(),
    )
    .await;
    publish(
        &ch,
        &src,
        "invoices.new",
        b"to the alternate",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(bodies(&ch, &q_dst).await, ["via e2e"]);
    assert_eq!(bodies(&ch, &q_ae).await, ["to the alternate"]);
    within(ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "orders.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    publish(
        &ch,
        &src,
        "orders.new",
        b"after unbind",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(bodies(&ch, &q_dst).await, Vec::<String>::new());
    assert_eq!(bodies(&ch, &q_ae).await, ["after unbind"]);
    within(ch.exchange_delete(src.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn declare_rules_reserved_names_internal_and_if_unused() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.exchange_declare(
        "amq.mine".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    assert_eq!(
        reply_text(&err).unwrap(),
        "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'"
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let missing = unique("missing");
    let err = within(ch.exchange_declare(
        missing.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(
        reply_text(&err).unwrap(),
        format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let x = unique("x");
    within(ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let err = within(ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let ch = within(conn.create_channel()).await.unwrap();
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &x, "k", FieldTable::default()).await;
    let err = within(ch.exchange_delete(
        x.as_str().into(),
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(
        reply_text(&err).unwrap(),
        format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
    );
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .unwrap();
    // Internal exchanges take bindings but not publishes.
    let internal = unique("internal");
    within(ch.exchange_declare(
        internal.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let confirm = within(ch.basic_publish(
        internal.as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let err = within(confirm).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    assert_eq!(
        reply_text(&err).unwrap(),
        format!("ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'")
    );
}
