//! One STOMP connection, translated into one AMQP 0-9-1 connection, as RabbitMQ's STOMP plugin
//! does it (it opens an AMQP connection and a channel for each STOMP client): bytes from the
//! STOMP client in, AMQP bytes out to the broker; the broker's AMQP bytes in, STOMP bytes out.
//! So a STOMP client gets the broker's own logins, permissions, queues, replication and
//! failover, and shows in the management API as a connection like any other. No I/O here: the
//! caller moves the bytes ([`Session::stomp_out`], [`Session::amqp_out`]) and the time.
//!
//! The AMQP side is one channel (1) in confirm mode. Work is done in the order the client sent
//! its frames: each frame becomes a list of [`Action`]s — synchronous AMQP methods (declare,
//! bind, qos, consume, cancel, delete) are sent one at a time and the next action waits for the
//! reply — so a SEND after a SUBSCRIBE finds the queue the SUBSCRIBE declared. What each client
//! command does is in `commands.rs`; RabbitMQ 3.10's behaviour (its texts, header orders and
//! queue names included) is the reference throughout:
//!
//! - CONNECT/STOMP: version negotiation (`accept-version`, 1.0 without one), `login` and
//!   `passcode` (the configured default user without them), `host` as the virtual host,
//!   `heart-beat` (in whole seconds); CONNECTED once the AMQP connection and channel are open.
//! - Errors a client can correct (a missing header, an unknown destination) are answered with
//!   an ERROR frame and the session goes on, as RabbitMQ's does; a refused login, a duplicated
//!   subscription, or a channel the broker closed (its reply code as `message`, its text as the
//!   body) end it after the ERROR; bytes that are no STOMP frame end it after an ERROR too.

mod commands;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use bytes::{Bytes, BytesMut};
use warren_wire::constants;
use warren_wire::{
    BasicConsume, BasicProperties, BasicPublish, BasicReject, ChannelOpen, ConfirmSelect,
    ConnectionClose, ConnectionCloseOk, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk,
    FieldTable, FieldValue, Frame as AmqpFrame, FrameDecoder, Method, OutBuf, ShortStr,
};

use crate::destination;
use crate::properties;
use crate::queue_name::NameSource;
use crate::{Command, Decoder, Frame, Item, Limits, Version};

/// The AMQP channel a session works on.
const CHANNEL: u16 = 1;
/// Above this many bytes waiting for the broker, the client is not read.
const AMQP_OUT_HIGH: usize = 1024 * 1024;
/// Above this many bytes waiting for the client, the broker is not read.
const STOMP_OUT_HIGH: usize = 1024 * 1024;
/// Above this many actions waiting (synchronous replies outstanding), the client is not read.
const ACTIONS_HIGH: usize = 1024;
/// Frames a client may send between CONNECT and CONNECTED.
const HELD_MAX: usize = 256;
/// The frame-max the session asks for before the broker's tune.
const INITIAL_FRAME_MAX: u32 = 128 * 1024;
/// A client that promised heart-beats every N ms is gone after this many N of silence.
const MISSED_BEATS: u64 = 3;

/// How a session is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The decoder's limits.
    pub limits: Limits,
    /// Who logs in when CONNECT has no `login` (RabbitMQ's `stomp.default_user`).
    pub default_login: String,
    /// And with which passcode (`stomp.default_pass`).
    pub default_passcode: String,
    /// The virtual host when CONNECT has no `host` (`stomp.default_vhost`).
    pub default_vhost: String,
    /// CONNECTED's `server` header, e.g. `Warren/0.1.0`.
    pub server: String,
    /// How long a client has to send CONNECT after its socket opens, in milliseconds.
    pub connect_timeout_ms: u64,
    /// A client property of the AMQP connection set to e.g. `STOMP 1.2`, so that the broker can
    /// tell which protocol the client speaks; `None`: not set.
    pub protocol_property: Option<String>,
    /// This session's id, unique on the node (CONNECTED's `session`, part of message ids):
    /// RabbitMQ's is `session-` and 16 random bytes in URL-safe base64.
    pub session_id: String,
    /// Random bits for the names of the queues the session makes.
    pub seed: u64,
}

/// An acknowledgement mode of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

