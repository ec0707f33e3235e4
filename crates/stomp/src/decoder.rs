//! Reading frames out of the bytes a client sent, within limits.

use bytes::{Buf, BytesMut};

use crate::frame::{Command, Frame, Version};

/// What the decoder found at the front of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A lone end of line between frames: a heart-beat.
    Heartbeat,
    Frame(Frame),
}

/// RabbitMQ's STOMP limits (its defaults: `stomp.max_headers` 1 000, `stomp.max_header_length`
/// 100 KiB, `stomp.max_body_length` 100 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Headers in one frame.
    pub max_headers: usize,
    /// Bytes of one header line, and of the command line.
    pub max_header_length: usize,
    /// Bytes of one body.
    pub max_body_length: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_headers: 1_000,
            max_header_length: 100 * 1024,
            max_body_length: 100 * 1024 * 1024,
        }
    }
}

/// Why the bytes are not a STOMP frame: the connection gets an ERROR frame with this text and
/// is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    #[error("header line or command line longer than {0} bytes")]
    HeaderTooLong(usize),
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    #[error("body longer than {0} bytes")]
    BodyTooLong(usize),
    #[error("header line without a colon: {0:?}")]
    HeaderWithoutColon(String),
    #[error("invalid escape sequence in a header: {0:?}")]
    BadEscape(String),
    #[error("header or command line is not UTF-8")]
    NotUtf8,
    #[error("content-length is not a length: {0:?}")]
    BadContentLength(String),
    #[error("the frame's body is not ended by a NUL byte after its content-length")]
    MissingNul,
    #[error("empty command line")]
    EmptyCommand,
    #[error("a carriage return not followed by a line feed")]
    BareCarriageReturn,
}

/// Reads frames from a client's bytes. Which version's escaping applies changes once the
/// connection has negotiated one ([`Decoder::set_version`]); until then 1.0 (CONNECT and
/// STOMP frames never escape anyway).
#[derive(Clone, Debug)]
pub struct Decoder {
    version: Version,
    limits: Limits,
}

/// Where the header block of the frame at the front of a buffer ends.
struct Head {
    /// The lines before the empty line, each without its end of line.
    lines: Vec<(usize, usize)>,
    /// The first byte of the body.
    body_at: usize,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            version: Version::V1_0,
            limits,
        }
    }

    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The next item at the front of `buf`, consumed from it; `None` until a whole one is
    /// there. An error means the connection cannot go on (its buffer is left as it was).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Item>, StompError> {
        // A heart-beat: LF or CR LF where a frame could start.
        if buf.first() == Some(&b'\n') {
            buf.advance(1);
            return Ok(Some(Item::Heartbeat));
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            return Ok(Some(Item::Heartbeat));
        }
        let Some(head) = self.head(buf)? else {
            return Ok(None);
        };
        let Some(((cs, ce), header_lines)) = head.lines.split_first() else {
            return Err(StompError::EmptyCommand);
        };
        let command_line = std::str::from_utf8(&buf[*cs..*ce]).map_err(|_| StompError::NotUtf8)?;
        if command_line.is_empty() {
            return Err(StompError::EmptyCommand);
        }
        let command = Command::parse(command_line);
        let escaped = command.escapes_headers(self.version);
        let mut headers = Vec::with_capacity(header_lines.len());
        for &(s, e) in header_lines {
            let line = std::str::from_utf8(&buf[s..e]).map_err(|_| StompError::NotUtf8)?;
            let Some((name, value)) = line.split_once(':') else {
                return Err(StompError::HeaderWithoutColon(line.to_owned()));
            };
            let (name, value) = if escaped {
                (
                    unescape(name, self.version)?,
                    unescape(value, self.version)?,
                )
            } else {
                (name.to_owned(), value.to_owned())
            };
            headers.push((name, value));
        }
        // The first content-length counts, as any repeated header.
        let length = match headers.iter().find(|(n, _)| n == "content-length") {
            Some((_, v)) => Some(
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| StompError::BadContentLength(v.clone()))?,
            ),
            None => None,
        };
        let body_end = match length {
            Some(n) => {
                if n > self.limits.max_body_length {
                    return Err(StompError::BodyTooLong(self.limits.max_body_length));
                }
                let end = head.body_at + n;
                if buf.len() <= end {
                    return Ok(None);
                }
                if buf[end] != 0 {
                    return Err(StompError::MissingNul);
                }
                end
            }
            None => match buf[head.body_at..].iter().position(|&b| b == 0) {
                Some(n) if n > self.limits.max_body_length => {
                    return Err(StompError::BodyTooLong(self.limits.max_body_length));
                }
                Some(n) => head.body_at + n,
                None if buf.len() - head.body_at > self.limits.max_body_length => {
                    return Err(StompError::BodyTooLong(self.limits.max_body_length));
                }
                None => return Ok(None),
            },
        };
        let mut frame_bytes = buf.split_to(body_end + 1);
        frame_bytes.truncate(body_end);
        let body = frame_bytes.split_off(head.body_at).freeze();
        Ok(Some(Item::Frame(Frame {
            command,
            headers,
            body,
        })))
    }

    /// Finds the lines of the header block at the front of `buf`; `None` while it is not all
    /// there.
    fn head(&self, buf: &[u8]) -> Result<Option<Head>, StompError> {
        let mut lines = Vec::new();
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            let lf = rest.iter().position(|&b| b == b'\n');
            // A CR ends a line only right before its LF: anywhere else the bytes are no frame,
            // and waiting for more would not make them one.
            let line = &rest[..lf.unwrap_or(rest.len())];
            if line
                .iter()
                .position(|&b| b == b'\r')
                .is_some_and(|cr| cr + 1 < line.len())
            {
                return Err(StompError::BareCarriageReturn);
            }
            let Some(lf) = lf else {
                if buf.len() - start > self.limits.max_header_length {
                    return Err(StompError::HeaderTooLong(self.limits.max_header_length));
                }
                return Ok(None);
            };
            let mut end = start + lf;
            let next = end + 1;
            if end > start && buf[end - 1] == b'\r' {
                end -= 1;
            }
            if end - start > self.limits.max_header_length {
                return Err(StompError::HeaderTooLong(self.limits.max_header_length));
            }
            if end == start {
                return Ok(Some(Head {
                    lines,
                    body_at: next,
                }));
            }
            // The command line and the headers.
            if lines.len() > self.limits.max_headers {
                return Err(StompError::TooManyHeaders(self.limits.max_headers));
            }
            lines.push((start, end));
            start = next;
        }
    }
}

