//! Vhosts, users and permissions as replicated state: applying their deletion (what goes with
//! them, which connections are closed) and checking a change before it is proposed.

use warren_wire::ShortStr;

use super::Broker;
use crate::command::Op;
use crate::user::Permission;
use crate::{AmqpError, ConnId, Effect};

impl Broker {
    /// [`Op::DeleteVhost`].
    pub(super) fn apply_delete_vhost(&mut self, name: &ShortStr, out: &mut Vec<Effect>) {
        if !self.vhosts.contains_key(name) {
            return;
        }
        let conns: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.vhost.as_ref() == Some(name))
            .map(|(id, _)| *id)
            .collect();
        self.force_close(conns, &format!("vhost '{name}' is deleted"), out);
        let mut queues: Vec<_> = self
            .queues
            .values()
            .filter(|q| &q.vhost == name)
            .map(|q| q.id)
            .collect();
        queues.sort_unstable();
        for id in queues {
            self.remove_queue(id, out);
        }
        self.vhosts.remove(name);
        self.permissions.retain(|(_, vhost), _| vhost != name);
    }

    /// [`Op::DeleteUser`].
    pub(super) fn apply_delete_user(&mut self, name: &str, out: &mut Vec<Effect>) {
        if self.users.remove(name).is_none() {
            return;
        }
        self.permissions.retain(|(user, _), _| user != name);
        let conns: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.user.as_deref() == Some(name))
            .map(|(id, _)| *id)
            .collect();
        self.force_close(conns, &format!("user '{name}' is deleted"), out);
    }

    /// Closes connections as an operator's change requires (RabbitMQ: CONNECTION_FORCED).
    pub(super) fn force_close(&mut self, mut conns: Vec<ConnId>, why: &str, out: &mut Vec<Effect>) {
        conns.sort_unstable();
        for conn in conns {
            self.close_connection_state(conn, out);
            out.push(Effect::CloseConnection {
                conn,
                error: AmqpError::new(320, why),
            });
        }
    }

    /// Checks a vhost/user/permission change against the current state before it is proposed:
    /// `Err` is the operator's error text. Other ops are not operator changes and are refused.
    pub fn check_security_change(&self, op: &Op) -> Result<(), String> {
        match op {
            Op::PutVhost { name } | Op::DeleteVhost { name } if name.is_empty() => {
                Err("a vhost name cannot be empty".into())
            }
            Op::PutVhost { .. } => Ok(()),
            Op::DeleteVhost { name } => match self.vhosts.contains_key(name) {
                true => Ok(()),
                false => Err(format!("vhost '{name}' does not exist")),
            },
            Op::PutUser { name, .. } if name.is_empty() => {
                Err("a user name cannot be empty".into())
            }
            Op::PutUser { .. } => Ok(()),
            Op::DeleteUser { name } => match self.users.contains_key(name) {
                true => Ok(()),
                false => Err(format!("user '{name}' does not exist")),
            },
            Op::SetPermission {
                user,
                vhost,
                configure,
                write,
                read,
            } => {
                if !self.users.contains_key(user) {
                    return Err(format!("user '{user}' does not exist"));
                }
                if !self.vhosts.contains_key(vhost) {
                    return Err(format!("vhost '{vhost}' does not exist"));
                }
                Permission::new(configure, write, read).map(|_| ())
            }
            Op::ClearPermission { user, vhost } => {
                match self
                    .permissions
                    .contains_key(&(user.clone(), vhost.clone()))
                {
                    true => Ok(()),
                    false => Err(format!(
                        "user '{user}' has no permission on vhost '{vhost}'"
                    )),
                }
            }
            _ => Err("not a vhost, user or permission change".into()),
        }
    }
}
