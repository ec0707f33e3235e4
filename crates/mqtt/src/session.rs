//! One MQTT client, translated into one AMQP 0-9-1 connection, as RabbitMQ's MQTT plugin does it:
//! MQTT bytes in, AMQP bytes out (through a [`warren_bridge::Bridge`]: one channel in confirm
//! mode); the broker's AMQP bytes in, MQTT bytes out. No I/O and no clock here: the caller moves
//! the bytes and the time.
//!
//! - CONNECT: MQTT 3.1, 3.1.1 and 5.0; the user name may name the vhost (`vhost:user`, as
//!   RabbitMQ); no user name logs in as the configured default user; an empty client id gets
//!   one (`mqtt-…`, given back in 5.0's CONNACK), but not with a 3.1.1 persistent session.
//!   CONNACK once the AMQP connection is open, `session present` when a persistent session's
//!   queues are there.
//! - Subscriptions are RabbitMQ's: one queue per client and QoS, `mqtt-subscription-<client
//!   id>qos0` and `…qos1`, bound to `amq.topic` with the filter as binding key (`/` is `.`,
//!   `+` is `*`, `#` is `#`; see [`crate::topic`]). The QoS 0 queue is transient and goes with
//!   the connection; the QoS 1 queue is durable (replicated: it outlives the node the client was
//!   on), auto-delete for a clean session, kept for a persistent one (`x-expires` 24 h, or 5.0's
//!   session expiry) and consumed again when the client comes back — RabbitMQ's table. QoS 2 is
//!   granted as 1, as RabbitMQ does.
//! - PUBLISH: to `amq.topic` with the topic as routing key, persistent for QoS 1 and 2, with
//!   RabbitMQ's headers `x-mqtt-publish-qos` and `x-mqtt-dup`; PUBACK once the broker
//!   confirmed it. Retained messages are kept in the node's [`RetainedStore`] and given to
//!   later subscribers of matching filters (RabbitMQ's store is per node too).
//! - Deliveries: QoS = the lower of the subscription's and the message's; QoS 1 ones carry a
//!   packet id and are acknowledged to the broker by the client's PUBACK.
//! - Client id takeover works across nodes through the broker: a connection consumes from its
//!   client's `mqtt-presence-<client id>` queue (durable, so replicated, and expiring a minute
//!   after its last consumer); the next connection with that id deletes the queue (cancelling
//!   the consumer: the old connection closes, without its will, as RabbitMQ) and makes it again
//!   for itself.
//! - The will message is published when the client goes without DISCONNECT (its socket closed,
//!   its keep-alive expired, it broke the protocol). A client silent for 1.5 keep-alives is
//!   disconnected.

mod properties;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use warren_bridge::{Bridge, Event, Login, Step};
use warren_wire::{
    BasicAck, BasicConsume, BasicProperties, BasicQos, FieldTable, FieldValue, Method, OutBuf,
    QueueBind, QueueDeclare, QueueDelete, QueueUnbind,
};

use self::properties::{amqp_properties, mqtt_properties};
use crate::topic;
use crate::{
    encode, ConnAck, Connect, Decoder, Disconnect, MqttError, Packet, Properties, PubResponse,
    Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe, Version, Will,
    MAX_PACKET_SIZE_AUTHENTICATED, MAX_PACKET_SIZE_UNAUTHENTICATED,
};

/// The exchange MQTT topics live on.
const EXCHANGE: &str = "amq.topic";
/// Above this many bytes waiting for the broker (or the client), the other side is not read.
const OUT_HIGH: usize = 1024 * 1024;
/// Above this many steps waiting, the client is not read.
const STEPS_HIGH: usize = 1024;
/// Packets a client may send between CONNECT and CONNACK.
const HELD_MAX: usize = 256;
/// How long a persistent session's queue waits for its client (RabbitMQ's
/// `mqtt.subscription_ttl`).
const SUBSCRIPTION_TTL_MS: i64 = 86_400_000;
/// The header that marks what a connection with `no_local` subscriptions publishes.
const PUBLISHER_HEADER: &str = "x-mqtt-publisher";

/// The queue whose consumer marks the connection that has a client id (see `opened`).
const PRESENCE_PREFIX: &str = "mqtt-presence-";
const PRESENCE_TAG: &str = "mqtt-presence";
/// How long a presence queue outlives its connection.
const PRESENCE_EXPIRES_MS: i64 = 60_000;
/// Topic aliases a 5.0 client may set (RabbitMQ 4's `mqtt.topic_alias_maximum`).
const TOPIC_ALIAS_MAXIMUM: u16 = 16;
/// A delayed will (5.0's will delay interval) waits in a queue of this prefix and the client
/// id, with a message TTL of the delay and `amq.topic` as its dead-letter exchange (RabbitMQ
/// 3.13's design); the client's next connection deletes it.
const WILL_PREFIX: &str = "mqtt-will-";
/// How long a delayed will's queue outlives its delay (it goes once the will went out).
const WILL_QUEUE_SLACK_MS: i64 = 60_000;
/// The prefix of a shared subscription's filter (5.0), which Warren does not offer.
const SHARED_PREFIX: &str = "$share/";

/// A retained message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retained {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub properties: Properties,
}

