//! Wires one node together from its resolved [`NodeConfig`], in this order: the data directory
//! and this process's gRPC dialling (TLS, peer addresses); the resource alarms; the Raft log in
//! RocksDB and the broker task over it; the Raft group with its state machine, proposer, member
//! addresses and client routing; the gRPC port (mutual TLS or plaintext); the management HTTP(S)
//! listeners; the AMQP(S) listeners and server. [`Node::run`] serves until its stop future ends
//! or Raft stops on a fatal error. Flags, the TOML file, logging and signals are the binary's.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tracing::info;
use warren_core::{Broker, BrokerConfig};
use warren_raft::admin::AdminService;
use warren_raft::node::{NodeOptions, StartedNode};
use warren_raft::resources::ResourceLimits;
use warren_raft::service::RaftService;
use warren_raft::state_machine::BrokerStateMachine;
use warren_raft::{WarrenNode, METADATA_GROUP};
use warren_server::access::AccessService;
use warren_server::listener;
use warren_server::management::ManagementService;
use warren_server::relay::{spawn_leadership, spawn_member_addresses, Links, RelayService};
use warren_server::{
    first_conn_id, spawn_proposer, BrokerHandle, Replication, Server, ServerConfig,
};
use warren_tls::ClusterTls;

/// Everything a node needs to start, resolved and checked (the binary's come from its flags and
/// TOML file).
pub struct NodeConfig {
    /// This node's id in its cluster, below 2048.
    pub node_id: u64,
    /// The node's data directory, created if missing; the Raft log lives in `raft/` under it.
    pub data_dir: PathBuf,
    /// The AMQP server's settings: `listen`'s port is the AMQP port, `node_id` is this node's.
    pub server: ServerConfig,
    /// The broker's settings; its `node` and `first_conn` are set from `node_id` at start, and
    /// its `loopback_users` apply to the management API too.
    pub broker: BrokerConfig,
    /// Tunables of the node's Raft group.
    pub raft: NodeOptions,
    /// The cluster's members, this node included (a node on its own: itself, with no gRPC
    /// address).
    pub members: BTreeMap<u64, WarrenNode>,
    /// Where this node's gRPC port binds (its own member entry's gRPC address); `None`: a node
    /// on its own, with no gRPC port.
    pub grpc_addr: Option<SocketAddr>,
    /// Certificates for mutual TLS on gRPC, served and dialled; `None`: plaintext.
    pub cluster_tls: Option<ClusterTls>,
    /// Recorded gRPC address → address to dial instead (`--peer-address`).
    pub peer_addresses: HashMap<String, String>,
    /// Address the AMQP, AMQPS and management listeners bind to; `None`: every IPv4 and IPv6
    /// address.
    pub bind: Option<IpAddr>,
    /// The TLS and ports of the AMQPS and management HTTPS listeners.
    pub listener_tls: ListenerTls,
    /// Port of the management HTTP API, web console and metrics; 0 turns them off.
    pub management_port: u16,
    /// Whether `management_port` was asked for: if so it must be free, else a node whose
    /// default port is taken runs without the management API.
    pub management_port_given: bool,
    /// Port of the STOMP listener; 0 turns it off.
    pub stomp_port: u16,
    /// Whether `stomp_port` was asked for: if so it must be free, else a node whose default
    /// port is taken runs without STOMP.
    pub stomp_port_given: bool,
    /// Port of the Web-STOMP listener (STOMP over WebSocket at `/ws`); 0 turns it off.
    pub web_stomp_port: u16,
    /// Whether `web_stomp_port` was asked for (see `stomp_port_given`).
    pub web_stomp_port_given: bool,
    /// Port of the MQTT listener; 0 turns it off.
    pub mqtt_port: u16,
    /// Whether `mqtt_port` was asked for (see `stomp_port_given`).
    pub mqtt_port_given: bool,
    /// Port of the Web-MQTT listener (MQTT over WebSocket at `/ws`); 0 turns it off.
    pub web_mqtt_port: u16,
    /// Whether `web_mqtt_port` was asked for (see `stomp_port_given`).
    pub web_mqtt_port_given: bool,
    /// The limits of the resource alarms.
    pub resource_limits: ResourceLimits,
    /// Bytes of memory for the bodies of the replicated queues' most recent messages.
    pub body_cache: usize,
}

