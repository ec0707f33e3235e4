//! One AMQP connection as a sans-io state machine: bytes in, core inputs and bytes out.
//!
//! Owns the handshake (protocol header, start/start-ok with SASL PLAIN and AMQPLAIN, tune/tune-ok
//! negotiated as RabbitMQ does, open), channel numbering and open/closing states, assembly of
//! `basic.publish` content, heartbeats, the handshake timeout, the connection-level error paths,
//! blocking a publisher while a resource alarm is on (`connection.blocked`), and counting what
//! the client does in the node's client counters (`crate::counters`) from the frames it reads
//! and writes.
//! Knows nothing of sockets or clocks: the driver (`connection.rs`) passes bytes and `now` in and
//! writes [`Session::out`] to the socket. The broker model itself lives in `warren-core`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};
use warren_core::{AmqpError, ConnId, Effect, Input, Millis};
use warren_wire::constants::{
    CHANNEL_ERROR, COMMAND_INVALID, CONNECTION_FORCED, FRAME_ERROR, NOT_ALLOWED,
    PRECONDITION_FAILED, UNEXPECTED_FRAME,
};
use warren_wire::{
    BasicProperties, BasicPublish, ChannelClose, ChannelCloseOk, ConnectionClose,
    ConnectionCloseOk, ConnectionStart, ConnectionTune, ConnectionUpdateSecretOk, ContentHeader,
    FieldTable, FieldValue, Frame, FrameDecoder, LongStr, Method, OutBuf, PROTOCOL_HEADER,
};

use crate::confirms::Confirms;
use crate::counters::{ClientCounters, Tally};
use crate::ServerConfig;

/// How long we wait for `connection.close-ok` after sending `connection.close`.
const CLOSE_TIMEOUT_MS: Millis = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHeader,
    AwaitStartOk,
    AwaitLogin,
    AwaitTuneOk,
    AwaitOpen,
    AwaitOpenOk,
    Open,
    /// We sent `connection.close`; everything but `close-ok` is discarded.
    Closing,
}

/// Where a channel is in its life; a channel not in the map is free.
// One per open channel; the large variant is the common one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum ChannelState {
    Open(Content),
    /// The client sent `channel.close`; the core answers with `close-ok`, which frees it.
    ClientClosing,
    /// We sent `channel.close`; discarding everything until the client's `close-ok`.
    ServerClosing,
}

/// Content assembly of a `basic.publish` on one channel.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Content {
    Idle,
    AwaitHeader(BasicPublish),
    AwaitBody {
        publish: BasicPublish,
        properties: BasicProperties,
        size: u64,
        body: Body,
    },
}

#[derive(Debug, Default)]
enum Body {
    #[default]
    Empty,
    /// A body that arrived in one frame: kept as the read buffer's slice (zero-copy).
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }

    fn push(&mut self, piece: Bytes) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::One(piece),
            Body::One(first) => {
                let mut m = BytesMut::with_capacity(first.len() + piece.len());
                m.extend_from_slice(&first);
                m.extend_from_slice(&piece);
                Body::Many(m)
            }
            Body::Many(mut m) => {
                m.extend_from_slice(&piece);
                Body::Many(m)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(m) => m.freeze(),
        }
    }
}

/// The state of one client connection, driven by bytes, core effects and ticks.
#[derive(Debug)]
pub struct Session {
    conn: ConnId,
    config: ServerConfig,
    peer_loopback: bool,
    /// The user a TLS client certificate names: SASL EXTERNAL is offered and logs in as it.
    external_user: Option<String>,
    phase: Phase,
    decoder: FrameDecoder,
    out: OutBuf,
    channels: HashMap<u16, ChannelState>,
    channel_max: u16,
    frame_max: u32,
    /// Negotiated heartbeat in milliseconds (0: off).
    heartbeat_ms: Millis,
    started_at: Millis,
    last_received: Millis,
    last_heartbeat_sent: Millis,
    close_deadline: Option<Millis>,
    /// The core knows this connection (a login was submitted): it must hear of its end.
    known_to_core: bool,
    awaiting_writable: bool,
    /// The socket should be closed once `out` is flushed.
    finished: bool,
    /// The cluster's resource alarm, as RabbitMQ words it (`low on memory`), while one is on.
    alarm: Option<String>,
    /// Blocked by the alarm: the connection published while it was on. The `basic.publish`
    /// that blocked it waits here, unprocessed, and nothing more is read (RabbitMQ's reader
    /// stops at that frame too) until the alarm clears.
    blocked: Option<Frame>,
    /// `connection.blocked` was sent for the current blocking (sent once per blocking).
    blocked_sent: bool,
    /// Paused by credit flow ([`Effect::Flow`]): the client's publishes fill the log's pipeline,
    /// so nothing more is read until the core resumes it (RabbitMQ's connection state `flow`).
    in_flow: bool,
    /// The client announced the `connection.blocked` capability.
    notify_blocked: bool,
    /// The client sent connection.close and got close-ok: closing the socket is its turn.
    closed_by_client: bool,
    /// Publisher confirms answered so far, to coalesce runs of them (`crate::confirms`).
    confirms: Confirms,
    /// What this connection adds to the node's client counters (`crate::counters`).
    tally: Tally,
}

