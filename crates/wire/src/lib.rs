//! AMQP 0-9-1 codec (sans-io), with RabbitMQ's extensions: frames, every method of every class,
//! content headers with the 14 basic properties, and field tables.
//!
//! Nothing here touches a socket or a runtime. [`FrameDecoder`] turns bytes into [`Frame`]s
//! (returning "need more" on a partial frame, never an error) and [`OutBuf`] turns methods and
//! content into bytes. Message bodies are never copied: a body arrives as a slice of the read buffer
//! and leaves as the same `Bytes`, split into body frames by reference.

mod codec;
pub mod constants;
mod error;
mod frame;
mod method;
mod outbuf;
mod properties;
pub mod record;
mod strings;
mod table;

pub use codec::{decode_table, decode_table_body, encode_table, Reader};
pub use error::WireError;
pub use frame::{encode_frame, Frame, FrameDecoder, FRAME_END, FRAME_HEADER_SIZE, PROTOCOL_HEADER};
pub use method::*;
pub use outbuf::OutBuf;
pub use properties::{BasicProperties, ContentHeader};
pub use strings::{LongStr, ShortStr};
pub use table::{FieldTable, FieldValue, MAX_NESTING};
