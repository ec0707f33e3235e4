//! The `warren` broker binary: reads flags and an optional TOML file, starts the AMQP listener and
//! stops cleanly on SIGINT/SIGTERM.

mod access_cli;
mod cert_cli;
mod cluster_cli;
mod settings;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use tracing::info;
use warren_core::{Broker, BrokerConfig};
use warren_raft::admin::AdminService;
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

/// Warren: a replicated AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
///
/// Every flag can also be set in the TOML file given with --config (same names, with
/// underscores: `port = 5673`, `data_dir = "/var/lib/warren"`); flags win over the file.
#[derive(Parser, Debug, Default)]
#[command(name = "warren", version, about, long_about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "WARREN_CONFIG")]
    config: Option<PathBuf>,
    /// Address the AMQP, AMQPS and management listeners bind to [default: every IPv4 and IPv6
    /// address, 0.0.0.0 and ::].
    #[arg(long)]
    bind: Option<IpAddr>,
    /// AMQP port [default: 5672].
    #[arg(long)]
    port: Option<u16>,
    /// Directory for the node's data [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Heartbeat interval offered to clients, in seconds; 0 disables [default: 60].
    #[arg(long)]
    heartbeat: Option<u16>,
    /// Largest frame offered to clients, in bytes [default: 131072].
    #[arg(long)]
    frame_max: Option<u32>,
    /// Highest channel number a client may use [default: 2047].
    #[arg(long)]
    channel_max: Option<u16>,
    /// Milliseconds a client has to finish the AMQP handshake [default: 10000].
    #[arg(long)]
    handshake_timeout_ms: Option<u64>,
    /// Largest message body accepted, in bytes [default: 134217728].
    #[arg(long)]
    max_message_size: Option<u64>,
    /// User created at first start with full permissions on "/" [default: guest].
    #[arg(long)]
    default_user: Option<String>,
    /// Password of the default user [default: guest].
    #[arg(long, env = "WARREN_DEFAULT_PASS", hide_env_values = true)]
    default_pass: Option<String>,
    /// Users that may log in from loopback addresses only; repeat or separate with commas;
    /// pass an empty string to allow every user from anywhere [default: guest].
    #[arg(long, value_delimiter = ',')]
    loopback_users: Option<Vec<String>>,
    /// Port of the management HTTP API, web console and Prometheus /metrics (on the --bind
    /// address); 0 turns them off. If the default is taken the node runs without them (a port
    /// given here must be free) [default: 15672].
    #[arg(long)]
    management_port: Option<u16>,
    /// Certificate chain (PEM) of the AMQPS listener and of the management API's HTTPS port;
    /// with --tls-key, AMQPS listens on --amqps-port and HTTPS on --management-tls-port.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign the clients' certificates (RabbitMQ's `cacertfile`).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificates on AMQPS: none, optional (verified if presented: RabbitMQ's
    /// `verify_peer`) or required (`fail_if_no_peer_cert`) [default: optional with --tls-ca,
    /// else none].
    #[arg(long)]
    tls_client_auth: Option<String>,
    /// What SASL EXTERNAL logs a client certificate in as: common_name, distinguished_name or
    /// subject_alternative_name (RabbitMQ's `ssl_cert_login_from`) [default: common_name].
    #[arg(long)]
    tls_login_from: Option<String>,
    /// With subject_alternative_name: which kind, dns, email, uri or ip [default: dns].
    #[arg(long)]
    tls_login_san_type: Option<String>,
    /// With subject_alternative_name: which of that kind, from 0 [default: 0].
    #[arg(long)]
    tls_login_san_index: Option<usize>,
    /// AMQPS port, when --tls-cert and --tls-key are given; 0 turns it off [default: 5671].
    #[arg(long)]
    amqps_port: Option<u16>,
    /// HTTPS port of the management API and console, when --tls-cert and --tls-key are given
    /// (RabbitMQ's 15671); 0 turns it off. If the default is taken the node runs without it
    /// [default: 15671].
    #[arg(long)]
    management_tls_port: Option<u16>,
    /// Client certificates on the management HTTPS port: none, optional or required
    /// [default: none].
    #[arg(long)]
    management_tls_client_auth: Option<String>,
    /// Memory high watermark, as a fraction of the memory available to the node (RAM, or its
    /// cgroup's limit): above it the memory alarm blocks every publisher of the cluster
    /// (RabbitMQ's `vm_memory_high_watermark.relative`) [default: 0.6].
    #[arg(long, conflicts_with = "vm_memory_high_watermark_absolute")]
    vm_memory_high_watermark: Option<f64>,
    /// Memory high watermark in bytes (`2GB`, `512MiB`, …), instead of a fraction.
    #[arg(long)]
    vm_memory_high_watermark_absolute: Option<String>,
    /// Free space of the data directory's filesystem below which the disk alarm blocks every
    /// publisher of the cluster (`50MB`, `2GB`, …; RabbitMQ's `disk_free_limit`)
    /// [default: 50MB].
    #[arg(long)]
    disk_free_limit: Option<String>,
    /// Log filter in RUST_LOG syntax [default: info,openraft=warn].
    #[arg(long, env = "WARREN_LOG")]
    log: Option<String>,
    /// This node's id in its cluster; never reuse the id of a node whose data was wiped
    /// [default: 1].
    #[arg(long)]
    node_id: Option<u64>,
    /// Take a snapshot of the replicated state after this many log entries, then purge the log
    /// up to it [default: 20000].
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Memory for the messages of replicated queues most recently published (the rest are read
    /// back from the log on disk when delivered), e.g. 64MiB [default: 64MiB].
    #[arg(long)]
    body_cache: Option<String>,
    /// How long a delivery may stay unacked, in ms, before its consumer is cancelled (clients
    /// that announce consumer_cancel_notify) or its channel closed with 406; 0: never
    /// (RabbitMQ's consumer_timeout) [default: 1800000, 30 minutes].
    #[arg(long)]
    consumer_timeout: Option<u64>,
    /// A member of the cluster, as ID@AMQP_HOST:PORT@GRPC_HOST:PORT; repeat for every member,
    /// this node included (the same list on every node). The member with the lowest id forms
    /// the cluster on first start. Without members the node is a cluster of one.
    #[arg(long = "member")]
    members: Vec<String>,
    /// Never form a cluster: wait to be added to a running one with `warren member add` (for a
    /// node joining a cluster; --member needs only this node's own entry then).
    #[arg(long)]
    join: bool,
    /// Dial another address for a peer than the one the membership records, as
    /// RECORDED_HOST:PORT=DIAL_HOST:PORT (repeat for several): for NAT or port forwarding between
    /// nodes, and the chaos suite's per-link proxies.
    #[arg(long = "peer-address", value_parser = warren_raft::dial::parse_override)]
    peer_addresses: Vec<(String, String)>,
    /// Certificates for gRPC between nodes: `ca.crt` (the cluster's CA), `node.crt` and
    /// `node.key` (see `warren cert`). For the subcommands, the operator's: `ca.crt` and
    /// `client.crt`/`client.key` (or a node's) [default: certs].
    #[arg(long, global = true, env = "WARREN_CERTS_DIR")]
    certs_dir: Option<PathBuf>,
    /// Plaintext, unauthenticated gRPC between nodes and from operators, instead of mutual TLS:
    /// anyone who reaches a node's gRPC port can then change the cluster, read its messages
    /// and forge Raft traffic. Only for a cluster on one trusted host.
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Show a running node's view of its cluster: members, leader, term, log indexes, and how
    /// far each member has replicated (asked of the leader, for lag).
    Status {
        /// The node's gRPC address (host:port).
        #[arg(long, default_value = "127.0.0.1:7101")]
        grpc: String,
        /// Also print a digest of the node's replicated state (equal on nodes that applied the
        /// same log; compare them once traffic has stopped).
        #[arg(long)]
        digest: bool,
    },
    /// Change the cluster's members at run time. Any member takes the request: one that does
    /// not lead forwards it to the leader. Prints what was done; on failure prints one line to
    /// stderr and exits with 1.
    Member {
        #[command(subcommand)]
        change: MemberCmd,
    },
    /// Add, change or delete users (replicated: every node knows them once this returns).
    User {
        #[command(subcommand)]
        change: access_cli::UserCmd,
    },
    /// Add or delete vhosts.
    Vhost {
        #[command(subcommand)]
        change: access_cli::VhostCmd,
    },
    /// Set or clear a user's permissions on a vhost.
    Permissions {
        #[command(subcommand)]
        change: access_cli::PermissionsCmd,
    },
    /// Create the cluster's certificates: its CA, a node's, an operator's or an AMQP client's.
    Cert {
        #[command(subcommand)]
        command: cert_cli::CertCmd,
    },
}

