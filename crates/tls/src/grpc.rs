//! TLS for the gRPC port: the connection type tonic serves (it carries the peer's certificate
//! identity into every request) and the guard in front of every service, which admits a call
//! only from a certificate that may make it:
//!
//! | service | who may call |
//! |---|---|
//! | `Raft`, `Relay` (node to node) | a node certificate naming a member |
//! | `Admin`, `Access`, `Management` | a member node, or an operator certificate |
//!
//! No certificate: `UNAUTHENTICATED`; a certificate not allowed: `PERMISSION_DENIED`. A
//! certificate of another CA never gets here: its handshake fails.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::warn;

use crate::acceptor::Accepted;
use crate::identity::PeerIdentity;

/// What tonic puts into every request's extensions for a connection of the TLS gRPC port.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    pub identity: Option<Arc<PeerIdentity>>,
}

/// Who made a call, as the guard admitted it (in the request's extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The node of this id, a member of the cluster.
    Node(u64),
    /// An operator, by the name in its certificate.
    Operator(String),
}

/// A TLS connection to the gRPC port, as tonic serves it.
pub struct GrpcIo {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl From<Accepted> for GrpcIo {
    fn from(a: Accepted) -> GrpcIo {
        GrpcIo {
            stream: a.stream,
            info: PeerInfo {
                remote: a.peer,
                identity: a.identity,
            },
        }
    }
}

impl Connected for GrpcIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for GrpcIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The cluster's membership as the guard needs it.
pub trait Membership: Send + Sync + 'static {
    /// The member a node certificate names (by its node id, or by the host of a member's
    /// recorded gRPC address in its subject alternative names); `None` if it names none.
    fn member(&self, peer: &PeerIdentity) -> Option<u64>;

    /// The node a node certificate names, for Raft traffic: a member, or a node this node has
    /// not seen leave the membership. A node whose membership is behind (it was down, or it
    /// installed a snapshot older than the latest membership change) cannot know the members
    /// added since, and must take their leader's entries to learn of them; Raft itself then
    /// decides (terms, and votes only from voters). By default, [`Membership::member`].
    fn raft_peer(&self, peer: &PeerIdentity) -> Option<u64> {
        self.member(peer)
    }
}

/// Raft between nodes: members, and nodes this node has not seen removed.
const RAFT_SERVICE: &str = "warren.raft.v1.Raft";
/// A node's status (read-only): also for nodes not seen removed, as Raft.
const STATUS_METHOD: &str = "/warren.raft.v1.Admin/Status";
/// Relayed clients between nodes: members only.
const RELAY_SERVICE: &str = "warren.raft.v1.Relay";
/// The services operators call (and nodes, forwarding to the leader).
const OPERATOR_SERVICES: [&str; 3] = [
    "warren.raft.v1.Admin",
    "warren.access.Access",
    "warren.management.Management",
];

/// Decides whether `peer` may call the gRPC method at `path` (`/package.Service/Method`).
pub fn admit(
    path: &str,
    peer: Option<&PeerIdentity>,
    membership: &dyn Membership,
) -> Result<Caller, tonic::Status> {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let Some(peer) = peer else {
        return Err(tonic::Status::unauthenticated(
            "a client certificate signed by the cluster's CA is required",
        ));
    };
    if service == RAFT_SERVICE {
        return membership.raft_peer(peer).map(Caller::Node).ok_or_else(|| {
            tonic::Status::permission_denied(format!(
                "the certificate of {} names a node removed from this cluster, or no node; \
                 {service} is for members only",
                peer.describe()
            ))
        });
    }
    // The status every node asks of every other (its alarms, its figures) is taken as Raft is:
    // a node whose membership is behind must not refuse the members added since.
    let member = if path == STATUS_METHOD {
        membership.raft_peer(peer)
    } else {
        membership.member(peer)
    };
    if service == RELAY_SERVICE {
        return member.map(Caller::Node).ok_or_else(|| {
            tonic::Status::permission_denied(format!(
                "the certificate of {} does not name a member of this cluster; {service} is for members only",
                peer.describe()
            ))
        });
    }
    if OPERATOR_SERVICES.contains(&service) {
        if let Some(id) = member {
            return Ok(Caller::Node(id));
        }
        if let Some(name) = &peer.operator {
            return Ok(Caller::Operator(name.clone()));
        }
        return Err(tonic::Status::permission_denied(format!(
            "the certificate of {} is neither a member's nor an operator's (warren cert create-client)",
            peer.describe()
        )));
    }
    Err(tonic::Status::permission_denied(format!(
        "no such service: {service}"
    )))
}

/// The tower layer that puts [`Guard`] in front of every service of the gRPC server.
#[derive(Clone)]
pub struct GuardLayer {
    membership: Arc<dyn Membership>,
}