/// A SUBSCRIBE's consumer (or the consumer of a temporary queue).
#[derive(Debug)]
struct Subscription {
    /// The SUBSCRIBE's `id`, shown as MESSAGE's `subscription` (none without one).
    id: Option<String>,
    ack: AckMode,
    /// The queue consumed from (empty for a temporary queue: the broker named it).
    queue: String,
    /// Delivery tags not yet acknowledged (client modes only), oldest first.
    unacked: BTreeSet<u64>,
    /// The queue is this subscription's own durable one (a durable topic subscription):
    /// UNSUBSCRIBE with `durable:true` deletes it.
    own_durable_queue: bool,
    /// UNSUBSCRIBE was asked: deliveries until the broker's cancel-ok go back to the queue.
    cancelled: bool,
}

/// What the reply to a synchronous method tells the session.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OnReply {
    Nothing,
    /// A declare-ok names the queue made for `/temp-queue/NAME`.
    TempQueue(String),
}

/// A SEND's `reply-to`, resolved when the message is published.
#[derive(Debug)]
enum ReplyTo {
    Text(String),
    /// `/temp-queue/NAME`: the queue the broker named for it.
    Temp(String),
}

/// One step of the work the client's frames asked for, done in order.
#[derive(Debug)]
enum Action {
    /// A synchronous AMQP method: the next action waits for its reply.
    Sync(Method, OnReply),
    /// An asynchronous AMQP method (acks).
    Async(Method),
    /// A message to publish, and the receipt to send once the broker confirms it.
    Publish {
        exchange: String,
        routing_key: String,
        properties: Box<BasicProperties>,
        reply_to: Option<ReplyTo>,
        body: Bytes,
        receipt: Option<String>,
    },
    /// A frame for the client, once everything before it is done.
    Client(Frame),
    /// Waits until every message published so far is confirmed.
    AwaitConfirms,
    /// Consumes (no-ack, with this consumer tag) from the queue the broker named for
    /// `/temp-queue/NAME`, once its declare-ok has named it.
    ConsumeTemp { name: String, tag: String },
    /// Forgets a subscription (after the broker's cancel-ok).
    Forget(String),
    /// DISCONNECT: close the AMQP connection and end.
    Finish,
}

/// Where the session is.
#[derive(Debug)]
enum Phase {
    /// Waiting for CONNECT (until the deadline).
    AwaitConnect {
        deadline: u64,
    },
    /// CONNECT arrived; the AMQP connection is being opened.
    Handshake(Handshake),
    Open,
    /// Done: once [`Session::stomp_out`] is written, the socket closes.
    Closed,
}

/// The AMQP reply the handshake waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    Start,
    Tune,
    OpenOk,
    ChannelOpenOk,
    SelectOk,
}

/// What CONNECT asked for.
#[derive(Debug, Default)]
struct Login {
    login: String,
    passcode: String,
    vhost: String,
}

/// A delivery (or a return) whose header and body frames are still coming.
#[derive(Debug)]
struct Content {
    /// `None`: a returned message, dropped once whole.
    deliver: Option<warren_wire::BasicDeliver>,
    properties: BasicProperties,
    size: u64,
    body: BytesMut,
    /// The header frame has arrived.
    headed: bool,
}

/// A client frame refused: the ERROR's `message` and body, and whether the session ends.
#[derive(Debug)]
struct Refusal {
    message: &'static str,
    detail: String,
    close: bool,
}

impl Refusal {
    /// An error the client can correct: the session goes on.
    fn keep(message: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            message,
            detail: detail.into(),
            close: false,
        }
    }

    /// An error that ends the session.
    fn close(message: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            message,
            detail: detail.into(),
            close: true,
        }
    }
}

/// One STOMP client's session; see the module documentation.
#[derive(Debug)]
pub struct Session {
    config: Config,
    decoder: Decoder,
    amqp: FrameDecoder,
    stomp_out: BytesMut,
    amqp_out: OutBuf,
    phase: Phase,
    version: Version,
    login: Login,
    /// Frames that came between CONNECT and CONNECTED.
    held: VecDeque<Frame>,
    actions: VecDeque<Action>,
    /// A synchronous method was sent and its reply has not come.
    awaiting: Option<OnReply>,
    frame_max: u32,
    /// The sequence number of the next publish (confirm mode numbers from 1).
    next_publish: u64,
    /// Publishes not yet confirmed, with their receipts.
    unconfirmed: BTreeMap<u64, Option<String>>,
    /// By consumer tag (`T_<id>`, or `Q_<destination>` without an id).
    subscriptions: HashMap<String, Subscription>,
    /// `/queue/NAME`s this session has declared (each is declared once).
    declared: HashSet<String>,
    /// `/temp-queue/NAME` → the queue the broker named for it (`None` until its declare-ok).
    temp_queues: HashMap<String, Option<String>>,
    /// Open transactions and their held frames.
    transactions: HashMap<String, Vec<Frame>>,
    /// The prefetch of the channel's next consumers (basic.qos).
    prefetch: u16,
    content: Option<Content>,
    names: NameSource,
    /// Heart-beats: send one after this many milliseconds of silence (0: never).
    send_every: u64,
    /// Expect a byte from the client at least this often (0: no check).
    expect_every: u64,
    last_sent: u64,
    last_received: u64,
}