impl Session {
    pub fn new(conn: ConnId, config: &ServerConfig, peer_loopback: bool, now: Millis) -> Session {
        Session {
            conn,
            config: config.clone(),
            peer_loopback,
            external_user: None,
            phase: Phase::AwaitHeader,
            // Until tune-ok, frames are limited to the spec's minimum frame size.
            decoder: FrameDecoder::new(warren_wire::constants::FRAME_MIN_SIZE),
            out: OutBuf::new(),
            channels: HashMap::new(),
            channel_max: config.channel_max,
            frame_max: config.frame_max,
            heartbeat_ms: 0,
            started_at: now,
            last_received: now,
            last_heartbeat_sent: now,
            close_deadline: None,
            known_to_core: false,
            awaiting_writable: false,
            finished: false,
            closed_by_client: false,
            alarm: None,
            blocked: None,
            blocked_sent: false,
            in_flow: false,
            notify_blocked: false,
            confirms: Confirms::default(),
            tally: Tally::new(Arc::default()),
        }
    }

    /// Counts what the client does in `counters`, the node's (see [`crate::counters`]); without
    /// it, in counters of its own.
    pub fn with_counters(mut self, counters: Arc<ClientCounters>) -> Session {
        self.tally.set_counters(counters);
        self
    }

    /// The cluster's resource alarms changed: `reason` is RabbitMQ's text (`low on memory`,
    /// `low on disk`, `low on memory & disk`) while one is on. Connections that publish while it
    /// is on are blocked (RabbitMQ's "blocking" until they publish, "blocked" after); when it
    /// clears, a blocked one gets `connection.unblocked` and goes on where it stopped.
    pub fn set_alarm(&mut self, reason: Option<String>, now: Millis, inputs: &mut Vec<Input>) {
        self.alarm = reason;
        if self.alarm.is_some() || self.blocked.is_none() {
            return;
        }
        if self.blocked_sent && self.notify_blocked && !self.finished {
            self.out.push_method(
                0,
                &Method::ConnectionUnblocked(warren_wire::ConnectionUnblocked {}),
            );
        }
        self.blocked_sent = false;
        // The client was not read while blocked: its silence was ours.
        self.last_received = now;
        if let Some(frame) = self.blocked.take() {
            self.frame(frame, now, inputs);
        }
    }

    /// Blocked by a resource alarm: the driver must not read from the socket.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Paused by credit flow (see [`Effect::Flow`]): the driver must not read from the socket.
    pub fn in_flow(&self) -> bool {
        self.in_flow
    }

    /// The connection came over TLS with a verified client certificate naming `user`: SASL
    /// EXTERNAL is offered, and logs in as `user` (RabbitMQ's `rabbitmq_auth_mechanism_ssl`).
    pub fn with_external_user(mut self, user: Option<String>) -> Session {
        self.external_user = user;
        self
    }

    /// A `basic.publish` arrived while an alarm is on: hold it, stop reading, and tell a client
    /// that can hear it why (once per blocking).
    fn block(&mut self, publish: Frame) {
        self.blocked = Some(publish);
        if !self.blocked_sent && self.notify_blocked {
            let reason = self.alarm.clone().unwrap_or_default();
            self.out.push_method(
                0,
                &Method::ConnectionBlocked(warren_wire::ConnectionBlocked {
                    reason: reason.as_str().into(),
                }),
            );
            self.blocked_sent = true;
        }
    }

    /// Bytes to write to the socket.
    pub fn out(&mut self) -> &mut OutBuf {
        &mut self.out
    }

