//! The AMQP and AMQPS listeners: accept connections, give each a task and a connection id (an
//! AMQPS one first finishes its TLS handshake within the handshake timeout), and on shutdown
//! close every client with 320 CONNECTION_FORCED before returning.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};
use warren_core::Broker;

use crate::alarm::ClusterAlarms;
use crate::broker_task::BrokerHandle;
use crate::clock::now_ms;
use crate::counters::ClientCounters;
use crate::listener::{AmqpsConfig, Listener, Protocol};
use crate::{connection, mqtt, stomp, ServerConfig};

/// The connection ids a server of node `node_id` started now gives out begin here: the node id
/// (below 2048) takes the top 11 bits, the start time in microseconds-ish the 52 below, so ids
/// are never reused, not even across restarts. A broker started before its server can take it
/// as the bound below which a connection of its node belongs to an earlier run.
pub fn first_conn_id(node_id: u64) -> warren_core::ConnId {
    let node_bits = (node_id & 0x7ff) << 52;
    node_bits | now_ms().saturating_mul(1000).max(1) & ((1 << 52) - 1)
}

/// A bound, not yet running AMQP server.
pub struct Server {
    /// The first is a plain AMQP listener (see [`Server::local_addr`]).
    listeners: Vec<Listener>,
    config: ServerConfig,
    broker: BrokerHandle,
    /// The next connection id (shared with the direct connections of [`Server::direct`]).
    next_conn: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The cluster's resource alarms (none unless [`Server::with_alarms`]).
    alarms: watch::Receiver<ClusterAlarms>,
    /// What this node's clients did (see [`crate::counters`]).
    counters: Arc<ClientCounters>,
    /// The retained messages of this node's MQTT clients.
    retained: Arc<mqtt::MemoryRetained>,
}

impl Server {
    /// Binds the listener (so the caller learns the real port before serving), in front of an
    /// in-memory broker that leads a cluster of one and applies its commands at once.
    pub async fn bind(config: ServerConfig, mut broker: Broker) -> io::Result<Server> {
        broker.set_leading(true);
        Server::bind_to(
            config,
            BrokerHandle::spawn(
                broker,
                crate::Replication::Local,
                crate::relay::Links::none(),
            ),
        )
        .await
    }

    /// Binds the listener in front of a running broker task (e.g. one replicated through Raft).
    pub async fn bind_to(config: ServerConfig, broker: BrokerHandle) -> io::Result<Server> {
        let socket = TcpListener::bind(config.listen).await?;
        Ok(Server::with_listeners(
            config,
            broker,
            vec![Listener::amqp(socket)],
        ))
    }

    /// A server on listeners already bound (see [`crate::listener`]); the first must be a plain
    /// AMQP one.
    pub fn with_listeners(
        config: ServerConfig,
        broker: BrokerHandle,
        listeners: Vec<Listener>,
    ) -> Server {
        // Connection ids are never reused, not even across restarts (commands replayed from the
        // log name the connections of earlier runs) nor across nodes: the node id (below 2048)
        // takes the top 11 bits, the start time in microseconds-ish the 52 below.
        let next_conn = first_conn_id(config.node_id);
        Server {
            next_conn: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(next_conn)),
            alarms: watch::channel(ClusterAlarms::default()).1,
            counters: broker.counters.clone(),
            retained: Arc::default(),
            listeners,
            config,
            broker,
        }
    }

    /// Blocks publishing connections while `alarms` has an alarm on (see [`crate::alarm`]).
    pub fn with_alarms(mut self, alarms: watch::Receiver<ClusterAlarms>) -> Server {
        self.alarms = alarms;
        self
    }

    /// Opens connections on an operator's behalf, on this node's broker as clients' (see
    /// [`crate::direct`]).
    pub fn direct(&self) -> crate::direct::DirectConnector {
        crate::direct::DirectConnector::new(self.node())
    }

    /// What the connections of this server share.
    fn node(&self) -> connection::Node {
        connection::Node {
            local: self.broker.tx.clone(),
            next_conn: self.next_conn.clone(),
            alarms: self.alarms.clone(),
            counters: self.counters.clone(),
            retained: self.retained.clone(),
        }
    }

    /// The counters of what this node's AMQP clients do, shared by all its connections (RabbitMQ's
    /// global counters, churn, logins and message sizes: see [`crate::counters`]).
    pub fn client_counters(&self) -> Arc<ClientCounters> {
        self.counters.clone()
    }

    /// The address of the first (plain AMQP) listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(l) => l.socket.local_addr(),
            None => Err(io::Error::other("no listener")),
        }
    }

    /// Every listener: RabbitMQ's protocol name (`amqp`, `amqp/ssl`) and address.
    pub fn listening(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| Some((l.protocol(), l.socket.local_addr().ok()?)))
            .collect()
    }

    /// Serves until `shutdown` completes, then closes every connection and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let node = self.node();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        // One accept loop per listener, all feeding this loop.
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
        let mut acceptors = JoinSet::new();
        for listener in self.listeners {
            info!(addr = %listener.socket.local_addr()?, protocol = listener.protocol(), "listening for clients");
            acceptors.spawn(accept_loop(listener, accepted_tx.clone()));
        }
        drop(accepted_tx);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((stream, peer, tls, protocol)) = accepted.recv() => {
                    let conn = self.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (config, node, stop) = (self.config.clone(), node.clone(), stop_rx.clone());
                    match (protocol, tls) {
                        (Protocol::Amqp, None) => tasks.spawn(connection::run_tcp(stream, peer, conn, config, node, stop)),
                        (Protocol::Amqp, Some(tls)) => tasks.spawn(connection::run_tls(stream, peer, tls, conn, config, node, stop)),
                        (Protocol::Stomp, tls) => tasks.spawn(stomp::run(stream, peer, tls, conn, config, node, stop)),
                        (Protocol::WebStomp, tls) => tasks.spawn(stomp::run_websocket(stream, peer, tls, conn, config, node, stop)),
                        (Protocol::Mqtt, tls) => tasks.spawn(mqtt::run(stream, peer, tls, conn, config, node, stop)),
                        (Protocol::WebMqtt, tls) => tasks.spawn(mqtt::run_websocket(stream, peer, tls, conn, config, node, stop)),
                    };
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        acceptors.abort_all();
        info!(
            connections = tasks.len(),
            "shutting down: closing client connections"
        );
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("some connections did not close in time; dropping them");
            tasks.abort_all();
        }
        drop(node);
        self.broker.stop().await;
        Ok(())
    }
}

/// An accepted socket, its peer, and what its listener serves.
type Accepted = (TcpStream, SocketAddr, Option<Arc<AmqpsConfig>>, Protocol);

/// Accepts on `listener` until the server stops, handing each socket to the server's loop.
async fn accept_loop(listener: Listener, accepted: tokio::sync::mpsc::Sender<Accepted>) {
    loop {
        match listener.socket.accept().await {
            Ok((stream, peer)) => {
                if accepted
                    .send((stream, peer, listener.tls.clone(), listener.protocol))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
