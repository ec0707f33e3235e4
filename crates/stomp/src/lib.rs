//! STOMP 1.0, 1.1 and 1.2 frames (<https://stomp.github.io/stomp-specification-1.2.html>),
//! decoded from and encoded to bytes, knowing nothing of sockets: the first step of issue 20
//! (STOMP and Web-STOMP listeners, as RabbitMQ's plugins). The listener that drives it, the
//! mapping of destinations onto exchanges and queues and the session state come later.
//!
//! A frame is a command line, header lines, an empty line and a body ended by a NUL byte; end
//! of lines are LF or CR LF; a lone end of line between frames is a heart-beat. From 1.1 on,
//! header names and values escape `\r`, `\n`, `:` and `\` (not in CONNECT and CONNECTED, for
//! 1.0 clients). [`Decoder`] enforces RabbitMQ's limits (`stomp.max_headers`,
//! `stomp.max_header_length`, `stomp.max_body_length`) while reading, so a client that never
//! ends a frame costs bounded memory.

mod decoder;
mod encoder;
mod frame;

pub use decoder::{Decoder, Item, Limits, StompError};
pub use encoder::encode;
pub use frame::{Command, Frame, Version};
