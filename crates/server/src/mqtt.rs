//! MQTT and MQTT over WebSocket clients (RabbitMQ's `rabbitmq_mqtt` and `rabbitmq_web_mqtt`):
//! each is a [`warren_mqtt::Session`] served as a translated client of this node (see
//! [`crate::translated`]), over TCP, TLS, or a WebSocket at `/ws`; and the node's retained
//! message store, which its MQTT sessions share (RabbitMQ's is per node too).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::watch;
use warren_core::{ConnId, CONNECTION_PROTOCOL_PROPERTY};
use warren_mqtt::{topic, Retained, RetainedStore};
use warren_wire::OutBuf;

use crate::clock::now_ms;
use crate::connection::Node;
use crate::listener::AmqpsConfig;
use crate::translated::{self, Translator};
use crate::websocket::Endpoint;
use crate::ServerConfig;

/// RabbitMQ's `mqtt.default_user`, `mqtt.default_pass` and `mqtt.vhost`: who a CONNECT
/// without a user name logs in as (the user's own rules apply: guest only from loopback).
const DEFAULT_LOGIN: (&str, &str) = ("guest", "guest");
const DEFAULT_VHOST: &str = "/";
/// RabbitMQ's `mqtt.prefetch`: QoS 1 deliveries a client may leave unacknowledged.
const PREFETCH: u16 = 10;

/// Web-MQTT's WebSocket endpoint.
const WEB_MQTT: Endpoint = Endpoint {
    protocols: &["mqtt", "mqttv3.1"],
    binary: true,
    name: "Web-MQTT",
};

/// The node's retained messages, by vhost and topic, in memory (as RabbitMQ's default
/// `rabbit_mqtt_retained_msg_store_ets`: kept per node, gone with a restart).
#[derive(Debug, Default)]
pub(crate) struct MemoryRetained {
    messages: Mutex<BTreeMap<(String, String), Retained>>,
}

impl RetainedStore for MemoryRetained {
    fn set(&self, vhost: &str, topic: &str, message: Option<Retained>) {
        let Ok(mut messages) = self.messages.lock() else {
            return;
        };
        let key = (vhost.to_owned(), topic.to_owned());
        match message {
            Some(m) => {
                messages.insert(key, m);
            }
            None => {
                messages.remove(&key);
            }
        }
    }

    fn matching(&self, vhost: &str, filter: &str) -> Vec<Retained> {
        let Ok(messages) = self.messages.lock() else {
            return Vec::new();
        };
        messages
            .iter()
            .filter(|((v, t), _)| v == vhost && topic::filter_matches(filter, t))
            .map(|(_, m)| m.clone())
            .collect()
    }
}

impl Translator for warren_mqtt::Session {
    const PROTOCOL: &'static str = "MQTT";

    fn receive_client(&mut self, buf: &mut BytesMut, now: u64) {
        self.receive_mqtt(buf, now);
    }

    fn receive_amqp(&mut self, buf: &mut BytesMut, now: u64) {
        warren_mqtt::Session::receive_amqp(self, buf, now);
    }

    fn amqp_closed(&mut self) {
        warren_mqtt::Session::amqp_closed(self);
    }

    fn client_closed(&mut self) {
        warren_mqtt::Session::client_closed(self);
    }

    fn tick(&mut self, now: u64) {
        warren_mqtt::Session::tick(self, now);
    }

    fn client_out(&mut self) -> &mut BytesMut {
        self.mqtt_out()
    }

    fn amqp_out(&mut self) -> &mut OutBuf {
        warren_mqtt::Session::amqp_out(self)
    }

    fn wants_client(&self) -> bool {
        self.wants_mqtt()
    }

    fn wants_amqp(&self) -> bool {
        warren_mqtt::Session::wants_amqp(self)
    }

    fn is_closed(&self) -> bool {
        warren_mqtt::Session::is_closed(self)
    }
}

/// An MQTT session for a client whose socket opened now.
fn session(config: &ServerConfig, retained: Arc<dyn RetainedStore>) -> warren_mqtt::Session {
    warren_mqtt::Session::new(
        warren_mqtt::Config {
            default_user: DEFAULT_LOGIN.0.to_owned(),
            default_password: DEFAULT_LOGIN.1.to_owned(),
            default_vhost: DEFAULT_VHOST.to_owned(),
            connect_timeout_ms: u64::try_from(config.handshake_timeout.as_millis())
                .unwrap_or(u64::MAX),
            protocol_property: Some(CONNECTION_PROTOCOL_PROPERTY.to_owned()),
            seed: rand::random(),
            prefetch: PREFETCH,
            retained,
        },
        now_ms(),
    )
}

/// Serves a MQTT client (over TLS when `tls` is given: the handshake first).
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<AmqpsConfig>>,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let mqtt = session(&config, node.retained.clone());
    translated::run_socket(
        mqtt, stream, peer, tls, "mqtt/ssl", conn, config, node, shutdown,
    )
    .await;
}

/// Serves a MQTT client over a WebSocket at `/ws` (`wss://` when `tls` is given).
pub(crate) async fn run_websocket(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<AmqpsConfig>>,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let mqtt = session(&config, node.retained.clone());
    translated::run_websocket(
        mqtt,
        stream,
        peer,
        tls,
        "https/web-mqtt",
        WEB_MQTT,
        conn,
        config,
        node,
        shutdown,
    )
    .await;
}
