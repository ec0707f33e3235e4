//! One STOMP connection, translated into one AMQP 0-9-1 connection, as RabbitMQ's STOMP plugin
//! does it (it opens an AMQP connection and a channel for each STOMP client): bytes from the
//! STOMP client in, AMQP bytes out to the broker; the broker's AMQP bytes in, STOMP bytes out.
//! So a STOMP client gets the broker's own logins, permissions, queues, replication and
//! failover, and shows in the management API as a connection like any other. No I/O here: the
//! caller moves the bytes ([`Session::stomp_out`], [`Session::amqp_out`]) and the time.
//!
//! The AMQP side is a [`warren_bridge::Bridge`]: one channel in confirm mode. Work is done in the
//! order the client sent its frames: each frame becomes steps — synchronous AMQP methods
//! (declare, bind, qos, consume, cancel, delete) go one at a time and the next step waits for
//! the reply — so a SEND after a SUBSCRIBE finds the queue the SUBSCRIBE declared. What each client
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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use bytes::{Bytes, BytesMut};
use warren_bridge::{reply_name, Bridge, Event, Login as AmqpLogin, Step};
use warren_wire::constants;
use warren_wire::{
    BasicConsume, BasicDeliver, BasicProperties, BasicReject, FieldTable, FieldValue, Method,
    OutBuf, ShortStr,
};

use crate::destination;
use crate::properties;
use crate::queue_name::NameSource;
use crate::{Command, Decoder, Frame, Item, Limits, Version};

/// Above this many bytes waiting for the broker, the client is not read.
const AMQP_OUT_HIGH: usize = 1024 * 1024;
/// Above this many bytes waiting for the client, the broker is not read.
const STOMP_OUT_HIGH: usize = 1024 * 1024;
/// Above this many steps waiting (synchronous replies outstanding), the client is not read.
const ACTIONS_HIGH: usize = 1024;
/// Frames a client may send between CONNECT and CONNECTED.
const HELD_MAX: usize = 256;
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

/// What a step of the session's AMQP side is for, handed back by the bridge's events.
#[derive(Debug)]
enum Token {
    /// Nothing waits for it.
    None,
    /// A SEND's receipt, sent once the broker confirms the message.
    Receipt(String),
    /// A declare-ok names the queue the broker made for `/temp-queue/NAME`.
    TempQueue(String),
    /// A frame for the client, once everything before it is done.
    Client(Frame),
    /// Consume (no-ack, with this consumer tag) from the queue the broker named for
    /// `/temp-queue/NAME`, now that its declare-ok has named it.
    ConsumeTemp { name: String, tag: String },
    /// Publish a SEND whose `reply-to` is a `/temp-queue/`, now that the queue is named.
    PublishTemp(Box<Publish>),
    /// Forget a subscription (after the broker's cancel-ok).
    Forget(String),
    /// DISCONNECT: close the AMQP connection and end.
    Finish,
}

/// A SEND waiting for its temporary reply queue's name.
#[derive(Debug)]
struct Publish {
    exchange: String,
    routing_key: String,
    properties: BasicProperties,
    /// The `/temp-queue/NAME` of its `reply-to`.
    temp: String,
    body: Bytes,
    receipt: Option<String>,
}

/// Where the session is.
#[derive(Debug)]
enum Phase {
    /// Waiting for CONNECT (until the deadline).
    AwaitConnect {
        deadline: u64,
    },
    /// CONNECT arrived; the AMQP connection is being opened.
    Handshake,
    Open,
    /// Done: once [`Session::stomp_out`] is written, the socket closes.
    Closed,
}

