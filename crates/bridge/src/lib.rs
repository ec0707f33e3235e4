//! The AMQP 0-9-1 client half of a protocol adapter (STOMP, MQTT), sans-io: RabbitMQ's plugins
//! serve a client of another protocol by opening an AMQP connection for it, and so does Warren
//! (see `warren-server`'s `translated` module). A [`Bridge`] is that connection's client side:
//! it logs in (PLAIN), opens channel 1 in confirm mode, then does the adapter's [`Step`]s in
//! order — a synchronous method's reply is awaited before the next step goes — and reports what
//! the broker says as [`Event`]s: replies, confirms, whole deliveries, cancels, closes.
//!
//! Steps carry the adapter's own tokens (`T`), handed back in the events they cause: the reply
//! of a synchronous method, the confirm of a publish, a [`Step::Mark`] reached (everything
//! queued before it is done, e.g. to send a receipt, or to build the next step from a reply).
//! [`Bridge::drive`] stops after each mark, so the adapter can act on it (and put steps at the
//! front) before the steps behind it go.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use warren_wire::constants;
use warren_wire::{
    BasicDeliver, BasicProperties, BasicPublish, ChannelCloseOk, ChannelOpen, ConfirmSelect,
    ConnectionClose, ConnectionCloseOk, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk,
    FieldTable, Frame, FrameDecoder, Method, OutBuf, ShortStr, WireError,
};

/// The channel a bridge works on.
pub const CHANNEL: u16 = 1;
/// The channel of [`Step::Try`]s (a refusal closes it, not the bridge's channel).
const TRY_CHANNEL: u16 = 2;
/// The frame-max a bridge asks for (at most; the broker's tune may lower it).
const FRAME_MAX: u32 = 128 * 1024;

/// Who the bridge logs in as, where, and what it tells the broker about its client.
#[derive(Clone, Debug, Default)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub vhost: String,
    /// The client properties of `connection.start-ok`.
    pub client_properties: FieldTable,
}

/// One step of an adapter's work, done in the order given.
#[derive(Debug)]
pub enum Step<T> {
    /// A synchronous method: the next step waits for its reply ([`Event::Reply`] with `T`).
    Sync(Method, T),
    /// An asynchronous method (acks, rejects).
    Async(Method),
    /// A message to publish; its confirm comes back as [`Event::Confirmed`] with `T`.
    Publish {
        exchange: String,
        routing_key: String,
        properties: Box<BasicProperties>,
        body: Bytes,
        token: T,
    },
    /// Reports [`Event::Reached`] when every step before it is done.
    Mark(T),
    /// Waits until every message published so far is confirmed.
    AwaitConfirms,
    /// A synchronous method whose refusal must not end the bridge (a passive declare of a
    /// queue that may not exist, the delete of a queue whose home node may be down): sent on a
    /// second channel, whose channel error closes only that channel; [`Event::Tried`] with `T`
    /// reports the reply or the refusal. Steps behind it wait for the answer.
    Try { method: Method, token: T },
}

/// What the broker's side said.
#[derive(Debug)]
pub enum Event<T> {
    /// The connection and channel are open: steps go.
    Open,
    /// The broker refused the connection during the handshake (`ACCESS_REFUSED` for a login,
    /// `NOT_ALLOWED` for a vhost), or the handshake went wrong (code 0 and why).
    Refused { code: u16, text: String },
    /// The broker closed the channel or the connection (its reply code and text): the bridge
    /// is done.
    Closed { code: u16, text: String },
    /// The reply to a [`Step::Sync`].
    Reply { token: T, method: Box<Method> },
    /// A [`Step::Mark`] was reached.
    Reached(T),
    /// A publish was confirmed (`ack`) or refused.
    Confirmed { token: T, ack: bool },
    /// A whole delivery of a consumer.
    Delivery {
        deliver: BasicDeliver,
        properties: Box<BasicProperties>,
        body: Bytes,
    },
    /// The broker cancelled a consumer (its queue went away).
    Cancelled { consumer_tag: ShortStr },
    /// The answer to a [`Step::Try`]: the reply, or the refusal's reply code.
    Tried {
        token: T,
        reply: Result<Box<Method>, u16>,
    },
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// [`Bridge::open`] not called yet.
    Idle,
    Start,
    Tune,
    OpenOk,
    ChannelOpenOk,
    SelectOk,
    Open,
    Closed,
}

