//! Taking and restoring [`Snapshot`]s of the replicated state (see [`crate::snapshot`]).

use std::collections::HashMap;
use std::sync::Arc;

use warren_wire::ShortStr;

use super::Broker;
use crate::exchange::Exchange;
use crate::limits::Limits;
use crate::message::{Message, Payload};
use crate::queue::{Entry, Queue, QueueArgs};
use crate::routing::ExchangeKind;
use crate::snapshot::{
    PackedEntries, Snapshot, SnapshotBinding, SnapshotEntry, SnapshotError, SnapshotExchange,
    SnapshotLimits, SnapshotMessage, SnapshotPermission, SnapshotPublisher, SnapshotQueue,
    SnapshotSecurity, SnapshotTopicPermission, SnapshotUser, SnapshotVhost,
};
use crate::topic_permission::TopicPermission;
use crate::user::{Permission, User};
use crate::vhost::Vhost;
use crate::{Effect, STATE_MACHINE_VERSION};

impl Broker {
    /// The replicated state as plain data. Bodies are shared, not copied; a message in several
    /// queues is listed once. Sorted, so equal states give equal snapshots.
    pub fn snapshot(&self) -> Snapshot {
        let mut vhosts: Vec<SnapshotVhost> = self
            .vhosts
            .iter()
            .map(|(name, v)| {
                let mut exchanges: Vec<SnapshotExchange> = v
                    .exchanges
                    .values()
                    .map(|x| {
                        let mut bindings: Vec<SnapshotBinding> = x
                            .bindings
                            .bindings()
                            .map(|b| SnapshotBinding {
                                destination: b.destination.clone(),
                                routing_key: b.routing_key.clone(),
                                arguments: b.arguments.clone(),
                            })
                            .collect();
                        bindings.sort_by(|a, b| {
                            (&a.destination, &a.routing_key).cmp(&(&b.destination, &b.routing_key))
                        });
                        SnapshotExchange {
                            name: x.name.clone(),
                            kind: ShortStr::from(x.kind.as_str()),
                            durable: x.durable,
                            auto_delete: x.auto_delete,
                            internal: x.internal,
                            arguments: x.arguments.clone(),
                            bindings,
                        }
                    })
                    .collect();
                exchanges.sort_by(|a, b| a.name.cmp(&b.name));
                SnapshotVhost {
                    name: name.clone(),
                    exchanges,
                }
            })
            .collect();
        vhosts.sort_by(|a, b| a.name.cmp(&b.name));

        let mut ids: Vec<_> = self.queues.keys().copied().collect();
        ids.sort_unstable();
        let mut messages = Vec::new();
        let mut index: HashMap<*const Message, u32> = HashMap::new();
        let mut queues = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(q) = self.queues.get(&id) else {
                continue;
            };
            // A local queue's messages are not replicated state (see `Queue::is_local`): the
            // snapshot, like the log, has its declaration only.
            let local = q.is_local();
            let mut entries = PackedEntries::default();
            let all = if local { None } else { Some(q.all_entries()) };
            for (seq, e) in all.into_iter().flatten() {
                let (message, stored) = match &e.message {
                    Payload::Stored(r) => (0, Some(*r)),
                    Payload::Loaded(m) => {
                        let key = Arc::as_ptr(m);
                        let message = *index.entry(key).or_insert_with(|| {
                            messages.push(SnapshotMessage {
                                exchange: m.exchange.clone(),
                                routing_key: m.routing_key.clone(),
                                properties: m.properties.clone(),
                                body: m.body.clone(),
                            });
                            (messages.len() - 1) as u32
                        });
                        (message, None)
                    }
                };
                entries.push(&SnapshotEntry {
                    seq,
                    message,
                    stored,
                    redelivered: e.redelivered,
                    expires_at: e.expires_at(),
                    priority: e.priority,
                    delivery_count: e.delivery_count,
                });
            }
            queues.push(SnapshotQueue {
                id,
                vhost: q.vhost.clone(),
                name: q.name.clone(),
                durable: q.durable,
                exclusive_owner: q.exclusive_owner,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
                next_seq: if local { 1 } else { q.next_seq() },
                had_consumer: q.had_consumer,
                last_used: q.last_used,
                home: q.home,
                declared_by: q.declared_by,
                entries,
            });
        }
        let mut publishers: Vec<SnapshotPublisher> = self
            .publishers
            .iter()
            .map(|(&(conn, channel), p)| SnapshotPublisher {
                conn,
                channel,
                seq: p.seq,
                at: p.at,
                missing: p.missing.iter().copied().collect(),
            })
            .collect();
        publishers.sort_by_key(|p| (p.conn, p.channel));
        let mut users: Vec<SnapshotUser> = self
            .users
            .values()
            .map(|u| SnapshotUser {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                tags: u.tags.clone(),
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let mut permissions: Vec<SnapshotPermission> = self
            .permissions
            .iter()
            .map(|((user, vhost), p)| SnapshotPermission {
                user: user.clone(),
                vhost: vhost.clone(),
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            })
            .collect();
        permissions.sort_by(|a, b| (&a.user, &a.vhost).cmp(&(&b.user, &b.vhost)));
        let (vhost_limits, user_limits) = self.limit_records();
        Snapshot {
            version: STATE_MACHINE_VERSION,
            next_queue_id: self.next_queue_id,
            vhosts,
            messages,
            queues,
            publishers,
            security: Some(SnapshotSecurity {
                users,
                permissions,
                topic_permissions: self.topic_permission_records(),
                vhost_limits,
                user_limits,
            }),
            policies: self.policy_records(),
        }
    }

    /// The policies and operator policies as a snapshot holds them.
    pub(super) fn policy_records(&self) -> Vec<crate::snapshot::SnapshotPolicy> {
        [(false, &self.policies), (true, &self.operator_policies)]
            .into_iter()
            .flat_map(|(operator, ps)| {
                ps.iter()
                    .map(move |((vhost, _), p)| crate::snapshot::SnapshotPolicy {
                        vhost: vhost.clone(),
                        name: p.name.clone(),
                        operator,
                        pattern: p.pattern.clone(),
                        apply_to: p.apply_to.as_str().to_owned(),
                        priority: p.priority,
                        definition: p.definition.clone(),
                    })
            })
            .collect()
    }

    /// Every topic permission, sorted by user, vhost, exchange (for snapshots and the view).
    pub(super) fn topic_permission_records(&self) -> Vec<SnapshotTopicPermission> {
        let mut records: Vec<SnapshotTopicPermission> = self
            .topic_permissions
            .iter()
            .flat_map(|(user, vhosts)| {
                vhosts.iter().flat_map(move |(vhost, exchanges)| {
                    exchanges
                        .iter()
                        .map(move |(exchange, p)| SnapshotTopicPermission {
                            user: user.clone(),
                            vhost: vhost.clone(),
                            exchange: exchange.clone(),
                            write: p.write.clone(),
                            read: p.read.clone(),
                        })
                })
            })
            .collect();
        records.sort_by(|a, b| {
            (&a.user, &a.vhost, &a.exchange).cmp(&(&b.user, &b.vhost, &b.exchange))
        });
        records
    }

    /// The limits of the vhosts and of the users that have any, each sorted by owner (for
    /// snapshots and the view).
    pub(super) fn limit_records(&self) -> (Vec<SnapshotLimits>, Vec<SnapshotLimits>) {
        let record = |owner: &str, l: &Limits| SnapshotLimits {
            owner: owner.to_owned(),
            limits: l.iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        };
        let mut vhosts: Vec<SnapshotLimits> = self
            .vhost_limits
            .iter()
            .map(|(v, l)| record(v, l))
            .collect();
        vhosts.sort_by(|a, b| a.owner.cmp(&b.owner));
        let mut users: Vec<SnapshotLimits> =
            self.user_limits.iter().map(|(u, l)| record(u, l)).collect();
        users.sort_by(|a, b| a.owner.cmp(&b.owner));
        (vhosts, users)
    }

    /// Replaces the replicated state with `snapshot`. This node's client connections stay;
    /// their consumers of queues the snapshot does not have are cancelled in `out`, and those
    /// whose user, vhost or permission it does not have are closed (320). Users, permissions,
    /// topic permissions and limits are replaced if the snapshot has them (format 3 on; topic
    /// permissions and limits from format 7, none before), kept otherwise; settings are kept. On
    /// error the broker is unchanged.
    pub fn restore(
        &mut self,
        snapshot: Snapshot,
        out: &mut Vec<Effect>,
    ) -> Result<(), SnapshotError> {
        if snapshot.version > STATE_MACHINE_VERSION {
            return Err(SnapshotError(format!(
                "state machine version {} is newer than this node's {}",
                snapshot.version, STATE_MACHINE_VERSION
            )));
        }
        let mut policies = super::policies::Policies::new();
        let mut operator_policies = super::policies::Policies::new();
        for p in &snapshot.policies {
            let policy = crate::policy::Policy::new(
                &p.name,
                &p.pattern,
                &p.apply_to,
                p.priority,
                p.definition.clone(),
                p.operator,
            )
            .map_err(SnapshotError)?;
            let map = if p.operator {
                &mut operator_policies
            } else {
                &mut policies
            };
            map.insert((p.vhost.clone(), p.name.clone()), policy);
        }
        let mut vhosts = HashMap::new();
        for v in snapshot.vhosts {
            let mut vhost = Vhost::new();
            vhost.exchanges.clear();
            for x in v.exchanges {
                let kind = ExchangeKind::parse(x.kind.as_str())
                    .ok_or_else(|| SnapshotError(format!("unknown exchange kind {}", x.kind)))?;
                let mut exchange = Exchange::new(
                    x.name.clone(),
                    kind,
                    x.durable,
                    x.auto_delete,
                    x.internal,
                    x.arguments,
                );
                for b in x.bindings {
                    exchange
                        .bindings
                        .bind(b.destination, b.routing_key.as_str(), &b.arguments);
                }
                vhost.exchanges.insert(x.name, exchange);
            }
            vhosts.insert(v.name, vhost);
        }
        let messages: Vec<Arc<Message>> = snapshot
            .messages
            .into_iter()
            .map(|m| {
                Arc::new(Message {
                    exchange: m.exchange,
                    routing_key: m.routing_key,
                    properties: m.properties,
                    body: m.body,
                })
            })
            .collect();
        let mut queues = HashMap::new();
        for sq in snapshot.queues {
            let args = QueueArgs::parse_existing(&sq.arguments).map_err(SnapshotError)?;
            let vhost = vhosts.get_mut(&sq.vhost).ok_or_else(|| {
                SnapshotError(format!("queue {} in unknown vhost {}", sq.name, sq.vhost))
            })?;
            vhost.queues.insert(sq.name.clone(), sq.id);
            let mut q = Queue::new(
                sq.id,
                sq.vhost,
                sq.name,
                sq.durable,
                sq.exclusive_owner,
                sq.auto_delete,
                sq.arguments,
                args,
                sq.last_used,
            );
            q.had_consumer = sq.had_consumer;
            q.home = sq.home;
            q.declared_by = sq.declared_by;
            let mut entries = Vec::with_capacity(sq.entries.len());
            for e in sq.entries.iter() {
                let e = e?;
                let message = match e.stored {
                    Some(r) => Payload::Stored(r),
                    None => Payload::Loaded(Arc::clone(
                        messages.get(e.message as usize).ok_or_else(|| {
                            SnapshotError(format!(
                                "entry refers to message {} of {}",
                                e.message,
                                messages.len()
                            ))
                        })?,
                    )),
                };
                entries.push((e.seq, {
                    let mut entry =
                        Entry::new(message, e.redelivered, e.expires_at).at_priority(e.priority);
                    entry.delivery_count = e.delivery_count;
                    entry
                }));
            }
            q.restore(sq.next_seq, entries);
            queues.insert(sq.id, q);
        }
        // What this broker decides outside the log stays: the local queues homed here that the
        // snapshot still has (their messages and consumers), and this node's client
        // connections using them.
        let node = self.config.node;
        for (id, q) in std::mem::take(&mut self.queues) {
            if q.is_local() && q.home == node && queues.contains_key(&id) {
                queues.insert(id, q);
            }
        }
        self.vhosts = vhosts;
        self.queues = queues;
        self.policies = policies;
        self.operator_policies = operator_policies;
        let mut names: Vec<ShortStr> = self.vhosts.keys().cloned().collect();
        names.sort();
        // The policies' settings only: what they would drop was dropped when they were set.
        let mut ignored = Vec::new();
        for vhost in names {
            self.refresh_policies(&vhost, &mut ignored);
        }
        self.forget_missing_queues(out);
        // A connection whose user, vhost or permission the snapshot no longer has is closed,
        // as if the change had been applied.
        let orphans: Vec<_> = self
            .connections
            .iter()
            .filter(|(_, c)| {
                let user = c.user.as_ref().is_some_and(|u| !self.users.contains_key(u));
                let vhost = c.vhost.as_ref().is_some_and(|v| {
                    !self.vhosts.contains_key(v)
                        || c.user.as_ref().is_some_and(|u| {
                            !self.permissions.contains_key(&(u.clone(), v.clone()))
                        })
                });
                user || vhost
            })
            .map(|(&id, _)| id)
            .collect();
        self.force_close(
            orphans,
            "node state replaced by a Raft snapshot without the connection's user, vhost or permission",
            out,
        );
        self.reattach_stream_consumers();
        self.next_queue_id = snapshot.next_queue_id;
        self.publishers = snapshot
            .publishers
            .iter()
            .map(|p| {
                (
                    (p.conn, p.channel),
                    super::publishers::Publisher {
                        seq: p.seq,
                        missing: p.missing.iter().copied().collect(),
                        at: p.at,
                    },
                )
            })
            .collect();
        if let Some(security) = snapshot.security {
            self.users = security
                .users
                .into_iter()
                .map(|u| {
                    (
                        u.name.clone(),
                        User {
                            name: u.name,
                            password_hash: u.password_hash,
                            tags: u.tags,
                        },
                    )
                })
                .collect();
            self.permissions = security
                .permissions
                .into_iter()
                .filter_map(|p| {
                    let perm = Permission::new(&p.configure, &p.write, &p.read).ok()?;
                    Some(((p.user, p.vhost), perm))
                })
                .collect();
            self.topic_permissions.clear();
            for p in security.topic_permissions {
                let permission = TopicPermission::new_or_deny(&p.user, &p.vhost, &p.write, &p.read);
                self.topic_permissions
                    .entry(p.user)
                    .or_default()
                    .entry(p.vhost)
                    .or_default()
                    .insert(p.exchange, permission);
            }
            self.vhost_limits = security
                .vhost_limits
                .into_iter()
                .map(|l| (ShortStr::from(l.owner), l.limits.into_iter().collect()))
                .collect();
            self.user_limits = security
                .user_limits
                .into_iter()
                .map(|l| (l.owner, l.limits.into_iter().collect()))
                .collect();
        }
        self.reply_to
            .retain(|_, (conn, _)| self.connections.contains_key(conn));
        Ok(())
    }

    /// After the queues were replaced: the stream consumers of this node's channels sit in
    /// their streams' consumer tables again (a stream's consumers read this node's replica;
    /// their offsets are their channels').
    fn reattach_stream_consumers(&mut self) {
        let mut attach = Vec::new();
        for (&conn, c) in &self.connections {
            for (&channel, ch) in &c.channels {
                for k in ch.consumers.values().filter(|k| k.stream_next.is_some()) {
                    let cref = crate::queue::ConsumerRef {
                        conn,
                        channel,
                        tag: k.tag.clone(),
                    };
                    let how = crate::consumers::Attach {
                        priority: k.priority,
                        no_ack: k.no_ack,
                        exclusive: k.exclusive,
                        remote: false,
                    };
                    attach.push((k.queue, cref, how));
                }
            }
        }
        for (id, cref, how) in attach {
            if let Some(q) = self.queues.get_mut(&id).filter(|q| q.is_stream()) {
                if !q.consumers.iter().any(|c| *c == cref) {
                    q.consumers.add(cref, crate::consumers::UNLIMITED, how);
                }
            }
        }
    }

    /// After the queues were replaced: consumers and unacked deliveries of the connections kept
    /// that refer to queues no longer there are dropped (the consumers told with `basic.cancel`).
    fn forget_missing_queues(&mut self, out: &mut Vec<Effect>) {
        let queues = &self.queues;
        for (&conn, c) in self.connections.iter_mut() {
            let notify = c.consumer_cancel_notify;
            for (&channel, ch) in c.channels.iter_mut() {
                ch.unacked.retain(|_, u| queues.contains_key(&u.queue));
                let gone: Vec<_> = ch
                    .consumers
                    .values()
                    .filter(|k| !queues.contains_key(&k.queue))
                    .map(|k| k.tag.clone())
                    .collect();
                for tag in gone {
                    ch.consumers.remove(&tag);
                    if notify {
                        out.push(Effect::Send {
                            conn,
                            channel,
                            method: warren_wire::Method::BasicCancel(warren_wire::BasicCancel {
                                consumer_tag: tag,
                                nowait: true,
                            }),
                        });
                    }
                }
            }
        }
    }
}

impl Broker {
    /// This node stopped leading: what its broker decided for the replicated queues ends and
    /// the new leader's decisions take over. The replicated queues' checked out messages are
    /// ready again on this replica and their consumers gone (this node's channels keep their
    /// consumers and unacked deliveries and attach to the next leader: `follow.rs`). This
    /// node's client connections, local queues and streams' consumers are untouched: this node
    /// still serves them.
    pub fn step_down(&mut self) {
        self.set_leading(false);
        self.follow_step_down();
        for q in self.queues.values_mut() {
            if !q.is_local() && !q.is_stream() {
                q.release_checked_out();
                q.consumers.clear();
            }
        }
    }
}
