//! The byte encoding of the broker traffic between a node and the leader: what a node's
//! connections send to the broker ([`Up`]) and the effects that come back ([`Effect`]). Methods
//! travel as AMQP method-frame payloads and properties as AMQP content headers, so this encoding
//! follows the wire codec wherever AMQP already defines the bytes.

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

use warren_core::{
    AmqpError, ConnId, Effect, Input, Message, MirrorChange, MirrorEntry, MirrorQueue,
    ResumeChannel, ResumeConsumer, ResumeSession,
};
use warren_raft::encoding::{put_bool, put_properties, put_table, read_bool, read_properties};
use warren_raft::CodecError;
use warren_wire::{BasicPublish, Method, Reader, ShortStr};

/// One message from a node's connections to the leader's broker.
// Inputs (mostly publishes) dominate, as in `ToBroker`: boxing would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Up {
    /// A connection starts talking to the broker.
    Register(ConnId),
    Input(Input),
    /// The connection is gone; the broker forgets where its effects go.
    Unregister(ConnId),
    /// The first message of a stream: the node it comes from, with its copies of the transient
    /// queues it is the home of (see `warren_core::MirrorChange`).
    Home {
        node: u64,
        copies: Vec<MirrorQueue>,
    },
    /// The node has the first `n` home-copy changes the leader sent on this stream.
    Mirrored(u64),
}

fn put_long(w: &mut BytesMut, b: &[u8]) {
    w.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    w.put_slice(b);
}

fn read_long(r: &mut Reader) -> Result<Bytes, CodecError> {
    let n = r.u32()? as usize;
    Ok(r.bytes(n)?)
}

fn read_string(r: &mut Reader) -> Result<String, CodecError> {
    String::from_utf8(read_long(r)?.to_vec()).map_err(|_| CodecError::new("bad utf-8"))
}

fn put_method(w: &mut BytesMut, m: &Method) {
    let mut b = BytesMut::new();
    m.encode(&mut b);
    put_long(w, &b);
}

fn read_method(r: &mut Reader) -> Result<Method, CodecError> {
    Method::decode(read_long(r)?).map_err(|_| CodecError::new("bad method"))
}

fn put_error(w: &mut BytesMut, e: &AmqpError) {
    w.put_u16(e.code);
    put_long(w, e.text.as_bytes());
    w.put_u16(e.class_id);
    w.put_u16(e.method_id);
}

fn read_error(r: &mut Reader) -> Result<AmqpError, CodecError> {
    Ok(AmqpError {
        code: r.u16()?,
        text: read_string(r)?,
        class_id: r.u16()?,
        method_id: r.u16()?,
    })
}

/// Appends one [`Up`] message to `w`. `Applied` and `Tick` are the node's own business and never
/// travel: they are encoded as nothing.
pub(crate) fn encode_up(w: &mut BytesMut, up: &Up) {
    match up {
        Up::Register(conn) => {
            w.put_u8(0);
            w.put_u64(*conn);
        }
        Up::Unregister(conn) => {
            w.put_u8(1);
            w.put_u64(*conn);
        }
        Up::Home { node, copies } => {
            w.put_u8(10);
            w.put_u64(*node);
            put_copies(w, copies);
        }
        Up::Mirrored(n) => {
            w.put_u8(11);
            w.put_u64(*n);
        }
        Up::Input(input) => match input {
            Input::Login {
                conn,
                mechanism,
                username,
                password,
                peer_loopback,
                client_properties,
            } => {
                w.put_u8(2);
                w.put_u64(*conn);
                put_long(w, mechanism.as_bytes());
                put_long(w, username.as_bytes());
                put_long(w, password.as_bytes());
                put_bool(w, *peer_loopback);
                put_table(w, client_properties);
            }
            Input::OpenVhost { conn, vhost } => {
                w.put_u8(3);
                w.put_u64(*conn);
                put_long(w, vhost.as_bytes());
            }
            Input::Method {
                conn,
                channel,
                method,
            } => {
                w.put_u8(4);
                w.put_u64(*conn);
                w.put_u16(*channel);
                put_method(w, method);
            }
            Input::Publish {
                conn,
                channel,
                publish,
                properties,
                body,
            } => {
                w.put_u8(5);
                w.put_u64(*conn);
                w.put_u16(*channel);
                put_method(w, &Method::BasicPublish(publish.clone()));
                put_properties(w, properties, body.len());
                put_long(w, body);
            }
            Input::Writable { conn, writable } => {
                w.put_u8(6);
                w.put_u64(*conn);
                put_bool(w, *writable);
            }
            Input::ConnectionClosed { conn } => {
                w.put_u8(7);
                w.put_u64(*conn);
            }
            Input::ChannelError {
                conn,
                channel,
                error,
            } => {
                w.put_u8(8);
                w.put_u64(*conn);
                w.put_u16(*channel);
                put_error(w, error);
            }
            Input::Resume { conn, session } => {
                w.put_u8(9);
                w.put_u64(*conn);
                put_resume(w, session);
            }
            // An operator's close is sent to the leader's broker directly (management gRPC);
            // home copies travel as `Up::Home` and `Effect::Mirror`.
            Input::Applied { .. }
            | Input::Tick
            | Input::CloseConnection { .. }
            | Input::Mirror { .. }
            | Input::HomeAttached { .. } => {}
        },
    }
}

