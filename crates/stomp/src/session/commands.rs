//! What each client command of an open session does, in AMQP steps (see the parent module),
//! with RabbitMQ's STOMP plugin as the reference for every choice and every error text:
//!
//! - SEND: to the destination's exchange and routing key (see [`crate::destination`]);
//!   `/queue/NAME` is declared on its first use by the connection (durable unless
//!   `persistent`/`durable` say `false`, which makes it exclusive and auto-delete); a
//!   `reply-to` of `/temp-queue/NAME` makes a broker-named queue private to the session,
//!   consumed as subscription `/temp-queue/NAME`. A `receipt` is answered once the broker has
//!   confirmed the message (on a cluster: a quorum has it on disk).
//! - SUBSCRIBE: a consumer tagged `T_<id>` (`Q_<destination>` without an id) on the queue of
//!   the destination — a topic or exchange subscription gets a queue of its own
//!   (`stomp-subscription-…`; durable, with RabbitMQ's name for it, with `durable:true` and an
//!   id); ack modes `auto`, `client` (cumulative, per subscription) and `client-individual`;
//!   `prefetch-count`; RabbitMQ's `x-` queue arguments; `x-stream-offset` and `x-priority`.
//! - UNSUBSCRIBE (`durable:true` also deletes a durable subscription's queue), ACK and NACK
//!   (by the `ack` header of 1.2, or the `message-id` of 1.0 and 1.1; NACK requeues unless
//!   `requeue:false`), BEGIN/COMMIT/ABORT (SEND, ACK and NACK of a transaction are held and done
//!   at COMMIT).

use std::collections::BTreeSet;

use warren_wire::{
    BasicAck, BasicCancel, BasicConsume, BasicNack, BasicQos, FieldTable, Method, QueueBind,
    QueueDeclare, QueueDelete,
};

use warren_bridge::Step;

use super::{parse_message_id, AckMode, Publish, Refusal, Session, Subscription, Token};
use crate::destination::Destination;
use crate::queue_name;
use crate::{Frame, Version};

/// How to declare a queue.
struct Declare {
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: FieldTable,
}

/// A header's `true`/`false`, if there.
fn flag(frame: &Frame, name: &str) -> Option<bool> {
    frame.header(name).map(|v| v.eq_ignore_ascii_case("true"))
}

/// The consumer tag of a subscription: `T_<id>`, or `Q_<destination>` without an id.
fn consumer_tag(id: Option<&str>, destination: &str) -> String {
    match id {
        Some(id) => format!("T_{id}"),
        None => format!("Q_{destination}"),
    }
}

impl Session {
    /// The frame's destination: parsed, or the refusal RabbitMQ answers with.
    fn destination(frame: &Frame) -> Result<(String, Destination), Refusal> {
        let command = frame.command.as_str();
        let Some(text) = frame.header("destination") else {
            return Err(Refusal::keep(
                "Missing destination",
                format!("\"{command}\" must include a 'destination' header\n"),
            ));
        };
        if text == "/queue/" || text == "/amq/queue/" {
            return Err(Refusal::keep(
                "Invalid destination",
                "'/' is not a valid queue destination\n",
            ));
        }
        match Destination::parse(text) {
            Ok(d) => Ok((text.to_owned(), d)),
            Err(_) => Err(Refusal::keep(
                "Unknown destination",
                format!(
                    "'{text}' is not a valid destination.\nValid destination types are: \
                     /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n"
                ),
            )),
        }
    }

    /// How a `/queue/NAME` is declared, from the headers of the SEND or SUBSCRIBE that first
    /// names it: durable by default; not durable means exclusive and auto-delete unless the
    /// headers say otherwise.
    fn queue_declare(frame: &Frame) -> Declare {
        let durable = flag(frame, "durable")
            .or_else(|| flag(frame, "persistent"))
            .unwrap_or(true);
        Declare {
            durable,
            exclusive: flag(frame, "exclusive").unwrap_or(!durable),
            auto_delete: flag(frame, "auto-delete").unwrap_or(!durable),
            arguments: queue_name::queue_arguments(frame),
        }
    }

