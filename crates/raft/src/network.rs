//! The client side of Raft RPCs: openraft's `RaftNetworkV2` over gRPC (`proto/warren/raft.proto`).
//! One [`Network`] per peer and group; the gRPC channel is opened lazily and reopened after a
//! failure. Every request carries this node's id and incarnation and the incarnation expected of
//! the peer (see [`crate::incarnation`]); replies teach it the incarnations not recorded yet.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tracing::warn;
use warren_proto::raft::raft_client::RaftClient;
use warren_proto::raft::{RaftReply, RaftRequest, SnapshotChunk};

use warren_store::MessageStore;

use crate::incarnation::{refusal_kind, IncarnationBook};
use crate::{GroupId, NodeId, TypeConfig, WarrenNode};

/// Snapshot bytes are streamed in chunks of this size.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Makes [`Network`] clients for one Raft group.
#[derive(Clone)]
pub struct NetworkFactory {
    group: GroupId,
    book: Arc<IncarnationBook>,
    messages: Option<MessageStore>,
}

impl NetworkFactory {
    /// Clients for `group`, sending as the node (and incarnation) of `book`.
    pub fn new(group: GroupId, book: Arc<IncarnationBook>) -> NetworkFactory {
        NetworkFactory {
            group,
            book,
            messages: None,
        }
    }

    /// Snapshots sent to other nodes carry the log entries they name, read from `messages`
    /// (see [`crate::shipping`]).
    pub fn with_messages(mut self, messages: MessageStore) -> NetworkFactory {
        self.messages = Some(messages);
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &WarrenNode) -> Network {
        Network {
            group: self.group,
            target,
            recorded: node.incarnation,
            book: self.book.clone(),
            addr: node.grpc_addr.clone(),
            client: None,
            messages: self.messages.clone(),
            streams: true,
        }
    }
}

