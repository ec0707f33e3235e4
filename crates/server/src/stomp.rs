//! The task of one STOMP client: moves bytes between its socket and its
//! [`warren_stomp::Session`], and between that session and an AMQP connection of this node
//! served like any client's (the same [`connection::run`] over an in-memory pipe), as
//! RabbitMQ's STOMP plugin opens an AMQP connection for each STOMP client. The STOMP client so
//! has everything an AMQP client has: logins, permissions, alarms and credit flow (the pipe fills
//! and the socket is not read), replication and failover, and a line in `/api/connections`
//! (protocol `STOMP 1.x`, its own peer address).
//!
//! The AMQP side starts when the client's CONNECT has been read (a socket that never sends one
//! costs the broker nothing, and is closed at the handshake timeout).
//!
//! Web-STOMP (RabbitMQ's `rabbitmq_web_stomp`) is the same session over a WebSocket at `/ws`:
//! each WebSocket message the client sends holds STOMP bytes; each one the server sends holds
//! whole frames (a text message, or a binary one when a body is not UTF-8).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;
use warren_core::{ConnId, CONNECTION_PROTOCOL_PROPERTY};
use warren_wire::OutBuf;

use crate::clock::now_ms;
use crate::connection::{self, Node, Peer};
use crate::listener::AmqpsConfig;
use crate::session::Session;
use crate::ServerConfig;

/// Bytes the pipe between the STOMP session and its AMQP connection holds each way.
const PIPE_BYTES: usize = 256 * 1024;
/// How often the session's timers (heart-beats, the CONNECT deadline) are looked at.
const TICK: Duration = Duration::from_millis(100);
/// The largest WebSocket message a Web-STOMP client may send (RabbitMQ's `web_stomp`
/// allows frames as large as its STOMP body limit; this bounds one message's memory).
const WS_MAX_MESSAGE: usize = 64 << 20;
/// WebSocket messages waiting for the Web-STOMP client's socket.
const WS_QUEUE: usize = 16;
/// How long the AMQP connection has to finish once its STOMP client is gone.
const AMQP_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// RabbitMQ's `stomp.default_user`, `stomp.default_pass` and `stomp.default_vhost`: who a
/// CONNECT without `login` logs in as (the user's own rules apply: guest only from loopback).
const DEFAULT_LOGIN: (&str, &str) = ("guest", "guest");
const DEFAULT_VHOST: &str = "/";

/// A new session id as RabbitMQ's: `session-` and 16 random bytes in unpadded URL-safe base64.
fn session_id() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    format!(
        "session-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    match tls {
        None => {
            let (rd, wr) = stream.into_split();
            serve(rd, wr, peer, local, conn, config, node, shutdown).await;
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.tls.clone());
            let handshake = warren_tls::acceptor::handshake(
                stream,
                peer,
                &acceptor,
                config.handshake_timeout,
                "stomp/ssl",
            );
            let Some(accepted) = handshake.await else {
                return;
            };
            let (rd, wr) = tokio::io::split(accepted.stream);
            serve(rd, wr, peer, local, conn, config, node, shutdown).await;
        }
    }
}

/// Serves a Web-STOMP client: the WebSocket handshake at `/ws` (within the handshake timeout,
/// choosing the best STOMP sub-protocol the client offers), then STOMP over its messages.
pub(crate) async fn run_websocket(
    stream: TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE));
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, websocket::choose, Some(ws_config));
    let ws = match tokio::time::timeout(config.handshake_timeout, accept).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "Web-STOMP handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "Web-STOMP handshake timed out");
            return;
        }
    };
    let (sink, stream) = futures_util::StreamExt::split(ws);
    let (tx, rx) = tokio::sync::mpsc::channel(WS_QUEUE);
    let writer = tokio::spawn(websocket::write_messages(sink, rx));
    serve(
        websocket::Reader(stream),
        websocket::Writer(tx),
        peer,
        local,
        conn,
        config,
        node,
        shutdown,
    )
    .await;
    let _ = writer.await;
}

/// The client's side of a session: bytes in.
trait ClientRead {
    /// Appends what the client sent next to `buf`; 0 at its end. Cancel-safe.
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
}

/// The client's side of a session: bytes out.
trait ClientWrite {
    /// Writes from the front of `buf` (whole frames), taking what it wrote. Cancel-safe.
    async fn write_from(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
    /// No more bytes for the client.
    async fn finish(&mut self);
}

impl<T: AsyncRead + Unpin> ClientRead for T {
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.read_buf(buf).await
    }
}

impl<T: AsyncWrite + Unpin> ClientWrite for T {
    async fn write_from(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.write_buf(buf).await
    }

