//! `exchange.*` methods: declare, delete, exchange-to-exchange bind/unbind; and applying the
//! binding commands shared with `queue.bind`/`queue.unbind`.

use warren_wire::{
    ExchangeBind, ExchangeBindOk, ExchangeDeclare, ExchangeDeclareOk, ExchangeDelete,
    ExchangeDeleteOk, ExchangeUnbind, ExchangeUnbindOk, FieldTable, Method, QueueBindOk,
    QueueUnbindOk, ShortStr,
};

use super::{Broker, Ctx};
use crate::command::{Destination, Op, Origin};
use crate::exchange::Exchange;
use crate::routing::{validate_headers_binding, ExchangeKind};
use crate::user::Access;
use crate::{AmqpError, Effect};

/// RabbitMQ refuses client-declared names with this prefix.
const RESERVED_PREFIX: &str = "amq.";

pub(crate) fn no_exchange(name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!("no exchange '{name}' in vhost '{vhost}'"))
}

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

impl Broker {
    pub(super) fn exchange_declare(
        &mut self,
        ctx: Ctx,
        m: ExchangeDeclare,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        if m.passive {
            let exists = self
                .vhosts
                .get(&vhost)
                .is_some_and(|v| v.exchanges.contains_key(&m.exchange));
            if !exists {
                return Err(no_exchange(&m.exchange, &vhost));
            }
            if !m.nowait {
                self.reply(ctx, Method::ExchangeDeclareOk(ExchangeDeclareOk {}), out);
            }
            return Ok(());
        }
        if m.exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        self.check_access(ctx.conn, Access::Configure, "exchange", &m.exchange)?;
        if m.exchange.starts_with(RESERVED_PREFIX) {
            let exists = self
                .vhosts
                .get(&vhost)
                .is_some_and(|v| v.exchanges.contains_key(&m.exchange));
            if !exists {
                return Err(AmqpError::access_refused(format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    m.exchange
                )));
            }
        }
        if ExchangeKind::parse(&m.kind).is_none() {
            return Err(AmqpError::command_invalid(format!(
                "unknown exchange type '{}'",
                m.kind
            )));
        }
        if let Some(ae) = m.arguments.get("alternate-exchange") {
            if ae.as_str().is_none() {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg 'alternate-exchange' for exchange '{}' in vhost '{vhost}': {{unacceptable_type,{}}}",
                    m.exchange,
                    crate::queue::type_name(ae)
                )));
            }
        }
        self.submit(
            Some(ctx.origin()),
            Op::DeclareExchange {
                vhost,
                name: m.exchange,
                kind: m.kind,
                durable: m.durable,
                auto_delete: m.auto_delete,
                internal: m.internal,
                arguments: m.arguments,
                nowait: m.nowait,
            },
            out,
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_declare_exchange(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        name: ShortStr,
        kind: &str,
        (durable, auto_delete, internal): (bool, bool, bool),
        arguments: FieldTable,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let kind = ExchangeKind::parse(kind)
            .ok_or_else(|| AmqpError::command_invalid(format!("unknown exchange type '{kind}'")))?;
        let v = self
            .vhosts
            .get_mut(vhost)
            .ok_or_else(|| AmqpError::not_found(format!("no vhost '{vhost}'")))?;
        if let Some(x) = v.exchanges.get(&name) {
            let inequivalent = |arg: &str, received: &str, current: &str| {
                AmqpError::precondition_failed(format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': received '{received}' but current is '{current}'"
                ))
            };
            if x.kind != kind {
                return Err(inequivalent("type", kind.as_str(), x.kind.as_str()));
            }
            if x.durable != durable {
                return Err(inequivalent(
                    "durable",
                    &durable.to_string(),
                    &x.durable.to_string(),
                ));
            }
            if x.auto_delete != auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    &auto_delete.to_string(),
                    &x.auto_delete.to_string(),
                ));
            }
            if x.internal != internal {
                return Err(inequivalent(
                    "internal",
                    &internal.to_string(),
                    &x.internal.to_string(),
                ));
            }
            let (old_ae, new_ae) = (
                x.arguments.get("alternate-exchange"),
                arguments.get("alternate-exchange"),
            );
            if old_ae != new_ae {
                return Err(AmqpError::precondition_failed(format!(
                    "inequivalent arg 'alternate-exchange' for exchange '{name}' in vhost '{vhost}': received {} but current is {}",
                    describe_arg(new_ae),
                    describe_arg(old_ae)
                )));
            }
        } else {
            let x = Exchange::new(
                name.clone(),
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
            );
            v.exchanges.insert(name.clone(), x);
            self.apply_policies_to_exchange(vhost, &name);
        }
        if !nowait {
            Self::reply_origin(origin, Method::ExchangeDeclareOk(ExchangeDeclareOk {}), out);
        }
        Ok(())
    }

    pub(super) fn exchange_delete(
        &mut self,
        ctx: Ctx,
        m: ExchangeDelete,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        if m.exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        if m.exchange.starts_with(RESERVED_PREFIX) {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{}' in vhost '{vhost}' not allowed",
                m.exchange
            )));
        }
        self.check_access(ctx.conn, Access::Configure, "exchange", &m.exchange)?;
        self.submit(
            Some(ctx.origin()),
            Op::DeleteExchange {
                vhost,
                name: m.exchange,
                if_unused: m.if_unused,
                nowait: m.nowait,
            },
            out,
        );
        Ok(())
    }

    pub(super) fn apply_delete_exchange(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        name: &ShortStr,
        if_unused: bool,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        if let Some(v) = self.vhosts.get_mut(vhost) {
            if let Some(x) = v.exchanges.get(name) {
                let used_as_destination = v.exchanges.values().any(|other| {
                    other
                        .bindings
                        .has_destination(&Destination::Exchange(name.clone()))
                });
                if if_unused && (!x.bindings.is_empty() || used_as_destination) {
                    return Err(AmqpError::precondition_failed(format!(
                        "exchange '{name}' in vhost '{vhost}' in use"
                    )));
                }
                self.remove_exchange(vhost, name);
            }
        }
        // Deleting an exchange that does not exist succeeds, as in RabbitMQ 3.x.
        if !nowait {
            Self::reply_origin(origin, Method::ExchangeDeleteOk(ExchangeDeleteOk {}), out);
        }
        Ok(())
    }

    /// Removes an exchange and every binding that has it as source or destination; auto-delete
    /// exchanges left without bindings go too.
    pub(crate) fn remove_exchange(&mut self, vhost: &ShortStr, name: &ShortStr) {
        let Some(v) = self.vhosts.get_mut(vhost) else {
            return;
        };
        v.exchanges.remove(name);
        let dest = Destination::Exchange(name.clone());
        let mut emptied = Vec::new();
        for x in v.exchanges.values_mut() {
            if x.bindings.remove_destination(&dest) > 0 && x.auto_delete && x.bindings.is_empty() {
                emptied.push(x.name.clone());
            }
        }
        for x in emptied {
            self.remove_exchange(vhost, &x);
        }
    }

    pub(super) fn exchange_bind(
        &mut self,
        ctx: Ctx,
        m: ExchangeBind,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        self.check_bind_access(ctx, &m.destination, "exchange", &m.source, &m.routing_key)?;
        self.submit(
            Some(ctx.origin()),
            Op::Bind {
                vhost,
                source: m.source,
                destination: Destination::Exchange(m.destination),
                routing_key: m.routing_key,
                arguments: m.arguments,
                nowait: m.nowait,
            },
            out,
        );
        Ok(())
    }

    pub(super) fn exchange_unbind(
        &mut self,
        ctx: Ctx,
        m: ExchangeUnbind,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let (vhost, _) = self.session(ctx.conn)?;
        self.check_bind_access(ctx, &m.destination, "exchange", &m.source, &m.routing_key)?;
        self.submit(
            Some(ctx.origin()),
            Op::Unbind {
                vhost,
                source: m.source,
                destination: Destination::Exchange(m.destination),
                routing_key: m.routing_key,
                arguments: m.arguments,
                nowait: m.nowait,
            },
            out,
        );
        Ok(())
    }

    /// Binding (and unbinding) needs write on the destination and read on the source
    /// (RabbitMQ's access-control guide), is never allowed on the default exchange, and on a
    /// topic exchange the binding key must match the user's topic read permission, if any
    /// (RabbitMQ's `binding_action_with_checks`, for queue and exchange bindings alike).
    pub(super) fn check_bind_access(
        &self,
        ctx: Ctx,
        destination: &str,
        destination_kind: &str,
        source: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        if source.is_empty() || (destination_kind == "exchange" && destination.is_empty()) {
            return Err(default_exchange_refused());
        }
        self.check_access(ctx.conn, Access::Write, destination_kind, destination)?;
        self.check_access(ctx.conn, Access::Read, "exchange", source)?;
        self.check_topic_binding(ctx.conn, source, routing_key)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_bind(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        source: &ShortStr,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        self.check_binding_ends(vhost, source, &destination)?;
        let v = self
            .vhosts
            .get_mut(vhost)
            .ok_or_else(|| no_exchange(source, vhost))?;
        let x = v
            .exchanges
            .get_mut(source)
            .ok_or_else(|| no_exchange(source, vhost))?;
        if x.kind == ExchangeKind::Headers {
            validate_headers_binding(arguments).map_err(AmqpError::precondition_failed)?;
        }
        let is_exchange = matches!(destination, Destination::Exchange(_));
        x.bindings.bind(destination, routing_key, arguments);
        if !nowait {
            let ok = if is_exchange {
                Method::ExchangeBindOk(ExchangeBindOk {})
            } else {
                Method::QueueBindOk(QueueBindOk {})
            };
            Self::reply_origin(origin, ok, out);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_unbind(
        &mut self,
        origin: Option<Origin>,
        vhost: &ShortStr,
        source: &ShortStr,
        destination: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        self.check_binding_ends(vhost, source, destination)?;
        let mut emptied = false;
        if let Some(x) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.exchanges.get_mut(source))
        {
            // Unbinding a binding that does not exist succeeds, as in RabbitMQ.
            if x.bindings.unbind(destination, routing_key, arguments) {
                emptied = x.auto_delete && x.bindings.is_empty();
            }
        }
        if emptied {
            self.remove_exchange(vhost, source);
        }
        if !nowait {
            let ok = match destination {
                Destination::Exchange(_) => Method::ExchangeUnbindOk(ExchangeUnbindOk {}),
                Destination::Queue(_) => Method::QueueUnbindOk(QueueUnbindOk {}),
            };
            Self::reply_origin(origin, ok, out);
        }
        Ok(())
    }

    /// Both ends of a binding must exist: RabbitMQ reports the missing source first, then the
    /// destination.
    fn check_binding_ends(
        &self,
        vhost: &ShortStr,
        source: &ShortStr,
        destination: &Destination,
    ) -> Result<(), AmqpError> {
        let v = self
            .vhosts
            .get(vhost)
            .ok_or_else(|| no_exchange(source, vhost))?;
        if !v.exchanges.contains_key(source) {
            return Err(no_exchange(source, vhost));
        }
        match destination {
            Destination::Exchange(d) if !v.exchanges.contains_key(d) => Err(no_exchange(d, vhost)),
            Destination::Queue(q) if !v.queues.contains_key(q) => {
                Err(super::queue_class::no_queue(q, vhost))
            }
            _ => Ok(()),
        }
    }
}

/// RabbitMQ's description of an argument value in inequivalence errors.
fn describe_arg(v: Option<&warren_wire::FieldValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => match v.as_str() {
            Some(s) => format!("the value '{s}' of type '{}'", crate::queue::type_name(v)),
            None => format!("the value '{v:?}' of type '{}'", crate::queue::type_name(v)),
        },
    }
}