impl Session {
    /// A session for a client whose socket opened at `now` (milliseconds).
    pub fn new(config: Config, now: u64) -> Session {
        let deadline = now.saturating_add(config.connect_timeout_ms);
        Session {
            decoder: Decoder::new(config.limits),
            names: NameSource::new(config.seed),
            config,
            amqp: FrameDecoder::new(INITIAL_FRAME_MAX),
            stomp_out: BytesMut::new(),
            amqp_out: OutBuf::new(),
            phase: Phase::AwaitConnect { deadline },
            version: Version::V1_0,
            login: Login::default(),
            held: VecDeque::new(),
            actions: VecDeque::new(),
            awaiting: None,
            frame_max: INITIAL_FRAME_MAX,
            next_publish: 1,
            unconfirmed: BTreeMap::new(),
            subscriptions: HashMap::new(),
            declared: HashSet::new(),
            temp_queues: HashMap::new(),
            transactions: HashMap::new(),
            prefetch: 0,
            content: None,
            send_every: 0,
            expect_every: 0,
            last_sent: now,
            last_received: now,
        }
    }

    /// Bytes for the STOMP client.
    pub fn stomp_out(&mut self) -> &mut BytesMut {
        &mut self.stomp_out
    }

    /// Bytes for the broker's AMQP connection; empty until CONNECT arrives (the caller may open
    /// the broker's side of the connection only then).
    pub fn amqp_out(&mut self) -> &mut OutBuf {
        &mut self.amqp_out
    }

    /// Whether the client's bytes should be read now: not while the broker has much to take,
    /// nor once the session is closed.
    pub fn wants_stomp(&self) -> bool {
        !self.is_closed()
            && self.amqp_out.len() < AMQP_OUT_HIGH
            && self.actions.len() < ACTIONS_HIGH
            && self.held.len() < HELD_MAX
    }

    /// Whether the broker's bytes should be read now: not while the client has much to take.
    pub fn wants_amqp(&self) -> bool {
        self.stomp_out.len() < STOMP_OUT_HIGH
    }

    /// The session is over: once [`Session::stomp_out`] is written (and what is in
    /// [`Session::amqp_out`], best effort), close both sides.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The negotiated version (1.0 until CONNECT).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The client's bytes in `buf` (consumed).
    pub fn receive_stomp(&mut self, buf: &mut BytesMut, now: u64) {
        if !buf.is_empty() {
            self.last_received = now;
        }
        while !self.is_closed() {
            match self.decoder.decode(buf) {
                Ok(None) => break,
                Ok(Some(Item::Heartbeat)) => {}
                Ok(Some(Item::Frame(frame))) => self.on_client_frame(frame),
                Err(e) => {
                    buf.clear();
                    self.fail(
                        "Invalid frame",
                        &format!("Could not parse frame: {e}\n"),
                        None,
                    );
                }
            }
        }
        if self.is_closed() {
            buf.clear();
        }
        self.stamp_sent(now);
    }

    /// The broker's bytes in `buf` (consumed).
    pub fn receive_amqp(&mut self, buf: &mut BytesMut, now: u64) {
        while !self.is_closed() {
            match self.amqp.decode(buf) {
                Ok(None) => break,
                Ok(Some(frame)) => self.on_broker_frame(frame),
                Err(e) => {
                    buf.clear();
                    self.fail("Internal error", &format!("the broker's frames: {e}"), None);
                }
            }
        }
        if self.is_closed() {
            buf.clear();
        }
        self.stamp_sent(now);
    }

    /// The broker closed its side of the connection.
    pub fn amqp_closed(&mut self) {
        if !self.is_closed() {
            self.fail(
                "connection_forced",
                "the broker closed the connection",
                None,
            );
        }
    }

