//! The operator's read-only picture of the broker ([`Broker::view`]): listings for the management
//! API and metrics. Nothing here changes state.

use crate::channel::Mode;
use crate::command::Destination;
use crate::view::{
    args, BindingView, BrokerView, ChannelView, ConnectionView, ConsumerView, ExchangeView,
    LimitsView, PermissionView, QueueView, TopicPermissionView, UserView,
};

use super::Broker;

/// The client property a node adds to a connection's login with RabbitMQ's connection name
/// (`client-ip:port -> server-ip:port`): the node that holds the socket knows it, the deciding
/// broker shows it. It travels with the relayed login and the resumed session; it is shown as the
/// connection's name and left out of its client properties.
pub const CONNECTION_NAME_PROPERTY: &str = "warren.connection_name";

/// The client property a node adds to the login of a connection it opened for a client of
/// another protocol (`STOMP 1.2`: see `warren-stomp`), removed from the login of an AMQP
/// client that sends it. Shown as the connection's protocol and left out of its client
/// properties.
pub const CONNECTION_PROTOCOL_PROPERTY: &str = "warren.protocol";

impl Broker {
    /// How many messages the replicated queues hold, ready or checked out: the size of the
    /// index a snapshot writes (the Raft layer spaces snapshots by it).
    pub fn replicated_backlog(&self) -> u64 {
        let replicated = self.queues.values().filter(|q| !q.is_local());
        replicated
            .map(|q| u64::from(q.ready_count()) + q.unacked_count())
            .sum()
    }