    /// The socket should be closed once [`Session::out`] is empty.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The session ended with the client's connection.close, answered with close-ok. As
    /// RabbitMQ does, the server then waits for the client to close the socket.
    pub fn closed_by_client(&self) -> bool {
        self.closed_by_client
    }

    /// The core holds state for this connection and must get `Input::ConnectionClosed`.
    pub fn known_to_core(&self) -> bool {
        self.known_to_core
    }

    /// True once `connection.open-ok` was sent.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Consumes every whole frame in `buf`; partial frames stay for the next call.
    pub fn receive(&mut self, buf: &mut BytesMut, now: Millis, inputs: &mut Vec<Input>) {
        if buf.is_empty() || self.finished {
            return;
        }
        self.last_received = now;
        if self.phase == Phase::AwaitHeader {
            if buf.len() < PROTOCOL_HEADER.len() {
                if !b"AMQP".starts_with(&buf[..buf.len().min(4)]) {
                    self.refuse_protocol(buf);
                }
                return;
            }
            // RabbitMQ also takes the AMQP 0-9 header (`AMQP 1 1 0 9`) for 0-9-1.
            let header = &buf[..PROTOCOL_HEADER.len()];
            if header != PROTOCOL_HEADER && header != b"AMQP\x01\x01\x00\x09" {
                self.refuse_protocol(buf);
                return;
            }
            let _ = buf.split_to(PROTOCOL_HEADER.len());
            self.send_start();
            self.phase = Phase::AwaitStartOk;
        }
        while !self.finished && self.blocked.is_none() {
            match self.decoder.decode(buf) {
                Ok(Some(frame)) if self.alarm.is_some() && is_publish(&frame) => {
                    self.block(frame);
                }
                Ok(Some(frame)) => self.frame(frame, now, inputs),
                Ok(None) => break,
                Err(e) => {
                    debug!(conn = self.conn, error = %e, "malformed frame");
                    buf.clear();
                    let code = e.reply_code();
                    let (class_id, method_id) = match e {
                        warren_wire::WireError::UnknownMethod {
                            class_id,
                            method_id,
                        }
                        | warren_wire::WireError::BadArguments {
                            class_id,
                            method_id,
                        } => (class_id, method_id),
                        _ => (0, 0),
                    };
                    let text = match code {
                        FRAME_ERROR => e.to_string(),
                        COMMAND_INVALID => format!("unknown method {class_id}/{method_id}"),
                        _ => e.to_string(),
                    };
                    self.connection_error(
                        AmqpError::new(code, text).caused_by(class_id, method_id),
                        now,
                        inputs,
                    );
                    break;
                }
            }
        }
    }

    /// A client that does not speak 0-9-1 gets the header we speak, then the socket closes.
    fn refuse_protocol(&mut self, buf: &mut BytesMut) {
        debug!(conn = self.conn, header = ?&buf[..], "unsupported protocol header");
        buf.clear();
        self.out.push_protocol_header();
        self.finished = true;
    }

