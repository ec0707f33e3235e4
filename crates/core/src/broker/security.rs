//! Vhosts, users, permissions, topic permissions and limits as replicated state: applying their
//! changes and deletions (what goes with them, which connections are closed) and checking a
//! change before it is proposed.

use warren_wire::ShortStr;

use super::Broker;
use crate::command::Op;
use crate::limits::{check_names, USER_LIMITS, VHOST_LIMITS};
use crate::topic_permission::TopicPermission;
use crate::user::Permission;
use crate::{AmqpError, ConnId, Effect};

impl Broker {
    /// [`Op::DeleteVhost`].
    pub(super) fn apply_delete_vhost(&mut self, name: &ShortStr, out: &mut Vec<Effect>) {
        if !self.vhosts.contains_key(name) {
            return;
        }
        self.policies.retain(|(v, _), _| v != name);
        self.operator_policies.retain(|(v, _), _| v != name);
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
        for vhosts in self.topic_permissions.values_mut() {
            vhosts.remove(name);
        }
        self.topic_permissions
            .retain(|_, vhosts| !vhosts.is_empty());
        self.vhost_limits.remove(name);
    }

    /// [`Op::DeleteUser`].
    pub(super) fn apply_delete_user(&mut self, name: &str, out: &mut Vec<Effect>) {
        if self.users.remove(name).is_none() {
            return;
        }
        self.permissions.retain(|(user, _), _| user != name);
        self.topic_permissions.remove(name);
        self.user_limits.remove(name);
        let conns: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.user.as_deref() == Some(name))
            .map(|(id, _)| *id)
            .collect();
        self.force_close(conns, &format!("user '{name}' is deleted"), out);
    }

    /// [`Op::SetTopicPermission`]: ignored if the user or the vhost is gone meanwhile (it was
    /// checked before it was proposed).
    pub(super) fn apply_set_topic_permission(
        &mut self,
        user: String,
        vhost: ShortStr,
        exchange: ShortStr,
        write: &str,
        read: &str,
    ) {
        if !self.users.contains_key(&user) || !self.vhosts.contains_key(&vhost) {
            return;
        }
        let permission = TopicPermission::new_or_deny(&user, &vhost, write, read);
        self.topic_permissions
            .entry(user)
            .or_default()
            .entry(vhost)
            .or_default()
            .insert(exchange, permission);
    }

    /// [`Op::ClearTopicPermission`]: one exchange's, or all of the user's in the vhost.
    pub(super) fn apply_clear_topic_permission(
        &mut self,
        user: &str,
        vhost: &ShortStr,
        exchange: Option<&ShortStr>,
    ) {
        let Some(vhosts) = self.topic_permissions.get_mut(user) else {
            return;
        };
        match exchange {
            Some(x) => {
                if let Some(exchanges) = vhosts.get_mut(vhost) {
                    exchanges.remove(x);
                    if exchanges.is_empty() {
                        vhosts.remove(vhost);
                    }
                }
            }
            None => {
                vhosts.remove(vhost);
            }
        }
        if vhosts.is_empty() {
            self.topic_permissions.remove(user);
        }
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

    /// Checks an operator's change (vhost, user, permission, topic permission, limits) against
    /// the current state before it is proposed: the user and vhost it names exist, its regexes
    /// compile (a topic permission's for its user and vhost), its limit names are known. `Err`
    /// is the operator's one-line error text. Other ops are not operator changes and are
    /// refused.
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
            Op::SetTopicPermission {
                user,
                vhost,
                exchange: _,
                write,
                read,
            } => {
                self.check_user_and_vhost(user, vhost)?;
                TopicPermission::new(user, vhost, write, read).map(|_| ())
            }
            Op::ClearTopicPermission {
                user,
                vhost,
                exchange,
            } => {
                let theirs = self
                    .topic_permissions
                    .get(user)
                    .and_then(|vhosts| vhosts.get(vhost));
                match (theirs, exchange) {
                    (Some(exchanges), Some(x)) if exchanges.contains_key(x) => Ok(()),
                    (Some(_), None) => Ok(()),
                    (_, Some(x)) => Err(format!(
                        "user '{user}' has no topic permission on exchange '{x}' in vhost '{vhost}'"
                    )),
                    (None, None) => Err(format!(
                        "user '{user}' has no topic permissions in vhost '{vhost}'"
                    )),
                }
            }
            Op::SetVhostLimits { vhost, limits, .. } => {
                self.check_vhost(vhost)?;
                check_names(limits, &VHOST_LIMITS, "vhost")
            }
            Op::ClearVhostLimits { vhost, .. } => self.check_vhost(vhost),
            Op::SetUserLimits { user, limits, .. } => {
                self.check_user(user)?;
                check_names(limits, &USER_LIMITS, "user")
            }
            Op::ClearUserLimits { user, .. } => self.check_user(user),
            Op::SetPolicy {
                vhost,
                name,
                operator,
                pattern,
                apply_to,
                priority,
                definition,
            } => {
                if !self.vhosts.contains_key(vhost) {
                    return Err(format!("vhost '{vhost}' does not exist"));
                }
                crate::policy::Policy::new(
                    name,
                    pattern,
                    apply_to,
                    *priority,
                    definition.clone(),
                    *operator,
                )
                .map(|_| ())
            }
            Op::ClearPolicy {
                vhost,
                name,
                operator,
            } => {
                let map = if *operator {
                    &self.operator_policies
                } else {
                    &self.policies
                };
                match map.contains_key(&(vhost.clone(), name.clone())) {
                    true => Ok(()),
                    false => Err(format!("policy '{name}' in vhost '{vhost}' does not exist")),
                }
            }
            _ => Err("not a vhost, user, permission or policy change".into()),
        }
    }

    fn check_vhost(&self, vhost: &ShortStr) -> Result<(), String> {
        match self.vhosts.contains_key(vhost) {
            true => Ok(()),
            false => Err(format!("vhost '{vhost}' does not exist")),
        }
    }

    fn check_user(&self, user: &str) -> Result<(), String> {
        match self.users.contains_key(user) {
            true => Ok(()),
            false => Err(format!("user '{user}' does not exist")),
        }
    }

    fn check_user_and_vhost(&self, user: &str, vhost: &ShortStr) -> Result<(), String> {
        self.check_user(user)?;
        self.check_vhost(vhost)
    }
}