    /// Everything an operator can list, sorted by vhost then name (connections and channels by
    /// id). Counters are this broker's own since it was built (see [`crate::view`]).
    pub fn view(&self) -> BrokerView {
        let mut view = BrokerView::default();
        let mut vhosts: Vec<_> = self.vhosts.iter().collect();
        vhosts.sort_by(|a, b| a.0.cmp(b.0));
        for (vname, vhost) in vhosts {
            view.vhosts.push(vname.to_string());
            let mut exchanges: Vec<_> = vhost.exchanges.values().collect();
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            for x in exchanges {
                view.exchanges.push(ExchangeView {
                    vhost: vname.to_string(),
                    name: x.name.to_string(),
                    kind: x.kind.as_str().to_owned(),
                    durable: x.durable,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: args(&x.arguments),
                    publish_in: x.publish_in,
                    publish_out: x.publish_out,
                    policy: x.policy.clone(),
                });
                let mut bindings: Vec<BindingView> = x
                    .bindings
                    .bindings()
                    .map(|b| {
                        let (destination, destination_type) = match &b.destination {
                            Destination::Queue(q) => (q.to_string(), "queue"),
                            Destination::Exchange(e) => (e.to_string(), "exchange"),
                        };
                        BindingView {
                            vhost: vname.to_string(),
                            source: x.name.to_string(),
                            destination,
                            destination_type: destination_type.to_owned(),
                            routing_key: b.routing_key.to_string(),
                            arguments: args(&b.arguments),
                        }
                    })
                    .collect();
                bindings.sort_by(|a, b| {
                    (&a.destination, &a.routing_key).cmp(&(&b.destination, &b.routing_key))
                });
                view.bindings.extend(bindings);
            }
            let mut queues: Vec<_> = vhost
                .queues
                .values()
                .filter_map(|id| self.queues.get(id))
                .collect();
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            for q in queues {
                let mut published_from: Vec<(String, u64)> = q
                    .published_from
                    .iter()
                    .map(|(x, n)| (x.to_string(), *n))
                    .collect();
                published_from.sort();
                view.queues.push(QueueView {
                    vhost: vname.to_string(),
                    name: q.name.to_string(),
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    exclusive_owner: q.exclusive_owner,
                    arguments: args(&q.arguments),
                    messages_ready: u64::from(q.ready_count()),
                    messages_unacknowledged: q.unacked_count(),
                    message_bytes_ready: q.ready_bytes(),
                    consumers: q.consumer_count(),
                    counters: q.counters,
                    published_from,
                    home: q.is_local().then_some(q.home),
                    single_active_consumer_tag: q
                        .single_active_consumer()
                        .map(|c| c.tag.to_string()),
                    policy: q.policy.clone(),
                    operator_policy: q.operator_policy.clone(),
                    effective_policy_definition: args(&q.effective_policy),
                });
            }
        }
        let mut conns: Vec<_> = self.connections.iter().collect();
        conns.sort_by_key(|(id, _)| **id);
        for (&conn, c) in conns {
            let user = c.user.clone().unwrap_or_default();
            let name = c
                .client_properties
                .get(CONNECTION_NAME_PROPERTY)
                .and_then(|v| v.as_str())
                .map_or_else(|| conn.to_string(), str::to_owned);
            if c.paused {
                view.in_flow.push(conn);
            }
            let protocol = c
                .client_properties
                .get(CONNECTION_PROTOCOL_PROPERTY)
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let mut client_properties = args(&c.client_properties);
            client_properties.retain(|(k, _)| {
                k != CONNECTION_NAME_PROPERTY && k != CONNECTION_PROTOCOL_PROPERTY
            });
            view.connections.push(ConnectionView {
                conn,
                name,
                user: user.clone(),
                vhost: c.vhost.as_ref().map(|v| v.to_string()),
                channels: u32::try_from(c.channels.len()).unwrap_or(u32::MAX),
                connected_at: c.connected_at,
                client_properties,
                flow: c.paused,
                protocol,
            });
            let vhost = c.vhost.as_ref().map(|v| v.to_string()).unwrap_or_default();
            for (&number, ch) in &c.channels {
                view.channels.push(ChannelView {
                    conn,
                    number,
                    user: user.clone(),
                    vhost: vhost.clone(),
                    consumers: u32::try_from(ch.consumers.len()).unwrap_or(u32::MAX),
                    messages_unacknowledged: ch.unacked.len() as u64,
                    prefetch_count: ch.prefetch_consumer,
                    global_prefetch_count: ch.prefetch_global,
                    confirm: matches!(ch.mode, Mode::Confirm { .. }),
                    transactional: matches!(ch.mode, Mode::Tx { .. }),
                });
                let mut consumers: Vec<_> = ch.consumers.values().collect();
                consumers.sort_by(|a, b| a.tag.cmp(&b.tag));
                for k in consumers {
                    let Some(q) = self.queues.get(&k.queue) else {
                        continue;
                    };
                    let exclusive = q
                        .consumers
                        .exclusive()
                        .is_some_and(|e| e.conn == conn && e.channel == number && e.tag == k.tag);
                    view.consumers.push(ConsumerView {
                        conn,
                        channel: number,
                        tag: k.tag.to_string(),
                        vhost: q.vhost.to_string(),
                        queue: q.name.to_string(),
                        ack_required: !k.no_ack,
                        prefetch_count: k.prefetch,
                        exclusive,
                        active: q.single_active_consumer().is_none_or(|a| {
                            a.conn == conn && a.channel == number && a.tag == k.tag
                        }),
                    });
                }
            }
        }
        let mut users: Vec<_> = self.users.values().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        view.users = users
            .into_iter()
            .map(|u| UserView {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                tags: u.tags.clone(),
            })
            .collect();
        let mut permissions: Vec<_> = self.permissions.iter().collect();
        permissions.sort_by(|a, b| a.0.cmp(b.0));
        view.permissions = permissions
            .into_iter()
            .map(|((user, vhost), p)| PermissionView {
                user: user.clone(),
                vhost: vhost.to_string(),
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            })
            .collect();
        view.topic_permissions = self
            .topic_permission_records()
            .into_iter()
            .map(|p| TopicPermissionView {
                user: p.user,
                vhost: p.vhost.to_string(),
                exchange: p.exchange.to_string(),
                write: p.write,
                read: p.read,
            })
            .collect();
        let (vhost_limits, user_limits) = self.limit_records();
        let limits = |l: crate::snapshot::SnapshotLimits| LimitsView {
            owner: l.owner,
            limits: l.limits,
        };
        view.vhost_limits = vhost_limits.into_iter().map(limits).collect();
        view.user_limits = user_limits.into_iter().map(limits).collect();
        view.policies = self
            .policy_records()
            .into_iter()
            .map(|p| crate::view::PolicyView {
                vhost: p.vhost.to_string(),
                name: p.name,
                operator: p.operator,
                pattern: p.pattern,
                apply_to: p.apply_to,
                priority: p.priority,
                definition: args(&p.definition),
            })
            .collect();
        view
    }

    /// An operator closes a connection (management API): 320 CONNECTION_FORCED with `why`, as
    /// RabbitMQ's `close_connection`. Unknown connections are ignored.
    pub(super) fn close_by_operator(
        &mut self,
        conn: crate::ConnId,
        why: &str,
        out: &mut Vec<crate::Effect>,
    ) {
        if self.connections.contains_key(&conn) {
            self.force_close(vec![conn], why, out);
        }
    }
}