    /// Time passes: heart-beats to send, a client gone silent, a CONNECT that never came.
    pub fn tick(&mut self, now: u64) {
        match self.phase {
            Phase::AwaitConnect { deadline } if now >= deadline => {
                self.fail(
                    "Connection timed out",
                    "no CONNECT frame within the handshake timeout",
                    None,
                );
            }
            Phase::Open => {
                if self.expect_every > 0
                    && now.saturating_sub(self.last_received)
                        > self.expect_every.saturating_mul(MISSED_BEATS)
                {
                    // The client is gone (RabbitMQ closes it the same way, without a frame).
                    self.phase = Phase::Closed;
                    return;
                }
                // Every half interval, as RabbitMQ, so a late tick never makes a beat late.
                if self.send_every > 0 && now.saturating_sub(self.last_sent) >= self.send_every / 2
                {
                    self.stomp_out.extend_from_slice(b"\n");
                    self.last_sent = now;
                }
            }
            _ => {}
        }
    }

    /// Remembers when the client was last sent something (heart-beats fill silences only).
    fn stamp_sent(&mut self, now: u64) {
        if !self.stomp_out.is_empty() {
            self.last_sent = now;
        }
    }

    // ---- the client's frames (their commands: `commands.rs`) ----

    fn on_client_frame(&mut self, frame: Frame) {
        match &self.phase {
            Phase::AwaitConnect { .. } => match frame.command {
                Command::Connect | Command::Stomp => self.on_connect(&frame),
                _ => self.fail(
                    "Illegal command",
                    "You must log in using CONNECT first",
                    frame.header("receipt"),
                ),
            },
            Phase::Handshake(_) => self.held.push_back(frame),
            Phase::Open => {
                self.on_frame(frame);
                self.drive();
            }
            Phase::Closed => {}
        }
    }

    fn on_connect(&mut self, frame: &Frame) {
        let version = match frame.header("accept-version") {
            None => Some(Version::V1_0),
            Some(list) => list
                .split(',')
                .filter_map(|v| match v.trim() {
                    "1.0" => Some(Version::V1_0),
                    "1.1" => Some(Version::V1_1),
                    "1.2" => Some(Version::V1_2),
                    _ => None,
                })
                .max(),
        };
        let Some(version) = version else {
            self.fail(
                "Version mismatch",
                "Supported versions are 1.0,1.1,1.2\n",
                None,
            );
            return;
        };
        let (send_every, expect_every) = match frame.header("heart-beat") {
            None => (0, 0),
            Some(text) => match parse_heart_beat(text) {
                Some((cx, cy)) => (whole_seconds(cy), whole_seconds(cx)),
                None => {
                    self.fail("Processing error", "Processing error", None);
                    return;
                }
            },
        };
        self.version = version;
        self.decoder.set_version(version);
        self.send_every = send_every;
        self.expect_every = expect_every;
        self.login = Login {
            login: frame
                .header("login")
                .unwrap_or(&self.config.default_login)
                .to_owned(),
            passcode: frame
                .header("passcode")
                .unwrap_or(&self.config.default_passcode)
                .to_owned(),
            vhost: frame
                .header("host")
                .filter(|h| !h.is_empty())
                .unwrap_or(&self.config.default_vhost)
                .to_owned(),
        };
        self.amqp_out.push_protocol_header();
        self.phase = Phase::Handshake(Handshake::Start);
    }

    /// One frame of an open session: turned into actions, or refused.
    fn on_frame(&mut self, frame: Frame) {
        if matches!(frame.command, Command::Send | Command::Ack | Command::Nack) {
            if let Some(tx) = frame.header("transaction") {
                match self.transactions.get_mut(tx) {
                    Some(held) => held.push(frame),
                    None => {
                        let detail = format!("Invalid transaction identifier: \"{tx}\"\n");
                        self.refuse("Bad transaction", &detail, frame.header("receipt"));
                    }
                }
                return;
            }
        }
        self.execute(frame);
    }