    async fn finish(&mut self) {
        let _ = self.shutdown().await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve<R, W>(
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    local: String,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    mut shutdown: watch::Receiver<bool>,
) where
    R: ClientRead,
    W: ClientWrite,
{
    let now = now_ms();
    let mut stomp = warren_stomp::Session::new(
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
        now,
    );
    // The AMQP side: this end is the session's, the other the node's connection task.
    let (pipe, broker_end) = tokio::io::duplex(PIPE_BYTES);
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(pipe);
    let mut broker_end = Some((broker_end, config, node, shutdown.clone()));
    let mut amqp_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut amqp_open = true;
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut amqp_in = BytesMut::with_capacity(16 * 1024);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = *shutdown.borrow();
    // What is being written each way, taken from the session (which goes on filling its own
    // buffers, up to its watermarks, meanwhile).
    let mut to_client = BytesMut::new();
    let mut to_broker = OutBuf::new();
    loop {
        if to_client.is_empty() {
            to_client = stomp.stomp_out().split();
        }
        if to_broker.is_empty() {
            std::mem::swap(&mut to_broker, stomp.amqp_out());
        }
        if stomp.is_closed() && to_client.is_empty() {
            break;
        }
        if amqp_task.is_none() && !to_broker.is_empty() {
            if let Some((end, config, node, stop)) = broker_end.take() {
                let (srd, swr) = tokio::io::split(end);
                let session = Session::new(conn, &config, peer.ip().is_loopback(), now_ms())
                    .with_counters(node.counters.clone());
                let peer = Peer {
                    addr: peer,
                    local: local.clone(),
                    translated: true,
                };
                amqp_task = Some(tokio::spawn(connection::run(
                    srd, swr, session, peer, conn, config, node, stop,
                )));
            }
        }
        let started = amqp_task.is_some();
        let read_client = stomp.wants_stomp();
        let read_amqp = started && amqp_open && stomp.wants_amqp();
        let write_amqp = started && amqp_open && !to_broker.is_empty();
        tokio::select! {
            r = rd.read_into(&mut inbuf), if read_client => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => stomp.receive_stomp(&mut inbuf, now_ms()),
            },
            r = wr.write_from(&mut to_client), if !to_client.is_empty() => {
                if matches!(r, Ok(0) | Err(_)) {
                    break;
                }
            }
            r = pipe_rd.read_buf(&mut amqp_in), if read_amqp => match r {
                Ok(0) | Err(_) => {
                    amqp_open = false;
                    stomp.amqp_closed();
                }
                Ok(_) => stomp.receive_amqp(&mut amqp_in, now_ms()),
            },
            r = pipe_wr.write_buf(&mut to_broker), if write_amqp => {
                if matches!(r, Ok(0) | Err(_)) {
                    amqp_open = false;
                    stomp.amqp_closed();
                }
            }
            _ = ticker.tick() => stomp.tick(now_ms()),
            r = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                // A client with an AMQP connection hears of the shutdown from it (an ERROR
                // after the broker's connection.close); one still before CONNECT just goes.
                if r.is_err() || !started {
                    break;
                }
            }
        }
    }
    debug!(conn, %peer, "STOMP connection ended");
    wr.finish().await;
    if let Some(task) = amqp_task {
        // What the session still has for the broker (DISCONNECT's connection.close), then
        // the pipe closes and the AMQP connection ends as a client's whose socket closed.
        let flush = async {
            if to_broker.is_empty() {
                std::mem::swap(&mut to_broker, stomp.amqp_out());
            }
            while amqp_open && !to_broker.is_empty() {
                if matches!(pipe_wr.write_buf(&mut to_broker).await, Ok(0) | Err(_)) {
                    break;
                }
                if to_broker.is_empty() {
                    std::mem::swap(&mut to_broker, stomp.amqp_out());
                }
            }
            let _ = pipe_wr.shutdown().await;
            drop(pipe_rd);
            drop(pipe_wr);
            let _ = task.await;
        };
        if tokio::time::timeout(AMQP_CLOSE_TIMEOUT, flush)
            .await
            .is_err()
        {
            debug!(
                conn,
                "the STOMP client's AMQP connection did not end in time"
            );
        }
    }
}

/// The WebSocket side of Web-STOMP.
mod websocket {
    use std::io;

    use bytes::BytesMut;
    use futures_util::stream::{SplitSink, SplitStream};
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    use super::{ClientRead, ClientWrite};

    /// The sub-protocols of STOMP over WebSocket, best first.
    const PROTOCOLS: [&str; 4] = ["v12.stomp", "v11.stomp", "v10.stomp", "stomp"];

    /// The handshake's answer: 404 for a path other than `/ws`; the best STOMP sub-protocol
    /// the client offers (browsers refuse a connection whose offer goes unanswered).
    #[allow(clippy::result_large_err)]
    pub(super) fn choose(
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        if request.uri().path() != "/ws" {
            let mut refused = ErrorResponse::new(Some("Web-STOMP is served at /ws".to_owned()));
            *refused.status_mut() = StatusCode::NOT_FOUND;
            return Err(refused);
        }
        let offered: Vec<&str> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if let Some(p) = PROTOCOLS.iter().find(|p| offered.contains(p)) {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(p));
        }
        Ok(response)
    }

    /// Messages from the client, as bytes.
    pub(super) struct Reader(pub(super) SplitStream<WebSocketStream<TcpStream>>);

    impl ClientRead for Reader {
        async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
            loop {
                match self.0.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(Message::Text(t))) if !t.is_empty() => {
                        buf.extend_from_slice(t.as_bytes());
                        return Ok(t.len());
                    }
                    Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                        buf.extend_from_slice(&b);
                        return Ok(b.len());
                    }
                    // Pings are answered by tungstenite; empty messages carry nothing.
                    Some(Ok(_)) => {}
                }
            }
        }
    }

    /// Messages to the client: handed to [`write_messages`] through a bounded queue.
    pub(super) struct Writer(pub(super) mpsc::Sender<Message>);

    impl ClientWrite for Writer {
        async fn write_from(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
            let permit = self.0.reserve().await.map_err(io::Error::other)?;
            let bytes = buf.split().freeze();
            let n = bytes.len();
            let message = match std::str::from_utf8(&bytes) {
                Ok(_) => match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes) {
                    Ok(text) => Message::Text(text),
                    Err(_) => return Err(io::Error::other("not UTF-8")),
                },
                Err(_) => Message::Binary(bytes),
            };
            permit.send(message);
            Ok(n)
        }

        async fn finish(&mut self) {
            let _ = self.0.send(Message::Close(None)).await;
        }
    }

    /// Writes the queued messages to the client's socket until the queue closes or a close
    /// has been sent.
    pub(super) async fn write_messages(
        mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
        mut rx: mpsc::Receiver<Message>,
    ) {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    }
}
