//! One client connection as the core sees it: who logged in, which vhost it opened, its channels,
//! the capabilities its client announced and whether its socket can take more deliveries.

use std::collections::BTreeMap;

use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::channel::Channel;
use crate::{ChannelId, Effect};

/// Delivery credit granted per `Input::Writable { writable: true }`: 1 MiB.
pub const DELIVERY_CREDIT_BYTES: i64 = 1 << 20;

/// The default credit of a publishing connection (`BrokerConfig::publish_credit`): publishes
/// on their way into the log (proposed, not yet applied by this broker) at which it is paused
/// ([`crate::Effect::Flow`]); it is read again at half of that. RabbitMQ grants a publisher 400
/// messages of credit per process hop (`credit_flow_default_credit`); a log that batches wants
/// more in flight to keep its batches full (S1 keeps 1 000 confirms outstanding).
pub const DEFAULT_PUBLISH_CREDIT: u32 = 2000;

/// Bytes a delivery costs against the credit besides its body (method + header frames).
pub(crate) const DELIVERY_OVERHEAD_BYTES: i64 = 256;

#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) user: Option<String>,
    pub(crate) vhost: Option<ShortStr>,
    pub(crate) channels: BTreeMap<ChannelId, Channel>,
    /// False while the runtime reports the outbound buffer above its limit.
    pub(crate) writable: bool,
    /// Bytes the core may still deliver before it must wait for `Input::Writable`.
    pub(crate) credit: i64,
    /// An `Effect::AwaitWritable` was emitted and not yet answered.
    pub(crate) awaiting_writable: bool,
    /// The client announced `consumer_cancel_notify`: it understands server-sent `basic.cancel`.
    pub(crate) consumer_cancel_notify: bool,
    /// The client's `client-properties`, as sent (for operators).
    pub(crate) client_properties: FieldTable,
    /// When the connection logged in (or was resumed here).
    pub(crate) connected_at: crate::Millis,
    /// Per channel id, the last number a publish of it carried into the log. A channel's
    /// logged publishes are numbered 1, 2, 3 ... without gaps (its local-only publishes take
    /// none) and go on across the channel's lives (closed and opened again), so the state
    /// machine's publisher record (`broker::publishers::Publisher`) tells a re-sent publish from a new
    /// one without a logged `confirm.select`.
    pub(crate) log_numbers: std::collections::HashMap<crate::ChannelId, u64>,
    /// `Input::Sync` tokens waiting for the connection's commands in flight.
    pub(crate) syncs: Vec<u64>,
    /// The connection's publishes proposed to the log and not applied yet, over all its
    /// channels (closed ones included), against the broker's `publish_credit`.
    pub(crate) publishes_in_flight: u32,
    /// [`crate::Effect::Flow`] paused the connection and has not resumed it.
    pub(crate) paused: bool,
}

impl Connection {
    /// One more publish of this connection is on its way into the log: the flow effect if that
    /// spends its `credit`.
    pub(crate) fn publish_proposed(&mut self, conn: crate::ConnId, credit: u32) -> Option<Effect> {
        self.publishes_in_flight += 1;
        if self.paused || self.publishes_in_flight < credit {
            return None;
        }
        self.paused = true;
        Some(Effect::Flow { conn, paused: true })
    }

    /// A publish of this connection was applied: the flow effect if that brings a paused one
    /// back to half its `credit`.
    pub(crate) fn publish_applied(&mut self, conn: crate::ConnId, credit: u32) -> Option<Effect> {
        // Saturating: a publish sent again after a leader change may be applied twice.
        self.publishes_in_flight = self.publishes_in_flight.saturating_sub(1);
        if !self.paused || self.publishes_in_flight > credit / 2 {
            return None;
        }
        self.paused = false;
        Some(Effect::Flow {
            conn,
            paused: false,
        })
    }

    pub(crate) fn new() -> Connection {
        Connection {
            user: None,
            vhost: None,
            channels: BTreeMap::new(),
            writable: true,
            credit: DELIVERY_CREDIT_BYTES,
            awaiting_writable: false,
            consumer_cancel_notify: false,
            client_properties: FieldTable::default(),
            connected_at: 0,
            log_numbers: std::collections::HashMap::new(),
            syncs: Vec::new(),
            publishes_in_flight: 0,
            paused: false,
        }
    }

    /// Reads the client's `capabilities` table from its `client-properties`.
    pub(crate) fn set_client_properties(&mut self, props: &FieldTable) {
        self.client_properties = props.clone();
        if let Some(FieldValue::Table(caps)) = props.get("capabilities") {
            self.consumer_cancel_notify = caps
                .get("consumer_cancel_notify")
                .and_then(FieldValue::as_bool)
                .unwrap_or(false);
        }
    }
}