    /// A frame's work (transactions already resolved), and its receipt.
    fn execute(&mut self, frame: Frame) {
        let done = match frame.command {
            Command::Send => self.send(&frame),
            Command::Subscribe => self.subscribe(&frame),
            Command::Unsubscribe => self.unsubscribe(&frame),
            Command::Ack => self.settle(&frame, true),
            Command::Nack => self.settle(&frame, false),
            Command::Begin => self.begin(&frame),
            Command::Commit => self.commit(&frame),
            Command::Abort => self.abort(&frame),
            Command::Disconnect => {
                self.actions.push_back(Action::AwaitConfirms);
                self.receipt(&frame);
                self.actions.push_back(Action::Finish);
                return;
            }
            // A second CONNECT: RabbitMQ closes the connection without a word.
            Command::Connect | Command::Stomp => {
                self.actions.clear();
                self.phase = Phase::Closed;
                return;
            }
            ref other => Err(Refusal::keep(
                "Bad command",
                format!("Could not interpret command \"{}\"\n", other.as_str()),
            )),
        };
        match done {
            Ok(()) => self.receipt(&frame),
            Err(r) if r.close => self.fail(r.message, &r.detail, frame.header("receipt")),
            Err(r) => self.refuse(r.message, &r.detail, frame.header("receipt")),
        }
    }

    /// Queues the RECEIPT a frame asked for (after its actions).
    fn receipt(&mut self, frame: &Frame) {
        // A SEND's receipt waits for the broker's confirm instead (see `send`).
        if frame.command == Command::Send {
            return;
        }
        if let Some(id) = frame.header("receipt") {
            let receipt = Frame::new(Command::Receipt).with_header("receipt-id", id);
            self.actions.push_back(Action::Client(receipt));
        }
    }

    /// Does the queued actions, up to the first synchronous one (whose reply the rest waits
    /// for) or the first that must wait for confirms.
    fn drive(&mut self) {
        while self.awaiting.is_none() && !self.is_closed() {
            let Some(action) = self.actions.pop_front() else {
                return;
            };
            match action {
                Action::Sync(method, on_reply) => {
                    self.amqp_out.push_method(CHANNEL, &method);
                    self.awaiting = Some(on_reply);
                }
                Action::Async(method) => self.amqp_out.push_method(CHANNEL, &method),
                Action::Publish {
                    exchange,
                    routing_key,
                    mut properties,
                    reply_to,
                    body,
                    receipt,
                } => {
                    properties.reply_to = match reply_to {
                        None => None,
                        Some(ReplyTo::Text(text)) => Some(text.into()),
                        Some(ReplyTo::Temp(name)) => self
                            .temp_queues
                            .get(&name)
                            .and_then(|q| q.as_deref())
                            .map(ShortStr::from),
                    };
                    let method = Method::BasicPublish(BasicPublish {
                        ticket: 0,
                        exchange: exchange.into(),
                        routing_key: routing_key.into(),
                        mandatory: false,
                        immediate: false,
                    });
                    self.amqp_out.push_delivery(
                        CHANNEL,
                        &method,
                        &properties,
                        body,
                        self.frame_max,
                    );
                    self.unconfirmed.insert(self.next_publish, receipt);
                    self.next_publish += 1;
                }
                Action::Client(frame) => self.write(&frame),
                Action::AwaitConfirms => {
                    if !self.unconfirmed.is_empty() {
                        self.actions.push_front(Action::AwaitConfirms);
                        return;
                    }
                }
                Action::ConsumeTemp { name, tag } => {
                    let queue = self
                        .temp_queues
                        .get(&name)
                        .and_then(|q| q.as_deref())
                        .unwrap_or_default();
                    let method = Method::BasicConsume(BasicConsume {
                        ticket: 0,
                        queue: queue.into(),
                        consumer_tag: tag.into(),
                        no_local: false,
                        no_ack: true,
                        exclusive: false,
                        nowait: false,
                        arguments: FieldTable::default(),
                    });
                    self.amqp_out.push_method(CHANNEL, &method);
                    self.awaiting = Some(OnReply::Nothing);
                }
                Action::Forget(tag) => {
                    self.subscriptions.remove(&tag);
                }
                Action::Finish => {
                    self.amqp_out.push_method(
                        0,
                        &Method::ConnectionClose(ConnectionClose {
                            reply_code: constants::REPLY_SUCCESS,
                            reply_text: "Goodbye".into(),
                            class_id: 0,
                            method_id: 0,
                        }),
                    );
                    self.actions.clear();
                    self.phase = Phase::Closed;
                }
            }
        }
    }

    // ---- the broker's frames ----

    fn on_broker_frame(&mut self, frame: AmqpFrame) {
        match frame {
            AmqpFrame::Method { method, .. } => self.on_method(method),
            AmqpFrame::Header { header, .. } => {
                if let Some(c) = &mut self.content {
                    c.properties = header.properties;
                    c.size = header.body_size;
                    c.headed = true;
                }
                self.content_progress();
            }
            AmqpFrame::Body { payload, .. } => {
                if let Some(c) = &mut self.content {
                    c.body.extend_from_slice(&payload);
                }
                self.content_progress();
            }
            AmqpFrame::Heartbeat { .. } => {}
        }
    }

