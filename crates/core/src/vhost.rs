//! A virtual host: a namespace of exchanges and queues (queues by name → id; the queue state
//! itself is owned by the broker's queue table).

use std::collections::HashMap;

use warren_wire::{FieldTable, ShortStr};

use crate::exchange::{Exchange, PREDECLARED};
use crate::queue::QueueId;

#[derive(Debug)]
pub(crate) struct Vhost {
    pub(crate) exchanges: HashMap<ShortStr, Exchange>,
    pub(crate) queues: HashMap<ShortStr, QueueId>,
}

impl Vhost {
    /// A vhost with RabbitMQ's predeclared exchanges (the default exchange and `amq.*`).
    pub(crate) fn new() -> Vhost {
        let exchanges = PREDECLARED
            .iter()
            .map(|(n, kind)| {
                let name = ShortStr::from(*n);
                let x = Exchange::new(
                    name.clone(),
                    *kind,
                    true,
                    false,
                    false,
                    FieldTable::default(),
                );
                (name, x)
            })
            .collect();
        Vhost {
            exchanges,
            queues: HashMap::new(),
        }
    }
}