/// Where a node keeps its retained messages, by vhost and topic (RabbitMQ's retained message
/// store: per node). Shared by the node's MQTT sessions.
pub trait RetainedStore: Send + Sync + std::fmt::Debug {
    /// Keeps `message` as the topic's retained message (`None`: forgets it).
    fn set(&self, vhost: &str, topic: &str, message: Option<Retained>);
    /// The retained messages whose topics `filter` matches.
    fn matching(&self, vhost: &str, filter: &str) -> Vec<Retained>;
}

/// How a session is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Who logs in when CONNECT has no user name (RabbitMQ's `mqtt.default_user`).
    pub default_user: String,
    pub default_password: String,
    /// The vhost when the user name names none (`mqtt.vhost`).
    pub default_vhost: String,
    /// How long a client has to send CONNECT after its socket opens, in milliseconds.
    pub connect_timeout_ms: u64,
    /// A client property of the AMQP connection set to e.g. `MQTT 3.1.1`; `None`: not set.
    pub protocol_property: Option<String>,
    /// Random bits: the client id the session assigns to a client that has none, and its mark
    /// on what it publishes for `no_local`.
    pub seed: u64,
    /// Unacknowledged QoS 1 deliveries per client (RabbitMQ's `mqtt.prefetch`, 10).
    pub prefetch: u16,
    pub retained: Arc<dyn RetainedStore>,
}

/// What a step of the AMQP side is for.
#[derive(Debug)]
enum Token {
    None,
    /// A QoS 1 (or 2) PUBLISH: PUBACK with this packet id once confirmed.
    PubAck(u16),
    /// A SUBSCRIBE's bindings are made: SUBACK, then its filters' retained messages.
    SubAck {
        packet_id: u16,
        codes: Vec<ReasonCode>,
        filters: Vec<(String, QoS)>,
    },
    UnsubAck {
        packet_id: u16,
        codes: Vec<ReasonCode>,
    },
    /// A persistent session's queue of this QoS exists (or not).
    Resume(QoS),
    /// The queues of a persistent session are known: CONNACK.
    ConnAck,
    /// The will is published (and confirmed): close.
    Finish,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    AwaitConnect {
        deadline: u64,
    },
    /// CONNECT read, the AMQP connection opening.
    Connecting,
    /// Reconnecting a persistent session: its queues are being looked for.
    Resuming,
    Open,
    /// Going: the will (if any) is being published; nothing more is read.
    Leaving,
    Closed,
}

/// One MQTT client's session; see the module documentation.
#[derive(Debug)]
pub struct Session {
    config: Config,
    decoder: Decoder,
    bridge: Bridge<Token>,
    mqtt_out: BytesMut,
    phase: Phase,
    version: Version,
    client_id: String,
    /// The client's id was assigned by the server (5.0's CONNACK says which).
    assigned_id: bool,
    /// The session's queues go with the connection (3.1.1's clean session; 5.0's session
    /// expiry 0); otherwise they are durable and wait for the client.
    clean: bool,
    /// What an earlier connection left is dropped at CONNECT (clean session, clean start).
    fresh: bool,
    /// 5.0: how long a persistent session waits for its client, in seconds.
    session_expiry: Option<u32>,
    vhost: String,
    user: String,
    will: Option<Will>,
    keep_alive_ms: u64,
    last_received: u64,
    held: Vec<Packet>,
    /// The queues of this session by QoS: declared (and consumed from) by this connection.
    queues: HashSet<u8>,
    /// The filters subscribed by this connection, with their QoS.
    subscriptions: BTreeMap<String, QoS>,
    /// QoS 1 deliveries sent and not yet acknowledged: packet id → delivery tag.
    in_flight: HashMap<u16, u64>,
    next_packet_id: u16,
    /// 5.0: topic aliases the client set.
    aliases: HashMap<u16, String>,
    /// Persistent session: queues found at CONNECT.
    resumed: Vec<QoS>,
    /// The time of the last input (milliseconds).
    now: u64,
    /// This connection's mark on what it publishes while it has `no_local` subscriptions
    /// (5.0), so that it can leave its own messages out.
    publisher_id: String,
    /// Filters subscribed with `no_local`.
    no_local: HashSet<String>,
    /// 5.0: the subscription identifier of each filter subscribed with one.
    subscription_ids: BTreeMap<String, u32>,
    /// 5.0: QoS 1 deliveries the client takes unacknowledged (its Receive Maximum).
    receive_maximum: Option<u16>,
}

impl Session {
    /// A session for a client whose socket opened at `now` (milliseconds).
    pub fn new(config: Config, now: u64) -> Session {
        Session {
            decoder: Decoder::new(MAX_PACKET_SIZE_UNAUTHENTICATED),
            bridge: Bridge::new(),
            mqtt_out: BytesMut::new(),
            phase: Phase::AwaitConnect {
                deadline: now.saturating_add(config.connect_timeout_ms),
            },
            version: Version::V3_1_1,
            client_id: String::new(),
            assigned_id: false,
            clean: true,
            fresh: true,
            session_expiry: None,
            vhost: String::new(),
            user: String::new(),
            will: None,
            keep_alive_ms: 0,
            last_received: now,
            held: Vec::new(),
            queues: HashSet::new(),
            subscriptions: BTreeMap::new(),
            in_flight: HashMap::new(),
            next_packet_id: 1,
            aliases: HashMap::new(),
            resumed: Vec::new(),
            now,
            publisher_id: format!("{:016x}", config.seed),
            no_local: HashSet::new(),
            subscription_ids: BTreeMap::new(),
            receive_maximum: None,
            config,
        }
    }

