//! The sockets a node listens on for clients (AMQP, AMQPS, STOMP, and the management HTTP(S) ports):
//! every address asked for, IPv6 sockets `V6ONLY` so that `[::]` and `0.0.0.0` share a port as
//! RabbitMQ's listeners do, and what is served on each.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tracing::warn;
use warren_tls::identity::LoginFrom;

/// AMQPS: the TLS configuration of the listener and how SASL EXTERNAL names a client.
#[derive(Debug)]
pub struct AmqpsConfig {
    pub tls: Arc<rustls::ServerConfig>,
    pub login_from: LoginFrom,
}

/// The protocol a listener's clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Amqp,
    /// STOMP 1.0-1.2, translated into AMQP by `warren_stomp::Session` (see `crate::stomp`).
    Stomp,
    /// STOMP over WebSocket at `/ws` (Web-STOMP).
    WebStomp,
    /// MQTT 3.1, 3.1.1 and 5.0, translated into AMQP by `warren_mqtt::Session` (see
    /// `crate::mqtt`).
    Mqtt,
    /// MQTT over WebSocket at `/ws` (Web-MQTT).
    WebMqtt,
}

/// A bound client listener and what it serves.
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    /// `None`: plain TCP.
    pub tls: Option<Arc<AmqpsConfig>>,
    pub protocol: Protocol,
}

impl Listener {
    /// A plain AMQP listener.
    pub fn amqp(socket: TcpListener) -> Listener {
        Listener {
            socket,
            tls: None,
            protocol: Protocol::Amqp,
        }
    }

    /// RabbitMQ's name of the protocol served (`/api/overview`'s listeners).
    pub fn protocol(&self) -> &'static str {
        match (self.protocol, self.tls.is_some()) {
            (Protocol::Amqp, false) => "amqp",
            (Protocol::Amqp, true) => "amqp/ssl",
            (Protocol::Stomp, false) => "stomp",
            (Protocol::Stomp, true) => "stomp/ssl",
            (Protocol::WebStomp, false) => "http/web-stomp",
            (Protocol::WebStomp, true) => "https/web-stomp",
            (Protocol::Mqtt, false) => "mqtt",
            (Protocol::Mqtt, true) => "mqtt/ssl",
            (Protocol::WebMqtt, false) => "http/web-mqtt",
            (Protocol::WebMqtt, true) => "https/web-mqtt",
        }
    }
}

/// The addresses to listen on: `bind` if given, else every IPv4 and every IPv6 address.
pub fn addresses(bind: Option<IpAddr>, port: u16) -> Vec<SocketAddr> {
    match bind {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ],
    }
}

/// A listening socket on `addr` (an IPv6 one `V6ONLY`, with `SO_REUSEADDR` as tokio's).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Binds every address of `addrs` (from [`addresses`]). The IPv6 wildcard is skipped with a
/// warning on a host without IPv6 when the IPv4 one was bound; any other failure is an error.
/// With port 0 the IPv6 socket takes the port the IPv4 one got.
pub fn bind_all(addrs: &[SocketAddr], what: &str) -> io::Result<Vec<TcpListener>> {
    let mut bound: Vec<TcpListener> = Vec::new();
    for addr in addrs {
        let mut addr = *addr;
        if addr.port() == 0 {
            if let Some(first) = bound.first() {
                addr.set_port(first.local_addr()?.port());
            }
        }
        match bind(addr) {
            Ok(l) => bound.push(l),
            Err(e) if is_ipv6_wildcard(addr) && !bound.is_empty() && no_ipv6(&e) => {
                warn!(%addr, error = %e, "{what}: this host has no IPv6; listening on IPv4 only");
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{what}: binding {addr}: {e}"),
                ))
            }
        }
    }
    Ok(bound)
}

fn is_ipv6_wildcard(addr: SocketAddr) -> bool {
    addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// The errors of a host whose kernel or network has no IPv6.
fn no_ipv6(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        let addrs = addresses(None, 0);
        let bound = bind_all(&addrs, "test").expect("bind");
        let ports: Vec<u16> = bound
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        assert!(ports.windows(2).all(|w| w[0] == w[1]), "{ports:?}");
        let port = ports[0];
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("IPv4 connects");
        if bound.len() == 2 {
            tokio::net::TcpStream::connect(("::1", port))
                .await
                .expect("IPv6 connects");
        }
    }

    #[test]
    fn a_bind_address_narrows_the_listeners() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(addresses(Some(ip), 5672), vec![SocketAddr::new(ip, 5672)]);
        assert_eq!(addresses(None, 5672).len(), 2);
    }
}
