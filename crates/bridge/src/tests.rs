//! The bridge against a scripted broker: exact methods out, exact events in.

use super::*;
use warren_wire::{
    BasicAck, BasicQos, BasicQosOk, ChannelClose, ChannelOpenOk, ConfirmSelectOk, ConnectionOpenOk,
    ConnectionStart, ConnectionTune, LongStr, QueueDeclare, QueueDeclareOk,
};

type B = Bridge<&'static str>;

fn sent(b: &mut B) -> Vec<Method> {
    script::methods(b.out())
}

fn broker(b: &mut B, mut out: OutBuf) -> Vec<Event<&'static str>> {
    let mut buf = script::drain(&mut out);
    let mut events = Vec::new();
    b.receive(&mut buf, &mut events);
    events
}

fn method(b: &mut B, channel: u16, m: Method) -> Vec<Event<&'static str>> {
    let mut out = OutBuf::new();
    out.push_method(channel, &m);
    broker(b, out)
}

fn opened() -> B {
    let mut b = B::new();
    b.open(Login {
        user: "guest".into(),
        password: "guest".into(),
        vhost: "/".into(),
        client_properties: FieldTable::default(),
    });
    assert!(sent(&mut b).is_empty(), "the protocol header only");
    let e = method(
        &mut b,
        0,
        Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "AMQPLAIN PLAIN".into(),
            locales: "en_US".into(),
        }),
    );
    assert!(e.is_empty());
    let m = sent(&mut b);
    assert!(
        matches!(&m[..], [Method::ConnectionStartOk(ok)] if &ok.response.as_bytes()[..] == b"\0guest\0guest"),
        "{m:?}"
    );
    method(
        &mut b,
        0,
        Method::ConnectionTune(ConnectionTune {
            channel_max: 2047,
            frame_max: 1 << 20,
            heartbeat: 60,
        }),
    );
    assert_eq!(
        sent(&mut b),
        vec![
            Method::ConnectionTuneOk(ConnectionTuneOk {
                channel_max: 2047,
                frame_max: FRAME_MAX,
                heartbeat: 0
            }),
            Method::ConnectionOpen(ConnectionOpen {
                virtual_host: "/".into(),
                capabilities: ShortStr::default(),
                insist: false
            }),
        ]
    );
    method(
        &mut b,
        0,
        Method::ConnectionOpenOk(ConnectionOpenOk {
            known_hosts: ShortStr::default(),
        }),
    );
    method(
        &mut b,
        CHANNEL,
        Method::ChannelOpenOk(ChannelOpenOk {
            channel_id: LongStr::default(),
        }),
    );
    let e = method(&mut b, CHANNEL, Method::ConfirmSelectOk(ConfirmSelectOk {}));
    assert!(matches!(&e[..], [Event::Open]), "{e:?}");
    assert_eq!(
        sent(&mut b),
        vec![
            Method::ChannelOpen(ChannelOpen {
                out_of_band: ShortStr::default()
            }),
            Method::ConfirmSelect(ConfirmSelect { nowait: false }),
        ]
    );
    b
}

#[test]
fn a_refused_login_is_an_event_and_the_end() {
    let mut b = B::new();
    b.open(Login::default());
    method(
        &mut b,
        0,
        Method::ConnectionStart(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
        }),
    );
    let _ = sent(&mut b);
    let e = method(
        &mut b,
        0,
        Method::ConnectionClose(ConnectionClose {
            reply_code: 403,
            reply_text: "ACCESS_REFUSED - Login was refused".into(),
            class_id: 0,
            method_id: 0,
        }),
    );
    assert!(
        matches!(&e[..], [Event::Refused { code: 403, text }] if text.starts_with("ACCESS_REFUSED")),
        "{e:?}"
    );
    assert!(b.is_closed());
    assert_eq!(
        sent(&mut b),
        vec![Method::ConnectionCloseOk(ConnectionCloseOk {})]
    );
}

#[test]
fn steps_go_in_order_a_sync_one_waiting_for_its_reply_and_a_mark_stopping_the_drive() {
    let mut b = opened();
    let declare = Method::QueueDeclare(QueueDeclare {
        queue: "q".into(),
        ..Default::default()
    });
    let qos = Method::BasicQos(BasicQos {
        prefetch_size: 0,
        prefetch_count: 5,
        global: false,
    });
    b.push(Step::Sync(declare.clone(), "declare"));
    b.push(Step::Mark("declared"));
    b.push(Step::Sync(qos.clone(), "qos"));
    let mut events = Vec::new();
    b.drive(&mut events);
    assert!(events.is_empty());
    assert_eq!(sent(&mut b), vec![declare]);
    let e = method(
        &mut b,
        CHANNEL,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "q".into(),
            message_count: 0,
            consumer_count: 0,
        }),
    );
    assert!(
        matches!(&e[..], [Event::Reply { token: "declare", method }]
            if matches!(**method, Method::QueueDeclareOk(_))),
        "{e:?}"
    );
    b.drive(&mut events);
    assert!(matches!(&events[..], [Event::Reached("declared")]));
    assert!(sent(&mut b).is_empty(), "the mark stops the drive");
    // The adapter may put a step first now.
    b.push_front(Step::Async(Method::BasicAck(BasicAck {
        delivery_tag: 1,
        multiple: false,
    })));
    events.clear();
    b.drive(&mut events);
    assert_eq!(
        sent(&mut b),
        vec![
            Method::BasicAck(BasicAck {
                delivery_tag: 1,
                multiple: false
            }),
            qos
        ]
    );
    let e = method(&mut b, CHANNEL, Method::BasicQosOk(BasicQosOk {}));
    assert!(matches!(&e[..], [Event::Reply { token: "qos", .. }]));
}

