//! RabbitMQ's topic authorisation on the AMQP 0-9-1 channel: a `basic.publish` to a topic
//! exchange needs the routing key to match the user's topic write pattern for that exchange, a
//! binding from one (queue or exchange, bind or unbind) the binding key to match the read
//! pattern. A user without a topic permission on the exchange is not restricted by it. The
//! permissions themselves are replicated state (`crate::topic_permission`), so every node's
//! broker decides alike.

use warren_wire::ShortStr;

use super::Broker;
use crate::routing::ExchangeKind;
use crate::user::Access;
use crate::{AmqpError, ConnId};

impl Broker {
    /// Checks `routing_key` against `user`'s topic permission for `access` on `exchange` in
    /// `vhost` (the caller knows the exchange is a topic exchange). `Err` is 403 with RabbitMQ's
    /// text; the channel closes. Costs one emptiness check when no user has a topic permission,
    /// and two hash lookups (no allocation) when this user has none in this vhost: it runs on
    /// every publish to a topic exchange. The pattern was compiled when the permission was set.
    pub(super) fn check_topic_access(
        &self,
        user: &str,
        vhost: &ShortStr,
        exchange: &str,
        access: Access,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        if self.topic_permissions.is_empty() {
            return Ok(());
        }
        let Some(permission) = self
            .topic_permissions
            .get(user)
            .and_then(|vhosts| vhosts.get(vhost))
            .and_then(|exchanges| exchanges.get(exchange))
        else {
            return Ok(());
        };
        if permission.allows(access, routing_key) {
            return Ok(());
        }
        // RabbitMQ 4.x's wording (rabbit_access_control:check_topic_access); 3.10 leaves out the
        // leading permission name.
        Err(AmqpError::access_refused(format!(
            "{} access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'",
            access.as_str()
        )))
    }

    /// The read check of a binding from `source` with `routing_key` on connection `conn`: only
    /// when `source` exists and is a topic exchange (RabbitMQ skips a missing one here and lets
    /// the binding fail on it).
    pub(super) fn check_topic_binding(
        &self,
        conn: ConnId,
        source: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        if self.topic_permissions.is_empty() {
            return Ok(());
        }
        let (vhost, user) = self.session(conn)?;
        let topic = self
            .vhosts
            .get(&vhost)
            .and_then(|v| v.exchanges.get(source))
            .is_some_and(|x| x.kind == ExchangeKind::Topic);
        if !topic {
            return Ok(());
        }
        self.check_topic_access(&user, &vhost, source, Access::Read, routing_key)
    }
}
