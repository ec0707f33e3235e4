//! Replication to a peer of an older version, whose Raft service has no `AppendStream`: the
//! first stream is refused as unreachable (openraft backs off and starts a new session), and
//! every session after it sends AppendEntries one request at a time, which the peer answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use openraft::error::RPCError;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::Vote;
use tonic::{Request, Response, Status, Streaming};
use warren_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use warren_proto::raft::{RaftReply, RaftRequest, SnapshotChunk};
use warren_raft::incarnation::IncarnationBook;
use warren_raft::network::NetworkFactory;
use warren_raft::{TypeConfig, WarrenNode, METADATA_GROUP};

/// A Raft service as versions without `AppendStream` answer: that call is unimplemented,
/// AppendEntries succeeds (and is counted).
#[derive(Clone, Default)]
struct OldPeer {
    appends: Arc<AtomicUsize>,
}

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::internal("not used by this test"))
}

#[tonic::async_trait]
impl RaftRpc for OldPeer {
    type AppendStreamStream = warren_raft::service::AppendReplies;

    async fn vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        unused()
    }

    async fn append_entries(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        let answer: AppendEntriesResponse<TypeConfig> = AppendEntriesResponse::Success;
        Ok(Response::new(RaftReply {
            group_id: METADATA_GROUP,
            payload: postcard::to_stdvec(&answer).expect("encodes").into(),
            error: String::new(),
            incarnation: 7,
        }))
    }

    async fn append_stream(
        &self,
        _: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        Err(Status::unimplemented("Method not found: AppendStream"))
    }

    async fn install_snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        unused()
    }

    async fn transfer_leader(
        &self,
        _: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        unused()
    }
}

fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    }
}

#[tokio::test]
async fn a_peer_without_append_stream_is_replicated_to_one_request_at_a_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let peer = OldPeer::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(peer.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let book = Arc::new(IncarnationBook::new(1, 5));
    let mut factory = NetworkFactory::new(METADATA_GROUP, book);
    let node = WarrenNode {
        grpc_addr: addr.to_string(),
        amqp_addr: String::new(),
        incarnation: 7,
    };
    let mut network = factory.new_client(2, &node).await;
    let option = RPCOption::new(std::time::Duration::from_secs(5));

    // The first session: refused as unreachable, nothing appended.
    let refused = match network
        .stream_append(
            futures_util::stream::iter(vec![heartbeat()]),
            option.clone(),
        )
        .await
    {
        Err(RPCError::Unreachable(_)) => true,
        Err(e) => panic!("not unreachable: {e}"),
        Ok(_) => false,
    };
    assert!(refused, "the first stream to an old peer is refused");
    assert_eq!(peer.appends.load(Ordering::SeqCst), 0);

    // The next: two requests, each answered through AppendEntries, in order.
    let answers: Vec<_> = network
        .stream_append(
            futures_util::stream::iter(vec![heartbeat(), heartbeat()]),
            option,
        )
        .await
        .expect("the sequential stream starts")
        .collect()
        .await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    for answer in answers {
        assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
    }
    assert_eq!(peer.appends.load(Ordering::SeqCst), 2);
    server.abort();
}
