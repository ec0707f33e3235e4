//! Server-side TLS handshakes for every listener (gRPC, AMQPS, HTTPS): each accepted socket
//! gets its own task and at most the handshake timeout; a failed, garbled or stalled handshake
//! closes that socket with one log line and nobody else waits for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::identity::PeerIdentity;

/// A TLS connection whose handshake is done.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub peer: SocketAddr,
    /// What the client's certificate says, if it presented one (rustls verified it).
    pub identity: Option<Arc<PeerIdentity>>,
}

/// The identity of the certificate the client of `stream` presented, if any.
pub fn peer_identity(stream: &TlsStream<TcpStream>) -> Option<Arc<PeerIdentity>> {
    let first = stream.get_ref().1.peer_certificates()?.first()?;
    match PeerIdentity::from_der(first) {
        Ok(id) => Some(Arc::new(id)),
        Err(e) => {
            debug!(error = %e, "a verified client certificate could not be read");
            None
        }
    }
}

/// Runs the server side of the handshake on `tcp` within `timeout`. `None` (and a warning
/// naming the peer, the listener and the reason) if it failed or took too long.
pub async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    timeout: Duration,
    listener: &str,
) -> Option<Accepted> {
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let identity = peer_identity(&stream);
            Some(Accepted {
                stream,
                peer,
                identity,
            })
        }
        Ok(Err(e)) => {
            warn!(%peer, listener, error = %e, "TLS handshake failed; connection closed");
            None
        }
        Err(_) => {
            warn!(
                %peer,
                listener,
                timeout_ms = timeout.as_millis() as u64,
                "TLS handshake not finished in time; connection closed"
            );
            None
        }
    }
}

/// Accepts connections on `listener` and hands out those whose handshake succeeded, in the
/// order they finish. Stops when the receiver is dropped.
pub fn spawn_accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    timeout: Duration,
    name: &'static str,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Some(done) = handshake(tcp, peer, &acceptor, timeout, name).await {
                            let _ = tx.send(done).await;
                        }
                    });
                }
                // Out of file descriptors and the like: keep serving the connections we have.
                Err(e) => {
                    warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    rx
}
