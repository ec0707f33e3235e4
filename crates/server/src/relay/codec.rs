//! The byte encoding of the broker traffic between nodes: what a node sends another node's broker
//! for its clients' sessions ([`Up`]: the leader sessions it relays to the leader, the home
//! sessions it opens on a queue's home, messages forwarded to local queues) and what comes back
//! ([`Down`]: effects, and how many forwards were taken). Methods travel as AMQP method-frame
//! payloads and properties as AMQP content headers, so this encoding follows the wire codec
//! wherever AMQP already defines the bytes.

use bytes::{BufMut, Bytes, BytesMut};

use warren_core::{
    AmqpError, Command, ConnId, ConsumerRef, Delivery, Effect, Input, Message, QueueCommand,
    QueueEvent, ResumeChannel, ResumeConsumer, ResumeSession,
};
use warren_raft::CodecError;
use warren_wire::record::{
    put_bool, put_count, put_long, put_properties, put_table, put_varints, read_bool, read_long,
    read_properties, read_text, read_varints,
};
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
    /// The first message of a stream: the node it comes from, and what for: `home` false, it
    /// relays its clients' leader sessions to the leader; true, it opens home sessions on the
    /// receiver and forwards messages to the local queues homed there. `incarnation` grows
    /// with each stream the sender opens (across its restarts too: see `relay::links`): a home
    /// stream that says hello with a higher one replaces the sender's earlier stream, and what
    /// the two nodes' brokers shared over that one is dropped first (`Input::PeerLost`). Tag 17;
    /// tag 10, the hello of an earlier version, has no incarnation (read as 0).
    Hello {
        node: u64,
        home: bool,
        incarnation: u64,
    },
    /// What follows waits until the receiver has applied the log up to `index` (a client saw
    /// a reply sent after that point: see `docs/architecture.md`, "Reading one's writes across
    /// nodes").
    Barrier(u64),
    /// A message for a local queue homed on the receiver (`warren_core::Effect::Forward`); the
    /// stream numbers them from 1.
    Forward {
        queue: u64,
        message: Message,
    },
    /// A command of the sender's broker for the receiver, the leader, to propose (a logged
    /// publish: see `crate::proposer`), in its log encoding.
    Propose(Command),
    /// A queue command of a channel on the sender for a queue the receiver owns
    /// (`warren_core::Effect::ToOwner`; issue 19, step 2: encoded, not sent yet).
    QueueCommand(QueueCommand),
    /// A queue owner's answer for a channel on the receiver (`warren_core::Effect::ToChannel`;
    /// not sent yet either).
    QueueEvent(QueueEvent),
}

/// One message back from a broker.
// Effects (deliveries, replies) are nearly all of them: boxing would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Down {
    Effect(Effect),
    /// The receiver has handled the first `upto` forwards of the stream.
    Forwarded {
        upto: u64,
    },
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
        text: read_text(r)?,
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
        Up::Hello {
            node,
            home,
            incarnation,
        } => {
            w.put_u8(HELLO);
            w.put_u64(*node);
            put_bool(w, *home);
            w.put_u64(*incarnation);
        }
        Up::Barrier(index) => {
            w.put_u8(11);
            w.put_u64(*index);
        }
        Up::Forward { queue, message } => {
            w.put_u8(13);
            w.put_u64(*queue);
            put_message(w, message);
        }
        Up::Propose(command) => {
            w.put_u8(14);
            w.put_u64(0);
            put_long(w, &warren_raft::encode_command(command));
        }
        Up::QueueCommand(command) => put_queue_command(w, command),
        Up::QueueEvent(event) => put_queue_event(w, event),
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
            Input::OpenHome {
                conn,
                client,
                user,
                vhost,
                client_properties,
            } => {
                w.put_u8(12);
                w.put_u64(*conn);
                w.put_u64(*client);
                put_long(w, user.as_bytes());
                put_long(w, vhost.as_bytes());
                put_table(w, client_properties);
            }
            // An operator's close is sent to the leader's broker directly (management gRPC); a
            // forwarded message travels as `Up::Forward`.
            // A sync is for the node's own broker only.
            Input::Applied { .. }
            | Input::Tick
            | Input::CloseConnection { .. }
            | Input::Forwarded { .. }
            | Input::Sync { .. }
            | Input::NodeDown { .. } => {}
            // Queue commands are between nodes' brokers, not a session's: they travel as
            // `Up::QueueCommand`/`Up::QueueEvent` on home streams.
            Input::QueueCommand { .. }
            | Input::QueueEvent { .. }
            | Input::PeerLost { .. }
            | Input::Leader { .. } => {}
        },
    }
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

