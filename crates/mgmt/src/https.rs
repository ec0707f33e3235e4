//! The management server over TLS: an axum listener whose connections have finished their TLS
//! handshake (see `warren_tls::acceptor`: each in its own task, within a timeout, one log line
//! per failure).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use warren_tls::acceptor::{spawn_accept_loop, Accepted};

/// HTTPS connections of one socket, handshake done.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(
        socket: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> TlsListener {
        let local = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        TlsListener {
            accepted: spawn_accept_loop(socket, tls, timeout, "https"),
            local,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(a) => (a.stream, a.peer),
            // The accept loop ended (it never does while the listener lives): serve no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
