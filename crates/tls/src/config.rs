//! rustls configurations: a listener's (AMQPS, HTTPS, gRPC) and the cluster's own, for the
//! gRPC calls between nodes and from operators. Always rustls' `ring` provider, TLS 1.2 and 1.3.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::files::{read_certs, read_key, read_text, CertsDir};
use crate::identity::PeerIdentity;
use crate::TlsError;

/// The crypto provider of every configuration Warren builds: `ring`, deprecated in rustls
/// 0.23.48 only because it lacks post-quantum key exchange; aws-lc-rs would add a C and CMake
/// build to every fresh machine (DEPENDENCIES.md), and the issue asks for `ring`.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which client certificates a listener asks for (RabbitMQ's `verify` and
/// `fail_if_no_peer_cert`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for (`verify_none`).
    #[default]
    None,
    /// A client may present one; if it does it must be signed by the CA (`verify_peer`).
    Optional,
    /// A client must present one signed by the CA (`verify_peer`, `fail_if_no_peer_cert`).
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<ClientAuth, String> {
        match s {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!(
                "expected none, optional or required, got {other:?}"
            )),
        }
    }
}

/// The certificate files of a TLS listener.
#[derive(Clone, Debug)]
pub struct ListenerFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// The CA that signs client certificates (needed unless `client_auth` is `None`).
    pub ca: Option<&'a Path>,
    pub client_auth: ClientAuth,
}

/// The server configuration of a listener from its files; `alpn` lists the protocols it
/// offers (`h2` and `http/1.1` for HTTPS, none for AMQPS).
pub fn listener_config(
    files: &ListenerFiles<'_>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs(files.cert)?;
    let key = read_key(files.key)?;
    let ca = match files.ca {
        Some(path) => Some(read_certs(path)?),
        None if files.client_auth != ClientAuth::None => {
            return Err(TlsError::Config(
                "verifying client certificates needs the CA that signs them (--tls-ca)".into(),
            ))
        }
        None => None,
    };
    server_config(chain, key, ca.as_deref(), files.client_auth, alpn)
}

/// A server configuration: `chain` and `key` are the server's; client certificates are asked
/// for as `auth` says and must be signed by one of `client_ca`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<&[CertificateDer<'static>]>,
    auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (auth, client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::Config(
                "verifying client certificates needs the CA that signs them".into(),
            ))
        }
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in ca {
                roots
                    .add(cert.clone())
                    .map_err(|e| TlsError::Config(format!("the CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("the certificate and key: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The TLS of a process inside the cluster (a node, or an operator's command): the CA every
/// peer must be signed by, and its own certificate and key. Calls between nodes and from
/// operators are mutual TLS: both sides present a certificate of the cluster's CA.
#[derive(Clone)]
pub struct ClusterTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    identity: PeerIdentity,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// A node's: `ca.crt`, `node.crt` and `node.key` of `dir`.
    pub fn load_node(dir: &CertsDir) -> Result<ClusterTls, TlsError> {
        ClusterTls::load(&dir.ca_cert(), &dir.node_cert(), &dir.node_key())
    }

    /// An operator's: `ca.crt`, `client.crt` and `client.key` of `dir`, or the node's own
    /// certificate when the directory has no client certificate (a command run on a node).
    pub fn load_operator(dir: &CertsDir) -> Result<ClusterTls, TlsError> {
        if dir.client_cert().exists() || !dir.node_cert().exists() {
            ClusterTls::load(&dir.ca_cert(), &dir.client_cert(), &dir.client_key())
        } else {
            ClusterTls::load_node(dir)
        }
    }

    /// From the CA's certificate and this process's certificate and key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<ClusterTls, TlsError> {
        let ca_pem = read_text(ca)?;
        let cert_pem = read_text(cert)?;
        let key_pem = read_text(key)?;
        read_certs(ca)?;
        read_key(key)?;
        let own = read_certs(cert)?;
        let identity = PeerIdentity::from_der(&own[0])
            .map_err(|e| TlsError::Pem(cert.display().to_string(), e.to_string()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if identity.not_after < now as i64 {
            return Err(TlsError::Config(format!(
                "{} expired (valid until {} seconds after 1970); make a new one with `warren cert`",
                cert.display(),
                identity.not_after
            )));
        }
        Ok(ClusterTls {
            ca_pem,
            cert_pem,
            key_pem,
            identity,
        })
    }

    /// What this process's own certificate says.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The gRPC server's configuration: a client certificate of the cluster's CA is required;
    /// ALPN `h2`.
    pub fn grpc_server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let ca = CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        server_config(chain, key, Some(&ca), ClientAuth::Required, &[b"h2"])
    }

    /// tonic's client configuration for a call to the node reached at `host` (the host part of
    /// its recorded gRPC address, which its certificate must name): verifies the server
    /// against the cluster's CA and presents this process's certificate.
    fn grpc_client(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(host.trim_start_matches('[').trim_end_matches(']'))
            .timeout(Duration::from_secs(10))
    }
}

/// The host part of `host:port` (an IPv6 address without its brackets).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The gRPC endpoint that dials `dial` (host:port) to call the node whose recorded address is
/// `recorded`: mutual TLS with `tls` (the server's certificate must name the recorded host),
/// plaintext without.
pub fn grpc_endpoint(
    tls: Option<&ClusterTls>,
    dial: &str,
    recorded: &str,
) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{dial}"))?
            .tls_config(tls.grpc_client(host_of(recorded))),
        None => Endpoint::from_shared(format!("http://{dial}")),
    }
}
