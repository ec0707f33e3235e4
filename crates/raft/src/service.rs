//! The server side of Raft RPCs: a tonic service that checks each request's incarnations (see
//! [`crate::incarnation`]) and hands the requests it admits to the local Raft node of the group
//! they name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::async_runtime::WatchReceiver;
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
