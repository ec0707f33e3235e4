//! Hand-written AMQP 0-9-1 bytes for tests that send what no client library would: a tiny encoder,
//! a frame reader and [`RawConn`], a blocking connection driven one frame at a time.
//! Deliberately independent of Warren's own codec, so the two cannot share a mistake.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The protocol header a 0-9-1 client sends first (and RabbitMQ sends back when it refuses one).
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Frame types of 0-9-1 section 4.2.3.
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;

/// The frame-max the handshake of [`RawConn::handshake`] agrees to.
pub const RAW_FRAME_MAX: u32 = 131_072;

/// One whole frame: type octet, channel, payload, then the frame-end octet 0xCE.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    let size = u32::try_from(payload.len()).expect("test payloads are far below 4 GiB");
    f.extend_from_slice(&size.to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// A method frame: class id, method id, then the already-encoded arguments.
pub fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &p)
}

/// A basic content header announcing `body_size` bytes, with no properties.
pub fn content_header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes()); // weight
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // property flags: none
    frame(FRAME_HEADER, channel, &p)
}

/// A content body frame.
pub fn body_frame(channel: u16, body: &[u8]) -> Vec<u8> {
    frame(FRAME_BODY, channel, body)
}

/// `basic.publish` (60,40) to `exchange` with `routing_key`, mandatory and immediate off.
pub fn basic_publish(channel: u16, exchange: &str, routing_key: &str) -> Vec<u8> {
    let args = Args::new()
        .u16(0)
        .short(exchange)
        .short(routing_key)
        .bits(&[false, false]);
    method_frame(channel, 60, 40, &args.0)
}

/// `queue.declare` (50,10) with the given name and flags all off except `passive`.
pub fn queue_declare(channel: u16, queue: &str, passive: bool) -> Vec<u8> {
    let args = Args::new()
        .u16(0)
        .short(queue)
        .bits(&[passive, false, false, false, false])
        .empty_table();
    method_frame(channel, 50, 10, &args.0)
}

