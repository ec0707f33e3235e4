//! STOMP and Web-STOMP clients (RabbitMQ's `rabbitmq_stomp` and `rabbitmq_web_stomp`): each
//! is a [`warren_stomp::Session`] served as a translated client of this node (see
//! [`crate::translated`]), over TCP, TLS, or a WebSocket at `/ws`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::watch;
use warren_core::{ConnId, CONNECTION_PROTOCOL_PROPERTY};
use warren_wire::OutBuf;

use crate::clock::now_ms;
use crate::connection::Node;
use crate::listener::AmqpsConfig;
use crate::translated::{self, Translator};
use crate::websocket::Endpoint;
use crate::ServerConfig;

/// RabbitMQ's `stomp.default_user`, `stomp.default_pass` and `stomp.default_vhost`: who a
/// CONNECT without `login` logs in as (the user's own rules apply: guest only from loopback).
const DEFAULT_LOGIN: (&str, &str) = ("guest", "guest");
const DEFAULT_VHOST: &str = "/";

/// Web-STOMP's WebSocket endpoint.
const WEB_STOMP: Endpoint = Endpoint {
    protocols: &["v12.stomp", "v11.stomp", "v10.stomp", "stomp"],
    binary: false,
    name: "Web-STOMP",
};

impl Translator for warren_stomp::Session {
    const PROTOCOL: &'static str = "STOMP";

    fn receive_client(&mut self, buf: &mut BytesMut, now: u64) {
        self.receive_stomp(buf, now);
    }

    fn receive_amqp(&mut self, buf: &mut BytesMut, now: u64) {
        warren_stomp::Session::receive_amqp(self, buf, now);
    }

    fn amqp_closed(&mut self) {
        warren_stomp::Session::amqp_closed(self);
    }

    fn client_closed(&mut self) {
        warren_stomp::Session::client_closed(self);
    }

    fn tick(&mut self, now: u64) {
        warren_stomp::Session::tick(self, now);
    }

    fn client_out(&mut self) -> &mut BytesMut {
        self.stomp_out()
    }

    fn amqp_out(&mut self) -> &mut OutBuf {
        warren_stomp::Session::amqp_out(self)
    }

    fn wants_client(&self) -> bool {
        self.wants_stomp()
    }

    fn wants_amqp(&self) -> bool {
        warren_stomp::Session::wants_amqp(self)
    }

    fn is_closed(&self) -> bool {
        warren_stomp::Session::is_closed(self)
    }
}

/// A new session id as RabbitMQ's: `session-` and 16 random bytes in unpadded URL-safe base64.
fn session_id() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    format!(
        "session-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A STOMP session for a client whose socket opened now.
fn session(config: &ServerConfig) -> warren_stomp::Session {
    warren_stomp::Session::new(
        warren_stomp::Config {
            limits: warren_stomp::Limits::default(),
            default_login: DEFAULT_LOGIN.0.to_owned(),
            default_passcode: DEFAULT_LOGIN.1.to_owned(),
            default_vhost: DEFAULT_VHOST.to_owned(),
            server: format!("Warren/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout_ms: u64::try_from(config.handshake_timeout.as_millis())
                .unwrap_or(u64::MAX),
            protocol_property: Some(CONNECTION_PROTOCOL_PROPERTY.to_owned()),
            session_id: session_id(),
            seed: rand::random(),
        },
        now_ms(),
    )
}

/// Serves a STOMP client (over TLS when `tls` is given: the handshake first).
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<AmqpsConfig>>,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let stomp = session(&config);
    translated::run_socket(
        stomp,
        stream,
        peer,
        tls,
        "stomp/ssl",
        conn,
        config,
        node,
        shutdown,
    )
    .await;
}

/// Serves a STOMP client over a WebSocket at `/ws` (`wss://` when `tls` is given).
pub(crate) async fn run_websocket(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<AmqpsConfig>>,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let stomp = session(&config);
    translated::run_websocket(
        stomp,
        stream,
        peer,
        tls,
        "https/web-stomp",
        WEB_STOMP,
        conn,
        config,
        node,
        shutdown,
    )
    .await;
}