    fn on_method(&mut self, method: Method) {
        if let Phase::Handshake(step) = self.phase {
            self.handshake(step, method);
            return;
        }
        match method {
            Method::BasicDeliver(deliver) => self.content = Some(Content::of(Some(deliver))),
            Method::BasicReturn(_) => self.content = Some(Content::of(None)),
            Method::BasicAck(a) => self.confirmed(a.delivery_tag, a.multiple, true),
            Method::BasicNack(n) => self.confirmed(n.delivery_tag, n.multiple, false),
            Method::BasicCancel(c) => {
                // The broker cancelled a consumer (its queue was deleted): RabbitMQ's ERROR,
                // and the session goes on.
                if let Some(sub) = self.subscriptions.remove(c.consumer_tag.as_str()) {
                    let mut frame = Frame::new(Command::Error)
                        .with_header("message", "Server cancelled subscription")
                        .with_header("content-type", "text/plain")
                        .with_header("version", "1.0,1.1,1.2");
                    if let Some(id) = &sub.id {
                        frame = frame.with_header("subscription", id.as_str());
                    }
                    let frame = frame.with_body(format!(
                        "The server has cancelled a subscription to queue '{}'. No more \
                         messages will be delivered for it.\n",
                        sub.queue
                    ));
                    self.write(&frame);
                }
            }
            Method::ChannelClose(c) => {
                self.amqp_out.push_method(
                    CHANNEL,
                    &Method::ChannelCloseOk(warren_wire::ChannelCloseOk {}),
                );
                self.fail(reply_name(c.reply_code), c.reply_text.as_str(), None);
            }
            Method::ConnectionClose(c) => {
                self.amqp_out
                    .push_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.fail(reply_name(c.reply_code), c.reply_text.as_str(), None);
            }
            Method::ConnectionBlocked(_)
            | Method::ConnectionUnblocked(_)
            | Method::ConnectionCloseOk(_)
            | Method::ChannelFlow(_) => {}
            reply => {
                // Every other method the broker sends is a synchronous reply.
                if let Some(on_reply) = self.awaiting.take() {
                    if let (OnReply::TempQueue(name), Method::QueueDeclareOk(ok)) =
                        (on_reply, &reply)
                    {
                        self.temp_queues.insert(name, Some(ok.queue.to_string()));
                    }
                    self.drive();
                }
            }
        }
    }

    fn handshake(&mut self, step: Handshake, method: Method) {
        let next = match (step, method) {
            (Handshake::Start, Method::ConnectionStart(start)) => {
                if !start
                    .mechanisms
                    .as_bytes()
                    .split(|b| *b == b' ')
                    .any(|m| m == b"PLAIN")
                {
                    self.fail("Internal error", "the broker does not offer PLAIN", None);
                    return;
                }
                let mut response = Vec::new();
                response.push(0);
                response.extend_from_slice(self.login.login.as_bytes());
                response.push(0);
                response.extend_from_slice(self.login.passcode.as_bytes());
                self.amqp_out.push_method(
                    0,
                    &Method::ConnectionStartOk(ConnectionStartOk {
                        client_properties: self.client_properties(),
                        mechanism: "PLAIN".into(),
                        response: response.as_slice().into(),
                        locale: "en_US".into(),
                    }),
                );
                Handshake::Tune
            }
            (Handshake::Tune, Method::ConnectionTune(tune)) => {
                let frame_max = if tune.frame_max == 0 {
                    INITIAL_FRAME_MAX
                } else {
                    tune.frame_max.min(INITIAL_FRAME_MAX)
                };
                self.frame_max = frame_max;
                self.amqp.set_frame_max(frame_max);
                self.amqp_out.push_method(
                    0,
                    &Method::ConnectionTuneOk(ConnectionTuneOk {
                        channel_max: tune.channel_max,
                        frame_max,
                        heartbeat: 0,
                    }),
                );
                self.amqp_out.push_method(
                    0,
                    &Method::ConnectionOpen(ConnectionOpen {
                        virtual_host: self.login.vhost.as_str().into(),
                        capabilities: ShortStr::default(),
                        insist: false,
                    }),
                );
                Handshake::OpenOk
            }
            (Handshake::OpenOk, Method::ConnectionOpenOk(_)) => {
                self.amqp_out.push_method(
                    CHANNEL,
                    &Method::ChannelOpen(ChannelOpen {
                        out_of_band: ShortStr::default(),
                    }),
                );
                Handshake::ChannelOpenOk
            }
            (Handshake::ChannelOpenOk, Method::ChannelOpenOk(_)) => {
                self.amqp_out.push_method(
                    CHANNEL,
                    &Method::ConfirmSelect(ConfirmSelect { nowait: false }),
                );
                Handshake::SelectOk
            }
            (Handshake::SelectOk, Method::ConfirmSelectOk(_)) => {
                self.connected();
                return;
            }
            (_, Method::ConnectionClose(c)) => {
                self.amqp_out
                    .push_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.login_refused(c.reply_code, c.reply_text.as_str());
                return;
            }
            (_, Method::ChannelClose(c)) => {
                self.fail(reply_name(c.reply_code), c.reply_text.as_str(), None);
                return;
            }
            (step, other) => {
                self.fail(
                    "Internal error",
                    &format!("unexpected {other:?} from the broker while waiting for {step:?}"),
                    None,
                );
                return;
            }
        };
        self.phase = Phase::Handshake(next);
    }