/// A delivery (or a return) whose header and body frames are still coming.
#[derive(Debug)]
struct Content {
    /// `None`: a returned message, dropped once whole.
    deliver: Option<BasicDeliver>,
    properties: BasicProperties,
    size: u64,
    body: BytesMut,
    headed: bool,
}

/// The AMQP client half of an adapter; see the crate documentation.
#[derive(Debug)]
pub struct Bridge<T> {
    decoder: FrameDecoder,
    out: OutBuf,
    phase: Phase,
    login: Login,
    frame_max: u32,
    steps: VecDeque<Step<T>>,
    /// The token of the synchronous method whose reply is awaited.
    awaiting: Option<T>,
    /// The sequence number of the next publish (confirm mode numbers from 1).
    next_publish: u64,
    unconfirmed: BTreeMap<u64, T>,
    content: Option<Content>,
    /// The try under way.
    trying: Option<Trying<T>>,
    /// The second channel is open (a refusal closes it).
    try_channel_open: bool,
}

/// A [`Step::Try`] under way.
#[derive(Debug)]
struct Trying<T> {
    method: Method,
    token: T,
}

impl<T> Default for Bridge<T> {
    fn default() -> Self {
        Bridge::new()
    }
}

impl<T> Bridge<T> {
    pub fn new() -> Bridge<T> {
        Bridge {
            decoder: FrameDecoder::new(FRAME_MAX),
            out: OutBuf::new(),
            phase: Phase::Idle,
            login: Login::default(),
            frame_max: FRAME_MAX,
            steps: VecDeque::new(),
            awaiting: None,
            next_publish: 1,
            unconfirmed: BTreeMap::new(),
            content: None,
            trying: None,
            try_channel_open: false,
        }
    }

    /// Starts the connection: the protocol header goes out; [`Event::Open`] (or
    /// [`Event::Refused`]) follows from the broker's frames.
    pub fn open(&mut self, login: Login) {
        self.login = login;
        self.out.push_protocol_header();
        self.phase = Phase::Start;
    }

    /// Bytes for the broker.
    pub fn out(&mut self) -> &mut OutBuf {
        &mut self.out
    }

    /// Bytes waiting for the broker.
    pub fn out_len(&self) -> usize {
        self.out.len()
    }

    /// Queues a step (done once the ones before it are).
    pub fn push(&mut self, step: Step<T>) {
        self.steps.push_back(step);
    }

    /// Puts a step before every queued one (e.g. from a mark just reached).
    pub fn push_front(&mut self, step: Step<T>) {
        self.steps.push_front(step);
    }

    /// Steps queued and not done.
    pub fn queued(&self) -> usize {
        self.steps.len()
    }

