//! An exchange: its declaration (kind, flags, arguments) and its bindings. Routing itself lives in
//! [`crate::routing`]; this type only owns one exchange's state.

use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::command::Destination;
use crate::routing::{BindingTable, ExchangeKind};

/// One exchange in a vhost.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) name: ShortStr,
    pub(crate) kind: ExchangeKind,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) internal: bool,
    pub(crate) arguments: FieldTable,
    pub(crate) bindings: BindingTable<Destination>,
    /// Messages published to this exchange, and the queue deliveries they were routed to (for
    /// operators; not replicated).
    pub(crate) publish_in: u64,
    pub(crate) publish_out: u64,
    /// The policy it follows, if any (replicated: computed from the policies).
    pub(crate) policy: Option<String>,
    /// Its policy's `alternate-exchange`, used when it has no argument of its own.
    pub(crate) policy_alternate: Option<ShortStr>,
}

impl Exchange {
    pub(crate) fn new(
        name: ShortStr,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: BindingTable::new(kind),
            publish_in: 0,
            publish_out: 0,
            policy: None,
            policy_alternate: None,
        }
    }

    /// The `alternate-exchange` argument, if set, else its policy's (RabbitMQ's "Alternate
    /// Exchanges" page: the argument wins).
    pub(crate) fn alternate_exchange(&self) -> Option<&str> {
        match self.arguments.get("alternate-exchange") {
            Some(FieldValue::LongStr(s)) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => self.policy_alternate.as_ref().map(|s| s.as_str()),
        }
    }
}

/// The exchanges every vhost starts with, as in RabbitMQ: name, kind.
pub(crate) const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];