fn put_message(w: &mut BytesMut, m: &Message) {
    put_long(w, m.exchange.as_bytes());
    put_long(w, m.routing_key.as_bytes());
    put_properties(w, &m.properties, m.body.len());
    put_long(w, &m.body);
}

fn read_message(r: &mut Reader) -> Result<Message, CodecError> {
    Ok(Message {
        exchange: read_short(r)?,
        routing_key: read_short(r)?,
        properties: read_properties(r)?,
        body: read_long(r)?,
    })
}

/// The tags of [`Up::QueueCommand`] and [`Up::QueueEvent`]; the queue id takes the place of
/// the connection id that follows every tag, then a kind and its fields.
const QUEUE_COMMAND: u8 = 15;
const QUEUE_EVENT: u8 = 16;
/// The tag of [`Up::Hello`] (with its incarnation).
const HELLO: u8 = 17;

fn put_consumer(w: &mut BytesMut, c: &ConsumerRef) {
    w.put_u64(c.conn);
    w.put_u16(c.channel);
    put_long(w, c.tag.as_bytes());
}

fn read_consumer(r: &mut Reader) -> Result<ConsumerRef, CodecError> {
    Ok(ConsumerRef {
        conn: r.u64()?,
        channel: r.u16()?,
        tag: read_short(r)?,
    })
}

fn put_queue_command(w: &mut BytesMut, command: &QueueCommand) {
    w.put_u8(QUEUE_COMMAND);
    match command {
        QueueCommand::Consume {
            consumer,
            queue,
            credit,
            priority,
            no_ack,
            exclusive,
            held,
        } => {
            w.put_u64(*queue);
            w.put_u8(0);
            put_consumer(w, consumer);
            w.put_u32(*credit);
            w.put_i32(*priority);
            put_bool(w, *no_ack);
            put_bool(w, *exclusive);
            put_varints(w, held);
        }
        QueueCommand::Credit {
            consumer,
            queue,
            credit,
        } => {
            w.put_u64(*queue);
            w.put_u8(1);
            put_consumer(w, consumer);
            w.put_u32(*credit);
        }
        QueueCommand::Settle { queue, seqs } => {
            w.put_u64(*queue);
            w.put_u8(2);
            put_varints(w, seqs);
        }
        QueueCommand::Return { queue, seqs } => {
            w.put_u64(*queue);
            w.put_u8(3);
            put_varints(w, seqs);
        }
        QueueCommand::Discard { queue, seqs } => {
            w.put_u64(*queue);
            w.put_u8(4);
            put_varints(w, seqs);
        }
        QueueCommand::Cancel { consumer, queue } => {
            w.put_u64(*queue);
            w.put_u8(5);
            put_consumer(w, consumer);
        }
        QueueCommand::Get {
            consumer,
            queue,
            no_ack,
            applied,
        } => {
            w.put_u64(*queue);
            w.put_u8(6);
            put_consumer(w, consumer);
            put_bool(w, *no_ack);
            w.put_u64(*applied);
        }
        QueueCommand::Purge {
            consumer,
            queue,
            reply,
        } => {
            w.put_u64(*queue);
            w.put_u8(7);
            put_consumer(w, consumer);
            put_bool(w, *reply);
        }
        QueueCommand::Delete {
            consumer,
            queue,
            if_unused,
            if_empty,
        } => {
            w.put_u64(*queue);
            w.put_u8(8);
            put_consumer(w, consumer);
            put_bool(w, *if_unused);
            put_bool(w, *if_empty);
        }
        QueueCommand::Declare {
            consumer,
            queue,
            reply,
        } => {
            w.put_u64(*queue);
            w.put_u8(9);
            put_consumer(w, consumer);
            put_bool(w, *reply);
        }
    }
}