    /// Whether the bridge is closed (by [`Bridge::close`] or by the broker).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Closes the connection (`connection.close` 200) and drops the steps not done.
    pub fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.phase != Phase::Idle {
            self.out.push_method(
                0,
                &Method::ConnectionClose(ConnectionClose {
                    reply_code: constants::REPLY_SUCCESS,
                    reply_text: "Goodbye".into(),
                    class_id: 0,
                    method_id: 0,
                }),
            );
        }
        self.steps.clear();
        self.phase = Phase::Closed;
    }

    /// Does the queued steps up to the first synchronous one (whose reply the rest waits for),
    /// a wait for confirms, or the first mark (reported, and the rest waits for the next call).
    pub fn drive(&mut self, events: &mut Vec<Event<T>>) {
        while self.phase == Phase::Open && self.awaiting.is_none() && self.trying.is_none() {
            let Some(step) = self.steps.pop_front() else {
                return;
            };
            match step {
                Step::Sync(method, token) => {
                    self.out.push_method(CHANNEL, &method);
                    self.awaiting = Some(token);
                }
                Step::Async(method) => self.out.push_method(CHANNEL, &method),
                Step::Publish {
                    exchange,
                    routing_key,
                    properties,
                    body,
                    token,
                } => {
                    let method = Method::BasicPublish(BasicPublish {
                        ticket: 0,
                        exchange: exchange.into(),
                        routing_key: routing_key.into(),
                        mandatory: false,
                        immediate: false,
                    });
                    self.out
                        .push_delivery(CHANNEL, &method, &properties, body, self.frame_max);
                    self.unconfirmed.insert(self.next_publish, token);
                    self.next_publish += 1;
                }
                Step::Mark(token) => {
                    events.push(Event::Reached(token));
                    return;
                }
                Step::AwaitConfirms => {
                    if !self.unconfirmed.is_empty() {
                        self.steps.push_front(Step::AwaitConfirms);
                        return;
                    }
                }
                Step::Try { method, token } => {
                    if self.try_channel_open {
                        self.out.push_method(TRY_CHANNEL, &method);
                    } else {
                        self.out.push_method(
                            TRY_CHANNEL,
                            &Method::ChannelOpen(ChannelOpen {
                                out_of_band: ShortStr::default(),
                            }),
                        );
                    }
                    self.trying = Some(Trying { method, token });
                }
            }
        }
    }

    /// A method on the second channel: it opened, or the answer of the try under way.
    fn on_try_channel(&mut self, method: Method, events: &mut Vec<Event<T>>) {
        let reply = match method {
            Method::ChannelOpenOk(_) => {
                self.try_channel_open = true;
                if let Some(t) = &self.trying {
                    let method = t.method.clone();
                    self.out.push_method(TRY_CHANNEL, &method);
                }
                return;
            }
            Method::ChannelClose(c) => {
                self.out
                    .push_method(TRY_CHANNEL, &Method::ChannelCloseOk(ChannelCloseOk {}));
                self.try_channel_open = false;
                Err(c.reply_code)
            }
            Method::ChannelCloseOk(_) => return,
            reply => Ok(Box::new(reply)),
        };
        if let Some(t) = self.trying.take() {
            events.push(Event::Tried {
                token: t.token,
                reply,
            });
        }
    }

    /// The broker's bytes in `buf`; what they say goes to `events`. Stops after a synchronous
    /// method's reply, leaving the rest in `buf`: the adapter drives the steps that waited for
    /// it before it sees later frames (the first deliveries of a consumer just made come after
    /// the receipt of its SUBSCRIBE). Call again until it reports nothing. Broken frames close
    /// the bridge ([`Event::Closed`] with code 0).
    pub fn receive(&mut self, buf: &mut BytesMut, events: &mut Vec<Event<T>>) {
        while self.phase != Phase::Closed {
            match self.decoder.decode(buf) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    self.on_frame(frame, events);
                    if matches!(
                        events.last(),
                        Some(Event::Reply { .. } | Event::Tried { .. })
                    ) {
                        return;
                    }
                }
                Err(e) => self.broken(e, events),
            }
        }
        if self.phase == Phase::Closed {
            buf.clear();
        }
    }

    fn broken(&mut self, e: WireError, events: &mut Vec<Event<T>>) {
        self.phase = Phase::Closed;
        self.steps.clear();
        events.push(Event::Closed {
            code: 0,
            text: format!("the broker's frames: {e}"),
        });
    }

    fn on_frame(&mut self, frame: Frame, events: &mut Vec<Event<T>>) {
        match frame {
            Frame::Method {
                channel: TRY_CHANNEL,
                method,
            } if self.phase == Phase::Open => self.on_try_channel(method, events),
            Frame::Method { method, .. } => self.on_method(method, events),
            Frame::Header { header, .. } => {
                if let Some(c) = &mut self.content {
                    c.properties = header.properties;
                    c.size = header.body_size;
                    c.headed = true;
                }
                self.content_progress(events);
            }
            Frame::Body { payload, .. } => {
                if let Some(c) = &mut self.content {
                    c.body.extend_from_slice(&payload);
                }
                self.content_progress(events);
            }
            Frame::Heartbeat { .. } => {}
        }
    }

    fn on_method(&mut self, method: Method, events: &mut Vec<Event<T>>) {
        if self.phase != Phase::Open {
            self.handshake(method, events);
            return;
        }
        match method {
            Method::BasicDeliver(deliver) => self.content = Some(Content::of(Some(deliver))),
            Method::BasicReturn(_) => self.content = Some(Content::of(None)),
            Method::BasicAck(a) => self.confirmed(a.delivery_tag, a.multiple, true, events),
            Method::BasicNack(n) => self.confirmed(n.delivery_tag, n.multiple, false, events),
            Method::BasicCancel(c) => events.push(Event::Cancelled {
                consumer_tag: c.consumer_tag,
            }),
            Method::ChannelClose(c) => {
                self.out
                    .push_method(CHANNEL, &Method::ChannelCloseOk(ChannelCloseOk {}));
                self.closed_by_broker(c.reply_code, c.reply_text.to_string(), events);
            }
            Method::ConnectionClose(c) => {
                self.out
                    .push_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.closed_by_broker(c.reply_code, c.reply_text.to_string(), events);
            }
            Method::ConnectionBlocked(_)
            | Method::ConnectionUnblocked(_)
            | Method::ConnectionCloseOk(_)
            | Method::ChannelFlow(_) => {}
            // Every other method the broker sends is a synchronous reply.
            method => {
                if let Some(token) = self.awaiting.take() {
                    events.push(Event::Reply {
                        token,
                        method: Box::new(method),
                    });
                }
            }
        }
    }

    fn closed_by_broker(&mut self, code: u16, text: String, events: &mut Vec<Event<T>>) {
        self.phase = Phase::Closed;
        self.steps.clear();
        events.push(Event::Closed { code, text });
    }

    fn handshake(&mut self, method: Method, events: &mut Vec<Event<T>>) {
        let next = match (self.phase, method) {
            (Phase::Start, Method::ConnectionStart(start)) => {
                let plain = start
                    .mechanisms
                    .as_bytes()
                    .split(|b| *b == b' ')
                    .any(|m| m == b"PLAIN");
                if !plain {
                    self.refused(0, "the broker does not offer PLAIN".into(), events);
                    return;
                }
                let mut response = vec![0];
                response.extend_from_slice(self.login.user.as_bytes());
                response.push(0);
                response.extend_from_slice(self.login.password.as_bytes());
                let client_properties = std::mem::take(&mut self.login.client_properties);
                self.out.push_method(
                    0,
                    &Method::ConnectionStartOk(ConnectionStartOk {
                        client_properties,
                        mechanism: "PLAIN".into(),
                        response: response.as_slice().into(),
                        locale: "en_US".into(),
                    }),
                );
                Phase::Tune
            }
            (Phase::Tune, Method::ConnectionTune(tune)) => {
                let frame_max = match tune.frame_max {
                    0 => FRAME_MAX,
                    n => n.min(FRAME_MAX),
                };
                self.frame_max = frame_max;
                self.decoder.set_frame_max(frame_max);
                self.out.push_method(
                    0,
                    &Method::ConnectionTuneOk(ConnectionTuneOk {
                        channel_max: tune.channel_max,
                        frame_max,
                        heartbeat: 0,
                    }),
                );
                self.out.push_method(
                    0,
                    &Method::ConnectionOpen(ConnectionOpen {
                        virtual_host: self.login.vhost.as_str().into(),
                        capabilities: ShortStr::default(),
                        insist: false,
                    }),
                );
                Phase::OpenOk
            }
            (Phase::OpenOk, Method::ConnectionOpenOk(_)) => {
                self.out.push_method(
                    CHANNEL,
                    &Method::ChannelOpen(ChannelOpen {
                        out_of_band: ShortStr::default(),
                    }),
                );
                Phase::ChannelOpenOk
            }
            (Phase::ChannelOpenOk, Method::ChannelOpenOk(_)) => {
                self.out.push_method(
                    CHANNEL,
                    &Method::ConfirmSelect(ConfirmSelect { nowait: false }),
                );
                Phase::SelectOk
            }
            (Phase::SelectOk, Method::ConfirmSelectOk(_)) => {
                self.phase = Phase::Open;
                events.push(Event::Open);
                return;
            }
            (_, Method::ConnectionClose(c)) => {
                self.out
                    .push_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.refused(c.reply_code, c.reply_text.to_string(), events);
                return;
            }
            (_, Method::ChannelClose(c)) => {
                self.refused(c.reply_code, c.reply_text.to_string(), events);
                return;
            }
            (phase, other) => {
                let text = format!("unexpected {other:?} from the broker in {phase:?}");
                self.refused(0, text, events);
                return;
            }
        };
        self.phase = next;
    }

    fn refused(&mut self, code: u16, text: String, events: &mut Vec<Event<T>>) {
        self.phase = Phase::Closed;
        self.steps.clear();
        events.push(Event::Refused { code, text });
    }

    /// Publishes confirmed up to `tag` (or just `tag`).
    fn confirmed(&mut self, tag: u64, multiple: bool, ack: bool, events: &mut Vec<Event<T>>) {
        if multiple {
            let later = self.unconfirmed.split_off(&(tag + 1));
            let settled = std::mem::replace(&mut self.unconfirmed, later);
            events.extend(
                settled
                    .into_values()
                    .map(|token| Event::Confirmed { token, ack }),
            );
        } else if let Some(token) = self.unconfirmed.remove(&tag) {
            events.push(Event::Confirmed { token, ack });
        }
    }

    /// A delivery's frames may be complete: if so, the event.
    fn content_progress(&mut self, events: &mut Vec<Event<T>>) {
        let complete = self
            .content
            .as_ref()
            .is_some_and(|c| c.headed && c.body.len() as u64 >= c.size);
        if !complete {
            return;
        }
        if let Some(Content {
            deliver: Some(deliver),
            properties,
            body,
            ..
        }) = self.content.take()
        {
            events.push(Event::Delivery {
                deliver,
                properties: Box::new(properties),
                body: body.freeze(),
            });
        }
    }
}