    fn declare(&mut self, queue: &str, how: Declare, token: Token) {
        self.bridge.push(Step::Sync(
            Method::QueueDeclare(QueueDeclare {
                ticket: 0,
                queue: queue.into(),
                passive: false,
                durable: how.durable,
                exclusive: how.exclusive,
                auto_delete: how.auto_delete,
                nowait: false,
                arguments: how.arguments,
            }),
            token,
        ));
    }

    /// Declares `/queue/NAME` the first time the connection names it.
    fn declare_once(&mut self, queue: &str, frame: &Frame) {
        if self.declared.insert(queue.to_owned()) {
            self.declare(queue, Self::queue_declare(frame), Token::None);
        }
    }

    pub(super) fn send(&mut self, frame: &Frame) -> Result<(), Refusal> {
        let (text, destination) = Self::destination(frame)?;
        if frame.header("message-id").is_some() {
            return Err(Refusal::keep(
                "Invalid header",
                "'message-id' is not allowed on 'SEND'.\n",
            ));
        }
        let Some((exchange, routing_key)) = destination.publish_to() else {
            return Err(Refusal::keep(
                "Invalid destination",
                format!("'{text}' is not a valid destination for 'SEND'\n"),
            ));
        };
        let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
        if let Destination::Queue(queue) = &destination {
            self.declare_once(queue, frame);
        }
        let properties = crate::properties::of_send(&frame.headers, None);
        let body = frame.body.clone();
        let reply_to = frame.header("reply-to").map(str::to_owned);
        let receipt = frame.header("receipt").map(str::to_owned);
        match reply_to.as_deref().map(Destination::parse) {
            Some(Ok(Destination::TempQueue(name))) => {
                self.temp_queue(&name);
                let publish = Publish {
                    exchange,
                    routing_key,
                    properties,
                    temp: name,
                    body,
                    receipt,
                };
                self.bridge
                    .push(Step::Mark(Token::PublishTemp(Box::new(publish))));
            }
            _ => {
                let properties = crate::properties::of_send(&frame.headers, reply_to);
                self.bridge.push(Step::Publish {
                    exchange,
                    routing_key,
                    properties: Box::new(properties),
                    body,
                    token: receipt.map_or(Token::None, Token::Receipt),
                });
            }
        }
        Ok(())
    }

    /// Makes the queue of `/temp-queue/NAME` (named by the broker, private to the connection)
    /// and consumes from it, the first time.
    fn temp_queue(&mut self, name: &str) {
        if self.temp_queues.contains_key(name) {
            return;
        }
        self.temp_queues.insert(name.to_owned(), None);
        let how = Declare {
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: FieldTable::default(),
        };
        self.declare("", how, Token::TempQueue(name.to_owned()));
        let id = format!("/temp-queue/{name}");
        let tag = consumer_tag(Some(&id), &id);
        self.bridge.push(Step::Mark(Token::ConsumeTemp {
            name: name.to_owned(),
            tag: tag.clone(),
        }));
        self.subscriptions.insert(
            tag,
            Subscription {
                id: Some(id),
                ack: AckMode::Auto,
                queue: String::new(),
                unacked: BTreeSet::new(),
                own_durable_queue: false,
                cancelled: false,
            },
        );
    }

