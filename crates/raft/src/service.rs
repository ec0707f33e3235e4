//! The server side of Raft RPCs: a tonic service that checks each request's incarnations (see
//! [`crate::incarnation`]) and hands the requests it admits to the local Raft node of the group
//! they name.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::{Stream, StreamExt};

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::async_runtime::WatchReceiver;
use openraft::raft::AppendEntriesRequest;
use openraft::storage::RaftStateMachine;
use openraft::Raft;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};
use warren_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use warren_proto::raft::{RaftReply, RaftRequest, SnapshotChunk};

use warren_store::MessageStore;
use warren_tls::grpc::Caller;

use crate::incarnation::{IncarnationBook, Incoming, SenderRecord};
use crate::trust::check_sender;
use crate::{GroupId, NodeId, TypeConfig};

/// The Raft groups this node serves, by id.
pub struct RaftService<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> {
    groups: Arc<RwLock<HashMap<GroupId, Raft<TypeConfig, SM>>>>,
    book: Arc<IncarnationBook>,
    /// Where the log entries shipped with a snapshot are kept as they arrive.
    messages: Option<MessageStore>,
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> Clone for RaftService<SM> {
    fn clone(&self) -> Self {
        RaftService {
            groups: self.groups.clone(),
            book: self.book.clone(),
            messages: self.messages.clone(),
        }
    }
}

/// What `raft`'s current membership says about `from`.
fn sender_record<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    from: NodeId,
) -> SenderRecord {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let membership = m.membership_config.membership();
    let record = SenderRecord {
        membership_empty: membership.nodes().next().is_none(),
        incarnation: membership.get_node(&from).map(|n| n.incarnation),
        voter: membership.voter_ids().any(|v| v == from),
    };
    record
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> RaftService<SM> {
    /// A service with no groups yet, answering as the node (and incarnation) of `book`.
    pub fn new(book: Arc<IncarnationBook>) -> RaftService<SM> {
        RaftService {
            groups: Arc::default(),
            book,
            messages: None,
        }
    }

    /// The log entries that arrive with a snapshot are written to `messages` as they arrive,
    /// instead of being held in memory until the snapshot is whole.
    pub fn with_messages(mut self, messages: MessageStore) -> RaftService<SM> {
        self.messages = Some(messages);
        self
    }

    /// Routes requests for `group` to `raft`.
    pub fn add_group(&self, group: GroupId, raft: Raft<TypeConfig, SM>) {
        if let Ok(mut g) = self.groups.write() {
            g.insert(group, raft);
        }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    fn group(&self, id: GroupId) -> Result<Raft<TypeConfig, SM>, Status> {
        let groups = self
            .groups
            .read()
            .map_err(|_| Status::internal("group table poisoned"))?;
        groups
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no raft group {id} on this node")))
    }

    /// [`Self::admit`] for a [`RaftRequest`].
    fn admit_request(
        &self,
        caller: Option<&Caller>,
        r: &RaftRequest,
        vote: bool,
    ) -> Result<Raft<TypeConfig, SM>, Status> {
        self.admit(
            caller,
            r.group_id,
            r.from_node,
            r.from_incarnation,
            r.to_incarnation,
            vote,
        )
    }

    /// The group's Raft node, if the request comes from the node whose certificate called (see
    /// [`crate::trust`]) and its incarnations are admitted (see [`IncarnationBook::admit`]).
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        caller: Option<&Caller>,
        group: GroupId,
        from: NodeId,
        from_incarnation: u64,
        to_incarnation: u64,
        vote: bool,
    ) -> Result<Raft<TypeConfig, SM>, Status> {
        check_sender(caller, from)?;
        let raft = self.group(group)?;
        let incoming = Incoming {
            from,
            from_incarnation,
            to_incarnation,
            vote,
        };
        self.book.admit(&incoming, &sender_record(&raft, from))?;
        Ok(raft)
    }

    fn reply<T: Serialize>(
        &self,
        group_id: GroupId,
        result: Result<T, impl std::fmt::Display>,
    ) -> Result<Response<RaftReply>, Status> {
        let incarnation = self.book.own();
        Ok(Response::new(match result {
            Ok(v) => RaftReply {
                group_id,
                payload: postcard::to_stdvec(&v)
                    .map_err(|e| Status::internal(e.to_string()))?
                    .into(),
                error: String::new(),
                incarnation,
            },
            Err(e) => RaftReply {
                group_id,
                payload: Default::default(),
                error: e.to_string(),
                incarnation,
            },
        }))
    }
}

/// The replies of an `AppendStream` call.
pub type AppendReplies = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send + 'static>>;

/// The requests of an `AppendStream` call, each admitted (sender, incarnations) and decoded as
/// it arrives; the first that is not, or a broken stream, ends them, its status kept in `ended`.
struct AdmittedAppends<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> {
    incoming: Streaming<RaftRequest>,
    service: RaftService<SM>,
    caller: Option<Caller>,
    /// The group the first request named: every request of a stream belongs to it.
    group: Option<GroupId>,
    ended: Arc<Mutex<Option<Status>>>,
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> AdmittedAppends<SM> {
    /// The next request's group and body; `Err` ends the stream.
    async fn next(&mut self) -> Result<(GroupId, AppendEntriesRequest<TypeConfig>), Status> {
        let r = self
            .incoming
            .message()
            .await?
            .ok_or_else(|| Status::cancelled("the append stream ended"))?;
        if *self.group.get_or_insert(r.group_id) != r.group_id {
            return Err(Status::invalid_argument(
                "an append stream's requests name different raft groups",
            ));
        }
        self.service
            .admit_request(self.caller.as_ref(), &r, false)?;
        let request: AppendEntriesRequest<TypeConfig> = decode(&r.payload)?;
        tracing::trace!(
            target: "warren_latency",
            first = request.entries.first().map(|e| e.log_id.index),
            last = request.entries.last().map(|e| e.log_id.index),
            commit = request.leader_commit.map(|c| c.index),
            "append request in"
        );
        self.service.book.accepted();
        Ok((r.group_id, request))
    }

    /// The stream's group (after its first request).
    fn group(&self) -> GroupId {
        self.group.unwrap_or_default()
    }

    /// The rest of the requests, as a stream that ends at the first error (kept in `ended`,
    /// unless the client simply finished).
    fn into_stream(self) -> impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + 'static {
        futures_util::stream::unfold(self, |mut input| async move {
            match input.next().await {
                Ok((_, request)) => Some((request, input)),
                Err(status) => {
                    if status.code() != tonic::Code::Cancelled {
                        if let Ok(mut ended) = input.ended.lock() {
                            *ended = Some(status);
                        }
                    }
                    None
                }
            }
        })
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

#[tonic::async_trait]
impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> RaftRpc for RaftService<SM> {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let r = request.into_inner();
        let raft = self.admit_request(caller.as_ref(), &r, true)?;
        self.reply(r.group_id, raft.vote(decode(&r.payload)?).await)
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let r = request.into_inner();
        let raft = self.admit_request(caller.as_ref(), &r, false)?;
        self.book.accepted();
        self.reply(r.group_id, raft.append_entries(decode(&r.payload)?).await)
    }

    type AppendStreamStream = AppendReplies;

    /// Replication as a stream: each request admitted and decoded as it arrives, handed to
    /// openraft's pipelined `Raft::stream_append`, answered in order. The first request
    /// refused (or undecodable, or a broken stream) ends the input; the answers to the requests
    /// before it go out, then the refusal's status.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let incoming = request.into_inner();
        let service = self.clone();
        let ended: Arc<Mutex<Option<Status>>> = Arc::default();
        let setup = {
            let ended = ended.clone();
            async move {
                let mut input = AdmittedAppends {
                    incoming,
                    service,
                    caller,
                    group: None,
                    ended,
                };
                let first = input.next().await?;
                let raft = input.service.group(first.0)?;
                Ok::<_, Status>((raft, first.1, input))
            }
        };
        let replies = futures_util::stream::once(setup).flat_map(move |setup| {
            let ended = ended.clone();
            match setup {
                Err(status) => futures_util::stream::once(std::future::ready(Err(status))).boxed(),
                Ok((raft, first, input)) => {
                    let group = input.group();
                    let incarnation = input.service.book.own();
                    let requests = futures_util::stream::once(std::future::ready(first))
                        .chain(input.into_stream());
                    let answers = raft.stream_append(requests).map(move |result| {
                        tracing::trace!(target: "warren_latency", "append answer out");
                        Ok(match result {
                            Ok(answer) => match postcard::to_stdvec(&answer) {
                                Ok(payload) => RaftReply {
                                    group_id: group,
                                    payload: payload.into(),
                                    error: String::new(),
                                    incarnation,
                                },
                                Err(e) => return Err(Status::internal(e.to_string())),
                            },
                            Err(fatal) => RaftReply {
                                group_id: group,
                                payload: Default::default(),
                                error: fatal.to_string(),
                                incarnation,
                            },
                        })
                    });
                    let refusal = futures_util::stream::once(async move {
                        ended.lock().ok().and_then(|mut e| e.take())
                    })
                    .filter_map(|status| std::future::ready(status.map(Err)));
                    answers.chain(refusal).boxed()
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let r = request.into_inner();
        let raft = self.admit_request(caller.as_ref(), &r, false)?;
        self.reply(
            r.group_id,
            raft.handle_transfer_leader(decode(&r.payload)?).await,
        )
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let mut stream = request.into_inner();
        let mut group = None;
        let mut vote: Option<VoteOf<TypeConfig>> = None;
        let mut meta: Option<SnapshotMetaOf<TypeConfig>> = None;
        let mut raft = None;
        // The log entries shipped with the snapshot go to disk as they arrive; only the
        // snapshot itself is held (see `crate::shipping`).
        let mut received = crate::shipping::Receiver::new(self.messages.clone());
        while let Some(chunk) = stream.message().await? {
            if group.is_none() {
                // Checked on the first chunk, before the rest of the snapshot is read.
                raft = Some(self.admit(
                    caller.as_ref(),
                    chunk.group_id,
                    chunk.from_node,
                    chunk.from_incarnation,
                    chunk.to_incarnation,
                    false,
                )?);
                group = Some(chunk.group_id);
                vote = Some(decode(&chunk.vote)?);
                meta = Some(decode(&chunk.meta)?);
            }
            received =
                tokio::task::spawn_blocking(move || received.feed(&chunk.data).map(|()| received))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let (data, kept) = tokio::task::spawn_blocking(move || received.finish())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if kept > 0 {
            tracing::info!(
                entries = kept,
                "kept the log entries shipped with a snapshot"
            );
        }
        let (Some(group), Some(vote), Some(meta), Some(raft)) = (group, vote, meta, raft) else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        self.book.accepted();
        self.reply(
            group,
            raft.install_full_snapshot(
                vote,
                SnapshotOf::<TypeConfig, Vec<u8>> {
                    meta,
                    snapshot: data,
                },
            )
            .await,
        )
    }
}
