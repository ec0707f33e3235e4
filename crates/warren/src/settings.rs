//! The node's settings from the flags and the TOML file together (flags win): resolved into a
//! [`NodeConfig`] and checked, with errors that say what to do; also the cluster's certificates
//! for an operator's command. Starting the node from them is `warren::node`'s.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use warren::node::{ListenerTls, NodeConfig};
use warren_core::BrokerConfig;
use warren_raft::WarrenNode;
use warren_server::{listener, ServerConfig};

use crate::{parse_member, Args, FileConfig};

/// The node's configuration from `args` and `file`, checked. Logs a warning for `--insecure`
/// on a node with a gRPC port, so logging is set up first.
pub(crate) fn node_config(args: Args, file: FileConfig) -> anyhow::Result<NodeConfig> {
    let listener_tls = listener_tls(&args, &file)?;
    let resource_limits = resource_limits(&args, &file)?;
    let defaults = ServerConfig::default();
    let bind = args.bind.or(file.bind);
    let port = args.port.or(file.port).unwrap_or(5672);
    let management_port_given = args.management_port.or(file.management_port).is_some();
    let management_port = args
        .management_port
        .or(file.management_port)
        .unwrap_or(15672);
    let stomp_port_given = args.stomp_port.or(file.stomp_port).is_some();
    let stomp_port = args.stomp_port.or(file.stomp_port).unwrap_or(61613);
    let web_stomp_port_given = args.web_stomp_port.or(file.web_stomp_port).is_some();
    let web_stomp_port = args.web_stomp_port.or(file.web_stomp_port).unwrap_or(15674);
    let mqtt_port_given = args.mqtt_port.or(file.mqtt_port).is_some();
    let mqtt_port = args.mqtt_port.or(file.mqtt_port).unwrap_or(1883);
    let web_mqtt_port_given = args.web_mqtt_port.or(file.web_mqtt_port).is_some();
    let web_mqtt_port = args.web_mqtt_port.or(file.web_mqtt_port).unwrap_or(15675);
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
        publish_credit: args
            .publish_credit
            .or(file.publish_credit)
            .unwrap_or(broker_defaults.publish_credit)
            .max(2),
        ..broker_defaults
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("data"));

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
    let certs_dir = args
        .certs_dir
        .or(file.certs_dir)
        .unwrap_or_else(|| PathBuf::from("certs"));
    // gRPC between nodes: mutual TLS with the cluster's certificates unless --insecure. A node
    // on its own has no gRPC port and needs no certificate.
    let cluster_tls = match (&own_grpc, insecure) {
        (None, _) => None,
        (Some(addr), true) => {
            tracing::warn!(grpc = %addr, "INSECURE: gRPC between nodes and from operators is plaintext and unauthenticated (--insecure): anyone who reaches this port can change the cluster, read its messages and forge Raft traffic");
            None
        }
        (Some(_), false) => Some(node_tls(&certs_dir, node_id, &members)?),
    };
    let mut peer_addresses: HashMap<String, String> = file
        .peer_addresses
        .iter()
        .map(|s| warren_raft::dial::parse_override(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    peer_addresses.extend(args.peer_addresses.iter().cloned());
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
    Ok(NodeConfig {
        node_id,
        data_dir,
        server: ServerConfig {
            node_id,
            ..server_config
        },
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
    })
}

/// The limits of the resource alarms, from flags and file.
pub(crate) fn resource_limits(
    args: &Args,
    file: &FileConfig,
) -> anyhow::Result<warren_raft::resources::ResourceLimits> {
    use warren_raft::resources::{parse_bytes, MemoryLimit, ResourceLimits};
    let mut limits = ResourceLimits::default();
    let absolute = args
        .vm_memory_high_watermark_absolute
        .clone()
        .or_else(|| file.vm_memory_high_watermark_absolute.clone());
    let fraction = args
        .vm_memory_high_watermark
        .or(file.vm_memory_high_watermark);
    limits.memory = match (absolute, fraction) {
        (Some(a), _) => MemoryLimit::Absolute(
            parse_bytes(&a)
                .map_err(|e| anyhow::anyhow!("--vm-memory-high-watermark-absolute: {e}"))?,
        ),
        (None, Some(f)) => {
            anyhow::ensure!(
                f.is_finite() && f > 0.0,
                "--vm-memory-high-watermark is a fraction above 0 (0.6 is 60 %)"
            );
            MemoryLimit::Fraction(f)
        }
        (None, None) => limits.memory,
    };
    if let Some(d) = args
        .disk_free_limit
        .clone()
        .or_else(|| file.disk_free_limit.clone())
    {
        limits.disk_free =
            parse_bytes(&d).map_err(|e| anyhow::anyhow!("--disk-free-limit: {e}"))?;
    }
    Ok(limits)
}

/// The TLS of the client-facing listeners (AMQPS, management HTTPS), from flags and file.
pub(crate) fn listener_tls(args: &Args, file: &FileConfig) -> anyhow::Result<ListenerTls> {
    use warren_tls::config::{listener_config, ListenerFiles};
    use warren_tls::identity::{LoginFrom, SanKind};
    let or = |a: &Option<String>, f: &Option<String>| a.clone().or_else(|| f.clone());
    let cert = args.tls_cert.clone().or_else(|| file.tls_cert.clone());
    let key = args.tls_key.clone().or_else(|| file.tls_key.clone());
    let ca = args.tls_ca.clone().or_else(|| file.tls_ca.clone());
    let client_auth = match or(&args.tls_client_auth, &file.tls_client_auth) {
        Some(s) => s
            .parse::<warren_tls::ClientAuth>()
            .map_err(|e| anyhow::anyhow!("--tls-client-auth: {e}"))?,
        None if ca.is_some() => warren_tls::ClientAuth::Optional,
        None => warren_tls::ClientAuth::None,
    };
    let https_auth = match or(
        &args.management_tls_client_auth,
        &file.management_tls_client_auth,
    ) {
        Some(s) => s
            .parse::<warren_tls::ClientAuth>()
            .map_err(|e| anyhow::anyhow!("--management-tls-client-auth: {e}"))?,
        None => warren_tls::ClientAuth::None,
    };
    let san_kind = match or(&args.tls_login_san_type, &file.tls_login_san_type) {
        Some(s) => s
            .parse::<SanKind>()
            .map_err(|e| anyhow::anyhow!("--tls-login-san-type: {e}"))?,
        None => SanKind::Dns,
    };
    let san_index = args
        .tls_login_san_index
        .or(file.tls_login_san_index)
        .unwrap_or(0);
    let login_from = match or(&args.tls_login_from, &file.tls_login_from).as_deref() {
        None | Some("common_name") => LoginFrom::CommonName,
        Some("distinguished_name") => LoginFrom::DistinguishedName,
        Some("subject_alternative_name") => LoginFrom::SubjectAlternativeName {
            kind: san_kind,
            index: san_index,
        },
        Some(other) => anyhow::bail!(
            "--tls-login-from: expected common_name, distinguished_name or subject_alternative_name, got {other:?}"
        ),
    };
    let https_port_given = args
        .management_tls_port
        .or(file.management_tls_port)
        .is_some();
    let mut out = ListenerTls {
        amqps: None,
        https: None,
        amqps_port: args.amqps_port.or(file.amqps_port).unwrap_or(5671),
        https_port: args
            .management_tls_port
            .or(file.management_tls_port)
            .unwrap_or(15671),
        https_port_given,
        stomp_tls_port: args.stomp_tls_port.or(file.stomp_tls_port).unwrap_or(61614),
        stomp_tls_port_given: args.stomp_tls_port.or(file.stomp_tls_port).is_some(),
        mqtt_tls_port: args.mqtt_tls_port.or(file.mqtt_tls_port).unwrap_or(8883),
        mqtt_tls_port_given: args.mqtt_tls_port.or(file.mqtt_tls_port).is_some(),
        web_stomp_tls_port: args
            .web_stomp_tls_port
            .or(file.web_stomp_tls_port)
            .unwrap_or(15673),
        web_stomp_tls_port_given: args
            .web_stomp_tls_port
            .or(file.web_stomp_tls_port)
            .is_some(),
        web_mqtt_tls_port: args
            .web_mqtt_tls_port
            .or(file.web_mqtt_tls_port)
            .unwrap_or(15676),
        web_mqtt_tls_port_given: args.web_mqtt_tls_port.or(file.web_mqtt_tls_port).is_some(),
    };
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => {
            anyhow::ensure!(
                ca.is_none(),
                "--tls-ca needs --tls-cert and --tls-key (the listeners' own certificate)"
            );
            return Ok(out);
        }
        _ => anyhow::bail!("--tls-cert and --tls-key are given together"),
    };
    let files = |client_auth| ListenerFiles {
        cert: &cert,
        key: &key,
        ca: ca.as_deref(),
        client_auth,
    };
    out.amqps = Some(std::sync::Arc::new(listener::AmqpsConfig {
        tls: listener_config(&files(client_auth), &[]).context("AMQPS")?,
        login_from,
    }));
    out.https =
        Some(listener_config(&files(https_auth), &[b"http/1.1"]).context("management HTTPS")?);
    Ok(out)
}