    pub(super) fn subscribe(&mut self, frame: &Frame) -> Result<(), Refusal> {
        let (text, destination) = Self::destination(frame)?;
        let id = frame.header("id").map(str::to_owned);
        let tag = consumer_tag(id.as_deref(), &text);
        if self.subscriptions.contains_key(&tag) {
            return Err(Refusal::close(
                "Duplicated subscription identifier",
                format!("A subscription identified by '{tag}' already exists."),
            ));
        }
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            _ => return Err(Refusal::keep("Processing error", "Processing error")),
        };
        let prefetch = match frame.header("prefetch-count") {
            None => 0,
            Some(text) => text
                .trim()
                .parse::<u16>()
                .map_err(|_| Refusal::keep("Processing error", "Processing error"))?,
        };
        let durable_subscription = flag(frame, "durable")
            .or_else(|| flag(frame, "persistent"))
            .unwrap_or(false);
        let (queue, own_durable_queue) = match &destination {
            Destination::Queue(queue) => {
                self.declare_once(queue, frame);
                (queue.clone(), false)
            }
            Destination::AmqQueue(queue) => (queue.clone(), false),
            Destination::Topic(_) | Destination::Exchange { .. } => {
                let (exchange, key) = destination
                    .publish_to()
                    .map(|(e, k)| (e.to_owned(), k.to_owned()))
                    .unwrap_or_default();
                let queue = if durable_subscription {
                    let Some(id) = &id else {
                        return Err(Refusal::keep(
                            "Missing Header",
                            "Header 'id' is required for durable subscriptions",
                        ));
                    };
                    match frame.header("x-queue-name") {
                        Some(name) => name.to_owned(),
                        None => queue_name::durable_subscription(&key, id),
                    }
                } else {
                    match frame.header("x-queue-name") {
                        Some(name) => name.to_owned(),
                        None => queue_name::random_subscription(self.names.bytes()),
                    }
                };
                let how = Declare {
                    durable: durable_subscription,
                    exclusive: flag(frame, "exclusive").unwrap_or(false),
                    auto_delete: flag(frame, "auto-delete").unwrap_or(true),
                    arguments: queue_name::queue_arguments(frame),
                };
                self.declare(&queue, how, Token::None);
                self.bridge.push(Step::Sync(
                    Method::QueueBind(QueueBind {
                        ticket: 0,
                        queue: queue.as_str().into(),
                        exchange: exchange.into(),
                        routing_key: key.into(),
                        nowait: false,
                        arguments: FieldTable::default(),
                    }),
                    Token::None,
                ));
                (queue, durable_subscription)
            }
            Destination::TempQueue(_) | Destination::ReplyQueue(_) => {
                return Err(Refusal::keep(
                    "Invalid destination",
                    format!("'{text}' is not a valid destination for 'SUBSCRIBE'\n"),
                ))
            }
        };
        if ack != AckMode::Auto && prefetch != self.prefetch {
            self.prefetch = prefetch;
            self.bridge.push(Step::Sync(
                Method::BasicQos(BasicQos {
                    prefetch_size: 0,
                    prefetch_count: prefetch,
                    global: false,
                }),
                Token::None,
            ));
        }
        self.bridge.push(Step::Sync(
            Method::BasicConsume(BasicConsume {
                ticket: 0,
                queue: queue.as_str().into(),
                consumer_tag: tag.as_str().into(),
                no_local: false,
                no_ack: ack == AckMode::Auto,
                exclusive: false,
                nowait: false,
                arguments: queue_name::consumer_arguments(frame),
            }),
            Token::None,
        ));
        self.subscriptions.insert(
            tag,
            Subscription {
                id,
                ack,
                queue,
                unacked: BTreeSet::new(),
                own_durable_queue,
                cancelled: false,
            },
        );
        Ok(())
    }

    pub(super) fn unsubscribe(&mut self, frame: &Frame) -> Result<(), Refusal> {
        let (tag, which) = match (frame.header("id"), frame.header("destination")) {
            (Some(id), _) if id.starts_with("/temp-queue/") => {
                return Err(Refusal::keep(
                    "Invalid id",
                    "UNSUBSCRIBE 'id' may not start with /temp-queue/\n",
                ))
            }
            (Some(id), _) => (consumer_tag(Some(id), ""), format!("id='{id}'")),
            (None, Some(d)) => (consumer_tag(None, d), format!("destination='{d}'")),
            (None, None) => {
                return Err(Refusal::keep(
                    "Missing destination or id",
                    "UNSUBSCRIBE must include a 'destination' or 'id' header",
                ))
            }
        };
        let Some(sub) = self.subscriptions.get_mut(&tag).filter(|s| !s.cancelled) else {
            return Err(Refusal::keep(
                "No subscription found",
                format!(
                    "UNSUBSCRIBE must refer to an existing subscription.\n\
                     Subscription to \"{which}\" not found.\n"
                ),
            ));
        };
        sub.cancelled = true;
        let delete = sub.own_durable_queue
            && (flag(frame, "durable") == Some(true) || flag(frame, "persistent") == Some(true));
        let queue = sub.queue.clone();
        self.bridge.push(Step::Sync(
            Method::BasicCancel(BasicCancel {
                consumer_tag: tag.as_str().into(),
                nowait: false,
            }),
            Token::None,
        ));
        self.bridge.push(Step::Mark(Token::Forget(tag)));
        if delete {
            self.bridge.push(Step::Sync(
                Method::QueueDelete(QueueDelete {
                    ticket: 0,
                    queue: queue.into(),
                    if_unused: false,
                    if_empty: false,
                    nowait: false,
                }),
                Token::None,
            ));
        }
        Ok(())
    }

    /// ACK (`ack` true) or NACK of a MESSAGE.
    pub(super) fn settle(&mut self, frame: &Frame, ack: bool) -> Result<(), Refusal> {
        let command = frame.command.as_str();
        let name = if self.version >= Version::V1_2 {
            "id"
        } else {
            "message-id"
        };
        let Some(id) = frame.header(name) else {
            return Err(Refusal::keep(
                "Missing header",
                format!("\"{command}\" must include the \"{name}\" header\n"),
            ));
        };
        let Some((tag, delivery)) = parse_message_id(id) else {
            return Err(Refusal::keep(
                "Invalid header",
                format!("\"{command}\" must include a valid \"{name}\" header\n"),
            ));
        };
        let requeue = frame.header("requeue") != Some("false");
        let Some(sub) = self.subscriptions.get_mut(tag) else {
            return Err(Refusal::keep(
                "Subscription not found",
                format!("Message with id \"{id}\" has no subscription"),
            ));
        };
        let tags: Vec<u64> = match sub.ack {
            // Auto mode: the broker needs nothing.
            AckMode::Auto => Vec::new(),
            AckMode::ClientIndividual => sub.unacked.take(&delivery).into_iter().collect(),
            // Every earlier message of this subscription (not of the channel's others).
            AckMode::Client => {
                let later = sub.unacked.split_off(&(delivery + 1));
                let settled = std::mem::replace(&mut sub.unacked, later);
                settled.into_iter().collect()
            }
        };
        for delivery_tag in tags {
            let method = if ack {
                Method::BasicAck(BasicAck {
                    delivery_tag,
                    multiple: false,
                })
            } else {
                Method::BasicNack(BasicNack {
                    delivery_tag,
                    multiple: false,
                    requeue,
                })
            };
            self.bridge.push(Step::Async(method));
        }
        Ok(())
    }

    fn transaction_id(frame: &Frame) -> Result<String, Refusal> {
        frame
            .header("transaction")
            .map(str::to_owned)
            .ok_or_else(|| {
                Refusal::keep(
                    "Missing transaction",
                    format!(
                        "\"{}\" must include a 'transaction' header\n",
                        frame.command.as_str()
                    ),
                )
            })
    }

    fn bad_transaction(tx: &str) -> Refusal {
        Refusal::keep(
            "Bad transaction",
            format!("Invalid transaction identifier: \"{tx}\"\n"),
        )
    }

    pub(super) fn begin(&mut self, frame: &Frame) -> Result<(), Refusal> {
        let tx = Self::transaction_id(frame)?;
        if self.transactions.contains_key(&tx) {
            return Err(Self::bad_transaction(&tx));
        }
        self.transactions.insert(tx, Vec::new());
        Ok(())
    }

    pub(super) fn commit(&mut self, frame: &Frame) -> Result<(), Refusal> {
        let tx = Self::transaction_id(frame)?;
        let Some(held) = self.transactions.remove(&tx) else {
            return Err(Self::bad_transaction(&tx));
        };
        for frame in held {
            self.execute(frame);
            if self.is_closed() {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn abort(&mut self, frame: &Frame) -> Result<(), Refusal> {
        let tx = Self::transaction_id(frame)?;
        match self.transactions.remove(&tx) {
            Some(_) => Ok(()),
            None => Err(Self::bad_transaction(&tx)),
        }
    }
}
