//! Every member's own status, asked at once (a second at most each): `/api/nodes` shows each
//! node's figures from it, and the rates' sampler keeps each node's counts for its charts.

use std::collections::HashMap;
use std::time::Duration;

use warren_proto::raft::StatusReply;

use crate::Ctx;

/// How long a member has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// This node's status, and every member's that answered (this node's included), by id.
pub(crate) async fn statuses(ctx: &Ctx) -> (StatusReply, HashMap<u64, StatusReply>) {
    let me = ctx.node.admin.status();
    let asks = me
        .members
        .iter()
        .filter(|m| m.id != me.node_id && !m.grpc_addr.is_empty())
        .map(|m| async move {
            (
                m.id,
                warren_raft::admin::status_of(&m.grpc_addr, ASK_TIMEOUT).await,
            )
        });
    let mut all: HashMap<u64, StatusReply> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(id, s)| Some((id, s?)))
        .collect();
    all.insert(me.node_id, me.clone());
    (me, all)
}