/// The TLS of the client-facing listeners (AMQPS, management HTTPS) and their ports.
pub struct ListenerTls {
    /// AMQPS's certificate and login; `None`: no AMQPS listener.
    pub amqps: Option<Arc<listener::AmqpsConfig>>,
    /// Management HTTPS's certificate; `None`: no HTTPS listener.
    pub https: Option<Arc<warren_tls::rustls::ServerConfig>>,
    /// AMQPS port; 0 turns it off.
    pub amqps_port: u16,
    /// Management HTTPS port; 0 turns it off.
    pub https_port: u16,
    /// Whether `https_port` was asked for: if so it must be free, else a node whose default
    /// port is taken runs without it.
    pub https_port_given: bool,
    /// STOMP over TLS port (with AMQPS's certificate); 0 turns it off.
    pub stomp_tls_port: u16,
    /// Whether `stomp_tls_port` was asked for (see `https_port_given`).
    pub stomp_tls_port_given: bool,
    /// MQTT over TLS port (with AMQPS's certificate); 0 turns it off.
    pub mqtt_tls_port: u16,
    /// Whether `mqtt_tls_port` was asked for (see `https_port_given`).
    pub mqtt_tls_port_given: bool,
    /// Web-STOMP over TLS port (`wss://`, with AMQPS's certificate); 0 turns it off.
    pub web_stomp_tls_port: u16,
    /// Whether `web_stomp_tls_port` was asked for (see `https_port_given`).
    pub web_stomp_tls_port_given: bool,
    /// Web-MQTT over TLS port (`wss://`, with AMQPS's certificate); 0 turns it off.
    pub web_mqtt_tls_port: u16,
    /// Whether `web_mqtt_tls_port` was asked for (see `https_port_given`).
    pub web_mqtt_tls_port_given: bool,
}

/// A started node: its listeners bound, its Raft group running; serves with [`Node::run`].
pub struct Node {
    raft: StartedNode,
    server: Server,
}

