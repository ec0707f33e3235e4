//! STOMP 1.0, 1.1 and 1.2 (<https://stomp.github.io/stomp-specification-1.2.html>) as RabbitMQ's
//! STOMP plugin serves it, knowing nothing of sockets (issue 20): frames decoded from and
//! encoded to bytes, RabbitMQ's destinations, and [`Session`], which turns one STOMP client into
//! one AMQP 0-9-1 connection to the broker, as the plugin does. The server crate moves the
//! bytes.
//!
//! A frame is a command line, header lines, an empty line and a body ended by a NUL byte; end
//! of lines are LF or CR LF; a lone end of line between frames is a heart-beat. From 1.1 on,
//! header names and values escape `\r`, `\n`, `:` and `\` (not in CONNECT and CONNECTED, for
//! 1.0 clients). [`Decoder`] enforces RabbitMQ's limits (`stomp.max_headers`,
//! `stomp.max_header_length`, `stomp.max_body_length`) while reading, so a client that never
//! ends a frame costs bounded memory.

mod decoder;
pub mod destination;
mod encoder;
mod frame;
mod properties;
mod queue_name;
pub mod session;

pub use decoder::{Decoder, Item, Limits, StompError};
pub use encoder::encode;
pub use frame::{Command, Frame, Version};
pub use session::{Config, Session};
