//! The `warren` broker binary: reads flags and an optional TOML file, sets up logging, starts the
//! node (wired in `warren::node`) and stops it cleanly on SIGINT/SIGTERM; and the operator
//! subcommands (`status`, `member`, `user`, `vhost`, `permissions`, `cert`).

mod access_cli;
mod cert_cli;
mod cluster_cli;
mod settings;

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;
use warren_raft::WarrenNode;

/// mimalloc gives freed memory back to the system within milliseconds; glibc's malloc kept it in
/// its per-thread arenas, so a node whose memory alarm cut its body cache and flushed its
/// memtables stayed at its peak RSS and the alarm never cleared (benches/overload).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// STOMP 1.0-1.2 port (RabbitMQ's STOMP plugin; on the --bind address); 0 turns it off. If
    /// the default is taken the node runs without it (a port given here must be free)
    /// [default: 61613].
    #[arg(long)]
    stomp_port: Option<u16>,
    /// STOMP over TLS port, when --tls-cert and --tls-key are given; 0 turns it off. If the
    /// default is taken the node runs without it [default: 61614].
    #[arg(long)]
    stomp_tls_port: Option<u16>,
    /// Web-STOMP port: STOMP over WebSocket at ws://HOST:PORT/ws (RabbitMQ's web_stomp
    /// plugin); 0 turns it off. If the default is taken the node runs without it
    /// [default: 15674].
    #[arg(long)]
    web_stomp_port: Option<u16>,
    /// Web-STOMP over TLS: wss://HOST:PORT/ws, when --tls-cert and --tls-key are given
    /// (RabbitMQ's web_stomp.ssl.port); 0 turns it off. If the default is taken the node runs
    /// without it [default: 15673].
    #[arg(long)]
    web_stomp_tls_port: Option<u16>,
    /// MQTT 3.1/3.1.1/5.0 port (RabbitMQ's MQTT plugin); 0 turns it off. If the default is
    /// taken the node runs without it [default: 1883].
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// MQTT over TLS port, when --tls-cert and --tls-key are given; 0 turns it off. If the
    /// default is taken the node runs without it [default: 8883].
    #[arg(long)]
    mqtt_tls_port: Option<u16>,
    /// MQTT over WebSocket at ws://HOST:PORT/ws (RabbitMQ's web_mqtt plugin); 0 turns it off.
    /// If the default is taken the node runs without it [default: 15675].
    #[arg(long)]
    web_mqtt_port: Option<u16>,
    /// Web-MQTT over TLS: wss://HOST:PORT/ws, when --tls-cert and --tls-key are given
    /// (RabbitMQ's web_mqtt.ssl.port); 0 turns it off. If the default is taken the node runs
    /// without it [default: 15676].
    #[arg(long)]
    web_mqtt_tls_port: Option<u16>,
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
    /// Log lines as `text` (one line per event, for people and the journal) or `json` (one JSON
    /// object per line: timestamp, level, target, the event's fields and its message, for log
    /// shippers) [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
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
    /// Credit flow: publishes of one connection on their way into the log (or to another
    /// node's transient queue) at which its socket is no longer read, until half of them are
    /// through (RabbitMQ's credit_flow_default_credit) [default: 2000].
    #[arg(long)]
    publish_credit: Option<u32>,
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
    /// Print this command's manual page (roff), for packaging.
    #[command(hide = true)]
    Man,
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
#[derive(Deserialize, Debug, Default, serde::Serialize)]
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
    log_format: Option<LogFormat>,
    node_id: Option<u64>,
    snapshot_every: Option<u64>,
    body_cache: Option<String>,
    consumer_timeout: Option<u64>,
    publish_credit: Option<u32>,
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
    stomp_port: Option<u16>,
    stomp_tls_port: Option<u16>,
    web_stomp_port: Option<u16>,
    web_stomp_tls_port: Option<u16>,
    mqtt_port: Option<u16>,
    mqtt_tls_port: Option<u16>,
    web_mqtt_port: Option<u16>,
    web_mqtt_tls_port: Option<u16>,
    management_tls_port: Option<u16>,
    management_tls_client_auth: Option<String>,
    vm_memory_high_watermark: Option<f64>,
    vm_memory_high_watermark_absolute: Option<String>,
    disk_free_limit: Option<String>,
}

/// How log lines are written (`--log-format`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    #[default]
    Text,
    Json,
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
        if let Cmd::Man = command {
            let page = clap_mangen::Man::new(<Args as clap::CommandFactory>::command());
            return match page.render(&mut std::io::stdout().lock()) {
                // Read by `head`, say.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => Ok(other?),
            };
        }
        if let Err(e) = settings::operator_tls(&certs_dir, args.insecure) {
            return one_line_errors(Err(e));
        }
        return one_line_errors(match command {
            Cmd::Cert { .. } | Cmd::Man => Ok(()),
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
    let log = args
        .log
        .clone()
        .or_else(|| file.log.clone())
        .unwrap_or_else(|| "info,openraft=warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&log).context("bad --log filter")?;
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format.or(file.log_format).unwrap_or_default() {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let config = settings::node_config(args, file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let node = warren::node::start(config).await?;
        // Listening: a service manager that waits for it (systemd's Type=notify) may go on.
        if let Err(e) = warren::systemd::notify("READY=1\nSTATUS=serving clients") {
            tracing::warn!(error = %e, "could not tell the service manager that the node is ready");
        }
        node.run(async {
            shutdown_signal().await;
            let _ = warren::systemd::notify("STOPPING=1");
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The package's /etc/warren/warren.toml (packaging/deb) names every key a file may set,
    /// and each, uncommented, is one this binary reads with a value of the right type.
    #[test]
    fn the_packaged_configuration_names_every_key_and_each_parses() {
        let packaged = include_str!("../../../packaging/deb/warren.toml");
        let keys: Vec<String> = match serde_json::to_value(FileConfig::default()) {
            Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
            other => panic!("FileConfig as JSON: {other:?}"),
        };
        assert!(keys.len() > 40, "{keys:?}");
        // The key lines, commented or not, with the comment mark removed.
        let settings: Vec<&str> = packaged
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .filter(|l| {
                l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
            })
            .collect();
        for key in &keys {
            assert!(
                settings.iter().any(|l| l.starts_with(&format!("{key} = "))),
                "packaging/deb/warren.toml does not mention {key}"
            );
        }
        let all = settings.join("\n");
        let parsed: FileConfig = toml::from_str(&all)
            .unwrap_or_else(|e| panic!("the packaged keys do not parse: {e}\n{all}"));
        assert_eq!(
            parsed.data_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/warren"))
        );
    }
}
