//! Enforcing vhost and user limits with RabbitMQ's reply codes and texts: `max-connections`
//! (vhost and user) at `connection.open`, a user's `max-channels` at `channel.open` (both 530
//! NOT_ALLOWED, closing the connection) and a vhost's `max-queues` when a queue declare is
//! applied (406 PRECONDITION_FAILED, closing the channel).
//!
//! Connections and channels are counted by the broker of each node for its own client
//! connections (a client talks to its own node's broker only), and the nodes share their
//! counts (`ClientCounts`, sent on the home streams whenever they change): a limit is checked
//! against this node's count plus the last counts of its peers (dropped when a peer's stream
//! breaks or the node is removed). Like RabbitMQ's connection tracking, this is a sum of
//! per-node tables, not a consensus: two nodes admitting a connection at the same moment may
//! both see room for one. Queues are counted when the declare is applied, in the log's order,
//! so every replica agrees and two declares racing for the last place cannot both win.

use warren_wire::ShortStr;

use std::collections::BTreeMap;

use super::{Broker, Ctx};
use crate::limits::{reached, ClientCounts, MAX_CHANNELS, MAX_CONNECTIONS, MAX_QUEUES};
use crate::AmqpError;

impl Broker {
    /// This node's counts of its client connections (those that opened a vhost) and their
    /// channels.
    pub fn client_counts(&self) -> ClientCounts {
        let mut counts = ClientCounts::default();
        for c in self.connections.values() {
            let (Some(vhost), Some(user)) = (&c.vhost, &c.user) else {
                continue;
            };
            *counts
                .vhost_connections
                .entry(vhost.to_string())
                .or_default() += 1;
            *counts.user_connections.entry(user.clone()).or_default() += 1;
            if !c.channels.is_empty() {
                *counts.user_channels.entry(user.clone()).or_default() +=
                    u32::try_from(c.channels.len()).unwrap_or(u32::MAX);
            }
        }
        counts
    }

    /// This node's counts if they changed since the last call (to share with the peers).
    pub fn take_changed_counts(&mut self) -> Option<ClientCounts> {
        if !std::mem::take(&mut self.counts_changed) {
            return None;
        }
        Some(self.client_counts())
    }

    /// [`crate::Input::PeerCounts`]: node `node`'s counts (empty ones forget it).
    pub(super) fn peer_counts(&mut self, node: u64, counts: ClientCounts) {
        if counts.is_empty() {
            self.peer_counts.remove(&node);
        } else {
            self.peer_counts.insert(node, counts);
        }
    }

    /// The cluster's count of `which` for `key`: this node's and its peers' last ones.
    fn cluster_count(
        &self,
        which: fn(&ClientCounts) -> &BTreeMap<String, u32>,
        key: &str,
    ) -> usize {
        let own = self.client_counts();
        std::iter::once(&own)
            .chain(self.peer_counts.values())
            .filter_map(|c| which(c).get(key))
            .map(|&n| n as usize)
            .sum()
    }

    /// Checks, at `connection.open` of `vhost` by `user`, the vhost's and then the user's
    /// `max-connections`, as RabbitMQ's reader does (its connection does not count yet: it has
    /// no vhost). Counts only when a limit is set. `Err` is 530 NOT_ALLOWED.
    pub(super) fn check_connection_limits(
        &self,
        vhost: &ShortStr,
        user: &str,
    ) -> Result<(), AmqpError> {
        if let Some(limit) = self
            .vhost_limits
            .get(vhost)
            .and_then(|l| l.get(MAX_CONNECTIONS))
        {
            let count = self.cluster_count(|c| &c.vhost_connections, vhost.as_str());
            if reached(Some(limit), count) {
                return Err(AmqpError::not_allowed(format!(
                    "access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
                )));
            }
        }
        if let Some(limit) = self
            .user_limits
            .get(user)
            .and_then(|l| l.get(MAX_CONNECTIONS))
        {
            let count = self.cluster_count(|c| &c.user_connections, user);
            if reached(Some(limit), count) {
                return Err(AmqpError::not_allowed(format!(
                    "connection refused for user '{user}': user connection limit ({limit}) is reached"
                )));
            }
        }
        Ok(())
    }

    /// Checks, at `channel.open` on `ctx`, the user's `max-channels` over all of the user's
    /// client connections, on every node. `Err` is 530 NOT_ALLOWED for no method (RabbitMQ's
    /// reader refuses the channel before any method reaches it), which closes the connection.
    pub(super) fn check_channel_limit(&self, ctx: Ctx) -> Result<(), AmqpError> {
        let Some(user) = self
            .connections
            .get(&ctx.conn)
            .and_then(|c| c.user.as_deref())
        else {
            return Ok(());
        };
        let Some(limit) = self.user_limits.get(user).and_then(|l| l.get(MAX_CHANNELS)) else {
            return Ok(());
        };
        let count = self.cluster_count(|c| &c.user_channels, user);
        if reached(Some(limit), count) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
            ))
            .caused_by(0, 0));
        }
        Ok(())
    }

    /// Checks, when a declare that would create queue `name` is applied, the vhost's
    /// `max-queues` against the queues it has (every kind of queue counts). `Err` is 406 with
    /// RabbitMQ's text.
    pub(super) fn check_queue_limit(&self, vhost: &ShortStr, name: &str) -> Result<(), AmqpError> {
        let Some(limit) = self.vhost_limits.get(vhost).and_then(|l| l.get(MAX_QUEUES)) else {
            return Ok(());
        };
        let count = self.vhosts.get(vhost).map_or(0, |v| v.queues.len());
        if reached(Some(limit), count) {
            return Err(AmqpError::precondition_failed(format!(
                "cannot declare queue '{name}': queue limit in vhost '{vhost}' ({limit}) is reached"
            )));
        }
        Ok(())
    }
}