/// The node's certificates for gRPC, checked against its id and recorded gRPC address.
pub(crate) fn node_tls(
    certs_dir: &Path,
    node_id: u64,
    members: &BTreeMap<u64, WarrenNode>,
) -> anyhow::Result<warren_tls::ClusterTls> {
    let dir = warren_tls::files::CertsDir::new(certs_dir);
    let tls = warren_tls::ClusterTls::load_node(&dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nA node of a cluster needs ca.crt, node.crt and node.key in --certs-dir ({}): create them with `warren cert create-ca` and `warren cert create-node {node_id} --host HOST`, or start every node with --insecure (plaintext between nodes: anyone who reaches the gRPC port controls the cluster)",
            certs_dir.display()
        )
    })?;
    let id = tls.identity();
    if let Some(other) = id.node.filter(|n| *n != node_id) {
        anyhow::bail!(
            "{} is node {other}'s certificate, but this is node {node_id}",
            dir.node_cert().display()
        );
    }
    if let Some(me) = members.get(&node_id) {
        let host = warren_raft::dial::host_of(&me.grpc_addr);
        anyhow::ensure!(
            id.names_host(host),
            "{} does not name {host}, the host of this node's gRPC address {}: the other nodes could not verify it (warren cert create-node {node_id} --host {host} ...)",
            dir.node_cert().display(),
            me.grpc_addr
        );
    }
    Ok(tls)
}

/// Sets how an operator's command calls gRPC: with the operator's certificate, or plaintext
/// with --insecure.
pub(crate) fn operator_tls(certs_dir: &Path, insecure: bool) -> anyhow::Result<()> {
    if insecure {
        warren_raft::dial::set_tls(None);
        return Ok(());
    }
    let dir = warren_tls::files::CertsDir::new(certs_dir);
    let tls = warren_tls::ClusterTls::load_operator(&dir).map_err(|e| {
        anyhow::anyhow!(
            "{e} (an operator's command needs ca.crt and client.crt/client.key from `warren cert create-client NAME` in --certs-dir, or --insecure for a cluster started with --insecure)"
        )
    })?;
    warren_raft::dial::set_tls(Some(tls));
    Ok(())
}
