//! Protocol errors as values: each knows its AMQP reply code, its reply text and the method that
//! caused it, and whether it closes a channel or the whole connection.

use warren_wire::constants;

/// Whether an error closes the channel it happened on or the whole connection (spec: soft vs hard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorScope {
    Channel,
    Connection,
}

/// An AMQP error ready to be sent as `channel.close` or `connection.close`.
///
/// `text` is the full reply text with RabbitMQ's prefix, e.g.
/// `NOT_FOUND - no queue 'orders' in vhost '/'`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    /// Builds an error whose text is `<NAME> - <detail>`, RabbitMQ's format.
    pub fn new(code: u16, detail: impl std::fmt::Display) -> AmqpError {
        AmqpError {
            code,
            text: format!("{} - {}", constants::reply_name(code), detail),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Records the method that caused the error (sent back in the close method).
    pub fn caused_by(mut self, class_id: u16, method_id: u16) -> AmqpError {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// Soft errors (3xx/4xx) close the channel; hard errors (5xx) close the connection.
    pub fn scope(&self) -> ErrorScope {
        if self.code >= 500 {
            ErrorScope::Connection
        } else {
            ErrorScope::Channel
        }
    }

    pub fn not_found(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::NOT_FOUND, detail)
    }
    pub fn precondition_failed(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::PRECONDITION_FAILED, detail)
    }
    pub fn access_refused(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::ACCESS_REFUSED, detail)
    }
    pub fn resource_locked(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::RESOURCE_LOCKED, detail)
    }
    pub fn not_allowed(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::NOT_ALLOWED, detail)
    }
    pub fn not_implemented(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::NOT_IMPLEMENTED, detail)
    }
    pub fn command_invalid(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::COMMAND_INVALID, detail)
    }
    pub fn channel_error(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::CHANNEL_ERROR, detail)
    }
    pub fn internal_error(detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(constants::INTERNAL_ERROR, detail)
    }
}
