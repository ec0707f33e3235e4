//! A client of another protocol (STOMP, MQTT) served as RabbitMQ's plugins serve them: as an
//! AMQP 0-9-1 client of its node. The connection's task moves bytes between the client's
//! socket (or WebSocket) and its protocol's sans-io session ([`Translator`]), and between that
//! session and an AMQP connection of this node served like any client's (the same
//! [`connection::run`] over an in-memory pipe). The client so has everything an AMQP client
//! has: logins, permissions, alarms and credit flow (the pipe fills and the socket is not
//! read), replication and failover, and a line in `/api/connections` (its protocol, its own
//! peer address).
//!
//! The AMQP side starts when the session first has bytes for it (after the client's CONNECT:
//! a socket that never sends one costs the broker nothing, and is closed at the session's
//! handshake deadline).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;
use warren_core::ConnId;
use warren_wire::OutBuf;

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::clock::now_ms;
use crate::connection::{self, Node, Peer};
use crate::listener::AmqpsConfig;
use crate::session::Session;
use crate::websocket::{self, Endpoint};
use crate::ServerConfig;

/// Bytes the pipe between a session and its AMQP connection holds each way.
const PIPE_BYTES: usize = 256 * 1024;
/// How often the session's timers (heart-beats, keep-alives, the CONNECT deadline) are looked
/// at.
const TICK: Duration = Duration::from_millis(100);
/// How long the AMQP connection has to finish once its client is gone.
const AMQP_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's own address of a client's socket, for the connection's name.
fn local_address(stream: &TcpStream) -> String {
    stream
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string())
}

/// The TLS handshake of a translated client's socket (logged as `listener` when it fails).
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &AmqpsConfig,
    config: &ServerConfig,
    listener: &'static str,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.tls.clone());
    warren_tls::acceptor::handshake(stream, peer, &acceptor, config.handshake_timeout, listener)
        .await
        .map(|accepted| accepted.stream)
}

/// Serves a translated client on its socket: over TLS when `tls` is given (the handshake
/// first, logged as `listener`), else plain TCP.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_socket<T: Translator>(
    session: T,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<AmqpsConfig>>,
    listener: &'static str,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = local_address(&stream);
    match tls {
        None => {
            let (rd, wr) = stream.into_split();
            serve(session, rd, wr, peer, local, conn, config, node, shutdown).await;
        }
        Some(tls) => {
            let Some(stream) = handshake(stream, peer, &tls, &config, listener).await else {
                return;
            };
            let (rd, wr) = tokio::io::split(stream);
            serve(session, rd, wr, peer, local, conn, config, node, shutdown).await;
        }
    }
}

/// Serves a translated client over a WebSocket at `/ws`: `ws://`, or `wss://` when `tls` is
/// given (the TLS handshake first, logged as `listener`, then the WebSocket's).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_websocket<T: Translator>(
    session: T,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<AmqpsConfig>>,
    listener: &'static str,
    endpoint: Endpoint,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = local_address(&stream);
    let stream: Box<dyn websocket::Io> = match tls {
        None => Box::new(stream),
        Some(tls) => match handshake(stream, peer, &tls, &config, listener).await {
            Some(stream) => Box::new(stream),
            None => return,
        },
    };
    let Some(ws) = websocket::accept(stream, peer, endpoint, config.handshake_timeout).await else {
        return;
    };
    serve(
        session, ws.reader, ws.writer, peer, local, conn, config, node, shutdown,
    )
    .await;
    let _ = ws.task.await;
}

/// A protocol's sans-io session: the client's bytes in and out, the AMQP connection's bytes in
/// and out, and time.
pub(crate) trait Translator {
    /// The protocol's name in the node's log (`STOMP`, `MQTT`).
    const PROTOCOL: &'static str;
    /// The client's bytes in `buf` (consumed).
    fn receive_client(&mut self, buf: &mut BytesMut, now: u64);
    /// The AMQP connection's bytes in `buf` (consumed).
    fn receive_amqp(&mut self, buf: &mut BytesMut, now: u64);
    /// The AMQP connection closed its side.
    fn amqp_closed(&mut self);
    /// The client's socket closed (or broke): the session may still have work for the
    /// broker (MQTT's will) before it closes.
    fn client_closed(&mut self);
    fn tick(&mut self, now: u64);
    /// Bytes for the client (whole frames or packets, ready to be one WebSocket message).
    fn client_out(&mut self) -> &mut BytesMut;
    /// Bytes for the AMQP connection.
    fn amqp_out(&mut self) -> &mut OutBuf;
    /// Whether the client's bytes should be read now.
    fn wants_client(&self) -> bool;
    /// Whether the AMQP connection's bytes should be read now.
    fn wants_amqp(&self) -> bool;
    /// The session is over: close once the client has what it was sent.
    fn is_closed(&self) -> bool;
}