/// Method arguments, encoded field by field in the order the spec lists them.
#[derive(Default, Clone)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn new() -> Args {
        Args::default()
    }

    pub fn octet(mut self, v: u8) -> Args {
        self.0.push(v);
        self
    }

    pub fn u16(mut self, v: u16) -> Args {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Args {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Args {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A shortstr: one length octet, then the bytes.
    pub fn short(mut self, s: &str) -> Args {
        self.0
            .push(u8::try_from(s.len()).expect("short strings in tests fit 255 bytes"));
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// A longstr: a 32-bit length, then the bytes.
    pub fn long(self, b: &[u8]) -> Args {
        let len = u32::try_from(b.len()).expect("test strings are far below 4 GiB");
        self.u32(len).raw(b)
    }

    /// Consecutive bit fields, packed into octets low bit first (0-9-1 section 4.2.5.2).
    pub fn bits(mut self, bits: &[bool]) -> Args {
        for chunk in bits.chunks(8) {
            let octet = chunk
                .iter()
                .enumerate()
                .fold(0u8, |o, (i, &b)| o | (u8::from(b) << i));
            self.0.push(octet);
        }
        self
    }

    /// An empty field table.
    pub fn empty_table(self) -> Args {
        self.u32(0)
    }

    /// Bytes copied as they are.
    pub fn raw(mut self, b: &[u8]) -> Args {
        self.0.extend_from_slice(b);
        self
    }
}

/// A field value of a decoded field table, as far as the tests look into one.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Bool(bool),
    Int(i64),
    Str(String),
    Table(Vec<(String, Field)>),
    Other(u8),
}

impl Field {
    /// The value at `key` if this is a table.
    pub fn get(&self, key: &str) -> Option<&Field> {
        match self {
            Field::Table(t) => t.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Reads method arguments field by field; panics (failing the test) on truncated input.
pub struct ArgReader<'a> {
    bytes: &'a [u8],
}

impl<'a> ArgReader<'a> {
    pub fn new(bytes: &'a [u8]) -> ArgReader<'a> {
        ArgReader { bytes }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.bytes.len() >= n, "method arguments end early");
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        head
    }

    pub fn octet(&mut self) -> u8 {
        self.take(1)[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().expect("2 bytes"))
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().expect("8 bytes"))
    }

    pub fn short(&mut self) -> String {
        let n = self.octet() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    pub fn long(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        self.take(n).to_vec()
    }

    /// A field table (0-9-1 section 4.2.5.5, with RabbitMQ's type octets).
    pub fn table(&mut self) -> Field {
        let body = self.long();
        let mut r = ArgReader::new(&body);
        let mut out = Vec::new();
        while !r.bytes.is_empty() {
            let key = r.short();
            let value = r.value();
            out.push((key, value));
        }
        Field::Table(out)
    }

    fn value(&mut self) -> Field {
        match self.octet() {
            b't' => Field::Bool(self.octet() != 0),
            b'b' | b'B' => Field::Int(i64::from(self.octet())),
            b's' | b'u' => Field::Int(i64::from(self.u16())),
            b'I' | b'i' => Field::Int(i64::from(self.u32())),
            b'l' | b'L' | b'T' => Field::Int(self.u64() as i64),
            b'f' => Field::Int(i64::from(self.u32())),
            b'd' => Field::Int(self.u64() as i64),
            b'D' => {
                self.take(5);
                Field::Other(b'D')
            }
            b'S' | b'x' => Field::Str(String::from_utf8_lossy(&self.long()).into_owned()),
            b'F' => self.table(),
            b'A' => {
                self.long();
                Field::Other(b'A')
            }
            b'V' => Field::Other(b'V'),
            other => panic!("unknown field type octet {other:#x}"),
        }
    }
}

/// A frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// `(class, method)` of a method frame.
    pub fn method_id(&self) -> Option<(u16, u16)> {
        (self.kind == FRAME_METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }

    /// The arguments of a method frame.
    pub fn args(&self) -> ArgReader<'_> {
        ArgReader::new(&self.payload[4..])
    }
}

/// A `connection.close` or `channel.close` the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerClose {
    pub channel: u16,
    /// (10, 50) for connection.close, (20, 40) for channel.close.
    pub close_method: (u16, u16),
    pub reply_code: u16,
    pub reply_text: String,
    /// The class and method the server blames (0, 0 when none).
    pub cause: (u16, u16),
}

/// How a read of the next frame ended without a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFrame {
    /// The server closed or reset the socket.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

/// A blocking AMQP connection driven by hand.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects the socket and sends nothing.
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("tcp connect");
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes the handshake as guest/guest on vhost "/" with heartbeats off.
    pub fn handshake(addr: SocketAddr) -> RawConn {
        RawConn::handshake_with(addr, 0)
    }

    /// The handshake, asking for `heartbeat` seconds in tune-ok.
    pub fn handshake_with(addr: SocketAddr, heartbeat: u16) -> RawConn {
        let mut c = RawConn::connect(addr);
        c.send(PROTOCOL_HEADER);
        c.expect_method(0, (10, 10)); // connection.start
        c.send_start_ok_plain("guest", "guest");
        c.expect_method(0, (10, 30)); // connection.tune
        c.send_tune_ok(2047, RAW_FRAME_MAX, heartbeat);
        c.send_open("/");
        c.expect_method(0, (10, 41)); // connection.open-ok
        c
    }

    /// The handshake, then `channel.open` on channel 1.
    pub fn open(addr: SocketAddr) -> RawConn {
        let mut c = RawConn::handshake(addr);
        c.open_channel(1);
        c
    }

    pub fn send_start_ok_plain(&mut self, user: &str, pass: &str) {
        let response = format!("\0{user}\0{pass}");
        let args = Args::new()
            .empty_table()
            .short("PLAIN")
            .long(response.as_bytes())
            .short("en_US");
        self.send(&method_frame(0, 10, 11, &args.0));
    }

    pub fn send_tune_ok(&mut self, channel_max: u16, frame_max: u32, heartbeat: u16) {
        let args = Args::new().u16(channel_max).u32(frame_max).u16(heartbeat);
        self.send(&method_frame(0, 10, 31, &args.0));
    }

    pub fn send_open(&mut self, vhost: &str) {
        let args = Args::new().short(vhost).short("").bits(&[false]);
        self.send(&method_frame(0, 10, 40, &args.0));
    }

    /// `channel.open`, waiting for open-ok.
    pub fn open_channel(&mut self, channel: u16) {
        self.send(&method_frame(channel, 20, 10, &Args::new().short("").0));
        self.expect_method(channel, (20, 11));
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the broker");
    }

    /// Sends bytes, tolerating a server that already closed the socket.
    pub fn try_send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads raw bytes until `n` arrived, the peer closed, or `timeout` passed.
    pub fn read_bytes(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() < n {
            if self.fill(deadline).is_err() {
                break;
            }
        }
        let take = n.min(self.buf.len());
        self.buf.drain(..take).collect()
    }

    /// Reads more bytes into the buffer before `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), NoFrame> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NoFrame::TimedOut);
        }
        self.stream
            .set_read_timeout(Some(left))
            .expect("set read timeout");
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(NoFrame::Closed),
            Ok(k) => {
                self.buf.extend_from_slice(&chunk[..k]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(NoFrame::TimedOut)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(NoFrame::Closed),
        }
    }

    /// The next frame, or why none came within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<RawFrame, NoFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 7 {
                let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]])
                    as usize;
                if self.buf.len() >= size + 8 {
                    let f: Vec<u8> = self.buf.drain(..size + 8).collect();
                    assert_eq!(f[size + 7], 0xCE, "the server's frame ends with 0xCE");
                    return Ok(RawFrame {
                        kind: f[0],
                        channel: u16::from_be_bytes([f[1], f[2]]),
                        payload: f[7..7 + size].to_vec(),
                    });
                }
            }
            self.fill(deadline)?;
        }
    }

    /// Reads until the method `id` arrives on `channel`, skipping heartbeats; panics on anything
    /// else or after 10 s.
    pub fn expect_method(&mut self, channel: u16, id: (u16, u16)) -> RawFrame {
        loop {
            let f = self
                .read_frame(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("waiting for method {id:?}: {e:?}"));
            if f.kind == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(
                (f.channel, f.method_id()),
                (channel, Some(id)),
                "expected method {id:?} on channel {channel}, got {f:?}"
            );
            return f;
        }
    }

    /// Reads frames until a connection.close or channel.close arrives: `(class, method,
    /// reply_code, reply_text)` of it, where (class, method) is (10, 50) or (20, 40).
    pub fn expect_close(&mut self, timeout: Duration) -> (u16, u16, u16, String) {
        let c = self.expect_server_close(timeout);
        (
            c.close_method.0,
            c.close_method.1,
            c.reply_code,
            c.reply_text,
        )
    }

    /// Like [`RawConn::expect_close`], with the channel and the method the server blames.
    pub fn expect_server_close(&mut self, timeout: Duration) -> ServerClose {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self
                .read_frame(left)
                .unwrap_or_else(|e| panic!("no connection.close or channel.close arrived: {e:?}"));
            if let Some(close_method @ ((10, 50) | (20, 40))) = f.method_id() {
                let mut a = f.args();
                let reply_code = a.u16();
                let reply_text = a.short();
                let cause = (a.u16(), a.u16());
                return ServerClose {
                    channel: f.channel,
                    close_method,
                    reply_code,
                    reply_text,
                    cause,
                };
            }
        }
    }

    /// Reads until the server closes the socket; returns the frames that came first. Panics if the
    /// socket is still open after `timeout`.
    pub fn expect_disconnect(&mut self, timeout: Duration) -> Vec<RawFrame> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(f) => frames.push(f),
                Err(NoFrame::Closed) => return frames,
                Err(NoFrame::TimedOut) => {
                    panic!("the server kept the socket open; frames so far: {frames:?}")
                }
            }
        }
    }

    /// Answers a server's connection.close with close-ok.
    pub fn send_close_ok(&mut self) {
        self.try_send(&method_frame(0, 10, 51, &[]));
    }
}