fn read_queue_command(r: &mut Reader, queue: u64) -> Result<QueueCommand, CodecError> {
    Ok(match r.u8()? {
        0 => QueueCommand::Consume {
            consumer: read_consumer(r)?,
            queue,
            credit: r.u32()?,
            priority: r.u32()? as i32,
            no_ack: read_bool(r)?,
            exclusive: read_bool(r)?,
            held: read_varints(r)?,
        },
        1 => QueueCommand::Credit {
            consumer: read_consumer(r)?,
            queue,
            credit: r.u32()?,
        },
        2 => QueueCommand::Settle {
            queue,
            seqs: read_varints(r)?,
        },
        3 => QueueCommand::Return {
            queue,
            seqs: read_varints(r)?,
        },
        4 => QueueCommand::Discard {
            queue,
            seqs: read_varints(r)?,
        },
        5 => QueueCommand::Cancel {
            consumer: read_consumer(r)?,
            queue,
        },
        6 => QueueCommand::Get {
            consumer: read_consumer(r)?,
            queue,
            no_ack: read_bool(r)?,
            applied: r.u64()?,
        },
        7 => QueueCommand::Purge {
            consumer: read_consumer(r)?,
            queue,
            reply: read_bool(r)?,
        },
        8 => QueueCommand::Delete {
            consumer: read_consumer(r)?,
            queue,
            if_unused: read_bool(r)?,
            if_empty: read_bool(r)?,
        },
        9 => QueueCommand::Declare {
            consumer: read_consumer(r)?,
            queue,
            reply: read_bool(r)?,
        },
        _ => return Err(CodecError::new("unknown queue command")),
    })
}

fn put_queue_event(w: &mut BytesMut, event: &QueueEvent) {
    w.put_u8(QUEUE_EVENT);
    match event {
        QueueEvent::Consumed {
            consumer,
            queue,
            error,
        } => {
            w.put_u64(*queue);
            w.put_u8(0);
            put_consumer(w, consumer);
            put_optional_error(w, error.as_ref());
        }
        QueueEvent::Deliver(delivery) => {
            w.put_u64(delivery.queue);
            w.put_u8(1);
            put_delivery(w, delivery);
        }
        QueueEvent::CancelOk { consumer, queue } => {
            w.put_u64(*queue);
            w.put_u8(2);
            put_consumer(w, consumer);
        }
        QueueEvent::Got {
            delivery,
            message_count,
        } => {
            w.put_u64(delivery.queue);
            w.put_u8(3);
            put_delivery(w, delivery);
            w.put_u32(*message_count);
        }
        QueueEvent::GotNothing {
            consumer,
            queue,
            error,
        } => {
            w.put_u64(*queue);
            w.put_u8(4);
            put_consumer(w, consumer);
            put_optional_error(w, error.as_ref());
        }
        QueueEvent::Purged {
            consumer,
            queue,
            message_count,
            error,
        } => put_count_answer(w, 5, consumer, *queue, *message_count, error.as_ref()),
        QueueEvent::Deleted {
            consumer,
            queue,
            message_count,
            error,
        } => put_count_answer(w, 6, consumer, *queue, *message_count, error.as_ref()),
        QueueEvent::Declared {
            consumer,
            queue,
            message_count,
            consumer_count,
            error,
        } => {
            w.put_u64(*queue);
            w.put_u8(7);
            put_consumer(w, consumer);
            w.put_u32(*message_count);
            w.put_u32(*consumer_count);
            put_optional_error(w, error.as_ref());
        }
    }
}

/// An owner's answer with a message count or an error (`Purged`, `Deleted`).
fn put_count_answer(
    w: &mut BytesMut,
    kind: u8,
    consumer: &ConsumerRef,
    queue: u64,
    message_count: u32,
    error: Option<&AmqpError>,
) {
    w.put_u64(queue);
    w.put_u8(kind);
    put_consumer(w, consumer);
    w.put_u32(message_count);
    put_optional_error(w, error);
}

fn put_optional_error(w: &mut BytesMut, error: Option<&AmqpError>) {
    match error {
        None => put_bool(w, false),
        Some(e) => {
            put_bool(w, true);
            put_error(w, e);
        }
    }
}

