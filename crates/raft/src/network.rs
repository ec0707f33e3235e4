//! The client side of Raft RPCs: openraft's `RaftNetworkV2` over gRPC (`proto/warren/raft.proto`).
//! One [`Network`] per peer and group; the gRPC channel is opened lazily and reopened after a
//! failure.

use std::future::Future;

use bytes::Bytes;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use warren_proto::raft::raft_client::RaftClient;
use warren_proto::raft::{RaftReply, RaftRequest, SnapshotChunk};

use crate::{GroupId, NodeId, TypeConfig, WarrenNode};

/// Snapshot bytes are streamed in chunks of this size.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Makes [`Network`] clients for one Raft group.
#[derive(Clone, Debug)]
pub struct NetworkFactory {
    group: GroupId,
}

impl NetworkFactory {
    pub fn new(group: GroupId) -> NetworkFactory {
        NetworkFactory { group }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &WarrenNode) -> Network {
        Network {
            group: self.group,
            target,
            addr: format!("http://{}", node.grpc_addr),
            client: None,
        }
    }
}

/// Raft RPCs to one peer.
pub struct Network {
    group: GroupId,
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes, RPCError<TypeConfig>> {
    postcard::to_stdvec(v)
        .map(Bytes::from)
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn decode<T: DeserializeOwned>(reply: RaftReply) -> Result<T, RPCError<TypeConfig>> {
    if !reply.error.is_empty() {
        return Err(RPCError::Unreachable(Unreachable::from_string(reply.error)));
    }
    postcard::from_bytes(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl Network {
    async fn client(&mut self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(self.addr.clone())
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let client = RaftClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        self.client = Some(client.clone());
        Ok(client)
    }

    fn failed(&mut self, status: tonic::Status) -> RPCError<TypeConfig> {
        self.client = None;
        RPCError::Unreachable(Unreachable::new(&status))
    }
}

impl RaftNetworkV2<TypeConfig> for Network {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = RaftRequest {
            group_id: self.group,
            payload: encode(&rpc)?,
        };
        let mut client = self.client().await?;
        match client.append_entries(request).await {
            Ok(reply) => decode(reply.into_inner()),
            Err(status) => Err(self.failed(status)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = RaftRequest {
            group_id: self.group,
            payload: encode(&rpc)?,
        };
        let mut client = self.client().await?;
        match client.vote(request).await {
            Ok(reply) => decode(reply.into_inner()),
            Err(status) => Err(self.failed(status)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => StreamingError::Network(NetworkError::new(&other)),
        };
        let vote = encode(&vote).map_err(to_streaming)?;
        let meta = encode(&snapshot.meta).map_err(to_streaming)?;
        let data = Bytes::from(snapshot.snapshot);
        let group = self.group;
        let mut chunks = Vec::new();
        let mut offset = 0;
        loop {
            let end = (offset + SNAPSHOT_CHUNK).min(data.len());
            let first = offset == 0;
            chunks.push(SnapshotChunk {
                group_id: group,
                vote: if first { vote.clone() } else { Bytes::new() },
                meta: if first { meta.clone() } else { Bytes::new() },
                data: data.slice(offset..end),
            });
            offset = end;
            if offset >= data.len() {
                break;
            }
        }
        let mut client = self.client().await.map_err(to_streaming)?;
        let send = client.install_snapshot(tokio_stream::iter(chunks));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => match reply {
                Ok(reply) => decode(reply.into_inner()).map_err(to_streaming),
                Err(status) => Err(to_streaming(self.failed(status))),
            },
        }
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Network(group {} -> node {} at {})",
            self.group, self.target, self.addr
        )
    }
}