    /// The AMQP client properties of the session's connection.
    fn client_properties(&self) -> FieldTable {
        let mut capabilities = FieldTable::default();
        for c in [
            "publisher_confirms",
            "consumer_cancel_notify",
            "basic.nack",
            "connection.blocked",
        ] {
            capabilities.insert(c, FieldValue::Bool(true));
        }
        let protocol = format!("STOMP {}", self.version.as_str());
        let mut p = FieldTable::default();
        p.insert("product", FieldValue::LongStr("STOMP client".into()));
        p.insert("information", FieldValue::LongStr(protocol.as_str().into()));
        p.insert("capabilities", FieldValue::Table(capabilities));
        if let Some(name) = &self.config.protocol_property {
            p.insert(name.as_str(), FieldValue::LongStr(protocol.into()));
        }
        p
    }

    /// The AMQP connection and channel are open: CONNECTED, then the frames that waited.
    fn connected(&mut self) {
        let frame = Frame::new(Command::Connected)
            .with_header("server", self.config.server.as_str())
            .with_header("session", self.config.session_id.as_str())
            .with_header(
                "heart-beat",
                format!("{},{}", self.send_every, self.expect_every),
            )
            .with_header("version", self.version.as_str());
        self.write(&frame);
        self.phase = Phase::Open;
        while let Some(frame) = self.held.pop_front() {
            if self.is_closed() {
                break;
            }
            self.on_frame(frame);
        }
        self.drive();
    }

    /// The broker refused the connection during the handshake: RabbitMQ's `Bad CONNECT`.
    fn login_refused(&mut self, code: u16, text: &str) {
        let detail = match code {
            constants::NOT_ALLOWED => format!("Virtual host '{}' access denied", self.login.vhost),
            constants::ACCESS_REFUSED => {
                format!("Access refused for user '{}'\n", self.login.login)
            }
            _ => format!("{text}\n"),
        };
        self.fail("Bad CONNECT", &detail, None);
    }

    /// Publishes confirmed up to `tag` (or just `tag`): receipts for the ones that asked.
    fn confirmed(&mut self, tag: u64, multiple: bool, ack: bool) {
        let settled: Vec<(u64, Option<String>)> = if multiple {
            let later = self.unconfirmed.split_off(&(tag + 1));
            std::mem::replace(&mut self.unconfirmed, later)
                .into_iter()
                .collect()
        } else {
            self.unconfirmed
                .remove(&tag)
                .map(|r| (tag, r))
                .into_iter()
                .collect()
        };
        for (_, receipt) in settled {
            let Some(receipt) = receipt else { continue };
            if ack {
                let frame = Frame::new(Command::Receipt).with_header("receipt-id", receipt);
                self.write(&frame);
            } else {
                self.fail(
                    "Message not published",
                    "The broker refused the message (nack)\n",
                    Some(&receipt),
                );
                return;
            }
        }
        self.drive();
    }