fn read_optional_error(r: &mut Reader) -> Result<Option<AmqpError>, CodecError> {
    Ok(if read_bool(r)? {
        Some(read_error(r)?)
    } else {
        None
    })
}

/// A delivery's fields after its queue id: consumer, number, redelivered, count, message.
fn put_delivery(w: &mut BytesMut, d: &Delivery) {
    put_consumer(w, &d.consumer);
    w.put_u64(d.seq);
    put_bool(w, d.redelivered);
    w.put_u32(d.delivery_count);
    put_message(w, &d.message);
}

fn read_delivery(r: &mut Reader, queue: u64) -> Result<Delivery, CodecError> {
    Ok(Delivery {
        consumer: read_consumer(r)?,
        queue,
        seq: r.u64()?,
        redelivered: read_bool(r)?,
        delivery_count: r.u32()?,
        message: std::sync::Arc::new(read_message(r)?),
    })
}

fn read_queue_event(r: &mut Reader, queue: u64) -> Result<QueueEvent, CodecError> {
    Ok(match r.u8()? {
        0 => QueueEvent::Consumed {
            consumer: read_consumer(r)?,
            queue,
            error: read_optional_error(r)?,
        },
        1 => QueueEvent::Deliver(read_delivery(r, queue)?),
        2 => QueueEvent::CancelOk {
            consumer: read_consumer(r)?,
            queue,
        },
        3 => QueueEvent::Got {
            delivery: read_delivery(r, queue)?,
            message_count: r.u32()?,
        },
        4 => QueueEvent::GotNothing {
            consumer: read_consumer(r)?,
            queue,
            error: read_optional_error(r)?,
        },
        5 => QueueEvent::Purged {
            consumer: read_consumer(r)?,
            queue,
            message_count: r.u32()?,
            error: read_optional_error(r)?,
        },
        6 => QueueEvent::Deleted {
            consumer: read_consumer(r)?,
            queue,
            message_count: r.u32()?,
            error: read_optional_error(r)?,
        },
        7 => QueueEvent::Declared {
            consumer: read_consumer(r)?,
            queue,
            message_count: r.u32()?,
            consumer_count: r.u32()?,
            error: read_optional_error(r)?,
        },
        _ => return Err(CodecError::new("unknown queue event")),
    })
}

fn read_short(r: &mut Reader) -> Result<ShortStr, CodecError> {
    Ok(ShortStr::from(read_text(r)?))
}

fn read_resume(r: &mut Reader) -> Result<ResumeSession, CodecError> {
    let user = read_text(r)?;
    let vhost = read_text(r)?;
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
                mechanism: read_text(&mut r)?,
                username: read_text(&mut r)?,
                password: read_text(&mut r)?,
                peer_loopback: read_bool(&mut r)?,
                client_properties: r.table()?,
            }),
            3 => Up::Input(Input::OpenVhost {
                conn,
                vhost: read_text(&mut r)?,
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
            10 => Up::Hello {
                node: conn,
                home: read_bool(&mut r)?,
                incarnation: 0,
            },
            HELLO => Up::Hello {
                node: conn,
                home: read_bool(&mut r)?,
                incarnation: r.u64()?,
            },
            11 => Up::Barrier(conn),
            12 => Up::Input(Input::OpenHome {
                conn,
                client: r.u64()?,
                user: read_text(&mut r)?,
                vhost: read_text(&mut r)?,
                client_properties: r.table()?,
            }),
            13 => Up::Forward {
                queue: conn,
                message: read_message(&mut r)?,
            },
            14 => Up::Propose(warren_raft::decode_command(read_long(&mut r)?)?),
            QUEUE_COMMAND => Up::QueueCommand(read_queue_command(&mut r, conn)?),
            QUEUE_EVENT => Up::QueueEvent(read_queue_event(&mut r, conn)?),
            _ => return Err(CodecError::new("unknown relay message")),
        });
    }
    Ok(out)
}

/// Appends one [`Down`] message to `w`. Effects that are the sending node's own business
/// (`Propose`, `Forward`) never travel: they are encoded as nothing.
pub(crate) fn encode_down(w: &mut BytesMut, d: &Down) {
    match d {
        Down::Effect(e) => encode_effect(w, e),
        Down::Forwarded { upto } => {
            w.put_u8(8);
            w.put_u64(*upto);
        }
    }
}