/// Undoes STOMP 1.1/1.2 header escaping (`\r` only from 1.2); any other escape is an error,
/// as the specification requires.
fn unescape(s: &str, version: Version) -> Result<String, StompError> {
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version >= Version::V1_2 => out.push('\r'),
            _ => return Err(StompError::BadEscape(s.to_owned())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::encode;
    use proptest::prelude::*;

    fn decode_all(d: &Decoder, bytes: &[u8]) -> Result<Vec<Item>, StompError> {
        let mut buf = BytesMut::from(bytes);
        let mut items = Vec::new();
        while let Some(item) = d.decode(&mut buf)? {
            items.push(item);
        }
        Ok(items)
    }

    fn v12() -> Decoder {
        let mut d = Decoder::new(Limits::default());
        d.set_version(Version::V1_2);
        d
    }

    #[test]
    fn a_send_frame_with_escaped_headers_and_heartbeats_around_it() {
        let bytes = b"\nSEND\r\ndestination:/queue/a\\cb\nfoo:x\\ny\nfoo:second\n\nhello\0\r\n\n";
        let items = decode_all(&v12(), bytes).expect("valid");
        let frame = Frame::new(Command::Send)
            .with_header("destination", "/queue/a:b")
            .with_header("foo", "x\ny")
            .with_header("foo", "second")
            .with_body(&b"hello"[..]);
        assert_eq!(
            items,
            [
                Item::Heartbeat,
                Item::Frame(frame.clone()),
                Item::Heartbeat,
                Item::Heartbeat
            ]
        );
        // The first of a repeated header counts.
        assert_eq!(frame.header("foo"), Some("x\ny"));
    }

    #[test]
    fn content_length_allows_nul_bytes_in_the_body_and_must_be_followed_by_nul() {
        let d = v12();
        let items = decode_all(&d, b"SEND\ncontent-length:3\n\na\0b\0").expect("valid");
        assert_eq!(
            items,
            [Item::Frame(
                Frame::new(Command::Send)
                    .with_header("content-length", "3")
                    .with_body(&b"a\0b"[..])
            )]
        );
        assert_eq!(
            decode_all(&d, b"SEND\ncontent-length:2\n\nabc\0"),
            Err(StompError::MissingNul)
        );
        assert_eq!(
            decode_all(&d, b"SEND\ncontent-length:x\n\n\0"),
            Err(StompError::BadContentLength("x".into()))
        );
    }

    #[test]
    fn connect_is_never_unescaped_and_1_1_has_no_carriage_return_escape() {
        let d = v12();
        let items = decode_all(&d, b"CONNECT\nlogin:a\\cb\n\n\0").expect("valid");
        assert_eq!(
            items,
            [Item::Frame(
                Frame::new(Command::Connect).with_header("login", "a\\cb")
            )]
        );
        let mut d11 = Decoder::new(Limits::default());
        d11.set_version(Version::V1_1);
        assert!(matches!(
            decode_all(&d11, b"SEND\nh:a\\rb\n\n\0"),
            Err(StompError::BadEscape(_))
        ));
        assert!(matches!(
            decode_all(&d, b"SEND\nh:a\\tb\n\n\0"),
            Err(StompError::BadEscape(_))
        ));
    }

    #[test]
    fn limits_hold_before_a_frame_is_whole() {
        let limits = Limits {
            max_headers: 2,
            max_header_length: 16,
            max_body_length: 8,
        };
        let d = Decoder::new(limits);
        // A header line that never ends is refused once it is too long.
        assert_eq!(
            decode_all(&d, b"SEND\nh:0123456789abcdef"),
            Err(StompError::HeaderTooLong(16))
        );
        assert_eq!(
            decode_all(&d, b"SEND\na:1\nb:2\nc:3\n\n\0"),
            Err(StompError::TooManyHeaders(2))
        );
        // A body that never ends, or announces too much.
        assert_eq!(
            decode_all(&d, b"SEND\n\n0123456789"),
            Err(StompError::BodyTooLong(8))
        );
        assert_eq!(
            decode_all(&d, b"SEND\ncontent-length:9\n\n"),
            Err(StompError::BodyTooLong(8))
        );
        // Within them: nothing yet, nothing consumed.
        let mut buf = BytesMut::from(&b"SEND\n\n0123"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"SEND\n\n0123");
        assert_eq!(
            decode_all(&d, b"SEND\nno colon\n\n\0"),
            Err(StompError::HeaderWithoutColon("no colon".into()))
        );
        assert_eq!(decode_all(&d, b"\r\n\r\n"), Ok(vec![Item::Heartbeat; 2]));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just(':'),
                Just('\\'),
                Just('\n'),
                Just('\r'),
                Just('é'),
                Just(' ')
            ],
            0..12,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            prop_oneof![
                Just(Command::Send),
                Just(Command::Message),
                Just(Command::Subscribe),
                Just(Command::Error),
            ],
            proptest::collection::vec((arb_text(), arb_text()), 0..5),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(command, headers, body)| Frame {
                command,
                headers,
                body: body.into(),
            })
    }

    proptest! {
        #[test]
        fn what_is_encoded_decodes_back_whatever_the_chunks(
            frames in proptest::collection::vec(arb_frame(), 1..4),
            cut in 0usize..200,
        ) {
            let d = v12();
            let mut bytes = BytesMut::new();
            for f in &frames {
                encode(f, Version::V1_2, &mut bytes);
            }
            // Fed in two pieces, cut anywhere.
            let cut = cut.min(bytes.len());
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(Item::Frame(f)) = d.decode(&mut buf).expect("valid") {
                got.push(f);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(Item::Frame(f)) = d.decode(&mut buf).expect("valid") {
                got.push(f);
            }
            // Encoding adds content-length to a frame with a body.
            let want: Vec<Frame> = frames
                .into_iter()
                .map(|mut f| {
                    if !f.body.is_empty() && f.header("content-length").is_none() {
                        f.headers.push(("content-length".into(), f.body.len().to_string()));
                    }
                    f
                })
                .collect();
            prop_assert_eq!(got, want);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_within_limits(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(0u8), Just(b'\\'), any::<u8>()],
                0..300,
            ),
        ) {
            let d = Decoder::new(Limits { max_headers: 4, max_header_length: 32, max_body_length: 64 });
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(item)) = d.decode(&mut buf) {
                if let Item::Frame(f) = item {
                    prop_assert!(f.headers.len() <= 4);
                    prop_assert!(f.body.len() <= 64);
                }
            }
        }
    }
}
