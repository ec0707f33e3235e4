//! Writing frames for a client.

use bytes::{BufMut, BytesMut};

use crate::frame::{Frame, Version};

/// Appends `frame` to `out` as `version` writes it: headers escaped where that version escapes
/// them, a `content-length` added to a frame with a body that has none (so a body may hold NUL
/// bytes, as RabbitMQ always sends it), the body, NUL. Headers of frames that are not escaped
/// (any frame in 1.0, CONNECTED) must not hold line ends: the caller chooses them.
pub fn encode(frame: &Frame, version: Version, out: &mut BytesMut) {
    let escaped = frame.command.escapes_headers(version);
    out.put_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');
    for (name, value) in &frame.headers {
        put_header_text(out, name, escaped, version);
        out.put_u8(b':');
        put_header_text(out, value, escaped, version);
        out.put_u8(b'\n');
    }
    if !frame.body.is_empty() && frame.header("content-length").is_none() {
        out.put_slice(b"content-length:");
        out.put_slice(frame.body.len().to_string().as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}

fn put_header_text(out: &mut BytesMut, s: &str, escaped: bool, version: Version) {
    if !escaped {
        out.put_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.put_slice(b"\\\\"),
            '\n' => out.put_slice(b"\\n"),
            ':' => out.put_slice(b"\\c"),
            '\r' if version >= Version::V1_2 => out.put_slice(b"\\r"),
            c => {
                let mut utf8 = [0u8; 4];
                out.put_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Command;

    #[test]
    fn a_message_is_written_as_rabbitmq_writes_it() {
        let frame = Frame::new(Command::Message)
            .with_header("destination", "/queue/a:b")
            .with_header("subscription", "0")
            .with_body(&b"hi"[..]);
        let mut out = BytesMut::new();
        encode(&frame, Version::V1_2, &mut out);
        assert_eq!(
            &out[..],
            b"MESSAGE\ndestination:/queue/a\\cb\nsubscription:0\ncontent-length:2\n\nhi\0"
        );
        // CONNECTED is never escaped; 1.0 escapes nothing.
        let mut out = BytesMut::new();
        encode(
            &Frame::new(Command::Connected).with_header("server", "Warren/0.1:x"),
            Version::V1_2,
            &mut out,
        );
        assert_eq!(&out[..], b"CONNECTED\nserver:Warren/0.1:x\n\n\0");
        let mut out = BytesMut::new();
        encode(
            &Frame::new(Command::Receipt).with_header("receipt-id", "a:b"),
            Version::V1_0,
            &mut out,
        );
        assert_eq!(&out[..], b"RECEIPT\nreceipt-id:a:b\n\n\0");
    }
}
