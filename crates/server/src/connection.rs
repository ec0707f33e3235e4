//! The tokio task of one client connection: moves bytes between the socket and its [`Session`],
//! sends the session's inputs to this node's broker and applies the effects that come back.
//!
//! Back-pressure: the socket is not read while the outbound buffer is above the high watermark,
//! so a client that does not read cannot make the server buffer without bound; nor while the
//! core has paused the connection for credit flow (its publishes fill the log's pipeline,
//! `warren_core::Effect::Flow`), nor while a resource alarm blocks it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, trace, warn};
use warren_core::{ConnId, Effect, Input, CONNECTION_NAME_PROPERTY, CONNECTION_PROTOCOL_PROPERTY};
use warren_wire::FieldValue;

use crate::alarm::ClusterAlarms;
use crate::broker_task::{Batch, ToBroker};
use crate::clock::now_ms;
use crate::connection_log::{ConnectionLog, Ending};
use crate::counters::ClientCounters;
use crate::listener::AmqpsConfig;
use crate::session::Session;
use crate::ServerConfig;

/// How long a closing connection waits for what its publishes proposed to be applied.
const CLOSE_SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection task of a node shares.
#[derive(Clone)]
pub(crate) struct Node {
    /// This node's broker task: every client connection of the node talks to it.
    pub(crate) local: mpsc::Sender<ToBroker>,
    pub(crate) next_conn: Arc<AtomicU64>,
    /// The cluster's resource alarms: while one is on, a connection that publishes is blocked.
    pub(crate) alarms: watch::Receiver<ClusterAlarms>,
    /// What the node's clients did, counted by each client's session.
    pub(crate) counters: Arc<ClientCounters>,
    /// The retained messages of the node's MQTT clients.
    pub(crate) retained: Arc<dyn warren_mqtt::RetainedStore>,
}

/// A client connection's place in its node's broker: its inputs go to the broker task, and
/// the effects for it come back on [`Incoming`].
pub(crate) struct Registration {
    node: Node,
    client: ConnId,
    /// The broker was told the connection ended.
    ended: bool,
}

/// Where the effects of a connection's broker come in.
pub(crate) struct Incoming {
    pub(crate) effects: mpsc::UnboundedReceiver<Batch>,
}

impl Incoming {
    /// A receiver that never gets anything (to take the place of a real one moved out).
    pub(crate) fn none() -> Incoming {
        let (_, effects) = mpsc::unbounded_channel();
        Incoming { effects }
    }
}

impl Registration {
    /// Registers connection `client` with this node's broker; `None` if the broker is gone.
    pub(crate) async fn open(node: Node, client: ConnId) -> Option<(Registration, Incoming)> {
        let (tx, effects) = mpsc::unbounded_channel();
        node.local
            .send(ToBroker::Register {
                conn: client,
                effects: tx,
            })
            .await
            .ok()?;
        Some((
            Registration {
                node,
                client,
                ended: false,
            },
            Incoming { effects },
        ))
    }

    /// Sends one client input to the broker; false if the broker is gone.
    pub(crate) async fn input(&mut self, input: Input) -> bool {
        self.node.local.send(ToBroker::Input(input)).await.is_ok()
    }

    /// The client's connection ended (`Input::ConnectionClosed` from its session): the broker
    /// learns it after what the connection's publishes proposed has been applied (a bounded
    /// wait, `Input::Sync`, so that the client's `connection.close-ok`, written after this,
    /// follows them and a client reading on another connection finds them).
    pub(crate) async fn end(&mut self, incoming: &mut Incoming) {
        if self.ended {
            return;
        }
        self.ended = true;
        let client = self.client;
        let token = 1;
        if self
            .input(Input::Sync {
                conn: client,
                token,
            })
            .await
        {
            let deadline = tokio::time::Instant::now() + CLOSE_SYNC_TIMEOUT;
            // Nothing is for the client any more but the sync's answer.
            while let Ok(Some(batch)) =
                tokio::time::timeout_at(deadline, incoming.effects.recv()).await
            {
                let synced = batch
                    .effects
                    .iter()
                    .any(|e| matches!(e, Effect::Synced { token: t, .. } if *t == token));
                if synced {
                    break;
                }
            }
        }
        self.input(Input::ConnectionClosed { conn: client }).await;
    }

