//! `tx.*` and `confirm.select`: transactions defer publishes and acks to commit (RabbitMQ's
//! semantics: rollback discards them, unacked deliveries stay unacked); confirm mode numbers
//! publishes so they can be acked once enqueued. The two modes exclude each other.

use warren_wire::{ConfirmSelectOk, Method, TxCommitOk, TxRollbackOk, TxSelectOk};

use super::{Broker, Ctx};
use crate::channel::{Mode, TxOp};
use crate::{AmqpError, Effect};

impl Broker {
    pub(super) fn tx_select(&mut self, ctx: Ctx, out: &mut Vec<Effect>) -> Result<(), AmqpError> {
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        match ch.mode {
            Mode::Confirm { .. } => {
                return Err(AmqpError::precondition_failed(
                    "cannot switch from confirm to tx mode",
                ))
            }
            Mode::Plain => {
                ch.mode = Mode::Tx {
                    pending: Vec::new(),
                }
            }
            Mode::Tx { .. } => {}
        }
        self.reply(ctx, Method::TxSelectOk(TxSelectOk {}), out);
        Ok(())
    }

    pub(super) fn tx_commit(&mut self, ctx: Ctx, out: &mut Vec<Effect>) -> Result<(), AmqpError> {
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        let pending = match &mut ch.mode {
            Mode::Tx { pending } => std::mem::take(pending),
            _ => {
                return Err(AmqpError::precondition_failed(
                    "channel is not transactional",
                ))
            }
        };
        // Run the deferred operations through the ordinary paths, outside tx mode.
        ch.mode = Mode::Plain;
        let result = pending.into_iter().try_for_each(|op| match op {
            TxOp::Publish {
                publish,
                properties,
                body,
            } => self.publish(ctx, publish, properties, body, out),
            TxOp::Ack {
                delivery_tag,
                multiple,
            } => self.basic_ack(ctx, delivery_tag, multiple, out),
            TxOp::Nack {
                delivery_tag,
                multiple,
                requeue,
            } => self.basic_nack(ctx, delivery_tag, multiple, requeue, out),
        });
        if let Some(ch) = self.channel_mut(ctx) {
            ch.mode = Mode::Tx {
                pending: Vec::new(),
            };
        }
        result?;
        // commit-ok means the publishes are in their queues: in replicated mode, once applied.
        self.reply_when_applied(ctx, Method::TxCommitOk(TxCommitOk {}), out);
        Ok(())
    }

    pub(super) fn tx_rollback(&mut self, ctx: Ctx, out: &mut Vec<Effect>) -> Result<(), AmqpError> {
        match self.tx_pending(ctx) {
            Some(pending) => pending.clear(),
            None => {
                return Err(AmqpError::precondition_failed(
                    "channel is not transactional",
                ))
            }
        }
        self.reply(ctx, Method::TxRollbackOk(TxRollbackOk {}), out);
        Ok(())
    }

    pub(super) fn confirm_select(
        &mut self,
        ctx: Ctx,
        nowait: bool,
        out: &mut Vec<Effect>,
    ) -> Result<(), AmqpError> {
        let ch = self
            .channel_mut(ctx)
            .ok_or_else(|| AmqpError::channel_error("channel closed"))?;
        match ch.mode {
            Mode::Tx { .. } => {
                return Err(AmqpError::precondition_failed(
                    "cannot switch from tx to confirm mode",
                ))
            }
            Mode::Plain => {
                ch.mode = Mode::Confirm {
                    next_publish_seq: 1,
                };
                // Nothing is logged: the channel's logged publishes are numbered across its
                // lives (`Connection::log_numbers`), so the state machine has nothing to
                // forget (`Op::ConfirmSelect` is only applied from older logs).
            }
            Mode::Confirm { .. } => {}
        }
        if !nowait {
            self.reply_when_applied(ctx, Method::ConfirmSelectOk(ConfirmSelectOk {}), out);
        }
        Ok(())
    }
}