/// Raft RPCs to one peer.
pub struct Network {
    group: GroupId,
    target: NodeId,
    /// The peer's incarnation as the membership recorded it when this client was made.
    recorded: u64,
    book: Arc<IncarnationBook>,
    /// The peer's gRPC address as the membership records it (see [`crate::dial`]).
    addr: String,
    client: Option<RaftClient<Channel>>,
    messages: Option<MessageStore>,
    /// Whether the peer takes `AppendStream` (until it answers that it does not).
    streams: bool,
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes, RPCError<TypeConfig>> {
    postcard::to_stdvec(v)
        .map(Bytes::from)
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn decode<T: DeserializeOwned>(reply: &RaftReply) -> Result<T, RPCError<TypeConfig>> {
    if !reply.error.is_empty() {
        return Err(RPCError::Unreachable(Unreachable::from_string(
            reply.error.clone(),
        )));
    }
    postcard::from_bytes(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl Network {
    async fn client(&mut self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = crate::dial::endpoint(&self.addr)
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

    /// A request to the peer, addressed to the incarnation expected of it.
    fn request(&self, payload: Bytes) -> RaftRequest {
        RaftRequest {
            group_id: self.group,
            payload,
            from_node: self.book.node(),
            from_incarnation: self.book.own(),
            to_incarnation: self.book.expected_of(self.target, self.recorded),
        }
    }

    /// Decodes a reply, learning the peer's incarnation from it if the membership lacks it.
    fn answered<T: DeserializeOwned>(&self, reply: RaftReply) -> Result<T, RPCError<TypeConfig>> {
        if self.recorded == 0 {
            self.book.learn(self.target, reply.incarnation);
        }
        decode(&reply)
    }

    /// The peer could not be reached or refused the request. A refusal is logged here (the peer
    /// was wiped) or noted as this node's own state (the peer says this node was wiped, or not
    /// a voter); either way openraft sees the peer as unreachable and backs off.
    fn failed(&mut self, status: tonic::Status) -> RPCError<TypeConfig> {
        match refusal_kind(&status) {
            Some("receiver-wiped") => {
                if self.book.should_log("peer-wiped", self.target) {
                    warn!(
                        node = self.book.node(),
                        peer = self.target,
                        "node {} refuses Raft traffic: {}",
                        self.target,
                        status.message()
                    );
                }
            }
            Some("sender-wiped") => {
                self.book
                    .refuse_self("sender-wiped", self.target, status.message())
            }
            Some("not-a-voter") => {
                self.book
                    .refuse_self("not-a-voter", self.target, status.message())
            }
            _ => self.client = None,
        }
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
        let request = self.request(encode(&rpc)?);
        let mut client = self.client().await?;
        match client.append_entries(request).await {
            Ok(reply) => self.answered(reply.into_inner()),
            Err(status) => Err(self.failed(status)),
        }
    }

    /// Replication over one `AppendStream` call: openraft's requests go out as they come and
    /// its answers come back in order, several in flight (`stream_append_sequential`, one at a
    /// time, against a peer without the call). Like `append_entries`, no deadline: a peer that
    /// stops answering holds the stream until it answers or the connection breaks.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if !self.streams {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let header = self.request(Bytes::new());
            let target = self.target;
            // Encoding openraft's own request cannot fail; if it ever did, the stream ends
            // there and openraft starts a new one.
            let requests = input.scan((), move |_, rpc| {
                tracing::trace!(
                    target: "warren_latency",
                    peer = target,
                    first = rpc.entries.first().map(|e| e.log_id.index),
                    last = rpc.entries.last().map(|e| e.log_id.index),
                    commit = rpc.leader_commit.map(|c| c.index),
                    "append request out"
                );
                let request = match encode(&rpc) {
                    Ok(payload) => Some(RaftRequest {
                        payload,
                        ..header.clone()
                    }),
                    Err(e) => {
                        warn!(peer = target, error = %e, "an append request did not encode");
                        None
                    }
                };
                std::future::ready(request)
            });
            let mut client = self.client().await?;
            let replies = match client.append_stream(requests).await {
                Ok(replies) => replies.into_inner(),
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    warn!(peer = target, "the peer has no AppendStream (an older version): replicating to it one request at a time");
                    self.streams = false;
                    return Err(RPCError::Unreachable(Unreachable::new(&status)));
                }
                Err(status) => return Err(self.failed(status)),
            };
            let answers = futures_util::stream::unfold(Some((self, replies)), |state| async move {
                let (network, mut replies) = state?;
                match replies.message().await {
                    Ok(Some(reply)) => {
                        let answer = network.answered::<StreamAppendResult<TypeConfig>>(reply);
                        tracing::trace!(target: "warren_latency", peer = network.target, answer = ?answer.as_ref().ok().and_then(|a| a.as_ref().ok()).and_then(|m| m.map(|l| l.index)), "append answer in");
                        // An error ends the stream, as openraft's own streams do.
                        let more = matches!(answer, Ok(Ok(_)));
                        Some((answer, more.then_some((network, replies))))
                    }
                    Ok(None) => None,
                    Err(status) => Some((Err(network.failed(status)), None)),
                }
            });
            Ok(Box::pin(answers) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = self.request(encode(&rpc)?);
        let mut client = self.client().await?;
        match client.vote(request).await {
            Ok(reply) => self.answered(reply.into_inner()),
            Err(status) => Err(self.failed(status)),
        }
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = self.request(encode(&rpc)?);
        let mut client = self.client().await?;
        match client.transfer_leader(request).await {
            Ok(reply) => self.answered(reply.into_inner()),
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
        // The shipped form is produced as it is sent (see `crate::shipping`): a few chunks in
        // flight, whatever the backlog.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let producer = match self.messages.clone() {
            Some(store) => tokio::task::spawn_blocking(move || {
                crate::shipping::ship_chunks(&store, snapshot.snapshot, SNAPSHOT_CHUNK, &tx)
            }),
            None => tokio::task::spawn_blocking(move || {
                let data = Bytes::from(snapshot.snapshot);
                let mut offset = 0;
                while offset < data.len() {
                    let end = (offset + SNAPSHOT_CHUNK).min(data.len());
                    if tx.blocking_send(data.slice(offset..end)).is_err() {
                        break;
                    }
                    offset = end;
                }
                Ok(())
            }),
        };
        let group = self.group;
        let header = self.request(Bytes::new());
        let mut first = true;
        let chunks = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            move |data| {
                let chunk = SnapshotChunk {
                    group_id: group,
                    vote: if first { vote.clone() } else { Bytes::new() },
                    meta: if first { meta.clone() } else { Bytes::new() },
                    data,
                    from_node: header.from_node,
                    from_incarnation: header.from_incarnation,
                    to_incarnation: header.to_incarnation,
                };
                first = false;
                chunk
            },
        );
        let mut client = self.client().await.map_err(to_streaming)?;
        let send = client.install_snapshot(chunks);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply,
        };
        // A shipped snapshot that could not be read whole was cut short: say why.
        producer
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        match reply {
            Ok(reply) => self.answered(reply.into_inner()).map_err(to_streaming),
            Err(status) => Err(to_streaming(self.failed(status))),
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