    fn send_start(&mut self) {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
            "consumer_priorities",
        ] {
            caps.insert(cap, FieldValue::Bool(true));
        }
        let mut props = FieldTable::default();
        props.insert("capabilities", FieldValue::Table(caps));
        props.insert(
            "cluster_name",
            FieldValue::from(self.config.cluster_name.as_str()),
        );
        props.insert(
            "copyright",
            FieldValue::from("Copyright (c) the Warren authors"),
        );
        props.insert(
            "information",
            FieldValue::from("Licensed under the Apache License 2.0"),
        );
        props.insert("platform", FieldValue::from("Rust"));
        props.insert("product", FieldValue::from("Warren"));
        props.insert("version", FieldValue::from(env!("CARGO_PKG_VERSION")));
        let start = ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: LongStr::from(if self.external_user.is_some() {
                "PLAIN AMQPLAIN EXTERNAL"
            } else {
                "PLAIN AMQPLAIN"
            }),
            locales: LongStr::from("en_US"),
        };
        self.out.push_method(0, &Method::ConnectionStart(start));
    }

    fn frame(&mut self, frame: Frame, now: Millis, inputs: &mut Vec<Input>) {
        match self.phase {
            Phase::Closing => {
                if let Frame::Method {
                    channel: 0,
                    method: Method::ConnectionCloseOk(_),
                } = frame
                {
                    self.finished = true;
                } else if let Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_),
                } = frame
                {
                    // Both sides closed at once: answer, and we are done.
                    self.out
                        .push_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                    self.finished = true;
                    self.closed_by_client = true;
                }
            }
            Phase::AwaitHeader => {}
            Phase::AwaitStartOk => match frame {
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionStartOk(m),
                } => match sasl_credentials(
                    m.mechanism.as_str(),
                    m.response.as_bytes(),
                    self.external_user.as_deref(),
                ) {
                    Ok((username, password)) => {
                        self.notify_blocked = announces_blocked(&m.client_properties);
                        self.known_to_core = true;
                        self.phase = Phase::AwaitLogin;
                        self.tally.login_submitted();
                        inputs.push(Input::Login {
                            conn: self.conn,
                            mechanism: m.mechanism.to_string(),
                            username,
                            password,
                            peer_loopback: self.peer_loopback,
                            client_properties: m.client_properties,
                        });
                    }
                    Err(e) => {
                        // RabbitMQ counts a response it cannot read as a failed attempt, not
                        // a mechanism it does not offer.
                        if matches!(m.mechanism.as_str(), "PLAIN" | "AMQPLAIN") {
                            self.tally.login_unreadable();
                        }
                        self.connection_error(e.caused_by(10, 11), now, inputs)
                    }
                },
                _ => self.handshake_violation("connection.start-ok", now, inputs),
            },
            Phase::AwaitLogin => {
                self.handshake_violation("nothing before connection.tune", now, inputs)
            }
            Phase::AwaitTuneOk => match frame {
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionTuneOk(m),
                } => self.tune_ok(m, now, inputs),
                _ => self.handshake_violation("connection.tune-ok", now, inputs),
            },
            Phase::AwaitOpen => match frame {
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionOpen(m),
                } => {
                    self.phase = Phase::AwaitOpenOk;
                    inputs.push(Input::OpenVhost {
                        conn: self.conn,
                        vhost: m.virtual_host.to_string(),
                    });
                }
                Frame::Heartbeat { .. } => {}
                _ => self.handshake_violation("connection.open", now, inputs),
            },
            // Channel frames pipelined behind connection.open are ordered after it in the core.
            Phase::AwaitOpenOk | Phase::Open => self.open_frame(frame, now, inputs),
        }
    }

    fn handshake_violation(&mut self, expected: &str, now: Millis, inputs: &mut Vec<Input>) {
        let e = AmqpError::new(COMMAND_INVALID, format!("expected {expected}"));
        self.connection_error(e, now, inputs);
    }

    fn tune_ok(&mut self, m: warren_wire::ConnectionTuneOk, now: Millis, inputs: &mut Vec<Input>) {
        let server_frame_max = self.config.frame_max;
        if m.frame_max != 0 && m.frame_max < warren_wire::constants::FRAME_MIN_SIZE {
            let e = AmqpError::new(
                NOT_ALLOWED,
                format!(
                    "frame_max={} < {} min size",
                    m.frame_max,
                    warren_wire::constants::FRAME_MIN_SIZE
                ),
            );
            return self.connection_error(e.caused_by(10, 31), now, inputs);
        }
        if m.frame_max == 0 || m.frame_max > server_frame_max {
            let e = AmqpError::new(
                NOT_ALLOWED,
                format!("frame_max={} > {} max size", m.frame_max, server_frame_max),
            );
            return self.connection_error(e.caused_by(10, 31), now, inputs);
        }
        if m.channel_max > self.config.channel_max {
            let e = AmqpError::new(
                NOT_ALLOWED,
                format!(
                    "channel_max={} > {} max",
                    m.channel_max, self.config.channel_max
                ),
            );
            return self.connection_error(e.caused_by(10, 31), now, inputs);
        }
        self.channel_max = if m.channel_max == 0 {
            self.config.channel_max
        } else {
            m.channel_max
        };
        self.frame_max = m.frame_max;
        self.decoder.set_frame_max(m.frame_max);
        self.heartbeat_ms = Millis::from(m.heartbeat) * 1000;
        self.last_heartbeat_sent = now;
        self.phase = Phase::AwaitOpen;
    }

    fn open_frame(&mut self, frame: Frame, now: Millis, inputs: &mut Vec<Input>) {
        let channel = frame.channel();
        if channel == 0 {
            return self.channel_zero(frame, now, inputs);
        }
        if channel > self.channel_max {
            let e = AmqpError::new(
                CHANNEL_ERROR,
                format!(
                    "channel number {channel} is out of range 1..{}",
                    self.channel_max
                ),
            );
            return self.connection_error(e, now, inputs);
        }
        if let Frame::Heartbeat { .. } = frame {
            let e = AmqpError::new(
                UNEXPECTED_FRAME,
                format!("heartbeat frame on channel {channel}"),
            );
            return self.connection_error(e, now, inputs);
        }
        let conn = self.conn;
        match self.channels.get_mut(&channel) {
            None => match frame {
                Frame::Method {
                    method: Method::ChannelOpen(m),
                    ..
                } => {
                    self.channels
                        .insert(channel, ChannelState::Open(Content::Idle));
                    self.tally.channel_opening(channel);
                    inputs.push(Input::Method {
                        conn,
                        channel,
                        method: Method::ChannelOpen(m),
                    });
                }
                Frame::Method { method, .. } => {
                    let e = AmqpError::new(CHANNEL_ERROR, "expected 'channel.open'")
                        .caused_by(method.class_id(), method.method_id());
                    self.connection_error(e, now, inputs);
                }
                _ => {
                    let e = AmqpError::new(
                        CHANNEL_ERROR,
                        format!("content frame on channel {channel}, which is not open"),
                    );
                    self.connection_error(e, now, inputs);
                }
            },
            Some(ChannelState::ClientClosing) => {}
            Some(ChannelState::ServerClosing) => match frame {
                Frame::Method {
                    method: Method::ChannelCloseOk(_),
                    ..
                } => {
                    self.channels.remove(&channel);
                    self.tally.channel_closed(channel);
                }
                Frame::Method {
                    method: Method::ChannelClose(_),
                    ..
                } => {
                    self.out
                        .push_method(channel, &Method::ChannelCloseOk(ChannelCloseOk {}));
                }
                _ => {}
            },
            Some(ChannelState::Open(content)) => {
                let state = std::mem::replace(content, Content::Idle);
                match (state, frame) {
                    (Content::Idle, Frame::Method { method, .. }) => match method {
                        Method::BasicPublish(p) => {
                            if let Some(ChannelState::Open(c)) = self.channels.get_mut(&channel) {
                                *c = Content::AwaitHeader(p);
                            }
                        }
                        Method::ChannelClose(m) => {
                            self.channels.insert(channel, ChannelState::ClientClosing);
                            inputs.push(Input::Method {
                                conn,
                                channel,
                                method: Method::ChannelClose(m),
                            });
                        }
                        m if m.class_id() == 10 => {
                            let e = AmqpError::new(
                                COMMAND_INVALID,
                                format!("{} is not allowed on channel {channel}", m.name()),
                            )
                            .caused_by(m.class_id(), m.method_id());
                            self.connection_error(e, now, inputs);
                        }
                        method => {
                            self.tally.received(channel, &method);
                            inputs.push(Input::Method {
                                conn,
                                channel,
                                method,
                            })
                        }
                    },
                    (Content::Idle, _) => {
                        let e = AmqpError::new(
                            UNEXPECTED_FRAME,
                            "expected method frame, got non method frame instead",
                        );
                        self.connection_error(e, now, inputs);
                    }
                    (Content::AwaitHeader(publish), Frame::Header { header, .. }) => {
                        self.content_header(channel, publish, *header, now, inputs);
                    }
                    (Content::AwaitHeader(_), _) => {
                        let e = AmqpError::new(UNEXPECTED_FRAME, "expected content header for class 60, got non content header frame instead")
                            .caused_by(60, 40);
                        self.connection_error(e, now, inputs);
                    }
                    (
                        Content::AwaitBody {
                            publish,
                            properties,
                            size,
                            mut body,
                        },
                        Frame::Body { payload, .. },
                    ) => {
                        if body.len() as u64 + payload.len() as u64 > size {
                            let e = AmqpError::new(FRAME_ERROR, format!("content body is larger than the {size} bytes its header declared"))
                                .caused_by(60, 40);
                            return self.connection_error(e, now, inputs);
                        }
                        body.push(payload);
                        if body.len() as u64 == size {
                            self.tally.published(channel, Some(size));
                            inputs.push(Input::Publish {
                                conn,
                                channel,
                                publish,
                                properties,
                                body: body.into_bytes(),
                            });
                        } else if let Some(ChannelState::Open(c)) = self.channels.get_mut(&channel)
                        {
                            *c = Content::AwaitBody {
                                publish,
                                properties,
                                size,
                                body,
                            };
                        }
                    }
                    (Content::AwaitBody { .. }, _) => {
                        let e = AmqpError::new(
                            UNEXPECTED_FRAME,
                            "expected content body, got non content body frame instead",
                        )
                        .caused_by(60, 40);
                        self.connection_error(e, now, inputs);
                    }
                }
            }
        }
    }

    fn content_header(
        &mut self,
        channel: u16,
        publish: BasicPublish,
        header: ContentHeader,
        now: Millis,
        inputs: &mut Vec<Input>,
    ) {
        let conn = self.conn;
        if header.class_id != 60 {
            let e = AmqpError::new(
                UNEXPECTED_FRAME,
                format!(
                    "content header for class {} after basic.publish",
                    header.class_id
                ),
            )
            .caused_by(60, 40);
            return self.connection_error(e, now, inputs);
        }
        if header.body_size > self.config.max_message_size {
            let error = AmqpError::new(
                PRECONDITION_FAILED,
                format!(
                    "message size {} is larger than configured max size {}",
                    header.body_size, self.config.max_message_size
                ),
            )
            .caused_by(60, 40);
            self.tally.published(channel, None);
            // The body frames that follow are discarded while the channel closes.
            self.channels.insert(channel, ChannelState::ServerClosing);
            inputs.push(Input::ChannelError {
                conn,
                channel,
                error,
            });
            return;
        }
        if header.body_size == 0 {
            self.tally.published(channel, Some(0));
            inputs.push(Input::Publish {
                conn,
                channel,
                publish,
                properties: header.properties,
                body: Bytes::new(),
            });
            return;
        }
        if let Some(ChannelState::Open(c)) = self.channels.get_mut(&channel) {
            *c = Content::AwaitBody {
                publish,
                properties: header.properties,
                size: header.body_size,
                body: Body::Empty,
            };
        }
    }

    fn channel_zero(&mut self, frame: Frame, now: Millis, inputs: &mut Vec<Input>) {
        match frame {
            Frame::Heartbeat { .. } => {}
            Frame::Method {
                method: Method::ConnectionClose(m),
                ..
            } => {
                debug!(conn = self.conn, code = m.reply_code, text = %m.reply_text, "client closed the connection");
                self.out
                    .push_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
                self.finished = true;
                self.closed_by_client = true;
                self.forget(inputs);
            }
            Frame::Method {
                method: Method::ConnectionUpdateSecret(_),
                ..
            } => {
                // Warren's users authenticate with passwords only; there is no secret to expire.
                self.out.push_method(
                    0,
                    &Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
                );
            }
            Frame::Method {
                method: Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_),
                ..
            } => {}
            // RabbitMQ's codes and wording for frames that do not belong on channel 0.
            Frame::Method { method, .. } => {
                let e = AmqpError::new(
                    CHANNEL_ERROR,
                    "unexpected method in connection state running",
                )
                .caused_by(method.class_id(), method.method_id());
                self.connection_error(e, now, inputs);
            }
            _ => {
                let e = AmqpError::new(UNEXPECTED_FRAME, "content frame on channel 0");
                self.connection_error(e, now, inputs);
            }
        }
    }

    /// Sends `connection.close` and discards everything but `close-ok` from now on. The core is
    /// told at once, so the connection's unacked messages go back to their queues.
    fn connection_error(&mut self, error: AmqpError, now: Millis, inputs: &mut Vec<Input>) {
        if self.phase == Phase::Closing || self.finished {
            return;
        }
        info!(conn = self.conn, code = error.code, text = %error.text, "closing connection on error");
        self.send_connection_close(&error, now);
        self.forget(inputs);
    }

    fn send_connection_close(&mut self, error: &AmqpError, now: Millis) {
        let close = ConnectionClose {
            reply_code: error.code,
            reply_text: error.text.as_str().into(),
            class_id: error.class_id,
            method_id: error.method_id,
        };
        self.out.push_method(0, &Method::ConnectionClose(close));
        self.phase = Phase::Closing;
        self.close_deadline = Some(now + CLOSE_TIMEOUT_MS);
    }

    /// Tells the core the connection is gone (once).
    fn forget(&mut self, inputs: &mut Vec<Input>) {
        if self.known_to_core {
            self.known_to_core = false;
            inputs.push(Input::ConnectionClosed { conn: self.conn });
        }
    }

    /// Applies one effect the core addressed to this connection.
    /// Applies a batch of effects in order, a run of publisher confirms that answers every
    /// earlier publish of its channel going out as one `basic.ack` with `multiple=true`.
    pub fn apply_all(&mut self, effects: &mut Vec<Effect>, now: Millis, inputs: &mut Vec<Input>) {
        let confirmed = self.confirms.coalesce(effects);
        self.tally.confirmed(confirmed);
        for e in effects.drain(..) {
            self.apply(e, now, inputs);
        }
    }

    pub fn apply(&mut self, effect: Effect, now: Millis, inputs: &mut Vec<Input>) {
        if self.finished {
            return;
        }
        match effect {
            Effect::Send {
                channel, method, ..
            } => {
                if self.phase == Phase::Closing {
                    return;
                }
                match &method {
                    Method::ConnectionOpenOk(_) if channel == 0 => self.phase = Phase::Open,
                    Method::ChannelCloseOk(_) => {
                        self.channels.remove(&channel);
                        self.confirms.reset(channel);
                    }
                    // A channel number used again numbers its publishes from 1 again.
                    Method::ChannelOpenOk(_) => self.confirms.reset(channel),
                    _ => {}
                }
                if channel != 0
                    && matches!(
                        self.channels.get(&channel),
                        Some(ChannelState::ServerClosing)
                    )
                {
                    return;
                }
                self.tally.sent(channel, &method);
                self.out.push_method(channel, &method);
            }
            Effect::SendContent {
                channel,
                method,
                properties,
                body,
                ..
            } => {
                if self.phase == Phase::Closing
                    || !matches!(self.channels.get(&channel), Some(ChannelState::Open(_)))
                {
                    return;
                }
                self.tally.sent_content(channel, &method);
                self.out
                    .push_delivery(channel, &method, &properties, body, self.frame_max);
            }
            Effect::Authenticated { user, .. } => {
                debug!(conn = self.conn, %user, "authenticated");
                self.tally.authenticated();
                let tune = ConnectionTune {
                    channel_max: self.config.channel_max,
                    frame_max: self.config.frame_max,
                    heartbeat: self.config.heartbeat,
                };
                self.out.push_method(0, &Method::ConnectionTune(tune));
                self.phase = Phase::AwaitTuneOk;
            }
            Effect::CloseChannel { channel, error, .. } => {
                if self.phase == Phase::Closing {
                    return;
                }
                debug!(conn = self.conn, channel, code = error.code, text = %error.text, "closing channel");
                let close = ChannelClose {
                    reply_code: error.code,
                    reply_text: error.text.as_str().into(),
                    class_id: error.class_id,
                    method_id: error.method_id,
                };
                self.out.push_method(channel, &Method::ChannelClose(close));
                self.channels.insert(channel, ChannelState::ServerClosing);
                // The core already dropped the channel: closed, as far as counting goes.
                self.tally.channel_closed(channel);
            }
            Effect::CloseConnection { error, .. } => {
                // The core already dropped the connection's state.
                self.known_to_core = false;
                self.tally.connection_closed_by_server();
                if self.phase != Phase::Closing {
                    info!(conn = self.conn, code = error.code, text = %error.text, "closing connection");
                    self.send_connection_close(&error, now);
                }
            }
            Effect::AwaitWritable { .. } => {
                self.awaiting_writable = true;
                self.after_write(inputs);
            }
            Effect::Flow { paused, .. } => {
                if self.in_flow && !paused {
                    // The client was not read while paused: its silence was ours.
                    self.last_received = now;
                }
                if paused && !self.in_flow {
                    self.tally.flow_paused();
                }
                self.in_flow = paused;
            }
            Effect::Propose { .. }
            | Effect::Forward { .. }
            | Effect::ForwardRefused { .. }
            | Effect::Synced { .. }
            | Effect::ToOwner { .. }
            | Effect::ToChannel { .. } => warn!(
                conn = self.conn,
                "a command, a queue command or a home copy's change was addressed to a connection"
            ),
        }
    }

    /// Call after bytes were written: answers a pending `AwaitWritable` once below the low mark.
    pub fn after_write(&mut self, inputs: &mut Vec<Input>) {
        if self.awaiting_writable && self.out.len() <= self.config.low_watermark {
            self.awaiting_writable = false;
            inputs.push(Input::Writable {
                conn: self.conn,
                writable: true,
            });
        }
    }

    /// Timers: handshake timeout, close-ok timeout, heartbeats sent and missed.
    pub fn tick(&mut self, now: Millis, inputs: &mut Vec<Input>) {
        if self.finished {
            return;
        }
        if let Some(deadline) = self.close_deadline {
            if now >= deadline {
                debug!(conn = self.conn, "no connection.close-ok in time");
                self.finished = true;
            }
            return;
        }
        let handshake_ms = self.config.handshake_timeout.as_millis() as Millis;
        if !matches!(self.phase, Phase::Open | Phase::AwaitOpenOk)
            && now.saturating_sub(self.started_at) >= handshake_ms
        {
            info!(conn = self.conn, "handshake timeout");
            self.finished = true;
            self.forget(inputs);
            return;
        }
        if self.heartbeat_ms > 0
            && matches!(
                self.phase,
                Phase::Open | Phase::AwaitOpenOk | Phase::AwaitOpen
            )
        {
            // While blocked nothing is read: RabbitMQ pauses its heartbeat monitor then too.
            if self.blocked.is_none()
                && !self.in_flow
                && now.saturating_sub(self.last_received) >= 2 * self.heartbeat_ms
            {
                warn!(
                    conn = self.conn,
                    timeout_s = self.heartbeat_ms / 1000,
                    "missed heartbeats from client, closing connection"
                );
                self.finished = true;
                self.forget(inputs);
                return;
            }
            if now.saturating_sub(self.last_heartbeat_sent) >= self.heartbeat_ms / 2 {
                self.out.push_heartbeat();
                self.last_heartbeat_sent = now;
            }
        }
    }

    /// Broker shutdown: close with 320 CONNECTION_FORCED, as RabbitMQ does.
    pub fn shutdown(&mut self, now: Millis, inputs: &mut Vec<Input>) {
        if self.finished || self.phase == Phase::Closing {
            return;
        }
        if self.phase == Phase::Open || self.phase == Phase::AwaitOpenOk {
            let e = AmqpError::new(
                CONNECTION_FORCED,
                "broker forced connection closure with reason 'shutdown'",
            );
            self.send_connection_close(&e, now);
            self.close_deadline = Some(now + 1_000);
        } else {
            self.finished = true;
        }
        self.forget(inputs);
    }
}

