//! Exchanges through lapin: the predeclared ones, declare rules (passive, durable, auto-delete,
//! internal, reserved names, inequivalence), delete if-unused, exchange-to-exchange bindings,
//! alternate exchanges, and direct, fanout, topic and headers routing.

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::{AMQPValue, FieldTable, ShortString};
use warren_tests::lapin::{BasicProperties, Channel, ExchangeKind};
use warren_tests::{
    channel, closed_with, confirm_channel, drain, exclusive_queue, publish, unique, within, Broker,
};

async fn declare(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) -> warren_tests::lapin::Result<()> {
    within(ch.exchange_declare(name.into(), kind, options, args)).await
}

async fn declare_passive(ch: &Channel, name: &str) -> warren_tests::lapin::Result<()> {
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    declare(
        ch,
        name,
        ExchangeKind::Direct,
        passive,
        FieldTable::default(),
    )
    .await
}

async fn bind(ch: &Channel, q: &str, x: &str, key: &str, args: FieldTable) {
    within(ch.queue_bind(
        q.into(),
        x.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    ))
    .await
    .unwrap_or_else(|e| panic!("queue.bind {q} to {x}: {e}"));
}

async fn send(ch: &Channel, x: &str, key: &str) {
    let confirmation = publish(ch, x, key, key.as_bytes(), BasicProperties::default()).await;
    assert!(confirmation.is_ack(), "{key}: {confirmation:?}");
}

fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), AMQPValue::LongString((*v).into()));
    }
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn the_predeclared_exchanges_exist() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    for (x, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        declare(&ch, x, kind, passive, FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("{x}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_declare_of_a_missing_exchange_is_404_and_closes_only_the_channel() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let missing = unique("missing");
    let err = declare_passive(&ch, &missing).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            404,
            format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
        )
    );
    assert!(!ch.status().connected(), "the channel is closed");
    let ch = channel(&conn).await;
    declare_passive(&ch, "amq.direct").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn redeclaring_with_another_type_or_durability_is_406() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let x = unique("typed");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare(
        &ch,
        &x,
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    // The same declaration again is fine.
    declare(
        &ch,
        &x,
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = declare(
        &ch,
        &x,
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            format!("PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'direct'")
        )
    );
    let ch = channel(&conn).await;
    let err = declare(
        &ch,
        &x,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            format!("PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': received 'false' but current is 'true'")
        )
    );
    let ch = channel(&conn).await;
    within(ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(
        closed_with(&declare_passive(&ch, &x).await.unwrap_err()).0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_amq_prefix_is_reserved() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let name = unique("amq.mine");
    let err = declare(
        &ch,
        &name,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            403,
            format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_delete_exchange_goes_with_its_last_binding() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let x = unique("auto");
    let auto_delete = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(
        &ch,
        &x,
        ExchangeKind::Direct,
        auto_delete,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (q1, q2) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &q1, &x, "a", FieldTable::default()).await;
    bind(&ch, &q2, &x, "b", FieldTable::default()).await;
    within(ch.queue_unbind(
        q1.as_str().into(),
        x.as_str().into(),
        "a".into(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    declare_passive(&ch, &x)
        .await
        .expect("still there with one binding left");
    within(ch.queue_unbind(
        q2.as_str().into(),
        x.as_str().into(),
        "b".into(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let err = declare_passive(&ch, &x).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (404, format!("NOT_FOUND - no exchange '{x}' in vhost '/'"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_if_unused_refuses_a_bound_exchange() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let x = unique("used");
    declare(
        &ch,
        &x,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &x, "k", FieldTable::default()).await;
    let if_unused = ExchangeDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let err = within(ch.exchange_delete(x.as_str().into(), if_unused))
        .await
        .unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
        )
    );
    let ch = channel(&conn).await;
    declare_passive(&ch, &x).await.expect("not deleted");
    within(ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.exchange_delete(x.as_str().into(), if_unused))
        .await
        .expect("unused now");
    assert_eq!(
        closed_with(&declare_passive(&ch, &x).await.unwrap_err()).0,
        404
    );
    // Deleting an exchange that does not exist succeeds, as in RabbitMQ 3.x.
    let ch = channel(&conn).await;
    within(ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .expect("delete of a missing exchange");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_exchange_refuses_publishes_but_routes_from_other_exchanges() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let (front, internal) = (unique("front"), unique("internal"));
    let internal_opts = ExchangeDeclareOptions {
        internal: true,
        auto_delete: true,
        ..Default::default()
    };
    declare(
        &ch,
        &internal,
        ExchangeKind::Fanout,
        internal_opts,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(
        &ch,
        &front,
        ExchangeKind::Fanout,
        auto,
        FieldTable::default(),
    )
    .await
    .unwrap();
    within(ch.exchange_bind(
        internal.as_str().into(),
        front.as_str().into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &internal, "", FieldTable::default()).await;
    send(&ch, &front, "through the front").await;
    assert_eq!(drain(&ch, &q).await, ["through the front"]);
    let confirm = within(ch.basic_publish(
        internal.as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        b"direct",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let err = within(confirm).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            403,
            format!(
                "ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'"
            )
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_routes_by_exact_key_and_fanout_ignores_it() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let (red, red2, blue) = (
        exclusive_queue(&ch).await,
        exclusive_queue(&ch).await,
        exclusive_queue(&ch).await,
    );
    bind(&ch, &red, "amq.direct", "red", FieldTable::default()).await;
    bind(&ch, &red2, "amq.direct", "red", FieldTable::default()).await;
    bind(&ch, &blue, "amq.direct", "blue", FieldTable::default()).await;
    for key in ["red", "blue", "Red", "green", "red.x"] {
        send(&ch, "amq.direct", key).await;
    }
    assert_eq!(drain(&ch, &red).await, ["red"]);
    assert_eq!(drain(&ch, &red2).await, ["red"]);
    assert_eq!(drain(&ch, &blue).await, ["blue"]);
    let fan = unique("fan");
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, &fan, ExchangeKind::Fanout, auto, FieldTable::default())
        .await
        .unwrap();
    let (f1, f2) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &f1, &fan, "", FieldTable::default()).await;
    bind(&ch, &f2, &fan, "ignored", FieldTable::default()).await;
    send(&ch, &fan, "anything").await;
    send(&ch, &fan, "").await;
    assert_eq!(drain(&ch, &f1).await, ["anything", ""]);
    assert_eq!(drain(&ch, &f2).await, ["anything", ""]);
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_star_matches_one_word_and_hash_zero_or_more() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let x = unique("topics");
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, &x, ExchangeKind::Topic, auto, FieldTable::default())
        .await
        .unwrap();
    let patterns = ["*.orange.*", "lazy.#", "logs.#.error", "#", "#.end", "*"];
    let mut queues = Vec::new();
    for p in patterns {
        let q = exclusive_queue(&ch).await;
        bind(&ch, &q, &x, p, FieldTable::default()).await;
        queues.push(q);
    }
    let keys = [
        "quick.orange.rabbit",
        "orange",
        "quick.orange.male.rabbit",
        "lazy",
        "lazy.brown.fox",
        "logs.error",
        "logs.app.db.error",
        "logs.error.x",
        "end",
        "a.b.end",
        "",
    ];
    for key in keys {
        send(&ch, &x, key).await;
    }
    let mut got = Vec::new();
    for q in &queues {
        got.push(drain(&ch, q).await);
    }
    assert_eq!(
        got,
        vec![
            vec!["quick.orange.rabbit"],
            vec!["lazy", "lazy.brown.fox"],
            vec!["logs.error", "logs.app.db.error"],
            keys.to_vec(),
            vec!["end", "a.b.end"],
            vec!["orange", "lazy", "end"],
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_match_all_or_any() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let (all, any) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    let args = |m| headers(&[("x-match", m), ("format", "pdf"), ("type", "report")]);
    bind(&ch, &all, "amq.headers", "", args("all")).await;
    bind(&ch, &any, "amq.headers", "", args("any")).await;
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("both", &[("format", "pdf"), ("type", "report")]),
        (
            "both+extra",
            &[("format", "pdf"), ("type", "report"), ("x", "y")],
        ),
        ("format", &[("format", "pdf")]),
        ("wrong value", &[("format", "zip"), ("type", "log")]),
        ("none", &[]),
    ];
    for (body, h) in cases {
        let props = BasicProperties::default().with_headers(headers(h));
        let confirmation = publish(&ch, "amq.headers", "ignored", body.as_bytes(), props).await;
        assert!(confirmation.is_ack());
    }
    assert_eq!(drain(&ch, &all).await, ["both", "both+extra"]);
    assert_eq!(drain(&ch, &any).await, ["both", "both+extra", "format"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_to_exchange_bindings_route_until_unbound() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let (src, dst) = (unique("src"), unique("dst"));
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, &src, ExchangeKind::Topic, auto, FieldTable::default())
        .await
        .unwrap();
    declare(&ch, &dst, ExchangeKind::Direct, auto, FieldTable::default())
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
    let (q_dst, q_src) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &q_dst, &dst, "orders.new", FieldTable::default()).await;
    bind(&ch, &q_src, &src, "#", FieldTable::default()).await;
    for key in ["orders.new", "orders.old", "invoices.new"] {
        send(&ch, &src, key).await;
    }
    assert_eq!(drain(&ch, &q_dst).await, ["orders.new"]);
    assert_eq!(
        drain(&ch, &q_src).await,
        ["orders.new", "orders.old", "invoices.new"]
    );
    within(ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "orders.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    send(&ch, &src, "orders.new").await;
    assert_eq!(drain(&ch, &q_dst).await, Vec::<String>::new());
    assert_eq!(drain(&ch, &q_src).await, ["orders.new"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unroutable_messages_go_to_the_alternate_exchange() {
    let broker = Broker::start();
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let (main, ae) = (unique("main"), unique("ae"));
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, &ae, ExchangeKind::Fanout, auto, FieldTable::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(ae.as_str().into()),
    );
    declare(&ch, &main, ExchangeKind::Direct, auto, args)
        .await
        .unwrap();
    let (q_main, q_ae) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &q_main, &main, "known", FieldTable::default()).await;
    bind(&ch, &q_ae, &ae, "", FieldTable::default()).await;
    send(&ch, &main, "known").await;
    send(&ch, &main, "unknown").await;
    // mandatory is satisfied by the alternate exchange: nothing is returned.
    let confirm = within(ch.basic_publish(
        main.as_str().into(),
        "also-unknown".into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"also-unknown",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let confirmation = within(confirm).await.unwrap();
    assert!(confirmation.is_ack());
    assert!(confirmation.take_message().is_none(), "not returned");
    assert_eq!(drain(&ch, &q_main).await, ["known"]);
    assert_eq!(drain(&ch, &q_ae).await, ["unknown", "also-unknown"]);
}