/// How long a peer has to finish the TLS handshake on the gRPC port.
const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the node of `config`: every listener is bound and the Raft group running when this
/// returns, and "warren started" is logged. Sets this process's gRPC dialling
/// ([`warren_raft::dial`]: only the first node started in a process sets it). The gRPC,
/// management and resource tasks it spawns end with the runtime, not with [`Node::run`].
pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
    let NodeConfig {
        node_id,
        data_dir,
        server: server_config,
        broker: broker_config,
        raft: raft_options,
        members,
        grpc_addr: own_grpc,
        cluster_tls,
        peer_addresses,
        bind,
        listener_tls,
        management_port,
        management_port_given,
        stomp_port,
        stomp_port_given,
        web_stomp_port,
        web_stomp_port_given,
        mqtt_port,
        mqtt_port_given,
        web_mqtt_port,
        web_mqtt_port_given,
        resource_limits,
        body_cache,
    } = config;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    warren_raft::dial::set_tls(cluster_tls.clone());
    warren_raft::dial::set_overrides(peer_addresses);
    let mgmt_loopback_users = broker_config.loopback_users.clone();
    // Every durable byte goes through this node's Raft group, logged in RocksDB under the
    // data directory.
    let (applied_tx, applied_rx) = tokio::sync::mpsc::channel(64);
    let (proposals_tx, proposals_rx) = tokio::sync::mpsc::unbounded_channel();
    // The broker task runs first: a restarting node replays its log into it.
    // The other nodes' brokers (queue commands, logged commands for the leader, messages
    // routed to transient queues homed there, client counts); their addresses come from Raft.
    let (addresses_tx, addresses_rx) = tokio::sync::watch::channel(BTreeMap::new());
    // Resource alarms: this node measured every second, the others asked.
    let (limits_tx, limits_rx) = tokio::sync::watch::channel(resource_limits);
    let resources = warren_server::alarm::spawn_monitor(node_id, data_dir.clone(), limits_rx);
    let alarms = warren_server::alarm::spawn_cluster_alarms(
        node_id,
        resources.clone(),
        addresses_rx.clone(),
    );
    let links = Links::new(node_id, addresses_rx);
    // Queued messages of replicated queues rest in the log (see docs/architecture.md).
    let db = warren_store::open(&data_dir.join("raft"))
        .with_context(|| format!("opening the Raft log in {}", data_dir.display()))?;
    let messages = warren_store::MessageStore::new(db);
    let mut core = Broker::new(BrokerConfig {
        node: node_id,
        first_conn: first_conn_id(node_id),
        ..broker_config
    });
    // A node that does not lead keeps a small share of the body cache, as does a node whose
    // memory alarm is on.
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pressure = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::memory_relief::spawn(resources.clone(), pressure.clone(), messages.clone());
    core.set_records(Box::new(
        warren_raft::records::LogRecords::new(messages.clone(), body_cache)
            .with_leading(leading.clone())
            .with_pressure(pressure),
    ));
    let broker = BrokerHandle::spawn(
        core,
        Replication::Raft {
            proposals: proposals_tx,
            applied: applied_rx,
        },
        links.clone(),
    );
    // What this node's clients did, reported in its status (every node's, in the console).
    let client_totals: warren_raft::admin::ClientTotalsReader = {
        let counters = broker.client_counters();
        Arc::new(move || counters.read().totals())
    };
    let state_machine =
        BrokerStateMachine::new(applied_tx, &data_dir.join("raft").join("snapshots"))
            .context("creating the snapshot directory")?
            .with_messages(messages.clone());
    let messages_store = messages.clone();
    let node = warren_raft::node::start(
        node_id,
        members,
        state_machine.clone(),
        &raft_options,
        messages,
    )
    .await
    .with_context(|| format!("starting the Raft log in {}", data_dir.display()))?;
    let raft = node.raft.clone();
    warren_raft::records::track_leadership(raft.clone(), node_id, leading);
    spawn_proposer(raft.clone(), node_id, links, proposals_rx);
    spawn_member_addresses(raft.clone(), addresses_tx);
    // Decide the replicated queues once this node leads (after committing a take-over or,
    // after a restart of the whole cluster, a recovery).
    let route = spawn_leadership(raft.clone(), node_id, node.restarted, &broker);
    if let Some(addr) = own_grpc {
        let raft_service =
            RaftService::new(node.incarnations.clone()).with_messages(messages_store.clone());
        raft_service.add_group(METADATA_GROUP, raft.clone());
        let relay = RelayService::new(&broker).with_raft(raft.clone());
        let admin = AdminService::new(raft.clone(), node.incarnations.clone())
            .with_client_totals(client_totals.clone())
            .with_state_digest(state_machine.clone())
            .with_resources(resources.clone(), limits_tx.clone());
        let access = AccessService::new(&broker, raft.clone(), route.clone());
        let management = ManagementService::new(&broker, route.clone(), node_id);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the gRPC address {addr}"))?;
        let services = GrpcServices {
            raft: raft_service,
            relay,
            admin,
            access,
            management,
        };
        if let Some(tls) = &cluster_tls {
            let config = tls.grpc_server_config().context("the node's certificate")?;
            let accepted = warren_tls::acceptor::spawn_accept_loop(
                listener,
                config,
                GRPC_HANDSHAKE_TIMEOUT,
                "grpc",
            );
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::ReceiverStream::new(accepted),
                |a| Ok::<_, std::io::Error>(warren_tls::grpc::GrpcIo::from(a)),
            );
            let members = warren_raft::trust::MemberCheck::new(raft.clone(), &messages_store)
                .context("reading the retired node ids")?;
            let guard = warren_tls::grpc::GuardLayer::new(Arc::new(members));
            tokio::spawn(async move {
                let served =
                    grpc_routes(tonic::transport::Server::builder().layer(guard), services)
                        .serve_with_incoming(incoming)
                        .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the gRPC server failed");
                }
            });
            info!(%addr, "gRPC (Raft, relay, operators) listening, mutual TLS");
        } else {
            // Accepted sockets get TCP_NODELAY (tonic sets it only on sockets it binds
            // itself): without it a relayed reply or confirm waits ~40 ms for a delayed ACK
            // (benchmarked: 21-33 against 177-238 confirms/s through a follower).
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |accepted| {
                    accepted.inspect(|s| {
                        if let Err(e) = s.set_nodelay(true) {
                            tracing::debug!(error = %e, "TCP_NODELAY on a gRPC connection");
                        }
                    })
                },
            );
            tokio::spawn(async move {
                let served = grpc_routes(tonic::transport::Server::builder(), services)
                    .serve_with_incoming(incoming)
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the gRPC server failed");
                }
            });
            info!(%addr, "gRPC (Raft, relay, operators) listening, INSECURE plaintext");
        }
    }
    let management = ManagementService::new(&broker, route.clone(), node_id);
    let access = AccessService::new(&broker, raft.clone(), route.clone());
    // Bound before the AMQP port, so a node whose AMQP port accepts has its management port.
    // Several nodes on one host (test harnesses, a cluster on loopback) would all want the
    // default ports: a node not told a port runs without that listener rather than not at
    // all. A port that was asked for must be had.
    let mut http_listeners = Vec::new();
    if management_port != 0 {
        let addrs = listener::addresses(bind, management_port);
        match listener::bind_all(&addrs, "management") {
            Ok(sockets) => http_listeners.extend(
                sockets
                    .into_iter()
                    .map(|socket| warren_mgmt::HttpListener { socket, tls: None }),
            ),
            Err(e) if !management_port_given => {
                tracing::warn!(error = %e, "the default management port is taken: running without the management API (give --management-port)");
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    }
    if let (Some(tls), true) = (&listener_tls.https, listener_tls.https_port != 0) {
        let addrs = listener::addresses(bind, listener_tls.https_port);
        match listener::bind_all(&addrs, "management HTTPS") {
            Ok(sockets) => {
                http_listeners.extend(sockets.into_iter().map(|socket| warren_mgmt::HttpListener {
                    socket,
                    tls: Some(tls.clone()),
                }))
            }
            Err(e) if !listener_tls.https_port_given => {
                tracing::warn!(error = %e, "the default management HTTPS port is taken: running without it (give --management-tls-port)");
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    }
    let mut amqp_listeners: Vec<listener::Listener> = listener::bind_all(
        &listener::addresses(bind, server_config.listen.port()),
        "AMQP",
    )?
    .into_iter()
    .map(listener::Listener::amqp)
    .collect();
    if let (Some(amqps), true) = (&listener_tls.amqps, listener_tls.amqps_port != 0) {
        let sockets =
            listener::bind_all(&listener::addresses(bind, listener_tls.amqps_port), "AMQPS")?;
        amqp_listeners.extend(sockets.into_iter().map(|socket| listener::Listener {
            socket,
            tls: Some(amqps.clone()),
            protocol: listener::Protocol::Amqp,
        }));
    }
    // STOMP, MQTT and their WebSocket variants (RabbitMQ's plugins' ports), served by the same
    // server: each client becomes an AMQP connection of this node (`warren_server::translated`).
    let stomp_ports = [
        (
            stomp_port,
            stomp_port_given,
            None,
            listener::Protocol::Stomp,
            "STOMP",
        ),
        (
            if listener_tls.amqps.is_some() {
                listener_tls.stomp_tls_port
            } else {
                0
            },
            listener_tls.stomp_tls_port_given,
            listener_tls.amqps.clone(),
            listener::Protocol::Stomp,
            "STOMP over TLS",
        ),
        (
            web_stomp_port,
            web_stomp_port_given,
            None,
            listener::Protocol::WebStomp,
            "Web-STOMP",
        ),
        (
            if listener_tls.amqps.is_some() {
                listener_tls.web_stomp_tls_port
            } else {
                0
            },
            listener_tls.web_stomp_tls_port_given,
            listener_tls.amqps.clone(),
            listener::Protocol::WebStomp,
            "Web-STOMP over TLS",
        ),
        (
            mqtt_port,
            mqtt_port_given,
            None,
            listener::Protocol::Mqtt,
            "MQTT",
        ),
        (
            if listener_tls.amqps.is_some() {
                listener_tls.mqtt_tls_port
            } else {
                0
            },
            listener_tls.mqtt_tls_port_given,
            listener_tls.amqps.clone(),
            listener::Protocol::Mqtt,
            "MQTT over TLS",
        ),
        (
            web_mqtt_port,
            web_mqtt_port_given,
            None,
            listener::Protocol::WebMqtt,
            "Web-MQTT",
        ),
        (
            if listener_tls.amqps.is_some() {
                listener_tls.web_mqtt_tls_port
            } else {
                0
            },
            listener_tls.web_mqtt_tls_port_given,
            listener_tls.amqps.clone(),
            listener::Protocol::WebMqtt,
            "Web-MQTT over TLS",
        ),
    ];
    for (port, given, tls, protocol, what) in stomp_ports {
        if port == 0 {
            continue;
        }
        match listener::bind_all(&listener::addresses(bind, port), what) {
            Ok(sockets) => {
                amqp_listeners.extend(sockets.into_iter().map(|socket| listener::Listener {
                    socket,
                    tls: tls.clone(),
                    protocol,
                }))
            }
            Err(e) if !given => {
                tracing::warn!(error = %e, "the default {what} port is taken: running without it (give its port)");
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    }
    let server = Server::with_listeners(server_config, broker, amqp_listeners).with_alarms(alarms);
    if !http_listeners.is_empty() {
        let mgmt_node = warren_mgmt::Node {
            node_id,
            amqp_addr: server.local_addr()?,
            listeners: server.listening(),
            management,
            access,
            direct: server.direct(),
            admin: AdminService::new(raft.clone(), node.incarnations.clone())
                .with_resources(resources.clone(), limits_tx.clone())
                .with_client_totals(client_totals),
            raft: raft.clone(),
            loopback_users: mgmt_loopback_users,
            client_counters: server.client_counters(),
        };
        // Ends with the runtime, after the AMQP server has closed its clients.
        tokio::spawn(warren_mgmt::serve(
            http_listeners,
            mgmt_node,
            std::future::pending(),
        ));
    }
    info!(addr = %server.local_addr()?, data_dir = %data_dir.display(), node_id, version = env!("CARGO_PKG_VERSION"), "warren started");
    Ok(Node { raft: node, server })
}

impl Node {
    /// The address of the AMQP listener (the first one bound, when there are several).
    pub fn amqp_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.server.local_addr()?)
    }

    /// Serves clients until `stop` completes, or until Raft stops on a fatal storage error;
    /// then closes the clients and shuts Raft down. Returns an error after a fatal Raft stop,
    /// and logs "warren stopped" otherwise.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Node { raft, server } = self;
        let raft = raft.raft;
        // A node that can no longer write its log must say why and exit, not linger as a
        // silent broker.
        let fatal = Arc::new(OnceLock::new());
        let stopping = {
            let fatal = fatal.clone();
            let raft = raft.clone();
            async move {
                tokio::select! {
                    () = stop => {}
                    e = warren_raft::node::stopped(&raft) => {
                        tracing::error!(error = %e, "the Raft node stopped on a fatal error (is the disk full?); closing clients and exiting");
                        let _ = fatal.set(e);
                    }
                }
            }
        };
        server.run(stopping).await?;
        let _ = raft.shutdown().await;
        if let Some(e) = fatal.get() {
            anyhow::bail!("the Raft node stopped: {e}");
        }
        info!("warren stopped");
        Ok(())
    }
}

/// The services of a node's gRPC port.
struct GrpcServices {
    raft: RaftService<BrokerStateMachine>,
    relay: RelayService,
    admin: AdminService<BrokerStateMachine>,
    access: AccessService,
    management: ManagementService,
}

/// Every service of the gRPC port on `builder` (with its layers: the TLS guard, or none).
fn grpc_routes<L: Clone>(
    mut builder: tonic::transport::Server<L>,
    s: GrpcServices,
) -> tonic::transport::server::Router<L> {
    builder
        .add_service(s.raft.into_server())
        .add_service(s.relay.into_server())
        .add_service(s.admin.into_server())
        .add_service(s.access.into_server())
        .add_service(s.management.into_server())
}