#[test]
fn publishes_are_confirmed_by_token_and_awaiting_confirms_holds_the_steps_behind() {
    let mut b = opened();
    for token in ["one", "two", "three"] {
        b.push(Step::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Box::default(),
            body: Bytes::from_static(b"x"),
            token,
        });
    }
    b.push(Step::AwaitConfirms);
    b.push(Step::Mark("all confirmed"));
    let mut events = Vec::new();
    b.drive(&mut events);
    assert!(events.is_empty());
    let published = sent(&mut b)
        .into_iter()
        .filter(|m| matches!(m, Method::BasicPublish(_)))
        .count();
    assert_eq!(published, 3);
    let e = method(
        &mut b,
        CHANNEL,
        Method::BasicAck(BasicAck {
            delivery_tag: 2,
            multiple: true,
        }),
    );
    assert!(matches!(
        &e[..],
        [
            Event::Confirmed {
                token: "one",
                ack: true
            },
            Event::Confirmed {
                token: "two",
                ack: true
            }
        ]
    ));
    b.drive(&mut events);
    assert!(events.is_empty(), "one is still unconfirmed");
    let e = method(
        &mut b,
        CHANNEL,
        Method::BasicNack(warren_wire::BasicNack {
            delivery_tag: 3,
            multiple: false,
            requeue: false,
        }),
    );
    assert!(matches!(
        &e[..],
        [Event::Confirmed {
            token: "three",
            ack: false
        }]
    ));
    b.drive(&mut events);
    assert!(matches!(&events[..], [Event::Reached("all confirmed")]));
}

#[test]
fn a_delivery_is_whole_before_it_is_an_event() {
    let mut b = opened();
    let mut out = OutBuf::new();
    let deliver = BasicDeliver {
        consumer_tag: "c".into(),
        delivery_tag: 7,
        redelivered: true,
        exchange: "".into(),
        routing_key: "q".into(),
    };
    out.push_delivery(
        CHANNEL,
        &Method::BasicDeliver(deliver.clone()),
        &BasicProperties::default(),
        Bytes::from(vec![b'a'; 10_000]),
        4096,
    );
    let e = broker(&mut b, out);
    assert!(
        matches!(&e[..], [Event::Delivery { deliver: d, body, .. }] if *d == deliver && body.len() == 10_000),
        "{e:?}"
    );
}

#[test]
fn a_channel_closed_by_the_broker_ends_the_bridge_with_its_code() {
    let mut b = opened();
    b.push(Step::Sync(
        Method::QueueDeclare(QueueDeclare {
            queue: "q".into(),
            passive: true,
            ..Default::default()
        }),
        "passive",
    ));
    let mut events = Vec::new();
    b.drive(&mut events);
    let _ = sent(&mut b);
    let e = method(
        &mut b,
        CHANNEL,
        Method::ChannelClose(ChannelClose {
            reply_code: 404,
            reply_text: "NOT_FOUND - no queue 'q' in vhost '/'".into(),
            class_id: 50,
            method_id: 10,
        }),
    );
    assert!(matches!(&e[..], [Event::Closed { code: 404, .. }]), "{e:?}");
    assert!(b.is_closed());
    assert_eq!(
        sent(&mut b),
        vec![Method::ChannelCloseOk(ChannelCloseOk {})]
    );
    assert_eq!(reply_name(404), "not_found");
}

#[test]
fn a_try_goes_on_a_second_channel_whose_refusal_closes_only_that_channel() {
    let mut b = opened();
    let passive = |queue: &str| {
        Method::QueueDeclare(QueueDeclare {
            queue: queue.into(),
            passive: true,
            ..Default::default()
        })
    };
    b.push(Step::Try {
        method: passive("missing"),
        token: "first",
    });
    b.push(Step::Try {
        method: passive("there"),
        token: "second",
    });
    let mut events = Vec::new();
    b.drive(&mut events);
    assert_eq!(
        sent(&mut b),
        vec![Method::ChannelOpen(ChannelOpen {
            out_of_band: ShortStr::default()
        })]
    );
    method(
        &mut b,
        TRY_CHANNEL,
        Method::ChannelOpenOk(ChannelOpenOk {
            channel_id: LongStr::default(),
        }),
    );
    assert_eq!(sent(&mut b), vec![passive("missing")]);
    let e = method(
        &mut b,
        TRY_CHANNEL,
        Method::ChannelClose(ChannelClose {
            reply_code: 404,
            reply_text: "NOT_FOUND - no queue 'missing' in vhost '/'".into(),
            class_id: 50,
            method_id: 10,
        }),
    );
    assert!(
        matches!(
            &e[..],
            [Event::Tried {
                token: "first",
                reply: Err(404)
            }]
        ),
        "{e:?}"
    );
    assert!(!b.is_closed());
    b.drive(&mut events);
    let m = sent(&mut b);
    assert!(
        matches!(&m[..], [Method::ChannelCloseOk(_), Method::ChannelOpen(_)]),
        "the second channel closed, and opens again: {m:?}"
    );
    method(
        &mut b,
        TRY_CHANNEL,
        Method::ChannelOpenOk(ChannelOpenOk {
            channel_id: LongStr::default(),
        }),
    );
    assert_eq!(sent(&mut b), vec![passive("there")]);
    let e = method(
        &mut b,
        TRY_CHANNEL,
        Method::QueueDeclareOk(QueueDeclareOk {
            queue: "there".into(),
            message_count: 3,
            consumer_count: 0,
        }),
    );
    assert!(
        matches!(&e[..], [Event::Tried { token: "second", reply: Ok(m) }] if matches!(**m, Method::QueueDeclareOk(_))),
        "{e:?}"
    );
}