    /// Bytes for the MQTT client.
    pub fn mqtt_out(&mut self) -> &mut BytesMut {
        &mut self.mqtt_out
    }

    /// Bytes for the broker's AMQP connection (empty until CONNECT arrives).
    pub fn amqp_out(&mut self) -> &mut OutBuf {
        self.bridge.out()
    }

    /// Whether the session takes the client's packets (not once it is leaving).
    fn reading(&self) -> bool {
        matches!(
            self.phase,
            Phase::AwaitConnect { .. } | Phase::Connecting | Phase::Resuming | Phase::Open
        )
    }

    /// Whether the client's bytes should be read now.
    pub fn wants_mqtt(&self) -> bool {
        self.reading()
            && self.bridge.out_len() < OUT_HIGH
            && self.bridge.queued() < STEPS_HIGH
            && self.held.len() < HELD_MAX
    }

    /// Whether the broker's bytes should be read now.
    pub fn wants_amqp(&self) -> bool {
        self.mqtt_out.len() < OUT_HIGH
    }

    /// The session is over: once [`Session::mqtt_out`] is written, close both sides.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The client's id, once CONNECT has been read.
    pub fn client_id(&self) -> Option<&str> {
        (!self.client_id.is_empty()).then_some(self.client_id.as_str())
    }

    /// The client's bytes in `buf` (consumed).
    pub fn receive_mqtt(&mut self, buf: &mut BytesMut, now: u64) {
        self.now = now;
        if !buf.is_empty() {
            self.last_received = now;
        }
        while self.reading() {
            match self.decoder.decode(buf) {
                Ok(None) => break,
                Ok(Some(packet)) => self.on_packet(packet),
                Err(e) => {
                    buf.clear();
                    self.refuse_input(&e);
                }
            }
        }
        if !self.reading() {
            buf.clear();
        }
    }

    /// The broker's bytes in `buf` (consumed).
    pub fn receive_amqp(&mut self, buf: &mut BytesMut, now: u64) {
        self.now = now;
        loop {
            let mut events = Vec::new();
            self.bridge.receive(buf, &mut events);
            if events.is_empty() {
                break;
            }
            self.handle(events);
            self.pump();
        }
    }

    /// The broker closed its side of the connection.
    pub fn amqp_closed(&mut self) {
        self.phase = Phase::Closed;
    }

    /// The client's socket closed without DISCONNECT: its will goes out, then the session ends.
    pub fn client_closed(&mut self) {
        self.leave();
    }

