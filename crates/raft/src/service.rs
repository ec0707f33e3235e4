//! The server side of Raft RPCs: a tonic service that hands each request to the local Raft node
//! of the group it names.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::storage::RaftStateMachine;
use openraft::Raft;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};
use warren_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use warren_proto::raft::{RaftReply, RaftRequest, SnapshotChunk};

use crate::{GroupId, TypeConfig};

/// The Raft groups this node serves, by id.
pub struct RaftService<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> {
    groups: Arc<RwLock<HashMap<GroupId, Raft<TypeConfig, SM>>>>,
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> Clone for RaftService<SM> {
    fn clone(&self) -> Self {
        RaftService {
            groups: self.groups.clone(),
        }
    }
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> Default for RaftService<SM> {
    fn default() -> Self {
        RaftService {
            groups: Arc::default(),
        }
    }
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> RaftService<SM> {
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
}

fn reply<T: Serialize>(
    group_id: GroupId,
    result: Result<T, impl std::fmt::Display>,
) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(match result {
        Ok(v) => RaftReply {
            group_id,
            payload: postcard::to_stdvec(&v)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
            error: String::new(),
        },
        Err(e) => RaftReply {
            group_id,
            payload: Default::default(),
            error: e.to_string(),
        },
    }))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

#[tonic::async_trait]
impl<SM: RaftStateMachine<TypeConfig, SnapshotData = Vec<u8>>> RaftRpc for RaftService<SM> {
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let r = request.into_inner();
        let raft = self.group(r.group_id)?;
        reply(r.group_id, raft.vote(decode(&r.payload)?).await)
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let r = request.into_inner();
        let raft = self.group(r.group_id)?;
        reply(r.group_id, raft.append_entries(decode(&r.payload)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut stream = request.into_inner();
        let mut group = None;
        let mut vote: Option<VoteOf<TypeConfig>> = None;
        let mut meta: Option<SnapshotMetaOf<TypeConfig>> = None;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if group.is_none() {
                group = Some(chunk.group_id);
                vote = Some(decode(&chunk.vote)?);
                meta = Some(decode(&chunk.meta)?);
            }
            data.extend_from_slice(&chunk.data);
        }
        let (Some(group), Some(vote), Some(meta)) = (group, vote, meta) else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        let raft = self.group(group)?;
        reply(
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
