//! The node's settings that take more than a flag's value: the resource alarms' limits, the TLS
//! of the client-facing listeners, and the cluster's certificates (a node's, an operator's),
//! each from the flags and the TOML file together, checked, with errors that say what to do.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use warren_raft::WarrenNode;
use warren_server::listener;

use crate::{Args, FileConfig};

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
pub(crate) struct ListenerTls {
    pub(crate) amqps: Option<std::sync::Arc<listener::AmqpsConfig>>,
    pub(crate) https: Option<std::sync::Arc<warren_tls::rustls::ServerConfig>>,
    pub(crate) amqps_port: u16,
    pub(crate) https_port: u16,
    pub(crate) https_port_given: bool,
}

impl ListenerTls {
    pub(crate) fn from(args: &Args, file: &FileConfig) -> anyhow::Result<ListenerTls> {
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
