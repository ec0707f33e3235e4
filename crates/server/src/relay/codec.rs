//! The byte encoding of the traffic between nodes' brokers on home streams: what a node sends
//! another ([`Up`]: its hello, messages forwarded to local queues homed there, logged commands
//! for the leader, queue commands and events, its client counts) and what comes back
//! ([`Down`]: how many forwards were taken, and which were refused). Properties travel as AMQP
//! content headers, so this encoding follows the wire codec wherever AMQP already defines the
//! bytes. Every message starts with a tag byte and a u64 (a node, queue or connection id).

use bytes::{BufMut, Bytes, BytesMut};

use warren_core::{
    AmqpError, ClientCounts, Command, ConsumerRef, Delivery, Message, QueueCommand, QueueEvent,
};
use warren_raft::CodecError;
use warren_wire::record::{
    put_bool, put_count, put_long, put_properties, put_varints, read_bool, read_long,
    read_properties, read_text, read_varints,
};
use warren_wire::{Reader, ShortStr};

/// One message from a node to another node's broker, on the sender's home stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Up {
    /// The first message of a stream: the node it comes from. `incarnation` grows with each
    /// stream the sender opens (across its restarts too: see `relay::links`): a stream that
    /// says hello with a higher one replaces the sender's earlier stream, and what the two
    /// nodes' brokers shared over that one is dropped first (`Input::PeerLost`). Tag 17, with
    /// a flag that is always set (a *home* stream: the clients' sessions relayed to the
    /// leader before issue 19's step 4 had it clear, and are refused now).
    Hello { node: u64, incarnation: u64 },
    /// A message for a local queue homed on the receiver (`warren_core::Effect::Forward`); the
    /// stream numbers them from 1. Tag 13.
    Forward { queue: u64, message: Message },
    /// A command of the sender's broker for the receiver, the leader, to propose (a logged
    /// publish or topology command: see `crate::proposer`), in its log encoding. Tag 14.
    Propose(Command),
    /// A queue command of a channel on the sender for a queue the receiver owns
    /// (`warren_core::Effect::ToOwner`). Tag 15.
    QueueCommand(QueueCommand),
    /// A queue owner's answer for a channel on the receiver (`warren_core::Effect::ToChannel`).
    /// Tag 16.
    QueueEvent(QueueEvent),
    /// The sender's counts of its client connections and channels, for the limits
    /// (`warren_core::Input::PeerCounts`). Tag 18.
    Counts(ClientCounts),
}

/// One message back on a home stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Down {
    /// The receiver refused forward `seq` of the stream (`x-overflow` `reject-publish`):
    /// `warren_core::Effect::ForwardRefused` of node `to`. Tag 7.
    Refused { to: u64, seq: u64 },
    /// The receiver has handled the first `upto` forwards of the stream. Tag 8.
    Forwarded { upto: u64 },
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

/// Appends one [`Up`] message to `w`.
pub(crate) fn encode_up(w: &mut BytesMut, up: &Up) {
    match up {
        Up::Hello { node, incarnation } => {
            w.put_u8(HELLO);
            w.put_u64(*node);
            put_bool(w, true);
            w.put_u64(*incarnation);
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
        Up::Counts(counts) => {
            w.put_u8(COUNTS);
            w.put_u64(0);
            for table in [
                &counts.vhost_connections,
                &counts.user_connections,
                &counts.user_channels,
            ] {
                put_count(w, table.len());
                for (name, n) in table {
                    put_long(w, name.as_bytes());
                    w.put_u32(*n);
                }
            }
        }
    }
}

fn read_counts(r: &mut Reader) -> Result<ClientCounts, CodecError> {
    let mut counts = ClientCounts::default();
    for table in [
        &mut counts.vhost_connections,
        &mut counts.user_connections,
        &mut counts.user_channels,
    ] {
        let n = r.u32()?;
        for _ in 0..n {
            let name = read_text(r)?;
            table.insert(name, r.u32()?);
        }
    }
    Ok(counts)
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
/// The tag of [`Up::Counts`].
const COUNTS: u8 = 18;

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

/// Decodes every [`Up`] message in `bytes`.
pub(crate) fn decode_ups(bytes: Bytes) -> Result<Vec<Up>, CodecError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let tag = r.u8()?;
        let id = r.u64()?;
        out.push(match tag {
            HELLO => {
                if !read_bool(&mut r)? {
                    return Err(CodecError::new(
                        "a stream of relayed client sessions (a node older than issue 19's step 4)",
                    ));
                }
                Up::Hello {
                    node: id,
                    incarnation: r.u64()?,
                }
            }
            13 => Up::Forward {
                queue: id,
                message: read_message(&mut r)?,
            },
            14 => Up::Propose(warren_raft::decode_command(read_long(&mut r)?)?),
            QUEUE_COMMAND => Up::QueueCommand(read_queue_command(&mut r, id)?),
            QUEUE_EVENT => Up::QueueEvent(read_queue_event(&mut r, id)?),
            COUNTS => Up::Counts(read_counts(&mut r)?),
            _ => return Err(CodecError::new("unknown relay message")),
        });
    }
    Ok(out)
}