fn put_count(w: &mut BytesMut, n: usize) {
    w.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_resume(w: &mut BytesMut, s: &ResumeSession) {
    put_long(w, s.user.as_bytes());
    put_long(w, s.vhost.as_bytes());
    put_table(w, &s.client_properties);
    put_count(w, s.channels.len());
    for c in &s.channels {
        w.put_u16(c.id);
        w.put_u64(c.next_delivery_tag);
        w.put_u16(c.prefetch_consumer);
        w.put_u16(c.prefetch_global);
        put_bool(w, c.flow_active);
        match c.next_publish_seq {
            Some(n) => {
                w.put_u8(1);
                w.put_u64(n);
            }
            None => w.put_u8(0),
        }
        put_count(w, c.consumers.len());
        for k in &c.consumers {
            put_long(w, k.tag.as_bytes());
            put_long(w, k.queue.as_bytes());
            put_bool(w, k.no_ack);
            put_bool(w, k.exclusive);
            put_table(w, &k.arguments);
            w.put_u16(k.prefetch);
        }
    }
}

fn put_entry(w: &mut BytesMut, e: &MirrorEntry) {
    w.put_u64(e.seq);
    match e.expires_at {
        Some(t) => {
            w.put_u8(1);
            w.put_u64(t);
        }
        None => w.put_u8(0),
    }
    let m = &e.message;
    put_long(w, m.exchange.as_bytes());
    put_long(w, m.routing_key.as_bytes());
    put_properties(w, &m.properties, m.body.len());
    put_long(w, &m.body);
}

fn read_entry(r: &mut Reader) -> Result<MirrorEntry, CodecError> {
    let seq = r.u64()?;
    let expires_at = match r.u8()? {
        0 => None,
        1 => Some(r.u64()?),
        _ => return Err(CodecError::new("bad option flag")),
    };
    Ok(MirrorEntry {
        seq,
        expires_at,
        message: Arc::new(Message {
            exchange: read_short(r)?,
            routing_key: read_short(r)?,
            properties: read_properties(r)?,
            body: read_long(r)?,
        }),
    })
}

fn put_copies(w: &mut BytesMut, copies: &[MirrorQueue]) {
    put_count(w, copies.len());
    for c in copies {
        w.put_u64(c.queue);
        put_count(w, c.entries.len());
        for e in &c.entries {
            put_entry(w, e);
        }
    }
}

fn read_copies(r: &mut Reader) -> Result<Vec<MirrorQueue>, CodecError> {
    let mut copies = Vec::new();
    for _ in 0..r.u32()? {
        let queue = r.u64()?;
        let mut entries = Vec::new();
        for _ in 0..r.u32()? {
            entries.push(read_entry(r)?);
        }
        copies.push(MirrorQueue { queue, entries });
    }
    Ok(copies)
}

fn put_changes(w: &mut BytesMut, changes: &[MirrorChange]) {
    put_count(w, changes.len());
    for c in changes {
        match c {
            MirrorChange::Store { queue, entry } => {
                w.put_u8(0);
                w.put_u64(*queue);
                put_entry(w, entry);
            }
            MirrorChange::Drop { queue, seqs } => {
                w.put_u8(1);
                w.put_u64(*queue);
                put_count(w, seqs.len());
                for s in seqs {
                    w.put_u64(*s);
                }
            }
            MirrorChange::Reset { queues } => {
                w.put_u8(2);
                put_copies(w, queues);
            }
        }
    }
}

fn read_changes(r: &mut Reader) -> Result<Vec<MirrorChange>, CodecError> {
    let mut changes = Vec::new();
    for _ in 0..r.u32()? {
        changes.push(match r.u8()? {
            0 => MirrorChange::Store {
                queue: r.u64()?,
                entry: read_entry(r)?,
            },
            1 => {
                let queue = r.u64()?;
                let mut seqs = Vec::new();
                for _ in 0..r.u32()? {
                    seqs.push(r.u64()?);
                }
                MirrorChange::Drop { queue, seqs }
            }
            2 => MirrorChange::Reset {
                queues: read_copies(r)?,
            },
            _ => return Err(CodecError::new("unknown mirror change")),
        });
    }
    Ok(changes)
}

fn read_short(r: &mut Reader) -> Result<ShortStr, CodecError> {
    Ok(ShortStr::from(read_string(r)?))
}

fn read_resume(r: &mut Reader) -> Result<ResumeSession, CodecError> {
    let user = read_string(r)?;
    let vhost = read_string(r)?;
    let client_properties = r.table()?;
    let mut channels = Vec::new();
    for _ in 0..r.u32()? {
        let id = r.u16()?;
        let next_delivery_tag = r.u64()?;
        let prefetch_consumer = r.u16()?;
        let prefetch_global = r.u16()?;
        let flow_active = read_bool(r)?;
        let next_publish_seq = match r.u8()? {
            0 => None,
            1 => Some(r.u64()?),
            _ => return Err(CodecError::new("bad option flag")),
        };
        let mut consumers = Vec::new();
        for _ in 0..r.u32()? {
            consumers.push(ResumeConsumer {
                tag: read_short(r)?,
                queue: read_short(r)?,
                no_ack: read_bool(r)?,
                exclusive: read_bool(r)?,
                arguments: r.table()?,
                prefetch: r.u16()?,
            });
        }
        channels.push(ResumeChannel {
            id,
            next_delivery_tag,
            prefetch_consumer,
            prefetch_global,
            flow_active,
            next_publish_seq,
            consumers,
        });
    }
    Ok(ResumeSession {
        user,
        vhost,
        client_properties,
        channels,
    })
}

/// Decodes every [`Up`] message in `bytes`.
pub(crate) fn decode_ups(bytes: Bytes) -> Result<Vec<Up>, CodecError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let tag = r.u8()?;
        let conn = r.u64()?;
        out.push(match tag {
            0 => Up::Register(conn),
            1 => Up::Unregister(conn),
            2 => Up::Input(Input::Login {
                conn,
                mechanism: read_string(&mut r)?,
                username: read_string(&mut r)?,
                password: read_string(&mut r)?,
                peer_loopback: read_bool(&mut r)?,
                client_properties: r.table()?,
            }),
            3 => Up::Input(Input::OpenVhost {
                conn,
                vhost: read_string(&mut r)?,
            }),
            4 => Up::Input(Input::Method {
                conn,
                channel: r.u16()?,
                method: read_method(&mut r)?,
            }),
            5 => {
                let channel = r.u16()?;
                let publish: BasicPublish = match read_method(&mut r)? {
                    Method::BasicPublish(p) => p,
                    _ => return Err(CodecError::new("publish without basic.publish")),
                };
                Up::Input(Input::Publish {
                    conn,
                    channel,
                    publish,
                    properties: read_properties(&mut r)?,
                    body: read_long(&mut r)?,
                })
            }
            6 => Up::Input(Input::Writable {
                conn,
                writable: read_bool(&mut r)?,
            }),
            7 => Up::Input(Input::ConnectionClosed { conn }),
            8 => Up::Input(Input::ChannelError {
                conn,
                channel: r.u16()?,
                error: read_error(&mut r)?,
            }),
            9 => Up::Input(Input::Resume {
                conn,
                session: Box::new(read_resume(&mut r)?),
            }),
            10 => Up::Home {
                node: conn,
                copies: read_copies(&mut r)?,
            },
            11 => Up::Mirrored(conn),
            _ => return Err(CodecError::new("unknown relay message")),
        });
    }
    Ok(out)
}