#[derive(clap::Subcommand, Debug)]
enum MemberCmd {
    /// Add a running node as a learner and wait until it has caught up (from the log, or a
    /// snapshot). Start the node first with its own --node-id, --member entry and --join.
    Add {
        /// The new node, as ID@AMQP_HOST:PORT@GRPC_HOST:PORT (ids are never reused).
        node: String,
        /// gRPC address (host:port) of any member.
        #[arg(long, default_value = "127.0.0.1:7101")]
        grpc: String,
        /// Seconds to wait for the learner to catch up.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Make a learner that has caught up a voter.
    Promote {
        id: u64,
        /// gRPC address (host:port) of any member.
        #[arg(long, default_value = "127.0.0.1:7101")]
        grpc: String,
    },
    /// Remove a voter or learner from the cluster (the leader too: it hands its leadership to
    /// another voter first). Stop the removed node afterwards.
    Remove {
        id: u64,
        /// gRPC address (host:port) of any member.
        #[arg(long, default_value = "127.0.0.1:7101")]
        grpc: String,
    },
}

/// The same settings as read from a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<IpAddr>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    heartbeat: Option<u16>,
    frame_max: Option<u32>,
    channel_max: Option<u16>,
    handshake_timeout_ms: Option<u64>,
    max_message_size: Option<u64>,
    default_user: Option<String>,
    default_pass: Option<String>,
    loopback_users: Option<Vec<String>>,
    management_port: Option<u16>,
    log: Option<String>,
    node_id: Option<u64>,
    snapshot_every: Option<u64>,
    body_cache: Option<String>,
    consumer_timeout: Option<u64>,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    join: bool,
    /// `"RECORDED=DIAL"` strings, as --peer-address.
    #[serde(default)]
    peer_addresses: Vec<String>,
    certs_dir: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_auth: Option<String>,
    tls_login_from: Option<String>,
    tls_login_san_type: Option<String>,
    tls_login_san_index: Option<usize>,
    amqps_port: Option<u16>,
    management_tls_port: Option<u16>,
    management_tls_client_auth: Option<String>,
    vm_memory_high_watermark: Option<f64>,
    vm_memory_high_watermark_absolute: Option<String>,
    disk_free_limit: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let certs_dir = args
        .certs_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("certs"));
    if let Some(command) = &args.command {
        if let Cmd::Cert { command } = command {
            return one_line_errors(cert_cli::run(command, &certs_dir));
        }
        if let Err(e) = settings::operator_tls(&certs_dir, args.insecure) {
            return one_line_errors(Err(e));
        }
        return one_line_errors(match command {
            Cmd::Cert { .. } => Ok(()),
            Cmd::Status { grpc, digest } => cluster_cli::status(grpc, *digest),
            Cmd::Member { change } => cluster_cli::member(change),
            Cmd::User { change } => access_cli::run(access_cli::AccessCmd::User(change.clone())),
            Cmd::Vhost { change } => access_cli::run(access_cli::AccessCmd::Vhost(change.clone())),
            Cmd::Permissions { change } => {
                access_cli::run(access_cli::AccessCmd::Permissions(change.clone()))
            }
        });
    }
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let listener_tls = settings::ListenerTls::from(&args, &file)?;
    let resource_limits = settings::resource_limits(&args, &file)?;
    let log = args
        .log
        .or(file.log)
        .unwrap_or_else(|| "info,openraft=warn".into());
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&log).context("bad --log filter")?)
        .init();

    let defaults = ServerConfig::default();
    let bind = args.bind.or(file.bind);
    let port = args.port.or(file.port).unwrap_or(5672);
    let management_port_given = args.management_port.or(file.management_port).is_some();
    let management_port = args
        .management_port
        .or(file.management_port)
        .unwrap_or(15672);
    let frame_max = args
        .frame_max
        .or(file.frame_max)
        .unwrap_or(defaults.frame_max);
    anyhow::ensure!(frame_max >= 4096, "--frame-max must be at least 4096");
    let server_config = ServerConfig {
        listen: SocketAddr::new(bind.unwrap_or(defaults.listen.ip()), port),
        channel_max: args
            .channel_max
            .or(file.channel_max)
            .unwrap_or(defaults.channel_max),
        frame_max,
        heartbeat: args
            .heartbeat
            .or(file.heartbeat)
            .unwrap_or(defaults.heartbeat),
        handshake_timeout: args
            .handshake_timeout_ms
            .or(file.handshake_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.handshake_timeout),
        max_message_size: args
            .max_message_size
            .or(file.max_message_size)
            .unwrap_or(defaults.max_message_size),
        ..defaults
    };
    let broker_defaults = BrokerConfig::default();
    let loopback_users: Vec<String> = args
        .loopback_users
        .or(file.loopback_users)
        .unwrap_or(broker_defaults.loopback_users.clone())
        .into_iter()
        .filter(|u| !u.is_empty())
        .collect();
    let mgmt_loopback_users = loopback_users.clone();
    let broker_config = BrokerConfig {
        default_user: args
            .default_user
            .or(file.default_user)
            .unwrap_or(broker_defaults.default_user.clone()),
        default_pass: args
            .default_pass
            .or(file.default_pass)
            .unwrap_or(broker_defaults.default_pass.clone()),
        loopback_users,
        consumer_timeout: match args.consumer_timeout.or(file.consumer_timeout) {
            Some(0) => None,
            Some(ms) => Some(ms),
            None => broker_defaults.consumer_timeout,
        },
        ..broker_defaults
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("data"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;

    let node_id = args.node_id.or(file.node_id).unwrap_or(1);
    let body_cache = match args.body_cache.as_ref().or(file.body_cache.as_ref()) {
        Some(text) => usize::try_from(
            warren_raft::resources::parse_bytes(text)
                .map_err(|e| anyhow::anyhow!("--body-cache {text}: {e}"))?,
        )
        .context("--body-cache")?,
        None => 64 << 20,
    };
    let mut raft_options = warren_raft::node::NodeOptions {
        join: args.join || file.join,
        ..Default::default()
    };
    if let Some(n) = args.snapshot_every.or(file.snapshot_every) {
        anyhow::ensure!(n > 0, "--snapshot-every must be at least 1");
        raft_options.snapshot_every = n;
        raft_options.keep_after_snapshot = raft_options.keep_after_snapshot.min(n);
    }
    let member_specs = if args.members.is_empty() {
        file.members
    } else {
        args.members
    };
    let mut members = BTreeMap::new();
    for spec in &member_specs {
        let (id, node) = parse_member(spec)?;
        anyhow::ensure!(
            members.insert(id, node).is_none(),
            "member {id} is listed twice"
        );
    }
    let own_grpc = match members.get(&node_id) {
        Some(me) => Some(me.grpc_addr.parse::<SocketAddr>().with_context(|| {
            format!(
                "member {node_id}: gRPC address {} is not host:port",
                me.grpc_addr
            )
        })?),
        None if members.is_empty() => None,
        None => anyhow::bail!("--node-id {node_id} is not among the --member entries"),
    };
    let insecure = args.insecure || file.insecure;
    let certs_dir = args.certs_dir.or(file.certs_dir).unwrap_or(certs_dir);
    // gRPC between nodes: mutual TLS with the cluster's certificates unless --insecure. A node
    // on its own has no gRPC port and needs no certificate.
    let cluster_tls = match (&own_grpc, insecure) {
        (None, _) => None,
        (Some(addr), true) => {
            tracing::warn!(grpc = %addr, "INSECURE: gRPC between nodes and from operators is plaintext and unauthenticated (--insecure): anyone who reaches this port can change the cluster, read its messages and forge Raft traffic");
            None
        }
        (Some(_), false) => Some(settings::node_tls(&certs_dir, node_id, &members)?),
    };
    warren_raft::dial::set_tls(cluster_tls.clone());
    let mut peer_addresses: std::collections::HashMap<String, String> = file
        .peer_addresses
        .iter()
        .map(|s| warren_raft::dial::parse_override(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    peer_addresses.extend(args.peer_addresses.iter().cloned());
    warren_raft::dial::set_overrides(peer_addresses);
    anyhow::ensure!(
        !raft_options.join || own_grpc.is_some(),
        "--join needs this node's own --member entry (its gRPC address)"
    );
    if members.is_empty() {
        members.insert(
            node_id,
            WarrenNode {
                grpc_addr: String::new(),
                amqp_addr: server_config.listen.to_string(),
                incarnation: 0,
            },
        );
    }
    anyhow::ensure!(node_id < 2048, "--node-id must be below 2048");
    let server_config = ServerConfig {
        node_id,
        ..server_config
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Every durable byte goes through this node's Raft group, logged in RocksDB under the
        // data directory.
        let (applied_tx, applied_rx) = tokio::sync::mpsc::channel(64);
        let (proposals_tx, proposals_rx) = tokio::sync::mpsc::unbounded_channel();
        // The broker task runs first: a restarting node replays its log into it.
        // The other nodes' brokers, for the messages routed to transient queues homed there
        // and this node's clients' home sessions there; their addresses come from Raft.
        let (addresses_tx, addresses_rx) = tokio::sync::watch::channel(BTreeMap::new());
        // Resource alarms: this node measured every second, the others asked.
        let (limits_tx, limits_rx) = tokio::sync::watch::channel(resource_limits);
        let resources =
            warren_server::alarm::spawn_monitor(node_id, data_dir.clone(), limits_rx);
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
        // A node that does not lead keeps a small share of the body cache.
        let leading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        core.set_records(Box::new(
            warren_raft::records::LogRecords::new(messages.clone(), body_cache)
                .with_leading(leading.clone()),
        ));
        let broker = BrokerHandle::spawn(
            core,
            Replication::Raft { proposals: proposals_tx, applied: applied_rx },
            links,
        );
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
        spawn_proposer(raft.clone(), proposals_rx);
        spawn_member_addresses(raft.clone(), addresses_tx);
        // Serve clients once this node leads (after committing a take-over or, after a restart
        // of the whole cluster, a recovery), or relay them to the node that does.
        let route = spawn_leadership(raft.clone(), node_id, node.restarted, &broker);
        if let Some(addr) = own_grpc {
            let raft_service =
                RaftService::new(node.incarnations.clone()).with_messages(messages_store.clone());
            raft_service.add_group(METADATA_GROUP, raft.clone());
            let relay = RelayService::new(&broker, route.clone()).with_raft(raft.clone());
            let admin = AdminService::new(raft.clone(), node.incarnations.clone())
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
                let config = tls
                    .grpc_server_config()
                    .context("the node's certificate")?;
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
                let guard = warren_tls::grpc::GuardLayer::new(std::sync::Arc::new(
                    warren_raft::trust::MemberCheck::new(raft.clone()),
                ));
                tokio::spawn(async move {
                    let served = grpc_routes(tonic::transport::Server::builder().layer(guard), services)
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
                    http_listeners.extend(sockets.into_iter().map(|socket| {
                        warren_mgmt::HttpListener {
                            socket,
                            tls: Some(tls.clone()),
                        }
                    }))
                }
                Err(e) if !listener_tls.https_port_given => {
                    tracing::warn!(error = %e, "the default management HTTPS port is taken: running without it (give --management-tls-port)");
                }
                Err(e) => return Err(anyhow::Error::new(e)),
            }
        }
        let mut amqp_listeners: Vec<listener::Listener> =
            listener::bind_all(&listener::addresses(bind, port), "AMQP")?
                .into_iter()
                .map(|socket| listener::Listener { socket, tls: None })
                .collect();
        if let (Some(amqps), true) = (&listener_tls.amqps, listener_tls.amqps_port != 0) {
            let sockets =
                listener::bind_all(&listener::addresses(bind, listener_tls.amqps_port), "AMQPS")?;
            amqp_listeners.extend(sockets.into_iter().map(|socket| listener::Listener {
                socket,
                tls: Some(amqps.clone()),
            }));
        }
        let server = Server::with_listeners(server_config, broker, amqp_listeners)
            .route_through(route)
            .with_alarms(alarms);
        if !http_listeners.is_empty() {
            let node = warren_mgmt::Node {
                node_id,
                amqp_addr: server.local_addr()?,
                listeners: server.listening(),
                management,
                access,
                direct: server.direct(),
                admin: AdminService::new(raft.clone(), node.incarnations.clone())
                    .with_resources(resources.clone(), limits_tx.clone()),
                raft: raft.clone(),
                loopback_users: mgmt_loopback_users,
            };
            // Ends with the runtime, after the AMQP server has closed its clients.
            tokio::spawn(warren_mgmt::serve(http_listeners, node, std::future::pending()));
        }
        info!(addr = %server.local_addr()?, data_dir = %data_dir.display(), node_id, version = env!("CARGO_PKG_VERSION"), "warren started");
        // Stop on a signal, or when Raft stopped on a fatal storage error: a node that can
        // no longer write its log must say why and exit, not linger as a silent broker.
        let fatal = std::sync::Arc::new(std::sync::OnceLock::new());
        let stop = {
            let fatal = fatal.clone();
            let raft = raft.clone();
            async move {
                tokio::select! {
                    () = shutdown_signal() => {}
                    e = warren_raft::node::stopped(&raft) => {
                        tracing::error!(error = %e, "the Raft node stopped on a fatal error (is the disk full?); closing clients and exiting");
                        let _ = fatal.set(e);
                    }
                }
            }
        };
        server.run(stop).await?;
        let _ = raft.shutdown().await;
        if let Some(e) = fatal.get() {
            anyhow::bail!("the Raft node stopped: {e}");
        }
        info!("warren stopped");
        Ok(())
    })
}

/// Runs a client subcommand: on failure, writes one line to stderr and exits with status 1.
fn one_line_errors(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        let _ = writeln!(std::io::stderr().lock(), "warren: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// A gRPC failure as one line: the server's message, not tonic's debug form.
fn grpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
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

/// How long a peer has to finish the TLS handshake on the gRPC port.
const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC channel to the node at `addr` (host:port), with a 5 s connect timeout.
async fn grpc_channel(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    warren_raft::dial::endpoint(addr)
        .with_context(|| format!("bad gRPC address {addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to {addr}: {}",
                warren_raft::dial::describe(&e)
            )
        })
}

/// `ID@AMQP_HOST:PORT@GRPC_HOST:PORT`.
fn parse_member(spec: &str) -> anyhow::Result<(u64, WarrenNode)> {
    let parts: Vec<&str> = spec.split('@').collect();
    let [id, amqp, grpc] = parts[..] else {
        anyhow::bail!("--member {spec}: expected ID@AMQP_HOST:PORT@GRPC_HOST:PORT");
    };
    let id: u64 = id
        .parse()
        .with_context(|| format!("--member {spec}: bad id"))?;
    anyhow::ensure!(id < 2048, "--member {spec}: ids must be below 2048");
    Ok((
        id,
        WarrenNode {
            grpc_addr: grpc.to_string(),
            amqp_addr: amqp.to_string(),
            incarnation: 0,
        },
    ))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
