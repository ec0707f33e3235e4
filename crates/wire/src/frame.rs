//! Frames: the streaming decoder and the frame encoder.
//!
//! The decoder reads the 7-byte frame header, refuses a size above frame-max before buffering the
//! payload, and returns `Ok(None)` until a whole frame is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::constants::{FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use crate::{ContentHeader, Method, WireError};

/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Type (1) + channel (2) + size (4).
pub const FRAME_HEADER_SIZE: usize = 7;
/// What a 0-9-1 client sends first, and what a server answers to a header it does not speak.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Method {
        channel: u16,
        method: Method,
    },
    Header {
        channel: u16,
        header: Box<ContentHeader>,
    },
    /// A body frame; `payload` shares the read buffer's memory.
    Body {
        channel: u16,
        payload: Bytes,
    },
    Heartbeat {
        channel: u16,
    },
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// A streaming frame decoder with a frame-max limit (the whole frame, header and end octet
/// included, as the spec counts it).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    frame_max: u32,
}

impl FrameDecoder {
    pub fn new(frame_max: u32) -> FrameDecoder {
        FrameDecoder { frame_max }
    }

    /// Changes the limit, e.g. after connection.tune-ok.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Takes one frame off the front of `buf`, or returns `Ok(None)` if more bytes are needed.
    /// On error the buffer's content is unspecified; the connection must be closed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let frame_type = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        if !matches!(
            frame_type,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(WireError::UnknownFrameType { frame_type });
        }
        // frame-max 0 means "no limit" in tune; RabbitMQ never negotiates it, we cap anyway.
        let limit = if self.frame_max == 0 {
            u32::MAX
        } else {
            self.frame_max
        };
        if u64::from(size) + FRAME_HEADER_SIZE as u64 + 1 > u64::from(limit) {
            return Err(WireError::FrameTooLarge {
                size,
                max: self.frame_max,
            });
        }
        let total = FRAME_HEADER_SIZE + size as usize + 1;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let found = buf[total - 1];
        if found != FRAME_END {
            return Err(WireError::BadFrameEnd { found });
        }
        buf.advance(FRAME_HEADER_SIZE);
        let payload = buf.split_to(size as usize).freeze();
        buf.advance(1);
        Ok(Some(match frame_type {
            FRAME_METHOD => Frame::Method {
                channel,
                method: Method::decode(payload)?,
            },
            FRAME_HEADER => Frame::Header {
                channel,
                header: Box::new(ContentHeader::decode(payload)?),
            },
            FRAME_BODY => Frame::Body { channel, payload },
            _ => Frame::Heartbeat { channel },
        }))
    }
}

/// Appends one whole frame whose payload is written by `payload`.
pub fn encode_frame(
    w: &mut BytesMut,
    frame_type: u8,
    channel: u16,
    payload: impl FnOnce(&mut BytesMut),
) {
    w.put_u8(frame_type);
    w.put_u16(channel);
    let at = w.len();
    w.put_u32(0);
    payload(w);
    let size = (w.len() - at - 4) as u32;
    w[at..at + 4].copy_from_slice(&size.to_be_bytes());
    w.put_u8(FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BasicPublish, OutBuf};
    use proptest::prelude::*;

    fn sample_stream() -> (BytesMut, Vec<Frame>) {
        let mut out = OutBuf::new();
        let publish = Method::BasicPublish(BasicPublish {
            exchange: "x".into(),
            routing_key: "k".into(),
            ..Default::default()
        });
        out.push_method(1, &publish);
        out.push_content(
            1,
            &publish,
            &Default::default(),
            Bytes::from(vec![7u8; 10_000]),
            4096,
        );
        out.push_heartbeat();
        let mut bytes = BytesMut::new();
        while out.has_remaining() {
            let c = out.chunk();
            bytes.extend_from_slice(c);
            let n = c.len();
            out.advance(n);
        }
        let mut copy = bytes.clone();
        let dec = FrameDecoder::new(131072);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut copy).unwrap() {
            frames.push(f);
        }
        (bytes, frames)
    }

    #[test]
    fn content_is_split_into_body_frames_within_frame_max() {
        let (_, frames) = sample_stream();
        // publish method, header, 3 bodies (4088 + 4088 + 1824), heartbeat
        assert_eq!(frames.len(), 6);
        let sizes: Vec<usize> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Body { payload, .. } => Some(payload.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![4088, 4088, 1824]);
        assert_eq!(frames[5], Frame::Heartbeat { channel: 0 });
    }

    #[test]
    fn decoding_split_at_every_offset_gives_the_same_frames() {
        let (bytes, frames) = sample_stream();
        let dec = FrameDecoder::new(131072);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
            assert_eq!(got, frames, "cut at {cut}");
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_its_payload_arrives() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0x10, 0, 0][..]);
        let err = FrameDecoder::new(4096).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            WireError::FrameTooLarge {
                size: 0x100000,
                max: 4096
            }
        );
        assert_eq!(err.reply_code(), 501);
    }

    #[test]
    fn bad_frame_end_and_type_are_frame_errors() {
        let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xAB][..]);
        assert_eq!(
            FrameDecoder::new(4096).decode(&mut buf),
            Err(WireError::BadFrameEnd { found: 0xAB })
        );
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(
            FrameDecoder::new(4096).decode(&mut buf),
            Err(WireError::UnknownFrameType { frame_type: 9 })
        );
    }

    #[test]
    fn deeply_nested_tables_are_refused() {
        // A table in a table ... 40 levels deep, inside an exchange.declare arguments table.
        let mut inner = crate::FieldTable::default();
        for _ in 0..40 {
            let mut t = crate::FieldTable::default();
            t.insert("a", crate::FieldValue::Table(inner));
            inner = t;
        }
        let m = Method::ExchangeDeclare(crate::ExchangeDeclare {
            arguments: inner,
            ..Default::default()
        });
        let mut w = BytesMut::new();
        m.encode(&mut w);
        assert_eq!(
            Method::decode(w.freeze()),
            Err(WireError::BadArguments {
                class_id: 40,
                method_id: 10
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// The fuzz property: arbitrary bytes never panic the decoder, and it never returns a frame
        /// larger than frame-max.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let dec = FrameDecoder::new(4096);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }

        #[test]
        fn valid_frame_prefix_then_garbage_never_panics(
            m in crate::method::strategy::arb_method(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut out = OutBuf::new();
            out.push_method(3, &m);
            let mut buf = BytesMut::new();
            while out.has_remaining() {
                let c = out.chunk();
                buf.extend_from_slice(c);
                let n = c.len();
                out.advance(n);
            }
            buf.extend_from_slice(&tail);
            let dec = FrameDecoder::new(131072);
            let first = dec.decode(&mut buf).unwrap();
            prop_assert_eq!(first, Some(Frame::Method { channel: 3, method: m }));
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }
}