/// Appends one effect to `w`. `Propose` never travels (it is encoded as nothing).
pub(crate) fn encode_effect(w: &mut BytesMut, e: &Effect) {
    match e {
        Effect::Send {
            conn,
            channel,
            method,
        } => {
            w.put_u8(0);
            w.put_u64(*conn);
            w.put_u16(*channel);
            put_method(w, method);
        }
        Effect::SendContent {
            conn,
            channel,
            method,
            properties,
            body,
        } => {
            w.put_u8(1);
            w.put_u64(*conn);
            w.put_u16(*channel);
            put_method(w, method);
            put_properties(w, properties, body.len());
            put_long(w, body);
        }
        Effect::Authenticated { conn, user } => {
            w.put_u8(2);
            w.put_u64(*conn);
            put_long(w, user.as_bytes());
        }
        Effect::CloseChannel {
            conn,
            channel,
            error,
        } => {
            w.put_u8(3);
            w.put_u64(*conn);
            w.put_u16(*channel);
            put_error(w, error);
        }
        Effect::CloseConnection { conn, error } => {
            w.put_u8(4);
            w.put_u64(*conn);
            put_error(w, error);
        }
        Effect::AwaitWritable { conn } => {
            w.put_u8(5);
            w.put_u64(*conn);
        }
        Effect::Mirror { home, changes } => {
            w.put_u8(6);
            w.put_u64(*home);
            put_changes(w, changes);
        }
        Effect::Propose { .. } => {}
    }
}