/// Appends one [`Down`] message to `w`.
pub(crate) fn encode_down(w: &mut BytesMut, d: &Down) {
    match d {
        Down::Refused { to, seq } => {
            w.put_u8(7);
            w.put_u64(*to);
            w.put_u64(*seq);
        }
        Down::Forwarded { upto } => {
            w.put_u8(8);
            w.put_u64(*upto);
        }
    }
}

/// Decodes every [`Down`] message in `bytes`.
pub(crate) fn decode_downs(bytes: Bytes) -> Result<Vec<Down>, CodecError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let tag = r.u8()?;
        let id = r.u64()?;
        out.push(match tag {
            7 => Down::Refused {
                to: id,
                seq: r.u64()?,
            },
            8 => Down::Forwarded { upto: id },
            _ => return Err(CodecError::new("unknown relay answer")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::BasicProperties;

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
        let mut counts = ClientCounts::default();
        counts.vhost_connections.insert("/".into(), 3);
        counts.user_connections.insert("guest".into(), 2);
        counts.user_connections.insert("bob".into(), 1);
        counts.user_channels.insert("guest".into(), 70_000);
        let ups = vec![
            Up::Hello {
                node: 2,
                incarnation: 1 << 40 | 3,
            },
            Up::Forward {
                queue: 4,
                message: sample_message(),
            },
            Up::Counts(counts),
            Up::Counts(ClientCounts::default()),
        ];
        let mut w = BytesMut::new();
        for u in &ups {
            encode_up(&mut w, u);
        }
        assert_eq!(decode_ups(w.freeze()), Ok(ups));
    }

    #[test]
    fn counts_and_hello_have_these_bytes() {
        let mut counts = ClientCounts::default();
        counts.user_channels.insert("g".into(), 5);
        let mut w = BytesMut::new();
        encode_up(&mut w, &Up::Counts(counts));
        encode_up(
            &mut w,
            &Up::Hello {
                node: 3,
                incarnation: 9,
            },
        );
        #[rustfmt::skip]
        let expected: &[u8] = &[
            18, 0, 0, 0, 0, 0, 0, 0, 0, // tag, unused id
            0, 0, 0, 0, // no vhost connections
            0, 0, 0, 0, // no user connections
            0, 0, 0, 1, 0, 0, 0, 1, b'g', 0, 0, 0, 5, // one user's channels
            17, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 9, // hello
        ];
        assert_eq!(&w[..], expected);
    }

    #[test]
    fn a_relayed_session_stream_is_refused() {
        // The hello of a node older than issue 19's step 4 relaying its clients' sessions.
        let old: &[u8] = &[17, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        assert!(decode_ups(Bytes::copy_from_slice(old)).is_err());
    }

    #[test]
    fn every_kind_of_down_message_round_trips() {
        let downs = vec![
            Down::Refused { to: 3, seq: 99 },
            Down::Forwarded { upto: 41 },
        ];
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
                    incarnation: 258,
                },
                // tag 17, the node, the home flag (always set), the incarnation.
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
        let mut counts = ClientCounts::default();
        counts.vhost_connections.insert("/".into(), 3);
        let mut w = BytesMut::new();
        encode_up(&mut w, &Up::Counts(counts));
        let b = w.freeze();
        for cut in 1..b.len() {
            assert!(decode_ups(b.slice(..cut)).is_err());
        }
        let mut w = BytesMut::new();
        encode_down(&mut w, &Down::Refused { to: 1, seq: 2 });
        let b = w.freeze();
        for cut in 1..b.len() {
            assert!(decode_downs(b.slice(..cut)).is_err());
        }
    }
}
