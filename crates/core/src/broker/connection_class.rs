//! Connection life cycle in the core: login (SASL already decoded by the runtime), vhost access and
//! connection limits on `connection.open`, back-pressure state, and the cleanup when a connection
//! ends.

use warren_wire::{ConnectionOpenOk, FieldTable, Method, ShortStr};

use super::Broker;
use crate::connection::Connection;
use crate::{AmqpError, ConnId, Effect};

impl Broker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn login(
        &mut self,
        conn: ConnId,
        mechanism: &str,
        username: &str,
        password: &str,
        peer_loopback: bool,
        client_properties: &FieldTable,
        out: &mut Vec<Effect>,
    ) {
        // SASL EXTERNAL: the runtime verified the client's TLS certificate and took the user
        // name from it; the user must exist, no password is asked (as RabbitMQ's
        // rabbitmq_auth_mechanism_ssl). Only a node's own sessions make such a login.
        let external = mechanism == "EXTERNAL";
        let password_ok = self
            .users
            .get(username)
            .is_some_and(|u| external || u.check_password(password));
        let loopback_ok =
            peer_loopback || !self.config.loopback_users.iter().any(|u| u == username);
        if !(password_ok && loopback_ok) {
            // RabbitMQ's text; the reason (bad password, unknown user, loopback-only user) is
            // logged by the runtime, never told to the client.
            out.push(Effect::CloseConnection {
                conn,
                error: AmqpError::access_refused(format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                ))
                .caused_by(10, 11),
            });
            return;
        }
        let mut connection = Connection::new();
        connection.user = Some(username.to_owned());
        connection.set_client_properties(client_properties);
        connection.connected_at = self.now;
        self.connections.insert(conn, connection);
        out.push(Effect::Authenticated {
            conn,
            user: username.to_owned(),
        });
    }

    pub(super) fn open_vhost(&mut self, conn: ConnId, vhost: &str, out: &mut Vec<Effect>) {
        let Some(user) = self.connections.get(&conn).and_then(|c| c.user.clone()) else {
            out.push(Effect::CloseConnection {
                conn,
                error: AmqpError::command_invalid("connection.open before login").caused_by(10, 40),
            });
            return;
        };
        let name = ShortStr::from(vhost);
        let error = if !self.vhosts.contains_key(&name) {
            Some(AmqpError::not_allowed(format!("vhost {vhost} not found")))
        } else if let Err(e) = self.check_connection_limits(&name, &user) {
            // RabbitMQ checks the limits before the user's access to the vhost.
            Some(e)
        } else if !self.permissions.contains_key(&(user.clone(), name.clone())) {
            Some(AmqpError::not_allowed(format!(
                "access to vhost '{vhost}' refused for user '{user}'"
            )))
        } else {
            None
        };
        if let Some(error) = error {
            self.connections.remove(&conn);
            out.push(Effect::CloseConnection {
                conn,
                error: error.caused_by(10, 40),
            });
            return;
        }
        if let Some(c) = self.connections.get_mut(&conn) {
            c.vhost = Some(name);
            self.counts_changed = true;
        }
        out.push(Effect::Send {
            conn,
            channel: 0,
            method: Method::ConnectionOpenOk(ConnectionOpenOk {
                known_hosts: ShortStr::default(),
            }),
        });
    }

    pub(super) fn set_writable(&mut self, conn: ConnId, writable: bool, out: &mut Vec<Effect>) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        c.writable = writable;
        if writable {
            c.credit = crate::connection::DELIVERY_CREDIT_BYTES;
            c.awaiting_writable = false;
            self.pay_owed_credit(conn, out);
            let Some(c) = self.connections.get(&conn) else {
                return;
            };
            let queues: Vec<_> = c
                .channels
                .values()
                .flat_map(|ch| ch.consumers.values().map(|c| c.queue))
                .collect();
            for q in queues {
                self.deliver(q, out);
            }
        }
    }

    /// Drops everything the connection owned: channels (unacked messages requeued, consumers
    /// cancelled), exclusive queues, direct reply-to addresses. Idempotent.
    pub(crate) fn close_connection_state(&mut self, conn: ConnId, out: &mut Vec<Effect>) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let channels: Vec<_> = c.channels.keys().copied().collect();
        for channel in channels {
            self.close_channel_state(super::Ctx { conn, channel }, out);
        }
        let mut exclusive: Vec<_> = self
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(conn) && self.decides(q))
            .map(|q| q.id)
            .collect();
        exclusive.sort_unstable();
        if self
            .connections
            .remove(&conn)
            .is_some_and(|c| c.vhost.is_some())
        {
            self.counts_changed = true;
        }
        for id in exclusive {
            self.propose_removal(id, out);
        }
    }
}