    /// The connection is gone: the broker is told (unless it was already, see
    /// [`Registration::end`]) and forgets it.
    pub(crate) async fn close(&mut self, known_to_core: bool, incoming: &mut Incoming) {
        if known_to_core {
            self.end(incoming).await;
        }
        let _ = self
            .node
            .local
            .send(ToBroker::Unregister { conn: self.client })
            .await;
    }
}

/// Serves a plain AMQP connection.
pub(crate) async fn run_tcp(
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
    let (rd, wr) = stream.into_split();
    let session = Session::new(conn, &config, peer.ip().is_loopback(), now_ms())
        .with_counters(node.counters.clone());
    let peer = Peer {
        addr: peer,
        local,
        translated: false,
    };
    run(rd, wr, session, peer, conn, config, node, shutdown).await;
}

/// Serves an AMQPS connection: the TLS handshake first (within the handshake timeout; a
/// failure is logged and closes the socket), then AMQP as over TCP, with SASL EXTERNAL offered
/// when the client presented a certificate.
pub(crate) async fn run_tls(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Arc<AmqpsConfig>,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    shutdown: watch::Receiver<bool>,
) {
    let local = stream
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.tls.clone());
    let handshake =
        warren_tls::acceptor::handshake(stream, peer, &acceptor, config.handshake_timeout, "amqps");
    let Some(accepted) = handshake.await else {
        return;
    };
    let external = accepted
        .identity
        .as_ref()
        .and_then(|id| id.login_name(tls.login_from));
    let (rd, wr) = tokio::io::split(accepted.stream);
    let session = Session::new(conn, &config, peer.ip().is_loopback(), now_ms())
        .with_external_user(external)
        .with_counters(node.counters.clone());
    let peer = Peer {
        addr: peer,
        local,
        translated: false,
    };
    run(rd, wr, session, peer, conn, config, node, shutdown).await;
}

/// Who is at the other end of a connection's socket.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// The node's own address of the socket.
    pub(crate) local: String,
    /// The client speaks another protocol, translated into AMQP on this node (see
    /// [`crate::stomp`]): its login names the protocol (`CONNECTION_PROTOCOL_PROPERTY`), which
    /// an AMQP client's may not.
    pub(crate) translated: bool,
}

