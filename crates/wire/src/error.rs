//! Decoding errors, each mapped to the AMQP reply code a server closes the connection with.

use crate::constants;

/// Why bytes could not be decoded. Every variant is a connection-level error in AMQP 0-9-1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame's declared size exceeds the negotiated frame-max (checked before reading it).
    #[error("frame size {size} exceeds frame-max {max}")]
    FrameTooLarge { size: u32, max: u32 },
    /// The octet after a frame's payload was not 0xCE.
    #[error("frame end octet 0x{found:02x} is not 0xce")]
    BadFrameEnd { found: u8 },
    /// A frame type other than method, header, body or heartbeat.
    #[error("unknown frame type {frame_type}")]
    UnknownFrameType { frame_type: u8 },
    /// A class/method pair the protocol does not define.
    #[error("unknown method {class_id}/{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    /// A method frame whose arguments cannot be decoded (too short, trailing bytes, bad table).
    #[error("cannot decode the arguments of {}", crate::method_name(*class_id, *method_id).unwrap_or("a method"))]
    BadArguments { class_id: u16, method_id: u16 },
    /// A payload that ends early, has bytes left over, a bad field type, bad UTF-8, or nests
    /// tables deeper than [`crate::MAX_NESTING`].
    #[error("malformed {what}")]
    Syntax { what: &'static str },
}

impl WireError {
    /// The reply code RabbitMQ closes the connection with for this error.
    pub fn reply_code(&self) -> u16 {
        match self {
            WireError::FrameTooLarge { .. }
            | WireError::BadFrameEnd { .. }
            | WireError::UnknownFrameType { .. }
            | WireError::BadArguments { .. } => constants::FRAME_ERROR,
            WireError::UnknownMethod { .. } => constants::COMMAND_INVALID,
            WireError::Syntax { .. } => constants::SYNTAX_ERROR,
        }
    }
}