/// A `basic.publish` method frame (the start of a message).
fn is_publish(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Method {
            method: Method::BasicPublish(_),
            ..
        }
    )
}

/// Whether client properties announce the `connection.blocked` capability.
fn announces_blocked(client_properties: &FieldTable) -> bool {
    let Some(FieldValue::Table(caps)) = client_properties.get("capabilities") else {
        return false;
    };
    matches!(caps.get("connection.blocked"), Some(FieldValue::Bool(true)))
}

/// Extracts user and password from a SASL response; EXTERNAL (offered only with a client
/// certificate) takes the certificate's user, `external`, and no password.
fn sasl_credentials(
    mechanism: &str,
    response: &[u8],
    external: Option<&str>,
) -> Result<(String, String), AmqpError> {
    let refused = || {
        AmqpError::access_refused(format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        ))
    };
    if let ("EXTERNAL", Some(user)) = (mechanism, external) {
        return Ok((user.to_owned(), String::new()));
    }
    match mechanism {
        "PLAIN" => {
            // authzid NUL authcid NUL password
            let mut parts = response.split(|b| *b == 0);
            let (_authzid, user, pass) = (parts.next(), parts.next(), parts.next());
            match (user, pass, parts.next()) {
                (Some(u), Some(p), None) => Ok((
                    String::from_utf8(u.to_vec()).map_err(|_| refused())?,
                    String::from_utf8(p.to_vec()).map_err(|_| refused())?,
                )),
                _ => Err(refused()),
            }
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let table = warren_wire::decode_table_body(Bytes::copy_from_slice(response))
                .map_err(|_| refused())?;
            let text = |key: &str| {
                table
                    .get(key)
                    .and_then(FieldValue::as_str)
                    .map(str::to_owned)
            };
            match (text("LOGIN"), text("PASSWORD")) {
                (Some(u), Some(p)) => Ok((u, p)),
                _ => Err(refused()),
            }
        }
        other => Err(AmqpError::access_refused(format!(
            "unsupported authentication mechanism '{other}'"
        ))),
    }
}

#[cfg(test)]
mod tests;
