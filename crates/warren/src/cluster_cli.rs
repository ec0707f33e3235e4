//! `warren status` and `warren member add|promote|remove`: an operator's view of the cluster and
//! its membership changes, through any member's Admin gRPC service.

use std::io::Write;

use warren_raft::METADATA_GROUP;

use crate::{grpc_channel, grpc_error, parse_member, MemberCmd};

/// An Admin client of the node at `addr` (host:port).
async fn admin_client(
    addr: &str,
) -> anyhow::Result<warren_proto::raft::admin_client::AdminClient<tonic::transport::Channel>> {
    Ok(warren_proto::raft::admin_client::AdminClient::new(
        grpc_channel(addr).await?,
    ))
}

/// `warren member ...`: sends the change to the node given, which forwards it to the leader.
pub(crate) fn member(change: &MemberCmd) -> anyhow::Result<()> {
    use warren_proto::raft::{AddLearnerRequest, PromoteRequest, RemoveRequest};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(async {
        match change {
            MemberCmd::Add {
                node,
                grpc,
                timeout,
            } => {
                let (id, node) = parse_member(node)?;
                admin_client(grpc)
                    .await?
                    .add_learner(AddLearnerRequest {
                        group_id: METADATA_GROUP,
                        id,
                        amqp_addr: node.amqp_addr,
                        grpc_addr: node.grpc_addr,
                        catch_up_timeout_ms: timeout.saturating_mul(1000),
                        forwarded: false,
                    })
                    .await
                    .map_err(grpc_error)
            }
            MemberCmd::Promote { id, grpc } => admin_client(grpc)
                .await?
                .promote(PromoteRequest {
                    group_id: METADATA_GROUP,
                    id: *id,
                    forwarded: false,
                })
                .await
                .map_err(grpc_error),
            MemberCmd::Remove { id, grpc } => admin_client(grpc)
                .await?
                .remove(RemoveRequest {
                    group_id: METADATA_GROUP,
                    id: *id,
                    forwarded: false,
                })
                .await
                .map_err(grpc_error),
        }
    })?;
    let reply = reply.into_inner();
    writeln!(
        std::io::stdout().lock(),
        "{} (by the leader, node {})",
        reply.message,
        reply.leader
    )?;
    Ok(())
}

/// `warren status`: asks a node, then (for lag) the leader it names.
pub(crate) fn status(grpc: &str, digest: bool) -> anyhow::Result<()> {
    use warren_proto::raft::{StatusReply, StatusRequest};
    async fn ask(addr: &str, digest: bool) -> anyhow::Result<StatusReply> {
        Ok(admin_client(addr)
            .await?
            .status(StatusRequest {
                group_id: METADATA_GROUP,
                digest,
            })
            .await
            .map_err(grpc_error)?
            .into_inner())
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut out = std::io::stdout().lock();
        let me = ask(grpc, digest).await?;
        let leader_addr = me.leader.and_then(|l| {
            me.members
                .iter()
                .find(|m| m.id == l)
                .map(|m| m.grpc_addr.clone())
        });
        let leader = match &leader_addr {
            Some(a) if me.leader != Some(me.node_id) => ask(a, false).await.ok(),
            _ => Some(me.clone()),
        };
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        writeln!(
            out,
            "node {} ({}), term {}, leader {}, last log {}, committed {}, applied {}, incarnation {}",
            me.node_id,
            me.state,
            me.term,
            opt(me.leader),
            opt(me.last_log_index),
            opt(me.committed_index),
            opt(me.applied_index),
            warren_raft::incarnation::show(me.incarnation)
        )?;
        writeln!(
            out,
            "gRPC between nodes: {}",
            if me.insecure {
                "INSECURE (plaintext, unauthenticated: --insecure)"
            } else {
                "mutual TLS"
            }
        )?;
        if !me.refused.is_empty() {
            writeln!(out, "REFUSED by the cluster: {}", me.refused)?;
        }
        if digest {
            writeln!(
                out,
                "state digest {} at applied index {}",
                me.state_digest,
                opt(me.digest_applied_index)
            )?;
        }
        if me.joint {
            writeln!(out, "a membership change is in progress (joint configuration)")?;
        }
        if let Some(ms) = me.millis_since_quorum_ack {
            writeln!(out, "quorum acknowledged {ms} ms ago")?;
        }
        writeln!(
            out,
            "{:<4} {:<8} {:<22} {:<22} {:<16} {:>8} {:>6}",
            "id", "role", "amqp", "grpc", "incarnation", "matched", "lag"
        )?;
        for m in &me.members {
            let matched = leader
                .as_ref()
                .and_then(|l| l.members.iter().find(|x| x.id == m.id))
                .and_then(|x| x.matched_index);
            let lag = match (leader.as_ref().and_then(|l| l.last_log_index), matched) {
                (Some(last), Some(m)) => last.saturating_sub(m).to_string(),
                _ => "-".into(),
            };
            let role = if Some(m.id) == me.leader {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            writeln!(
                out,
                "{:<4} {:<8} {:<22} {:<22} {:<16} {:>8} {:>6}",
                m.id,
                role,
                m.amqp_addr,
                m.grpc_addr,
                warren_raft::incarnation::show(m.incarnation),
                opt(matched),
                lag
            )?;
        }
        Ok(())
    })
}