    /// A delivery's frames may be complete: if so, the MESSAGE.
    fn content_progress(&mut self) {
        let complete = self
            .content
            .as_ref()
            .is_some_and(|c| c.headed && c.body.len() as u64 >= c.size);
        if !complete {
            return;
        }
        let Some(content) = self.content.take() else {
            return;
        };
        let Some(deliver) = content.deliver else {
            return;
        };
        let Some(sub) = self.subscriptions.get_mut(deliver.consumer_tag.as_str()) else {
            return;
        };
        if sub.cancelled {
            if sub.ack != AckMode::Auto {
                self.actions
                    .push_back(Action::Async(Method::BasicReject(BasicReject {
                        delivery_tag: deliver.delivery_tag,
                        requeue: true,
                    })));
                self.drive();
            }
            return;
        }
        if sub.ack != AckMode::Auto {
            sub.unacked.insert(deliver.delivery_tag);
        }
        let message_id = format!(
            "{}@@{}@@{}",
            deliver.consumer_tag.as_str(),
            self.config.session_id,
            deliver.delivery_tag
        );
        let mut headers = Vec::with_capacity(8);
        if let Some(id) = &sub.id {
            headers.push(("subscription".to_owned(), id.clone()));
        }
        headers.push((
            "destination".to_owned(),
            destination::of_delivery(deliver.exchange.as_str(), deliver.routing_key.as_str()),
        ));
        headers.push(("message-id".to_owned(), message_id.clone()));
        headers.push(("redelivered".to_owned(), deliver.redelivered.to_string()));
        if self.version >= Version::V1_2 && sub.ack != AckMode::Auto {
            headers.push(("ack".to_owned(), message_id));
        }
        properties::to_headers(&content.properties, &mut headers);
        let body = content.body.freeze();
        if !body.is_empty() {
            headers.push(("content-length".to_owned(), body.len().to_string()));
        }
        let frame = Frame {
            command: Command::Message,
            headers,
            body,
        };
        self.write(&frame);
    }

    // ---- writing to the client ----

    /// A frame for the client, ended by NUL and an end of line as RabbitMQ ends them.
    fn write(&mut self, frame: &Frame) {
        crate::encode(frame, self.version, &mut self.stomp_out);
        self.stomp_out.extend_from_slice(b"\n");
    }

    fn error_frame(message: &str, detail: &str, receipt: Option<&str>) -> Frame {
        let mut frame = Frame::new(Command::Error)
            .with_header("message", message)
            .with_header("content-type", "text/plain")
            .with_header("version", "1.0,1.1,1.2");
        if let Some(id) = receipt {
            frame = frame.with_header("receipt-id", id);
        }
        frame
            .with_header("content-length", detail.len().to_string())
            .with_body(detail.to_owned())
    }

    /// An ERROR frame; the session goes on.
    fn refuse(&mut self, message: &str, detail: &str, receipt: Option<&str>) {
        let frame = Self::error_frame(message, detail, receipt);
        self.write(&frame);
    }

    /// An ERROR frame, and the session closes.
    fn fail(&mut self, message: &str, detail: &str, receipt: Option<&str>) {
        if self.is_closed() {
            return;
        }
        let frame = Self::error_frame(message, detail, receipt);
        self.write(&frame);
        self.actions.clear();
        self.phase = Phase::Closed;
    }
}

impl Content {
    fn of(deliver: Option<warren_wire::BasicDeliver>) -> Content {
        Content {
            deliver,
            properties: BasicProperties::default(),
            size: 0,
            body: BytesMut::new(),
            headed: false,
        }
    }
}

/// `cx,cy` of a `heart-beat` header.
fn parse_heart_beat(text: &str) -> Option<(u64, u64)> {
    let (cx, cy) = text.split_once(',')?;
    Some((cx.trim().parse().ok()?, cy.trim().parse().ok()?))
}

/// A heart-beat interval as RabbitMQ keeps it: in whole seconds, at least one unless zero.
fn whole_seconds(ms: u64) -> u64 {
    match ms {
        0 => 0,
        1..=999 => 1000,
        _ => ms / 1000 * 1000,
    }
}

/// The consumer tag and delivery tag of a MESSAGE's id, `T_<id>@@<session>@@<tag>`.
fn parse_message_id(id: &str) -> Option<(&str, u64)> {
    let mut parts = id.rsplitn(3, "@@");
    let delivery = parts.next()?.parse().ok()?;
    let _session = parts.next()?;
    let tag = parts.next()?;
    Some((tag, delivery))
}

/// RabbitMQ's name of an AMQP reply code, as its STOMP ERROR frames' `message` say it.
fn reply_name(code: u16) -> &'static str {
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
        constants::INTERNAL_ERROR => "internal_error",
        _ => "internal_error",
    }
}