impl Content {
    fn of(deliver: Option<BasicDeliver>) -> Content {
        Content {
            deliver,
            properties: BasicProperties::default(),
            size: 0,
            body: BytesMut::new(),
            headed: false,
        }
    }
}

/// RabbitMQ's name of an AMQP reply code (`not_found`, `access_refused`, …), as its STOMP
/// ERROR frames and MQTT logs say it.
pub fn reply_name(code: u16) -> &'static str {
    match code {
        constants::CONNECTION_FORCED => "connection_forced",
        constants::INVALID_PATH => "invalid_path",
        constants::ACCESS_REFUSED => "access_refused",
        constants::NOT_FOUND => "not_found",
        constants::RESOURCE_LOCKED => "resource_locked",
        constants::PRECONDITION_FAILED => "precondition_failed",
        constants::FRAME_ERROR => "frame_error",
        constants::SYNTAX_ERROR => "syntax_error",
        constants::COMMAND_INVALID => "command_invalid",
        constants::CHANNEL_ERROR => "channel_error",
        constants::UNEXPECTED_FRAME => "unexpected_frame",
        constants::RESOURCE_ERROR => "resource_error",
        constants::NOT_ALLOWED => "not_allowed",
        constants::NOT_IMPLEMENTED => "not_implemented",
        _ => "internal_error",
    }
}

