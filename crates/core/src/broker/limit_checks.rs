//! Enforcing vhost and user limits with RabbitMQ's reply codes and texts: `max-connections`
//! (vhost and user) at `connection.open`, a user's `max-channels` at `channel.open` (both 530
//! NOT_ALLOWED, closing the connection) and a vhost's `max-queues` when a queue declare is
//! applied (406 PRECONDITION_FAILED, closing the channel).
//!
//! Connections and channels are counted by the leader's broker, which holds every client
//! connection of the cluster: a node that does not lead relays its clients' logins and channel
//! opens there, and after a leader change the clients' nodes resume them on the new leader
//! ([`crate::Input::Resume`]), where they count again. A client connection counts once: the
//! *home sessions* a connection opens on brokers of other nodes (and on its own node's) are
//! not connections of their own. Queues are counted when the declare is applied, in the log's
//! order, so every replica agrees and two declares racing for the last place cannot both win.

use warren_wire::ShortStr;

use super::{Broker, Ctx};
use crate::connection::Connection;
use crate::limits::{reached, MAX_CHANNELS, MAX_CONNECTIONS, MAX_QUEUES};
use crate::AmqpError;

impl Broker {
    /// The client connections that opened a vhost (home sessions are parts of them, not more).
    fn client_connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections
            .values()
            .filter(|c| c.home_of.is_none() && c.vhost.is_some())
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
            let count = self
                .client_connections()
                .filter(|c| c.vhost.as_ref() == Some(vhost))
                .count();
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
            let count = self
                .client_connections()
                .filter(|c| c.user.as_deref() == Some(user))
                .count();
            if reached(Some(limit), count) {
                return Err(AmqpError::not_allowed(format!(
                    "connection refused for user '{user}': user connection limit ({limit}) is reached"
                )));
            }
        }
        Ok(())
    }

    /// Checks, at `channel.open` on `ctx`, the user's `max-channels` over all of the user's
    /// client connections (a home session's channels are its client's, already counted).
    /// `Err` is 530 NOT_ALLOWED for no method (RabbitMQ's reader refuses the channel before any
    /// method reaches it), which closes the connection.
    pub(super) fn check_channel_limit(&self, ctx: Ctx) -> Result<(), AmqpError> {
        let Some(c) = self.connections.get(&ctx.conn) else {
            return Ok(());
        };
        let (None, Some(user)) = (c.home_of, c.user.as_deref()) else {
            return Ok(());
        };
        let Some(limit) = self.user_limits.get(user).and_then(|l| l.get(MAX_CHANNELS)) else {
            return Ok(());
        };
        let count: usize = self
            .client_connections()
            .filter(|c| c.user.as_deref() == Some(user))
            .map(|c| c.channels.len())
            .sum();
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
