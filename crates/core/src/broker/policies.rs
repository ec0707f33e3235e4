//! Policies and operator policies applied (`Op::SetPolicy`, `Op::ClearPolicy`): which policy
//! each queue and exchange of a vhost follows, and the settings that gives it (see
//! [`crate::policy`]). Every change recomputes the vhost's objects at once, on every replica.

use std::collections::BTreeMap;

use warren_wire::{FieldTable, ShortStr};

use super::Broker;
use crate::policy::{self, Policy};
use crate::queue::{Overflow, QueueArgs, QueueId};
use crate::{AmqpError, Effect};

/// Policies by (vhost, name).
pub(crate) type Policies = BTreeMap<(ShortStr, String), Policy>;

impl Broker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_set_policy(
        &mut self,
        vhost: ShortStr,
        name: String,
        operator: bool,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: FieldTable,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if !self.vhosts.contains_key(&vhost) {
            return Err(AmqpError::not_found(format!("no vhost '{vhost}'")));
        }
        let p = Policy::new(&name, pattern, apply_to, priority, definition, operator)
            .map_err(AmqpError::precondition_failed)?;
        self.policies_of(operator).insert((vhost.clone(), name), p);
        self.refresh_policies(&vhost, out);
        Ok(())
    }

    pub(super) fn apply_clear_policy(
        &mut self,
        vhost: ShortStr,
        name: String,
        operator: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if self
            .policies_of(operator)
            .remove(&(vhost.clone(), name.clone()))
            .is_none()
        {
            return Err(AmqpError::not_found(format!(
                "no policy '{name}' in vhost '{vhost}'"
            )));
        }
        self.refresh_policies(&vhost, out);
        Ok(())
    }

    fn policies_of(&mut self, operator: bool) -> &mut Policies {
        if operator {
            &mut self.operator_policies
        } else {
            &mut self.policies
        }
    }

    /// Every queue and exchange of `vhost` follows the policies as they are now.
    pub(crate) fn refresh_policies(&mut self, vhost: &ShortStr, out: &mut Vec<Effect>) {
        let mut ids: Vec<QueueId> = self
            .queues
            .values()
            .filter(|q| &q.vhost == vhost)
            .map(|q| q.id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.apply_policies_to_queue(id, out);
        }
        let names: Vec<ShortStr> = self
            .vhosts
            .get(vhost)
            .map(|v| v.exchanges.keys().cloned().collect())
            .unwrap_or_default();
        for name in names {
            self.apply_policies_to_exchange(vhost, &name);
        }
    }

    /// Exchange `name` of `vhost` follows the policy that matches it now (its
    /// `alternate-exchange`, unless the exchange has its own).
    pub(crate) fn apply_policies_to_exchange(&mut self, vhost: &ShortStr, name: &ShortStr) {
        let chosen = policy::for_exchange(
            self.policies
                .iter()
                .filter(|((pv, _), _)| pv == vhost)
                .map(|(_, p)| p),
            name,
        );
        let policy = chosen.map(|p| p.name.clone());
        let alternate = chosen
            .and_then(|p| p.definition.get("alternate-exchange"))
            .and_then(|v| v.as_str())
            .map(ShortStr::from);
        if let Some(x) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.exchanges.get_mut(name))
        {
            x.policy = policy;
            x.policy_alternate = alternate;
        }
    }

    /// Queue `id` follows the policy and operator policy that match it now.
    pub(crate) fn apply_policies_to_queue(&mut self, id: QueueId, out: &mut Vec<Effect>) {
        let Some(q) = self.queues.get(&id) else {
            return;
        };
        let quorum = q.is_quorum();
        let kind = if q.is_stream() {
            policy::QueueKind::Stream
        } else if quorum {
            policy::QueueKind::Quorum
        } else {
            policy::QueueKind::Classic
        };
        let of = |ps: &'_ Policies| {
            policy::for_queue(
                ps.iter()
                    .filter(|((pv, _), _)| *pv == q.vhost)
                    .map(|(_, p)| p),
                &q.name,
                kind,
            )
            .cloned()
        };
        let (user, operator) = (of(&self.policies), of(&self.operator_policies));
        let (merged, shown) = policy::effective_queue_arguments(
            &q.arguments,
            user.as_ref(),
            operator.as_ref(),
            quorum,
        );
        // The declaration's own arguments were checked when it was made; a policy's are
        // checked when it is set. Should the two still not parse together, the queue keeps
        // its own.
        let args =
            QueueArgs::parse_existing(&merged).or_else(|_| QueueArgs::parse_existing(&q.arguments));
        let Some(q) = self.queues.get_mut(&id) else {
            return;
        };
        if let Ok(args) = args {
            q.args = args;
        }
        q.policy = user.map(|p| p.name);
        q.operator_policy = operator.map(|p| p.name);
        q.effective_policy = shown;
        // A lower length limit takes effect at once, as RabbitMQ's: with drop-head (the
        // default) the oldest messages go, dead-lettered as `maxlen`.
        let mut dropped = Vec::new();
        if matches!(q.args.overflow, None | Some(Overflow::DropHead)) {
            while q.over_length_limit() {
                match q.drop_head() {
                    Some(e) => dropped.push(e),
                    None => break,
                }
            }
        }
        for e in dropped {
            self.dead_letter(id, e, "maxlen", out);
        }
    }
}