/// Decodes every effect in `bytes`.
pub(crate) fn decode_effects(bytes: Bytes) -> Result<Vec<Effect>, CodecError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let tag = r.u8()?;
        let conn = r.u64()?;
        out.push(match tag {
            0 => Effect::Send {
                conn,
                channel: r.u16()?,
                method: read_method(&mut r)?,
            },
            1 => Effect::SendContent {
                conn,
                channel: r.u16()?,
                method: read_method(&mut r)?,
                properties: read_properties(&mut r)?,
                body: read_long(&mut r)?,
            },
            2 => Effect::Authenticated {
                conn,
                user: read_string(&mut r)?,
            },
            3 => Effect::CloseChannel {
                conn,
                channel: r.u16()?,
                error: read_error(&mut r)?,
            },
            4 => Effect::CloseConnection {
                conn,
                error: read_error(&mut r)?,
            },
            5 => Effect::AwaitWritable { conn },
            6 => Effect::Mirror {
                home: conn,
                changes: read_changes(&mut r)?,
            },
            _ => return Err(CodecError::new("unknown relay effect")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::{
        BasicDeliver, BasicProperties, FieldTable, FieldValue, QueueDeclare, ShortStr,
    };

    fn sample_copies() -> Vec<MirrorQueue> {
        let entry = |seq, expires_at| MirrorEntry {
            seq,
            expires_at,
            message: Arc::new(Message {
                exchange: "amq.topic".into(),
                routing_key: "a.b".into(),
                properties: BasicProperties {
                    correlation_id: Some("c1".into()),
                    ..Default::default()
                },
                body: Bytes::from_static(b"reply"),
            }),
        };
        vec![
            MirrorQueue {
                queue: 4,
                entries: vec![entry(1 << 32, None), entry((1 << 32) + 1, Some(99))],
            },
            MirrorQueue {
                queue: 6,
                entries: vec![],
            },
        ]
    }

    #[test]
    fn every_kind_of_up_message_round_trips() {
        let mut props = FieldTable::default();
        props.insert("product", FieldValue::from("pika"));
        let ups = vec![
            Up::Register(7),
            Up::Input(Input::Login {
                conn: 7,
                mechanism: "PLAIN".into(),
                username: "guest".into(),
                password: "guest".into(),
                peer_loopback: true,
                client_properties: props,
            }),
            Up::Input(Input::OpenVhost {
                conn: 7,
                vhost: "/".into(),
            }),
            Up::Input(Input::Method {
                conn: 7,
                channel: 3,
                method: Method::QueueDeclare(QueueDeclare {
                    queue: "q".into(),
                    durable: true,
                    ..Default::default()
                }),
            }),
            Up::Input(Input::Publish {
                conn: 7,
                channel: 3,
                publish: BasicPublish {
                    ticket: 0,
                    exchange: "x".into(),
                    routing_key: "k".into(),
                    mandatory: true,
                    immediate: false,
                },
                properties: BasicProperties {
                    delivery_mode: Some(2),
                    ..Default::default()
                },
                body: Bytes::from_static(b"body"),
            }),
            Up::Input(Input::Writable {
                conn: 7,
                writable: false,
            }),
            Up::Input(Input::ChannelError {
                conn: 7,
                channel: 3,
                error: AmqpError::new(406, "too big"),
            }),
            Up::Input(Input::ConnectionClosed { conn: 7 }),
            Up::Input(Input::Resume {
                conn: 7,
                session: Box::new(ResumeSession {
                    user: "guest".into(),
                    vhost: "/".into(),
                    client_properties: FieldTable::default(),
                    channels: vec![
                        ResumeChannel {
                            id: 1,
                            next_delivery_tag: 1 << 20,
                            prefetch_consumer: 10,
                            prefetch_global: 0,
                            flow_active: true,
                            next_publish_seq: Some(42),
                            consumers: vec![ResumeConsumer {
                                tag: "ctag".into(),
                                queue: "q".into(),
                                no_ack: false,
                                exclusive: true,
                                arguments: FieldTable::default(),
                                prefetch: 10,
                            }],
                        },
                        ResumeChannel {
                            id: 2,
                            next_delivery_tag: 5,
                            prefetch_consumer: 0,
                            prefetch_global: 3,
                            flow_active: false,
                            next_publish_seq: None,
                            consumers: vec![],
                        },
                    ],
                }),
            }),
            Up::Unregister(7),
            Up::Home {
                node: 2,
                copies: sample_copies(),
            },
            Up::Mirrored(12),
        ];
        let mut w = BytesMut::new();
        for u in &ups {
            encode_up(&mut w, u);
        }
        assert_eq!(decode_ups(w.freeze()), Ok(ups));
    }

    #[test]
    fn every_kind_of_effect_round_trips() {
        let effects = vec![
            Effect::Authenticated {
                conn: 9,
                user: "guest".into(),
            },
            Effect::Send {
                conn: 9,
                channel: 1,
                method: Method::ChannelOpenOk(Default::default()),
            },
            Effect::SendContent {
                conn: 9,
                channel: 1,
                method: Method::BasicDeliver(BasicDeliver {
                    consumer_tag: ShortStr::from("c"),
                    delivery_tag: 5,
                    redelivered: true,
                    exchange: "".into(),
                    routing_key: "q".into(),
                }),
                properties: BasicProperties::default(),
                body: Bytes::from_static(b"hi"),
            },
            Effect::CloseChannel {
                conn: 9,
                channel: 1,
                error: AmqpError::new(404, "no queue"),
            },
            Effect::AwaitWritable { conn: 9 },
            Effect::CloseConnection {
                conn: 9,
                error: AmqpError::new(320, "bye"),
            },
            Effect::Mirror {
                home: 3,
                changes: vec![
                    MirrorChange::Store {
                        queue: 4,
                        entry: sample_copies()[0].entries[0].clone(),
                    },
                    MirrorChange::Drop {
                        queue: 4,
                        seqs: vec![1, 7],
                    },
                    MirrorChange::Reset {
                        queues: sample_copies(),
                    },
                ],
            },
        ];
        let mut w = BytesMut::new();
        for e in &effects {
            encode_effect(&mut w, e);
        }
        assert_eq!(decode_effects(w.freeze()), Ok(effects));
    }

    #[test]
    fn truncated_batches_are_errors() {
        let mut w = BytesMut::new();
        encode_effect(
            &mut w,
            &Effect::CloseConnection {
                conn: 1,
                error: AmqpError::new(320, "bye"),
            },
        );
        let b = w.freeze();
        for cut in 1..b.len() {
            assert!(decode_effects(b.slice(..cut)).is_err());
        }
    }
}