/// What CONNECT asked for.
#[derive(Debug, Default)]
struct Login {
    login: String,
    passcode: String,
    vhost: String,
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
    /// The AMQP connection's client side.
    bridge: Bridge<Token>,
    stomp_out: BytesMut,
    phase: Phase,
    version: Version,
    login: Login,
    /// Frames that came between CONNECT and CONNECTED.
    held: VecDeque<Frame>,
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
            bridge: Bridge::new(),
            stomp_out: BytesMut::new(),
            phase: Phase::AwaitConnect { deadline },
            version: Version::V1_0,
            login: Login::default(),
            held: VecDeque::new(),
            subscriptions: HashMap::new(),
            declared: HashSet::new(),
            temp_queues: HashMap::new(),
            transactions: HashMap::new(),
            prefetch: 0,
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
        self.bridge.out()
    }

    /// Whether the client's bytes should be read now: not while the broker has much to take,
    /// nor once the session is closed.
    pub fn wants_stomp(&self) -> bool {
        !self.is_closed()
            && self.bridge.out_len() < AMQP_OUT_HIGH
            && self.bridge.queued() < ACTIONS_HIGH
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
        loop {
            let mut events = Vec::new();
            self.bridge.receive(buf, &mut events);
            if events.is_empty() {
                break;
            }
            self.handle(events);
            self.pump();
        }
        self.stamp_sent(now);
    }

    /// The client's socket closed: nothing more to do for it (unacknowledged messages go back
    /// to their queues when the AMQP connection closes).
    pub fn client_closed(&mut self) {
        self.bridge.close();
        self.phase = Phase::Closed;
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
            Phase::Handshake => self.held.push_back(frame),
            Phase::Open => {
                self.on_frame(frame);
                self.pump();
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
        let login = AmqpLogin {
            user: self.login.login.clone(),
            password: self.login.passcode.clone(),
            vhost: self.login.vhost.clone(),
            client_properties: self.client_properties(),
        };
        self.bridge.open(login);
        self.phase = Phase::Handshake;
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
                self.bridge.push(Step::AwaitConfirms);
                self.receipt(&frame);
                self.bridge.push(Step::Mark(Token::Finish));
                return;
            }
            // A second CONNECT: RabbitMQ closes the connection without a word.
            Command::Connect | Command::Stomp => {
                self.bridge.close();
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
            self.bridge.push(Step::Mark(Token::Client(receipt)));
        }
    }

    /// Lets the bridge do the queued steps, acting on what they report, until it waits.
    fn pump(&mut self) {
        loop {
            let mut events = Vec::new();
            self.bridge.drive(&mut events);
            if events.is_empty() {
                return;
            }
            self.handle(events);
        }
    }

    /// What the broker's side said.
    fn handle(&mut self, events: Vec<Event<Token>>) {
        for event in events {
            if self.is_closed() {
                return;
            }
            match event {
                Event::Open => self.connected(),
                Event::Refused { code, text } => self.login_refused(code, &text),
                Event::Closed { code: 0, text } => self.fail("Internal error", &text, None),
                Event::Closed { code, text } => self.fail(reply_name(code), &text, None),
                Event::Reply {
                    token: Token::TempQueue(name),
                    method,
                } => {
                    if let Method::QueueDeclareOk(ok) = *method {
                        self.temp_queues.insert(name, Some(ok.queue.to_string()));
                    }
                }
                Event::Reply { .. } | Event::Tried { .. } => {}
                Event::Reached(token) => self.reached(token),
                Event::Confirmed { token, ack } => self.confirmed(token, ack),
                Event::Delivery {
                    deliver,
                    properties,
                    body,
                } => self.deliver(deliver, properties, body),
                Event::Cancelled { consumer_tag } => {
                    // The broker cancelled a consumer (its queue was deleted): RabbitMQ's
                    // ERROR, and the session goes on.
                    if let Some(sub) = self.subscriptions.remove(consumer_tag.as_str()) {
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
            }
        }
    }

    /// A mark of the session's steps was reached: everything before it is done.
    fn reached(&mut self, token: Token) {
        match token {
            Token::Client(frame) => self.write(&frame),
            Token::ConsumeTemp { name, tag } => {
                let queue = self
                    .temp_queues
                    .get(&name)
                    .and_then(|q| q.as_deref())
                    .unwrap_or_default();
                let consume = Method::BasicConsume(BasicConsume {
                    ticket: 0,
                    queue: queue.into(),
                    consumer_tag: tag.into(),
                    no_local: false,
                    no_ack: true,
                    exclusive: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                });
                self.bridge.push_front(Step::Sync(consume, Token::None));
            }
            Token::PublishTemp(publish) => {
                let Publish {
                    exchange,
                    routing_key,
                    mut properties,
                    temp,
                    body,
                    receipt,
                } = *publish;
                properties.reply_to = self
                    .temp_queues
                    .get(&temp)
                    .and_then(|q| q.as_deref())
                    .map(ShortStr::from);
                self.bridge.push_front(Step::Publish {
                    exchange,
                    routing_key,
                    properties: Box::new(properties),
                    body,
                    token: receipt.map_or(Token::None, Token::Receipt),
                });
            }
            Token::Forget(tag) => {
                self.subscriptions.remove(&tag);
            }
            Token::Finish => {
                self.bridge.close();
                self.phase = Phase::Closed;
            }
            Token::None | Token::Receipt(_) | Token::TempQueue(_) => {}
        }
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

    /// A publish confirmed or refused: its receipt, if it asked for one.
    fn confirmed(&mut self, token: Token, ack: bool) {
        let Token::Receipt(receipt) = token else {
            return;
        };
        if ack {
            let frame = Frame::new(Command::Receipt).with_header("receipt-id", receipt);
            self.write(&frame);
        } else {
            self.fail(
                "Message not published",
                "The broker refused the message (nack)\n",
                Some(&receipt),
            );
        }
    }

    /// A delivery of a subscription's consumer: its MESSAGE (or, once UNSUBSCRIBE was asked,
    /// back to its queue).
    fn deliver(&mut self, deliver: BasicDeliver, properties: Box<BasicProperties>, body: Bytes) {
        let Some(sub) = self.subscriptions.get_mut(deliver.consumer_tag.as_str()) else {
            return;
        };
        if sub.cancelled {
            if sub.ack != AckMode::Auto {
                self.bridge
                    .push(Step::Async(Method::BasicReject(BasicReject {
                        delivery_tag: deliver.delivery_tag,
                        requeue: true,
                    })));
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
        properties::to_headers(&properties, &mut headers);
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
        self.bridge.close();
        self.phase = Phase::Closed;
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