/// The client's side of a session: bytes in.
pub(crate) trait ClientRead {
    /// Appends what the client sent next to `buf`; 0 at its end. Cancel-safe.
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
}

/// The client's side of a session: bytes out.
pub(crate) trait ClientWrite {
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

/// Serves one translated client until it or its AMQP connection ends.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<T, R, W>(
    mut session: T,
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    local: String,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    mut shutdown: watch::Receiver<bool>,
) where
    T: Translator,
    R: ClientRead,
    W: ClientWrite,
{
    // As RabbitMQ's plugins log it; the AMQP connection logs the login and the close.
    tracing::info!(
        conn,
        "accepting {} connection {peer} -> {local}",
        T::PROTOCOL
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
    let mut client_open = true;
    // Once the client is gone, how long the session may go on with the broker (a will).
    let mut gone_deadline = tokio::time::Instant::now();
    // What is being written each way, taken from the session (which goes on filling its own
    // buffers, up to its watermarks, meanwhile).
    let mut to_client = BytesMut::new();
    let mut to_broker = OutBuf::new();
    loop {
        if to_client.is_empty() {
            to_client = session.client_out().split();
        }
        if to_broker.is_empty() {
            std::mem::swap(&mut to_broker, session.amqp_out());
        }
        if session.is_closed() && (to_client.is_empty() || !client_open) {
            break;
        }
        if amqp_task.is_none() && !to_broker.is_empty() {
            if let Some((end, config, node, stop)) = broker_end.take() {
                let (srd, swr) = tokio::io::split(end);
                let amqp = Session::new(conn, &config, peer.ip().is_loopback(), now_ms())
                    .with_counters(node.counters.clone());
                let peer = Peer {
                    addr: peer,
                    local: local.clone(),
                    translated: true,
                };
                amqp_task = Some(tokio::spawn(connection::run(
                    srd, swr, amqp, peer, conn, config, node, stop,
                )));
            }
        }
        let started = amqp_task.is_some();
        let read_client = client_open && session.wants_client();
        let read_amqp = started && amqp_open && session.wants_amqp();
        let write_amqp = started && amqp_open && !to_broker.is_empty();
        tokio::select! {
            r = rd.read_into(&mut inbuf), if read_client => match r {
                Ok(0) | Err(_) => {
                    client_open = false;
                    gone_deadline = tokio::time::Instant::now() + AMQP_CLOSE_TIMEOUT;
                    session.client_closed();
                }
                Ok(_) => session.receive_client(&mut inbuf, now_ms()),
            },
            r = wr.write_from(&mut to_client), if client_open && !to_client.is_empty() => {
                if matches!(r, Ok(0) | Err(_)) {
                    client_open = false;
                    gone_deadline = tokio::time::Instant::now() + AMQP_CLOSE_TIMEOUT;
                    to_client.clear();
                    session.client_closed();
                }
            }
            r = pipe_rd.read_buf(&mut amqp_in), if read_amqp => match r {
                Ok(0) | Err(_) => {
                    amqp_open = false;
                    session.amqp_closed();
                }
                Ok(_) => session.receive_amqp(&mut amqp_in, now_ms()),
            },
            r = pipe_wr.write_buf(&mut to_broker), if write_amqp => {
                if matches!(r, Ok(0) | Err(_)) {
                    amqp_open = false;
                    session.amqp_closed();
                }
            }
            _ = ticker.tick() => session.tick(now_ms()),
            () = tokio::time::sleep_until(gone_deadline), if !client_open => {
                debug!(conn, "a translated client's session did not finish in time");
                break;
            }
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
    debug!(conn, %peer, "translated connection ended");
    wr.finish().await;
    if let Some(task) = amqp_task {
        // What the session still has for the broker (DISCONNECT's connection.close), then
        // the pipe closes and the AMQP connection ends as a client's whose socket closed.
        let flush = async {
            if to_broker.is_empty() {
                std::mem::swap(&mut to_broker, session.amqp_out());
            }
            while amqp_open && !to_broker.is_empty() {
                if matches!(pipe_wr.write_buf(&mut to_broker).await, Ok(0) | Err(_)) {
                    break;
                }
                if to_broker.is_empty() {
                    std::mem::swap(&mut to_broker, session.amqp_out());
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