    /// Another connection took this client id over: the session ends (5.0: DISCONNECT 0x8E),
    /// without its will, as RabbitMQ.
    pub fn taken_over(&mut self) {
        if self.phase == Phase::Open && self.version.is_v5() {
            self.send(&Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::SESSION_TAKEN_OVER,
                properties: Properties::default(),
            }));
        }
        self.will = None;
        self.bridge.close();
        self.phase = Phase::Closed;
    }

    /// Time passes: a CONNECT that never came, a client silent past its keep-alive.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        match self.phase {
            Phase::AwaitConnect { deadline } if now >= deadline => self.phase = Phase::Closed,
            Phase::Open
                if self.keep_alive_ms > 0
                    && now.saturating_sub(self.last_received) > self.keep_alive_ms * 3 / 2 =>
            {
                if self.version.is_v5() {
                    self.send(&Packet::Disconnect(Disconnect {
                        reason_code: ReasonCode::KEEP_ALIVE_TIMEOUT,
                        properties: Properties::default(),
                    }));
                }
                self.leave();
            }
            _ => {}
        }
    }

    // ---- the client's packets ----

    fn on_packet(&mut self, packet: Packet) {
        match (&self.phase, packet) {
            (Phase::AwaitConnect { .. }, Packet::Connect(connect)) => self.on_connect(*connect),
            // Anything but CONNECT first: the connection closes (3.1.1 §3.1).
            (Phase::AwaitConnect { .. }, _) => self.phase = Phase::Closed,
            (Phase::Connecting | Phase::Resuming, packet) => self.held.push(packet),
            (Phase::Open, Packet::Connect(_)) => {
                // A second CONNECT is a protocol violation.
                self.protocol_error(ReasonCode::PROTOCOL_ERROR);
            }
            (Phase::Open, packet) => {
                self.on_open_packet(packet);
                self.pump();
            }
            _ => {}
        }
    }

    fn on_connect(&mut self, connect: Connect) {
        self.version = connect.version;
        self.fresh = connect.clean_start;
        self.clean = connect.clean_start;
        if connect.version.is_v5() {
            // 5.0: a session that expires at once goes with the connection.
            let expiry = connect.properties.session_expiry_interval.unwrap_or(0);
            self.clean = expiry == 0;
            self.session_expiry = (expiry != 0 && expiry != u32::MAX).then_some(expiry);
            if connect.properties.receive_maximum == Some(0) {
                // "a Protocol Error ... for it to have the value 0" (3.1.2.11.3).
                self.connack_refusal(ReasonCode::PROTOCOL_ERROR);
                return;
            }
            self.receive_maximum = connect.properties.receive_maximum;
        }
        if connect.client_id.is_empty() {
            if !connect.clean_start && !connect.version.is_v5() {
                self.connack_refusal(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
                return;
            }
            // The caller's random bits (RabbitMQ's ids are random too).
            self.client_id = format!("mqtt-{:016x}", self.config.seed);
            self.assigned_id = true;
        } else {
            self.client_id = connect.client_id;
        }
        let (vhost, user) = match &connect.username {
            // RabbitMQ splits at the last colon.
            Some(name) => match name.rsplit_once(':') {
                Some((vhost, user)) if !vhost.is_empty() => (vhost.to_owned(), user.to_owned()),
                _ => (self.config.default_vhost.clone(), name.clone()),
            },
            None => (
                self.config.default_vhost.clone(),
                self.config.default_user.clone(),
            ),
        };
        let password = match (&connect.username, &connect.password) {
            (None, _) => self.config.default_password.clone(),
            (Some(_), Some(p)) => String::from_utf8_lossy(p).into_owned(),
            (Some(_), None) => String::new(),
        };
        self.vhost = vhost.clone();
        self.user = user.clone();
        self.will = connect.will;
        self.keep_alive_ms = u64::from(connect.keep_alive) * 1000;
        let protocol = format!("MQTT {}", version_name(self.version));
        let mut client_properties = FieldTable::default();
        client_properties.insert("product", FieldValue::LongStr("MQTT client".into()));
        client_properties.insert(
            "client_id",
            FieldValue::LongStr(self.client_id.as_str().into()),
        );
        let mut capabilities = FieldTable::default();
        for c in [
            "publisher_confirms",
            "consumer_cancel_notify",
            "connection.blocked",
        ] {
            capabilities.insert(c, FieldValue::Bool(true));
        }
        client_properties.insert("capabilities", FieldValue::Table(capabilities));
        if let Some(name) = &self.config.protocol_property {
            client_properties.insert(name.as_str(), FieldValue::LongStr(protocol.into()));
        }
        self.bridge.open(Login {
            user,
            password,
            vhost,
            client_properties,
        });
        self.phase = Phase::Connecting;
    }

    fn on_open_packet(&mut self, packet: Packet) {
        match packet {
            Packet::Publish(p) => self.publish(p),
            Packet::PubAck(ack) => {
                if let Some(tag) = self.in_flight.remove(&ack.packet_id) {
                    self.bridge.push(Step::Async(Method::BasicAck(BasicAck {
                        delivery_tag: tag,
                        multiple: false,
                    })));
                }
            }
            // QoS 2 is not offered; a client that goes on with it gets what 3.1.1 asks.
            Packet::PubRel(rel) => self.send(&Packet::PubComp(PubResponse {
                packet_id: rel.packet_id,
                reason_code: ReasonCode::SUCCESS,
                properties: Properties::default(),
            })),
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(s) => self.subscribe(s),
            Packet::Unsubscribe(u) => self.unsubscribe(u),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => {
                if d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE {
                    self.leave();
                } else {
                    self.will = None;
                    self.bridge.push(Step::AwaitConfirms);
                    self.bridge.push(Step::Mark(Token::Finish));
                    self.phase = Phase::Leaving;
                }
            }
            Packet::Auth(_) => self.protocol_error(ReasonCode::BAD_AUTHENTICATION_METHOD),
            // Server-to-client packets from a client.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => self.protocol_error(ReasonCode::PROTOCOL_ERROR),
        }
    }

    fn publish(&mut self, mut p: Publish) {
        if self.version.is_v5() {
            if let Some(alias) = p.properties.topic_alias.take() {
                if p.topic.is_empty() {
                    match self.aliases.get(&alias) {
                        Some(topic) => p.topic = topic.clone(),
                        None => {
                            self.protocol_error(ReasonCode::TOPIC_ALIAS_INVALID);
                            return;
                        }
                    }
                } else if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
                    self.protocol_error(ReasonCode::TOPIC_ALIAS_INVALID);
                    return;
                } else {
                    self.aliases.insert(alias, p.topic.clone());
                }
            }
        }
        if p.topic.is_empty() || topic::validate_topic_name(&p.topic).is_err() {
            self.protocol_error(ReasonCode::TOPIC_NAME_INVALID);
            return;
        }
        if p.retain {
            let retained = (!p.payload.is_empty()).then(|| Retained {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                qos: p.qos.min(QoS::AtLeastOnce),
                properties: p.properties.clone(),
            });
            self.config.retained.set(&self.vhost, &p.topic, retained);
        }
        let token = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => Token::None,
            (_, Some(id)) => Token::PubAck(id),
        };
        let mut properties = amqp_properties(p.qos, p.dup, &p.properties, self.now);
        if !self.no_local.is_empty() {
            if let Some(h) = properties.headers.as_mut() {
                h.insert(
                    PUBLISHER_HEADER,
                    FieldValue::LongStr(self.publisher_id.as_str().into()),
                );
            }
        }
        self.bridge.push(Step::Publish {
            exchange: EXCHANGE.into(),
            routing_key: topic::topic_to_routing_key(&p.topic),
            properties: Box::new(properties),
            body: p.payload,
            token,
        });
    }

    /// The queue of this session for `qos`, RabbitMQ's name for it.
    fn queue_name(&self, qos: QoS) -> String {
        format!("mqtt-subscription-{}qos{}", self.client_id, qos.as_u8())
    }

    /// Declares and consumes from this session's queue for `qos`, the first time.
    fn ensure_queue(&mut self, qos: QoS) {
        if !self.queues.insert(qos.as_u8()) {
            return;
        }
        let queue = self.queue_name(qos);
        // RabbitMQ's table: the QoS 0 queue is transient and goes with the connection; the
        // QoS 1 queue is durable, auto-delete for a clean session, and a persistent session's
        // expires after `mqtt.subscription_ttl` (24 h) or 5.0's session expiry unused.
        let qos1 = qos == QoS::AtLeastOnce;
        let mut arguments = FieldTable::default();
        if qos1 && !self.clean {
            let ttl = self
                .session_expiry
                .map_or(SUBSCRIPTION_TTL_MS, |s| i64::from(s) * 1000);
            arguments.insert("x-expires", FieldValue::I64(ttl));
        }
        self.bridge.push(Step::Sync(
            Method::QueueDeclare(QueueDeclare {
                ticket: 0,
                queue: queue.as_str().into(),
                passive: false,
                durable: qos1,
                exclusive: false,
                auto_delete: !qos1 || self.clean,
                nowait: false,
                arguments,
            }),
            Token::None,
        ));
        self.consume(qos);
    }

    fn consume(&mut self, qos: QoS) {
        let queue = self.queue_name(qos);
        if qos == QoS::AtLeastOnce {
            self.bridge.push(Step::Sync(
                Method::BasicQos(BasicQos {
                    prefetch_size: 0,
                    // The client's Receive Maximum, if it is lower (as RabbitMQ 3.13 on).
                    prefetch_count: self
                        .config
                        .prefetch
                        .min(self.receive_maximum.unwrap_or(u16::MAX)),
                    global: false,
                }),
                Token::None,
            ));
        }
        self.bridge.push(Step::Sync(
            Method::BasicConsume(BasicConsume {
                ticket: 0,
                queue: queue.into(),
                consumer_tag: consumer_tag(qos).into(),
                no_local: false,
                no_ack: qos == QoS::AtMostOnce,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            }),
            Token::None,
        ));
    }

    fn bind(&mut self, filter: &str, qos: QoS, bind: bool) {
        let queue = self.queue_name(qos);
        let key = topic::filter_to_binding_key(filter);
        let method = if bind {
            Method::QueueBind(QueueBind {
                ticket: 0,
                queue: queue.into(),
                exchange: EXCHANGE.into(),
                routing_key: key.into(),
                nowait: false,
                arguments: FieldTable::default(),
            })
        } else {
            Method::QueueUnbind(QueueUnbind {
                ticket: 0,
                queue: queue.into(),
                exchange: EXCHANGE.into(),
                routing_key: key.into(),
                arguments: FieldTable::default(),
            })
        };
        self.bridge.push(Step::Sync(method, Token::None));
    }

    fn subscribe(&mut self, s: Subscribe) {
        let id = if self.version.is_v5() {
            s.properties.subscription_identifiers.first().copied()
        } else {
            None
        };
        if id == Some(0) {
            // "a Protocol Error if the Subscription Identifier has a value of 0" (3.8.2.1.2).
            self.protocol_error(ReasonCode::PROTOCOL_ERROR);
            return;
        }
        let mut codes = Vec::with_capacity(s.subscriptions.len());
        let mut filters = Vec::new();
        for sub in s.subscriptions {
            if topic::validate_topic_filter(&sub.filter).is_err() {
                codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
            if self.version.is_v5() && sub.filter.starts_with(SHARED_PREFIX) {
                // Not offered (CONNACK says so), as RabbitMQ; 3.1.1 knows no shared
                // subscriptions and takes the filter as it is, as RabbitMQ 3.10 does.
                codes.push(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
                continue;
            }
            // QoS 2 is granted as 1, as RabbitMQ does.
            let qos = sub.options.qos.min(QoS::AtLeastOnce);
            self.ensure_queue(qos);
            let other = if qos == QoS::AtMostOnce {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            // Subscribed again with the other QoS: out of that queue.
            if self.queues.contains(&other.as_u8()) || self.resumed.contains(&other) {
                self.bind(&sub.filter, other, false);
            }
            self.bind(&sub.filter, qos, true);
            self.subscriptions.insert(sub.filter.clone(), qos);
            if sub.options.no_local && self.version.is_v5() {
                self.no_local.insert(sub.filter.clone());
            } else {
                self.no_local.remove(&sub.filter);
            }
            // Subscribed again: the new subscription's identifier, or none.
            match id {
                Some(id) => self.subscription_ids.insert(sub.filter.clone(), id),
                None => self.subscription_ids.remove(&sub.filter),
            };
            codes.push(ReasonCode::granted(qos));
            filters.push((sub.filter, qos));
        }
        self.bridge.push(Step::Mark(Token::SubAck {
            packet_id: s.packet_id,
            codes,
            filters,
        }));
    }

    fn unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in u.filters {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                if self.queues.contains(&qos.as_u8()) || self.resumed.contains(&qos) {
                    self.bind(&filter, qos, false);
                }
            }
            self.no_local.remove(&filter);
            self.subscription_ids.remove(&filter);
            // 5.0: "no subscription existed" for a filter this connection never subscribed
            // (a resumed session's earlier subscriptions are not known: success).
            let known = self.subscriptions.remove(&filter).is_some() || !self.resumed.is_empty();
            codes.push(if known {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.bridge.push(Step::Mark(Token::UnsubAck {
            packet_id: u.packet_id,
            codes,
        }));
    }

    // ---- the broker's side ----

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

    fn handle(&mut self, events: Vec<Event<Token>>) {
        for event in events {
            if self.phase == Phase::Closed {
                return;
            }
            match event {
                Event::Open => self.opened(),
                Event::Refused { code, text } => {
                    // RabbitMQ: a bad login and a vhost that does not exist are "bad user name
                    // or password" (4); no access to the vhost is "not authorized" (5).
                    let reason = match code {
                        warren_wire::constants::ACCESS_REFUSED => {
                            ReasonCode::BAD_USER_NAME_OR_PASSWORD
                        }
                        warren_wire::constants::NOT_ALLOWED if text.ends_with("not found") => {
                            ReasonCode::BAD_USER_NAME_OR_PASSWORD
                        }
                        warren_wire::constants::NOT_ALLOWED => ReasonCode::NOT_AUTHORIZED,
                        _ => ReasonCode::SERVER_UNAVAILABLE,
                    };
                    self.connack_refusal(reason);
                }
                Event::Closed { .. } => {
                    // The broker refused something (a permission, a queue): the connection
                    // ends (5.0: DISCONNECT saying so), and the will goes out without it.
                    if self.phase == Phase::Open && self.version.is_v5() {
                        self.send(&Packet::Disconnect(Disconnect {
                            reason_code: ReasonCode::NOT_AUTHORIZED,
                            properties: Properties::default(),
                        }));
                    }
                    self.phase = Phase::Closed;
                }
                Event::Tried {
                    token: Token::Resume(qos),
                    reply,
                } => {
                    if reply.is_ok() {
                        self.resumed.push(qos);
                    }
                }
                Event::Tried { .. } | Event::Reply { .. } => {}
                Event::Reached(token) => self.reached(token),
                Event::Confirmed {
                    token: Token::PubAck(id),
                    ..
                } => {
                    self.send(&Packet::PubAck(PubResponse {
                        packet_id: id,
                        reason_code: ReasonCode::SUCCESS,
                        properties: Properties::default(),
                    }));
                }
                Event::Confirmed { .. } => {}
                Event::Delivery {
                    deliver,
                    properties,
                    body,
                } => self.deliver(deliver, &properties, body),
                // Another connection took the client id (see `opened`).
                Event::Cancelled { consumer_tag } if consumer_tag.as_str() == PRESENCE_TAG => {
                    self.taken_over();
                }
                Event::Cancelled { .. } => {}
            }
        }
    }

    /// The AMQP connection is open: a clean session clears what a persistent one left; a
    /// persistent one looks for its queues; then CONNACK.
    fn opened(&mut self) {
        self.decoder
            .set_max_packet_size(MAX_PACKET_SIZE_AUTHENTICATED);
        // Client id takeover, on every node of a cluster: the client's presence queue is
        // deleted (which cancels the consumer of a connection that has the id, and that
        // connection closes) and made again, consumed by this connection. It is a replicated
        // queue (durable), so that a node's death does not hold it; it expires once unused.
        let presence = format!("{PRESENCE_PREFIX}{}", self.client_id);
        self.bridge.push(Step::Try {
            method: delete_queue(&presence),
            token: Token::None,
        });
        let mut expires = FieldTable::default();
        expires.insert("x-expires", FieldValue::I64(PRESENCE_EXPIRES_MS));
        self.bridge
            .push(Step::Sync(durable_queue(&presence, expires), Token::None));
        self.bridge.push(Step::Sync(
            Method::BasicConsume(BasicConsume {
                ticket: 0,
                queue: presence.into(),
                consumer_tag: PRESENCE_TAG.into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            }),
            Token::None,
        ));
        // A will an earlier connection of this client left waiting (5.0's will delay) does not
        // go out: the client is back.
        self.bridge.push(Step::Try {
            method: delete_queue(&format!("{WILL_PREFIX}{}", self.client_id)),
            token: Token::None,
        });
        if self.fresh {
            // What an earlier connection left goes (a queue whose home node is down cannot,
            // until the cluster has declared it gone: that is not this connection's end).
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                self.bridge.push(Step::Try {
                    method: delete_queue(&self.queue_name(qos)),
                    token: Token::None,
                });
            }
        } else {
            // Only the QoS 1 queue outlives a connection.
            self.bridge.push(Step::Try {
                method: Method::QueueDeclare(QueueDeclare {
                    queue: self.queue_name(QoS::AtLeastOnce).into(),
                    passive: true,
                    ..QueueDeclare::default()
                }),
                token: Token::Resume(QoS::AtLeastOnce),
            });
        }
        self.bridge.push(Step::Mark(Token::ConnAck));
        self.phase = Phase::Resuming;
        self.pump();
    }

    fn reached(&mut self, token: Token) {
        match token {
            Token::ConnAck => {
                let session_present = !self.fresh && !self.resumed.is_empty();
                let mut properties = Properties::default();
                if self.version.is_v5() && self.assigned_id {
                    properties.assigned_client_identifier = Some(self.client_id.clone());
                }
                if self.version.is_v5() {
                    properties.maximum_qos = Some(QoS::AtLeastOnce);
                    properties.topic_alias_maximum = Some(TOPIC_ALIAS_MAXIMUM);
                    properties.shared_subscription_available = Some(false);
                    properties.subscription_identifier_available = Some(true);
                }
                self.send(&Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code: ReasonCode::SUCCESS,
                    properties,
                }));
                self.phase = Phase::Open;
                // A persistent session's queues are consumed again.
                for qos in self.resumed.clone() {
                    self.queues.insert(qos.as_u8());
                    self.consume(qos);
                }
                for packet in std::mem::take(&mut self.held) {
                    if self.phase != Phase::Open {
                        break;
                    }
                    self.on_open_packet(packet);
                }
            }
            Token::SubAck {
                packet_id,
                codes,
                filters,
            } => {
                self.send(&Packet::SubAck(SubAck {
                    packet_id,
                    reason_codes: codes,
                    properties: Properties::default(),
                }));
                for (filter, granted) in filters {
                    let id = self.subscription_ids.get(&filter).copied();
                    for r in self.config.retained.matching(&self.vhost, &filter) {
                        let qos = r.qos.min(granted);
                        let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
                        self.send(&Packet::Publish(Publish {
                            dup: false,
                            qos,
                            retain: true,
                            topic: r.topic,
                            packet_id,
                            properties: if self.version.is_v5() {
                                Properties {
                                    subscription_identifiers: id.into_iter().collect(),
                                    ..r.properties
                                }
                            } else {
                                Properties::default()
                            },
                            payload: r.payload,
                        }));
                    }
                }
            }
            Token::UnsubAck { packet_id, codes } => {
                self.send(&Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reason_codes: codes,
                    properties: Properties::default(),
                }));
            }
            Token::Finish => {
                self.bridge.close();
                self.phase = Phase::Closed;
            }
            Token::None | Token::PubAck(_) | Token::Resume(_) => {}
        }
    }

    /// A delivery of one of the session's consumers: a PUBLISH to the client.
    fn deliver(
        &mut self,
        deliver: warren_wire::BasicDeliver,
        properties: &BasicProperties,
        body: Bytes,
    ) {
        let sub_qos = if deliver.consumer_tag.as_str() == consumer_tag(QoS::AtLeastOnce) {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let message_qos = properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-mqtt-publish-qos"))
            .and_then(FieldValue::as_i64)
            .and_then(|q| u8::try_from(q).ok())
            .and_then(QoS::from_u8)
            // An AMQP publish has no MQTT QoS: the subscription's.
            .unwrap_or(sub_qos);
        let qos = sub_qos.min(message_qos);
        let dup_header = properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-mqtt-dup"))
            .and_then(FieldValue::as_bool)
            .unwrap_or(false);
        let topic = topic::routing_key_to_topic(deliver.routing_key.as_str());
        // A duplicate due at QoS 0 (at most once) is dropped, as RabbitMQ does; so is this
        // connection's own message where every filter it matches is `no_local` (5.0).
        let own = !self.no_local.is_empty()
            && properties
                .headers
                .as_ref()
                .and_then(|h| h.get(PUBLISHER_HEADER))
                .and_then(FieldValue::as_str)
                == Some(self.publisher_id.as_str());
        let only_no_local = own
            && self
                .subscriptions
                .keys()
                .filter(|f| topic::filter_matches(f, &topic))
                .all(|f| self.no_local.contains(f));
        if (qos == QoS::AtMostOnce && dup_header) || only_no_local {
            if sub_qos == QoS::AtLeastOnce {
                self.bridge.push(Step::Async(Method::BasicAck(BasicAck {
                    delivery_tag: deliver.delivery_tag,
                    multiple: false,
                })));
            }
            return;
        }
        let packet_id = if qos == QoS::AtMostOnce {
            if sub_qos == QoS::AtLeastOnce {
                // Taken from the QoS 1 queue but delivered at QoS 0: settled at once.
                self.bridge.push(Step::Async(Method::BasicAck(BasicAck {
                    delivery_tag: deliver.delivery_tag,
                    multiple: false,
                })));
            }
            None
        } else {
            let id = self.packet_id();
            self.in_flight.insert(id, deliver.delivery_tag);
            Some(id)
        };
        let properties = if self.version.is_v5() {
            let mut p = mqtt_properties(properties, self.now);
            // One copy for every subscription it matches: the identifiers of all of them.
            p.subscription_identifiers = self
                .subscription_ids
                .iter()
                .filter(|(f, _)| topic::filter_matches(f, &topic))
                .map(|(_, id)| *id)
                .collect();
            p.subscription_identifiers.sort_unstable();
            p.subscription_identifiers.dedup();
            p
        } else {
            Properties::default()
        };
        self.send(&Packet::Publish(Publish {
            dup: (deliver.redelivered || dup_header) && qos != QoS::AtMostOnce,
            qos,
            retain: false,
            topic,
            packet_id,
            properties,
            payload: body,
        }));
    }

    /// The next packet id not in use (1 to 65 535).
    fn packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&id) {
                return id;
            }
        }
    }

    // ---- ending ----

    /// The connection ends without DISCONNECT: the will is published (and confirmed), then
    /// the session closes.
    fn leave(&mut self) {
        if matches!(self.phase, Phase::Leaving | Phase::Closed) {
            return;
        }
        let open = self.phase == Phase::Open;
        self.phase = Phase::Leaving;
        match self.will.take() {
            Some(will) if open && self.will_delay(&will) > 0 => {
                self.delay_will(will);
                self.bridge.push(Step::AwaitConfirms);
                self.bridge.push(Step::Mark(Token::Finish));
                self.pump();
            }
            Some(will) if open => {
                if will.retain {
                    let retained = (!will.payload.is_empty()).then(|| Retained {
                        topic: will.topic.clone(),
                        payload: will.payload.clone(),
                        qos: will.qos.min(QoS::AtLeastOnce),
                        properties: will.properties.clone(),
                    });
                    self.config.retained.set(&self.vhost, &will.topic, retained);
                }
                self.bridge.push(Step::Publish {
                    exchange: EXCHANGE.into(),
                    routing_key: topic::topic_to_routing_key(&will.topic),
                    properties: Box::new(amqp_properties(
                        will.qos,
                        false,
                        &will.properties,
                        self.now,
                    )),
                    body: will.payload,
                    token: Token::None,
                });
                self.bridge.push(Step::AwaitConfirms);
                self.bridge.push(Step::Mark(Token::Finish));
                self.pump();
            }
            _ => {
                self.bridge.close();
                self.phase = Phase::Closed;
            }
        }
    }

    /// How long `will` waits before it goes out, in seconds (5.0): its will delay interval, at
    /// most until the session ends (at once for a session that ends with the connection). A
    /// retained will is not delayed: its retained copy is kept by this node's store when it is
    /// published, which a will waiting in the broker cannot reach.
    fn will_delay(&self, will: &Will) -> u32 {
        if !self.version.is_v5() || self.clean || will.retain {
            return 0;
        }
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        delay.min(self.session_expiry.unwrap_or(u32::MAX))
    }

    /// Leaves `will` in this client's will queue, which dead-letters it to `amq.topic` under
    /// its topic once its delay has passed, unless the client's next connection deletes the
    /// queue first.
    fn delay_will(&mut self, will: Will) {
        let queue = format!("{WILL_PREFIX}{}", self.client_id);
        let delay_ms = i64::from(self.will_delay(&will)) * 1000;
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl", FieldValue::I64(delay_ms));
        arguments.insert(
            "x-dead-letter-exchange",
            FieldValue::LongStr(EXCHANGE.into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key",
            FieldValue::LongStr(topic::topic_to_routing_key(&will.topic).into()),
        );
        arguments.insert(
            "x-expires",
            FieldValue::I64(delay_ms.saturating_add(WILL_QUEUE_SLACK_MS)),
        );
        // A will left by an earlier connection is replaced.
        self.bridge.push(Step::Try {
            method: delete_queue(&queue),
            token: Token::None,
        });
        self.bridge
            .push(Step::Sync(durable_queue(&queue, arguments), Token::None));
        let mut properties = amqp_properties(will.qos, false, &will.properties, self.now);
        // Its own expiry would dead-letter it before its delay; the will's expiry counts from
        // when it goes out, which dead-lettering (which drops `expiration`) cannot carry.
        properties.expiration = None;
        self.bridge.push(Step::Publish {
            exchange: "".into(),
            routing_key: queue,
            properties: Box::new(properties),
            body: will.payload,
            token: Token::None,
        });
    }

    /// Bytes that are no packet, or a packet against the rules: the connection ends, with a
    /// CONNACK or DISCONNECT saying why where the version has one.
    fn refuse_input(&mut self, e: &MqttError) {
        if let Phase::AwaitConnect { .. } = self.phase {
            self.version = self.decoder.version();
            if self.version.is_v5() {
                self.connack_refusal(e.reason_code());
            } else if let Some(code) = e.v3_connect_return_code() {
                self.connack_refusal(ReasonCode::from_v3_connack(code).unwrap_or(e.reason_code()));
            } else {
                self.phase = Phase::Closed;
            }
            return;
        }
        self.protocol_error(e.reason_code());
    }

    fn protocol_error(&mut self, reason: ReasonCode) {
        if self.phase == Phase::Open && self.version.is_v5() {
            self.send(&Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties: Properties::default(),
            }));
        }
        self.leave();
    }

    /// CONNACK refusing the connection, and the end.
    fn connack_refusal(&mut self, reason: ReasonCode) {
        self.send(&Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: reason,
            properties: Properties::default(),
        }));
        self.bridge.close();
        self.phase = Phase::Closed;
    }

    fn send(&mut self, packet: &Packet) {
        // A packet the encoder cannot write (a topic over 64 KiB from AMQP) is dropped.
        let _ = encode(packet, self.version, &mut self.mqtt_out);
    }
}

/// `queue.declare` of the durable (replicated) queue `queue`, neither exclusive nor
/// auto-delete, with `arguments`: a client's presence queue and its delayed will's.
fn durable_queue(queue: &str, arguments: FieldTable) -> Method {
    Method::QueueDeclare(QueueDeclare {
        ticket: 0,
        queue: queue.into(),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments,
    })
}

/// `queue.delete` of `queue`.
fn delete_queue(queue: &str) -> Method {
    Method::QueueDelete(QueueDelete {
        ticket: 0,
        queue: queue.into(),
        if_unused: false,
        if_empty: false,
        nowait: false,
    })
}

/// The consumer tag of this session's queue for `qos`.
fn consumer_tag(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "mqtt-qos0",
        _ => "mqtt-qos1",
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::V3_1 => "3.1",
        Version::V3_1_1 => "3.1.1",
        Version::V5 => "5.0",
    }
}