/// The connection's loop over its socket halves, its broker and its ticks.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<R, W>(
    mut rd: R,
    mut wr: W,
    mut session: Session,
    peer: Peer,
    conn: ConnId,
    config: ServerConfig,
    node: Node,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut alarms = node.alarms.clone();
    let mut alarms_open = true;
    let mut log = ConnectionLog::new(peer.addr, &peer.local, peer.translated);
    if !peer.translated {
        // A translated client's own task says it was accepted, naming its protocol.
        info!(conn, "{}", log.accepting());
    }
    let Some((mut registration, mut incoming)) = Registration::open(node, conn).await else {
        return;
    };
    // The socket ended (or broke) before the connection was closed.
    let mut socket_ended = false;
    let high = config.high_watermark;
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut inputs: Vec<Input> = Vec::new();
    let mut effects = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        return;
    }
    loop {
        if session.is_finished() && session.out().is_empty() {
            break;
        }
        let want_read = !session.is_finished()
            && !session.is_blocked()
            && !session.in_flow()
            && session.out().len() < high;
        let want_write = !session.out().is_empty();
        let alive = tokio::select! {
            r = rd.read_buf(&mut inbuf), if want_read => match r {
                Ok(0) | Err(_) => {
                    socket_ended = true;
                    break;
                }
                Ok(n) => {
                    trace!(target: "warren_latency", conn, n, "socket read");
                    session.receive(&mut inbuf, now_ms(), &mut inputs);
                    true
                }
            },
            r = wr.write_buf(session.out()), if want_write => match r {
                Ok(0) | Err(_) => {
                    socket_ended = true;
                    break;
                }
                Ok(n) => {
                    trace!(target: "warren_latency", conn, n, "socket written");
                    session.after_write(&mut inputs);
                    true
                }
            },
            Some(batch) = incoming.effects.recv() => {
                trace!(target: "warren_latency", conn, effects = batch.effects.len(), "effects received");
                effects.extend(batch.effects);
                true
            }
            _ = ticker.tick() => {
                session.tick(now_ms(), &mut inputs);
                true
            }
            r = alarms.changed(), if alarms_open => {
                match r {
                    Ok(()) => {
                        let reason = alarms.borrow_and_update().reason();
                        let now = now_ms();
                        session.set_alarm(reason, now, &mut inputs);
                        // Unblocked: what was read before the block goes on now.
                        session.receive(&mut inbuf, now, &mut inputs);
                    }
                    Err(_) => alarms_open = false,
                }
                true
            }
            r = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if r.is_ok() {
                    session.shutdown(now_ms(), &mut inputs);
                }
                true
            }
        };
        if !alive {
            return;
        }
        // Effects first (they may make inputs, e.g. writable), then the inputs, until calm.
        loop {
            let now = now_ms();
            session.apply_all(&mut effects, now, &mut inputs);
            if inputs.is_empty() {
                break;
            }
            for mut input in std::mem::take(&mut inputs) {
                log.note(&input);
                if let Input::Login {
                    client_properties, ..
                } = &mut input
                {
                    // RabbitMQ's connection name, shown by the deciding broker (see
                    // `CONNECTION_NAME_PROPERTY`).
                    client_properties.insert(
                        CONNECTION_NAME_PROPERTY,
                        FieldValue::LongStr(format!("{} -> {}", peer.addr, peer.local).into()),
                    );
                    if !peer.translated {
                        client_properties.remove(CONNECTION_PROTOCOL_PROPERTY);
                    }
                }
                if let Input::ConnectionClosed { .. } = input {
                    registration.end(&mut incoming).await;
                    continue;
                }
                if !registration.input(input).await {
                    return;
                }
            }
        }
        if let Some(line) = log.opened(session.is_open()) {
            info!(conn, "{line}");
        }
    }
    // Ended by the client's connection.close, and close-ok has been written.
    let closed_by_client = session.closed_by_client() && session.out().is_empty();
    debug!(conn, peer = %peer.addr, "connection ended");
    if log.was_open() {
        // The client's connection.close counts even if its close-ok could not be written (a
        // translated client's pipe may be gone by then).
        let ending = if shutting_down {
            Ending::Shutdown
        } else if session.closed_by_client() {
            Ending::ClosedByClient
        } else if socket_ended {
            Ending::SocketClosed
        } else {
            Ending::ClosedByServer
        };
        let line = log.closing(ending);
        if ending == Ending::SocketClosed {
            warn!(conn, "{line}");
        } else {
            info!(conn, "{line}");
        }
    }
    registration
        .close(session.known_to_core(), &mut incoming)
        .await;
    if closed_by_client && !shutting_down {
        await_client_close(&mut rd, &mut shutdown).await;
    }
    let _ = wr.shutdown().await;
}

/// How long the socket stays open after the close handshake for the client to close it
/// (RabbitMQ's reader waits `CLOSING_TIMEOUT`, 30 s, too).
const CLOSING_TIMEOUT: Duration = Duration::from_secs(30);

/// After close-ok, RabbitMQ leaves closing the TCP connection to the client. Clients expect
/// it: lapin, seeing the server's FIN before it has handled close-ok, logs "Socket was
/// readable but we read 0". The broker has already forgotten the connection; this only keeps
/// the socket, reading and discarding until the client closes it, the timeout, or shutdown.
async fn await_client_close<R: AsyncRead + Unpin>(
    rd: &mut R,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut scratch = [0u8; 512];
    let until_eof = async {
        while let Ok(n) = rd.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        () = until_eof => {}
        () = tokio::time::sleep(CLOSING_TIMEOUT) => {}
        _ = shutdown.changed() => {}
    }
}