impl GuardLayer {
    pub fn new(membership: Arc<dyn Membership>) -> GuardLayer {
        GuardLayer { membership }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            membership: self.membership.clone(),
        }
    }
}

/// Admits a request (see [`admit`]) and records its [`Caller`], or answers it with the
/// refusal without calling the service.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    membership: Arc<dyn Membership>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Guard<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let info = request.extensions().get::<PeerInfo>().cloned();
        let identity = info.as_ref().and_then(|i| i.identity.as_deref());
        match admit(request.uri().path(), identity, self.membership.as_ref()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                warn!(
                    peer = ?info.map(|i| i.remote),
                    method = request.uri().path(),
                    reason = status.message(),
                    "gRPC call refused"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Members(Vec<u64>);

    impl Membership for Members {
        fn member(&self, peer: &PeerIdentity) -> Option<u64> {
            peer.node.filter(|id| self.0.contains(id))
        }
    }

    /// Members 1, 2 and 3, node 4 seen removed.
    struct Retired;

    impl Membership for Retired {
        fn member(&self, peer: &PeerIdentity) -> Option<u64> {
            peer.node.filter(|id| [1, 2, 3].contains(id))
        }

        fn raft_peer(&self, peer: &PeerIdentity) -> Option<u64> {
            peer.node.filter(|id| *id != 4)
        }
    }

    #[test]
    fn raft_and_status_take_nodes_not_seen_removed_relay_and_operators_only_members() {
        let raft = "/warren.raft.v1.Raft/AppendStream";
        // Node 9, added after this node's membership: Raft only.
        assert_eq!(
            admit(raft, Some(&node(9)), &Retired).ok(),
            Some(Caller::Node(9))
        );
        assert_eq!(
            admit("/warren.raft.v1.Admin/Status", Some(&node(9)), &Retired).ok(),
            Some(Caller::Node(9))
        );
        for path in [
            "/warren.raft.v1.Relay/Attach",
            "/warren.raft.v1.Admin/AddLearner",
            "/warren.access.Access/Change",
        ] {
            assert_eq!(
                admit(path, Some(&node(9)), &Retired).map_err(|s| s.code()),
                Err(tonic::Code::PermissionDenied)
            );
        }
        // Node 4, seen removed: refused everywhere.
        let refused = admit(raft, Some(&node(4)), &Retired).expect_err("node 4 was removed");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("removed"),
            "{}",
            refused.message()
        );
        assert_eq!(
            admit(raft, Some(&node(2)), &Retired).ok(),
            Some(Caller::Node(2))
        );
    }

    fn node(id: u64) -> PeerIdentity {
        PeerIdentity {
            node: Some(id),
            ..PeerIdentity::default()
        }
    }

    fn operator(name: &str) -> PeerIdentity {
        PeerIdentity {
            operator: Some(name.into()),
            common_name: Some(name.into()),
            ..PeerIdentity::default()
        }
    }

    #[test]
    fn members_call_everything_operators_only_the_operator_services() {
        let members = Members(vec![1, 2, 3]);
        let raft = "/warren.raft.v1.Raft/AppendEntries";
        let relay = "/warren.raft.v1.Relay/Attach";
        let admin = "/warren.raft.v1.Admin/Status";
        let access = "/warren.access.Access/Change";
        let mgmt = "/warren.management.Management/View";
        for path in [raft, relay, admin, access, mgmt] {
            assert_eq!(
                admit(path, Some(&node(2)), &members).ok(),
                Some(Caller::Node(2))
            );
            assert_eq!(
                admit(path, None, &members).map_err(|s| s.code()),
                Err(tonic::Code::Unauthenticated)
            );
            // A node certificate of the CA that names no member (a removed node).
            assert_eq!(
                admit(path, Some(&node(9)), &members).map_err(|s| s.code()),
                Err(tonic::Code::PermissionDenied)
            );
            // A client certificate with no Warren role (an AMQPS user's).
            let plain = PeerIdentity {
                common_name: Some("app".into()),
                ..PeerIdentity::default()
            };
            assert_eq!(
                admit(path, Some(&plain), &members).map_err(|s| s.code()),
                Err(tonic::Code::PermissionDenied)
            );
        }
        for path in [raft, relay] {
            assert_eq!(
                admit(path, Some(&operator("ops")), &members).map_err(|s| s.code()),
                Err(tonic::Code::PermissionDenied)
            );
        }
        for path in [admin, access, mgmt] {
            assert_eq!(
                admit(path, Some(&operator("ops")), &members).ok(),
                Some(Caller::Operator("ops".into()))
            );
        }
        assert_eq!(
            admit("/other.Service/X", Some(&node(1)), &members).map_err(|s| s.code()),
            Err(tonic::Code::PermissionDenied)
        );
    }
}
