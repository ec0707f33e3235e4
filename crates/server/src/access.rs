//! The gRPC service for operator changes to vhosts, users, permissions, topic permissions and
//! limits (`proto/warren/access.proto`). Any node accepts a change: one that does not lead forwards it to
//! the leader; the leader checks it against its broker's state (`Broker::check_security_change`),
//! commits it as a log command and answers once it is applied, so a user added through one node
//! can log in through any node at once.

use openraft::Raft;
use rand::RngCore;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};
use warren_core::{hash_password, Command, Op, STATE_MACHINE_VERSION};
use warren_proto::access::access_change::Change;
use warren_proto::access::access_client::AccessClient;
use warren_proto::access::access_server::{Access, AccessServer};
use warren_proto::access::{AccessChange, AccessReply};
use warren_raft::state_machine::BrokerStateMachine;
use warren_raft::{LogCommand, TypeConfig};

use crate::broker_task::{BrokerHandle, ToBroker};
use crate::clock::now_ms;
use crate::relay::Route;

/// The access service of one node.
#[derive(Clone)]
pub struct AccessService {
    broker: mpsc::Sender<ToBroker>,
    raft: Raft<TypeConfig, BrokerStateMachine>,
    route: watch::Receiver<Route>,
}

impl AccessService {
    pub fn new(
        broker: &BrokerHandle,
        raft: Raft<TypeConfig, BrokerStateMachine>,
        route: watch::Receiver<Route>,
    ) -> AccessService {
        AccessService {
            broker: broker.tx.clone(),
            raft,
            route,
        }
    }

    /// The tonic service to mount on the node's gRPC server.
    pub fn into_server(self) -> AccessServer<AccessService> {
        AccessServer::new(self)
    }
}

/// The log command for a change; a password is hashed here, with a fresh salt.
fn to_op(change: Change) -> Result<Op, Status> {
    Ok(match change {
        Change::PutVhost(v) => Op::PutVhost {
            name: v.name.as_str().into(),
        },
        Change::DeleteVhost(v) => Op::DeleteVhost {
            name: v.name.as_str().into(),
        },
        Change::PutUser(u) => {
            let password_hash = match (u.password.is_empty(), u.password_hash.is_empty()) {
                (false, true) => {
                    let mut salt = [0u8; 4];
                    rand::thread_rng().fill_bytes(&mut salt);
                    hash_password(salt, &u.password)
                }
                (true, false) => u.password_hash,
                _ => {
                    return Err(Status::invalid_argument(
                        "give either a password or a password hash",
                    ))
                }
            };
            Op::PutUser {
                name: u.name,
                password_hash,
                tags: u.tags,
            }
        }
        Change::DeleteUser(u) => Op::DeleteUser { name: u.name },
        Change::SetPermission(p) => Op::SetPermission {
            user: p.user,
            vhost: p.vhost.as_str().into(),
            configure: p.configure,
            write: p.write,
            read: p.read,
        },
        Change::ClearPermission(p) => Op::ClearPermission {
            user: p.user,
            vhost: p.vhost.as_str().into(),
        },
        Change::SetTopicPermission(p) => Op::SetTopicPermission {
            user: p.user,
            vhost: p.vhost.as_str().into(),
            exchange: p.exchange.as_str().into(),
            write: p.write,
            read: p.read,
        },
        Change::ClearTopicPermission(p) => Op::ClearTopicPermission {
            user: p.user,
            vhost: p.vhost.as_str().into(),
            exchange: p.exchange.map(|x| x.as_str().into()),
        },
        Change::SetVhostLimits(l) => Op::SetVhostLimits {
            vhost: l.vhost.as_str().into(),
            limits: limits(l.limits),
            replace: l.replace,
        },
        Change::ClearVhostLimits(l) => Op::ClearVhostLimits {
            vhost: l.vhost.as_str().into(),
            names: l.names,
        },
        Change::SetUserLimits(l) => Op::SetUserLimits {
            user: l.user,
            limits: limits(l.limits),
            replace: l.replace,
        },
        Change::ClearUserLimits(l) => Op::ClearUserLimits {
            user: l.user,
            names: l.names,
        },
        Change::SetPolicy(p) => Op::SetPolicy {
            vhost: p.vhost.as_str().into(),
            name: p.name,
            operator: p.operator,
            pattern: p.pattern,
            apply_to: p.apply_to,
            priority: p.priority,
            definition: warren_wire::decode_table(p.definition).map_err(|e| {
                Status::invalid_argument(format!("a policy definition that does not decode: {e}"))
            })?,
        },
        Change::ClearPolicy(p) => Op::ClearPolicy {
            vhost: p.vhost.as_str().into(),
            name: p.name,
            operator: p.operator,
        },
    })
}

fn limits(limits: Vec<warren_proto::access::Limit>) -> Vec<(String, i64)> {
    limits.into_iter().map(|l| (l.name, l.value)).collect()
}

#[tonic::async_trait]
impl Access for AccessService {
    async fn change(
        &self,
        request: Request<AccessChange>,
    ) -> Result<Response<AccessReply>, Status> {
        let request = request.into_inner();
        let route = self.route.borrow().clone();
        match route {
            Route::Unknown => Err(Status::unavailable(
                "the cluster has no leader right now; try again",
            )),
            Route::Remote { grpc_addr, .. } => {
                let mut leader =
                    AccessClient::new(warren_raft::dial::connect(&grpc_addr).await.map_err(
                        |e| Status::unavailable(format!("cannot reach the leader: {e}")),
                    )?);
                leader.change(request).await
            }
            Route::Local => {
                let change = request
                    .change
                    .ok_or_else(|| Status::invalid_argument("no change given"))?;
                let op = to_op(change)?;
                let (reply, checked) = oneshot::channel();
                self.broker
                    .send(ToBroker::CheckSecurity {
                        op: op.clone(),
                        reply,
                    })
                    .await
                    .map_err(|_| Status::unavailable("the broker has stopped"))?;
                checked
                    .await
                    .map_err(|_| Status::unavailable("the broker has stopped"))?
                    .map_err(Status::failed_precondition)?;
                let command = Command {
                    version: STATE_MACHINE_VERSION,
                    origin: None,
                    number: None,
                    issued_at: now_ms(),
                    op,
                };
                self.raft
                    .client_write(LogCommand(command))
                    .await
                    .map_err(|e| Status::unavailable(format!("not committed: {e}")))?;
                Ok(Response::new(AccessReply {}))
            }
        }
    }
}