#[cfg(test)]
mod tests;

/// Reading what a bridge (or any AMQP writer) sent, for the tests of adapters that play the
/// broker's side: the bytes of an [`OutBuf`], its frames, its methods.
pub mod script {
    use bytes::{Buf, BytesMut};
    use warren_wire::{Frame, FrameDecoder, Method, OutBuf, PROTOCOL_HEADER};

    /// Everything in `out` (taken), the protocol header left out.
    pub fn drain(out: &mut OutBuf) -> BytesMut {
        let mut bytes = BytesMut::new();
        while out.has_remaining() {
            let chunk = out.chunk().to_vec();
            bytes.extend_from_slice(&chunk);
            out.advance(chunk.len());
        }
        if bytes.starts_with(PROTOCOL_HEADER) {
            let _ = bytes.split_to(PROTOCOL_HEADER.len());
        }
        bytes
    }

    /// The frames in `out` (taken). Panics on bytes that are not whole frames: a test's
    /// failure.
    pub fn frames(out: &mut OutBuf) -> Vec<Frame> {
        let mut bytes = drain(out);
        let decoder = FrameDecoder::new(u32::MAX);
        let mut frames = Vec::new();
        while let Some(f) = decoder.decode(&mut bytes).expect("whole AMQP frames") {
            frames.push(f);
        }
        assert!(bytes.is_empty(), "a partial frame: {bytes:?}");
        frames
    }

    /// The methods in `out` (taken), content frames left out.
    pub fn methods(out: &mut OutBuf) -> Vec<Method> {
        frames(out)
            .into_iter()
            .filter_map(|f| match f {
                Frame::Method { method, .. } => Some(method),
                _ => None,
            })
            .collect()
    }
}