/// Appends one effect to `w` (see [`encode_down`]).
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
        Effect::ForwardRefused { to, seq } => {
            w.put_u8(7);
            w.put_u64(*to);
            w.put_u64(*seq);
        }
        Effect::Redirect {
            conn,
            channel,
            method,
        } => {
            w.put_u8(9);
            w.put_u64(*conn);
            w.put_u16(*channel);
            put_method(w, method);
        }
        // A client's publishes go to the home session on its own node: one elsewhere never
        // pauses it for credit flow.
        Effect::Propose { .. }
        | Effect::Forward { .. }
        | Effect::Synced { .. }
        | Effect::Flow { .. } => {}
        // Between nodes' brokers, not for a session (see `Input::QueueCommand` above).
        Effect::ToOwner { .. } | Effect::ToChannel { .. } => {}
    }
}

/// Decodes every [`Down`] message in `bytes`.
pub(crate) fn decode_downs(bytes: Bytes) -> Result<Vec<Down>, CodecError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let tag = r.u8()?;
        let conn = r.u64()?;
        out.push(Down::Effect(match tag {
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
                user: read_text(&mut r)?,
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
            7 => Effect::ForwardRefused {
                to: conn,
                seq: r.u64()?,
            },
            8 => {
                out.push(Down::Forwarded { upto: conn });
                continue;
            }
            9 => Effect::Redirect {
                conn,
                channel: r.u16()?,
                method: read_method(&mut r)?,
            },
            _ => return Err(CodecError::new("unknown relay effect")),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::{
        BasicDeliver, BasicProperties, FieldTable, FieldValue, QueueDeclare, ShortStr,
    };

    fn sample_message() -> Message {
        Message {
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            properties: BasicProperties {
                correlation_id: Some("c1".into()),
                ..Default::default()
            },
            body: Bytes::from_static(b"reply"),
        }
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
            Up::Hello {
                node: 2,
                home: true,
                incarnation: 1 << 40 | 3,
            },
            Up::Barrier(12),
            Up::Input(Input::OpenHome {
                conn: 8,
                client: 7,
                user: "guest".into(),
                vhost: "/".into(),
                client_properties: FieldTable::default(),
            }),
            Up::Forward {
                queue: 4,
                message: sample_message(),
            },
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
            Effect::ForwardRefused { to: 3, seq: 99 },
            Effect::Redirect {
                conn: 9,
                channel: 4,
                method: Method::QueueDeclare(QueueDeclare {
                    queue: "q".into(),
                    passive: true,
                    ..Default::default()
                }),
            },
        ];
        let mut downs: Vec<Down> = effects.into_iter().map(Down::Effect).collect();
        downs.push(Down::Forwarded { upto: 41 });
        let mut w = BytesMut::new();
        for d in &downs {
            encode_down(&mut w, d);
        }
        assert_eq!(decode_downs(w.freeze()), Ok(downs));
    }

    #[test]
    fn queue_commands_and_events_have_these_bytes_and_round_trip() {
        let consumer = ConsumerRef {
            conn: 7,
            channel: 1,
            tag: "c".into(),
        };
        let getter = ConsumerRef {
            tag: "".into(),
            ..consumer.clone()
        };
        let golden: [(Up, &[u8]); 3] = [
            (
                Up::Hello {
                    node: 2,
                    home: true,
                    incarnation: 258,
                },
                // tag 17, the node, home, the incarnation.
                &[17, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 1, 2],
            ),
            (
                Up::QueueCommand(QueueCommand::Settle {
                    queue: 5,
                    seqs: vec![1, 300],
                }),
                // tag 15, the queue, kind 2, two varints (300 takes two bytes).
                &[15, 0, 0, 0, 0, 0, 0, 0, 5, 2, 2, 1, 0xac, 0x02],
            ),
            (
                Up::QueueCommand(QueueCommand::Cancel {
                    consumer: consumer.clone(),
                    queue: 5,
                }),
                // tag 15, the queue, kind 5, the consumer: connection, channel, tag.
                &[
                    15, 0, 0, 0, 0, 0, 0, 0, 5, 5, 0, 0, 0, 0, 0, 0, 0, 7, 0, 1, 0, 0, 0, 1, b'c',
                ],
            ),
        ];
        for (up, bytes) in golden {
            let mut w = BytesMut::new();
            encode_up(&mut w, &up);
            assert_eq!(&w[..], bytes, "{up:?}");
            assert_eq!(decode_ups(w.freeze()), Ok(vec![up]));
        }
        let ups = vec![
            Up::QueueCommand(QueueCommand::Consume {
                consumer: consumer.clone(),
                queue: 9,
                credit: 200,
                priority: -3,
                no_ack: true,
                exclusive: false,
                held: vec![3, 900, 70_000],
            }),
            Up::QueueCommand(QueueCommand::Credit {
                consumer: consumer.clone(),
                queue: 9,
                credit: 1,
            }),
            Up::QueueCommand(QueueCommand::Return {
                queue: 9,
                seqs: vec![4, 2],
            }),
            Up::QueueCommand(QueueCommand::Discard {
                queue: 9,
                seqs: vec![],
            }),
            Up::QueueEvent(QueueEvent::Consumed {
                consumer: consumer.clone(),
                queue: 9,
                error: None,
            }),
            Up::QueueEvent(QueueEvent::Consumed {
                consumer: consumer.clone(),
                queue: 9,
                error: Some(AmqpError::access_refused("in exclusive use").caused_by(60, 20)),
            }),
            Up::QueueEvent(QueueEvent::Deliver(Delivery {
                consumer: consumer.clone(),
                queue: 9,
                seq: 70_000,
                redelivered: true,
                delivery_count: 2,
                message: std::sync::Arc::new(sample_message()),
            })),
            Up::QueueEvent(QueueEvent::CancelOk {
                consumer: consumer.clone(),
                queue: 9,
            }),
            Up::QueueCommand(QueueCommand::Get {
                consumer: getter.clone(),
                queue: 9,
                no_ack: true,
                applied: 1 << 40,
            }),
            Up::QueueEvent(QueueEvent::Got {
                delivery: Delivery {
                    consumer: getter.clone(),
                    queue: 9,
                    seq: 3,
                    redelivered: false,
                    delivery_count: 0,
                    message: std::sync::Arc::new(sample_message()),
                },
                message_count: 41,
            }),
            Up::QueueEvent(QueueEvent::GotNothing {
                consumer: getter.clone(),
                queue: 9,
                error: None,
            }),
            Up::QueueEvent(QueueEvent::GotNothing {
                consumer: getter.clone(),
                queue: 9,
                error: Some(AmqpError::not_found("gone").caused_by(60, 70)),
            }),
            Up::QueueCommand(QueueCommand::Purge {
                consumer: getter.clone(),
                queue: 9,
                reply: false,
            }),
            Up::QueueEvent(QueueEvent::Purged {
                consumer: getter.clone(),
                queue: 9,
                message_count: 12,
                error: None,
            }),
            Up::QueueCommand(QueueCommand::Delete {
                consumer: getter.clone(),
                queue: 9,
                if_unused: true,
                if_empty: false,
            }),
            Up::QueueEvent(QueueEvent::Deleted {
                consumer: getter.clone(),
                queue: 9,
                message_count: 0,
                error: Some(AmqpError::precondition_failed("in use").caused_by(50, 40)),
            }),
            Up::QueueCommand(QueueCommand::Declare {
                consumer: getter.clone(),
                queue: 9,
                reply: true,
            }),
            Up::QueueEvent(QueueEvent::Declared {
                consumer: getter,
                queue: 9,
                message_count: 3,
                consumer_count: 2,
                error: None,
            }),
        ];
        let mut w = BytesMut::new();
        for up in &ups {
            encode_up(&mut w, up);
        }
        assert_eq!(decode_ups(w.freeze()), Ok(ups));
        let unknown_kind = Bytes::from_static(&[16, 0, 0, 0, 0, 0, 0, 0, 9, 99]);
        assert!(decode_ups(unknown_kind).is_err());
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
            assert!(decode_downs(b.slice(..cut)).is_err());
        }
    }
}
