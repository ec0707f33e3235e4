//! The outbound byte queue of one connection: small frames are written into one growing buffer,
//! message bodies are queued by reference (never copied) between them.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::constants::{FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use crate::frame::{encode_frame, FRAME_END, PROTOCOL_HEADER};
use crate::{BasicProperties, ContentHeader, Method};

/// Bytes waiting to be written to a socket, in order. Implements [`Buf`].
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Finished chunks, oldest first; `tail` always comes after all of them.
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl OutBuf {
    pub fn new() -> OutBuf {
        OutBuf::default()
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn grow_tail(&mut self, f: impl FnOnce(&mut BytesMut)) {
        let before = self.tail.len();
        f(&mut self.tail);
        self.len += self.tail.len() - before;
    }

    fn push_shared(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += b.len();
        self.chunks.push_back(b);
    }

    pub fn push_protocol_header(&mut self) {
        self.grow_tail(|w| w.put_slice(PROTOCOL_HEADER));
    }

    pub fn push_method(&mut self, channel: u16, method: &Method) {
        self.grow_tail(|w| encode_frame(w, FRAME_METHOD, channel, |w| method.encode(w)));
    }

    pub fn push_heartbeat(&mut self) {
        self.grow_tail(|w| encode_frame(w, FRAME_HEARTBEAT, 0, |_| {}));
    }

    /// Queues a content-carrying method's header and body frames (the method frame itself must
    /// already be queued, or use [`push_delivery`](Self::push_delivery)). The body is split into
    /// frames of at most `frame_max` bytes and shared, not copied.
    pub fn push_content(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: Bytes,
        frame_max: u32,
    ) {
        let header = ContentHeader {
            class_id: method.class_id(),
            weight: 0,
            body_size: body.len() as u64,
            properties: properties.clone(),
        };
        self.grow_tail(|w| encode_frame(w, FRAME_HEADER, channel, |w| header.encode(w)));
        let max_payload = (frame_max.max(crate::constants::FRAME_MIN_SIZE) as usize) - 8;
        let mut rest = body;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(max_payload));
            self.grow_tail(|w| {
                w.put_u8(FRAME_BODY);
                w.put_u16(channel);
                w.put_u32(piece.len() as u32);
            });
            // Small bodies are cheaper to copy than to queue as a separate chunk.
            if piece.len() <= 256 {
                self.grow_tail(|w| w.put_slice(&piece));
            } else {
                self.push_shared(piece);
            }
            self.grow_tail(|w| w.put_u8(FRAME_END));
        }
    }

    /// Queues a method with content: method frame, header frame, body frames.
    pub fn push_delivery(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: Bytes,
        frame_max: u32,
    ) {
        self.push_method(channel, method);
        self.push_content(channel, method, properties, body, frame_max);
    }
}

impl Buf for OutBuf {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(c) => c,
            None => &self.tail,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of OutBuf");
        self.len -= cnt;
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(c) if c.len() <= cnt => {
                    cnt -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    c.advance(cnt);
                    cnt = 0;
                }
                None => {
                    self.tail.advance(cnt);
                    cnt = 0;
                }
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for c in self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[..]))
        {
            if n == dst.len() {
                break;
            }
            if !c.is_empty() {
                dst[n] = std::io::IoSlice::new(c);
                n += 1;
            }
        }
        n
    }
}
