//! Warren's TLS, shared by every listener and dialer: the cluster's certificate authority
//! ([`authority`]), certificate files ([`files`]), what a peer certificate says
//! ([`identity`]), rustls configurations ([`config`]), server handshakes with a timeout
//! ([`acceptor`]) and the guard of the gRPC port ([`grpc`]). Always rustls with the `ring`
//! provider. It knows nothing of AMQP, Raft or the broker.

pub mod acceptor;
pub mod authority;
pub mod config;
pub mod files;
pub mod grpc;
pub mod identity;

pub use config::{ClientAuth, ClusterTls};
pub use identity::PeerIdentity;
pub use rustls;

use std::path::Path;

/// Why a certificate, key or configuration could not be made or used. The text is for an
/// operator: it names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    File(String, std::io::Error),
    #[error("{0}: {1}")]
    Pem(String, String),
    #[error("{0} exists already (pass --overwrite to replace it)")]
    Exists(String),
    #[error("cannot make the certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    fn file(path: &Path, e: std::io::Error) -> TlsError {
        TlsError::File(path.display().to_string(), e)
    }
}

#[cfg(test)]
mod tests;
