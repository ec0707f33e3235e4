//! The building blocks of Warren's own byte records — the Raft log's commands, snapshots, and the
//! broker traffic between nodes — kept in one place so that every record spells a string, a
//! flag or a set of properties the same way.
//!
//! Integers are big-endian and fixed-width. A *short* string is AMQP's shortstr (u8 length); a
//! *long* byte string or *text* has a u32 length. Field tables and basic properties use their
//! AMQP wire encodings, so a record can carry whatever a client sent without translating it.
//! Readers check every length against what is left before allocating, and fail with
//! [`WireError::Syntax`] naming what did not decode.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    encode_table, BasicProperties, ContentHeader, FieldTable, Reader, ShortStr, WireError,
};

/// A shortstr: u8 length, at most 255 bytes (a longer string is cut, as AMQP cannot say more).
pub fn put_short(w: &mut BytesMut, s: &ShortStr) {
    let b = s.as_bytes();
    let n = b.len().min(255);
    w.put_u8(n as u8);
    w.put_slice(&b[..n]);
}

/// A flag: one byte, 0 or 1.
pub fn put_bool(w: &mut BytesMut, b: bool) {
    w.put_u8(u8::from(b));
}

/// Reads a flag written by [`put_bool`]; any other byte is an error.
pub fn read_bool(r: &mut Reader) -> Result<bool, WireError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::Syntax { what: "bad bool" }),
    }
}

/// A count of what follows: u32 (saturating; no record holds 4 billion of anything).
pub fn put_count(w: &mut BytesMut, n: usize) {
    w.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
}

/// A byte string of any length: u32 length, then the bytes.
pub fn put_long(w: &mut BytesMut, b: &[u8]) {
    put_count(w, b.len());
    w.put_slice(b);
}

/// Reads a byte string written by [`put_long`], without copying it.
pub fn read_long(r: &mut Reader) -> Result<Bytes, WireError> {
    let n = r.u32()? as usize;
    if r.remaining() < n {
        return Err(WireError::Syntax {
            what: "text longer than its record",
        });
    }
    r.bytes(n)
}

/// A string of any length (user names, password hashes, regexes, error texts): a long byte
/// string holding UTF-8.
pub fn put_text(w: &mut BytesMut, s: &str) {
    put_long(w, s.as_bytes());
}

/// Reads a string written by [`put_text`].
pub fn read_text(r: &mut Reader) -> Result<String, WireError> {
    String::from_utf8(read_long(r)?.to_vec()).map_err(|_| WireError::Syntax {
        what: "text is not UTF-8",
    })
}

/// A list of strings: a count, then each as [`put_text`].
pub fn put_texts(w: &mut BytesMut, texts: &[String]) {
    put_count(w, texts.len());
    for t in texts {
        put_text(w, t);
    }
}

/// Reads a list written by [`put_texts`].
pub fn read_texts(r: &mut Reader) -> Result<Vec<String>, WireError> {
    let n = r.u32()? as usize;
    // Each takes at least its 4-byte length: refuse a count the record cannot hold.
    if r.remaining() < n.saturating_mul(4) {
        return Err(WireError::Syntax { what: "too short" });
    }
    (0..n).map(|_| read_text(r)).collect()
}

/// An optional number: a flag byte, then the u64 when present.
pub fn put_opt_u64(w: &mut BytesMut, n: Option<u64>) {
    match n {
        Some(n) => {
            w.put_u8(1);
            w.put_u64(n);
        }
        None => w.put_u8(0),
    }
}

/// Reads a number written by [`put_opt_u64`]; `what` names it in the error for a bad flag.
pub fn read_opt_u64(r: &mut Reader, what: &'static str) -> Result<Option<u64>, WireError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        _ => Err(WireError::Syntax { what }),
    }
}

/// An unsigned number in 7-bit groups, low first, the high bit set on all but the last byte
/// (LEB128): 1 byte below 128, at most 10.
pub fn put_varint(w: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        w.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    w.put_u8(v as u8);
}

/// Reads a number written by [`put_varint`]; refuses one longer than 10 bytes.
pub fn read_varint(r: &mut Reader) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = r.u8()?;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError::Syntax {
        what: "varint too long",
    })
}

/// Numbers (queue ids, say) as a varint count, then each as a varint.
pub fn put_varints(w: &mut BytesMut, values: &[u64]) {
    put_varint(w, values.len() as u64);
    for v in values {
        put_varint(w, *v);
    }
}

/// Reads numbers written by [`put_varints`].
pub fn read_varints(r: &mut Reader) -> Result<Vec<u64>, WireError> {
    let n = read_varint(r)?;
    // Each takes at least a byte: refuse a count the record cannot hold before allocating.
    if (r.remaining() as u64) < n {
        return Err(WireError::Syntax { what: "too short" });
    }
    (0..n).map(|_| read_varint(r)).collect()
}

/// A field table in its AMQP encoding (u32 length, then the fields).
pub fn put_table(w: &mut BytesMut, t: &FieldTable) {
    encode_table(w, t);
}

/// Basic properties in their AMQP content-header encoding (class 60, the body's size), with a
/// u32 length in front.
pub fn put_properties(w: &mut BytesMut, properties: &BasicProperties, body_len: usize) {
    let header = ContentHeader {
        class_id: 60,
        weight: 0,
        body_size: body_len as u64,
        properties: properties.clone(),
    };
    let mut h = BytesMut::new();
    header.encode(&mut h);
    put_long(w, &h);
}

/// Reads properties written by [`put_properties`].
pub fn read_properties(r: &mut Reader) -> Result<BasicProperties, WireError> {
    let n = r.u32()? as usize;
    let header = ContentHeader::decode(r.bytes(n)?).map_err(|_| WireError::Syntax {
        what: "bad properties",
    })?;
    Ok(header.properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FieldValue;

    fn reader(w: BytesMut) -> Reader {
        Reader::new(w.freeze())
    }

    #[test]
    fn each_primitive_has_the_bytes_its_doc_says_and_reads_back() {
        let mut w = BytesMut::new();
        put_short(&mut w, &ShortStr::from("ab"));
        put_bool(&mut w, true);
        put_text(&mut w, "é");
        put_texts(&mut w, &["x".to_string()]);
        put_opt_u64(&mut w, Some(7));
        put_opt_u64(&mut w, None);
        let golden: &[u8] = &[
            2, b'a', b'b', // short
            1,    // bool
            0, 0, 0, 2, 0xc3, 0xa9, // text
            0, 0, 0, 1, 0, 0, 0, 1, b'x', // texts
            1, 0, 0, 0, 0, 0, 0, 0, 7, // Some(7)
            0, // None
        ];
        assert_eq!(&w[..], golden);
        let mut r = reader(w);
        assert_eq!(r.short_str().unwrap(), ShortStr::from("ab"));
        assert!(read_bool(&mut r).unwrap());
        assert_eq!(read_text(&mut r).unwrap(), "é");
        assert_eq!(read_texts(&mut r).unwrap(), vec!["x".to_string()]);
        assert_eq!(read_opt_u64(&mut r, "n").unwrap(), Some(7));
        assert_eq!(read_opt_u64(&mut r, "n").unwrap(), None);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn varints_take_a_byte_per_seven_bits_and_read_back() {
        let mut w = BytesMut::new();
        put_varints(&mut w, &[0, 127, 128, 300, u64::MAX]);
        let golden: &[u8] = &[
            5, // count
            0, 0x7f, 0x80, 0x01, 0xac, 0x02, // 0, 127, 128, 300
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // u64::MAX
        ];
        assert_eq!(&w[..], golden);
        let mut r = reader(w);
        assert_eq!(read_varints(&mut r).unwrap(), [0, 127, 128, 300, u64::MAX]);
        assert_eq!(r.remaining(), 0);
        let refused = |bytes: &[u8]| {
            read_varints(&mut Reader::new(Bytes::copy_from_slice(bytes))).unwrap_err()
        };
        assert_eq!(refused(&[3, 1]), WireError::Syntax { what: "too short" });
        assert_eq!(
            refused(&[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            WireError::Syntax {
                what: "varint too long"
            }
        );
    }

    #[test]
    fn a_short_string_over_255_bytes_is_cut_to_255() {
        let mut w = BytesMut::new();
        put_short(&mut w, &ShortStr::from("x".repeat(300)));
        assert_eq!(w[0], 255);
        assert_eq!(w.len(), 256);
    }

    #[test]
    fn properties_and_tables_read_back() {
        let mut table = FieldTable::default();
        table.insert("k", FieldValue::I32(5));
        let properties = BasicProperties {
            delivery_mode: Some(2),
            headers: Some(table.clone()),
            ..BasicProperties::default()
        };
        let mut w = BytesMut::new();
        put_properties(&mut w, &properties, 10);
        put_table(&mut w, &table);
        let mut r = reader(w);
        assert_eq!(read_properties(&mut r).unwrap(), properties);
        assert_eq!(r.table().unwrap(), table);
    }

    #[test]
    fn bad_input_is_an_error_naming_what() {
        let bad = |bytes: &[u8], read: fn(&mut Reader) -> Result<(), WireError>| {
            read(&mut Reader::new(Bytes::copy_from_slice(bytes))).unwrap_err()
        };
        assert_eq!(
            bad(&[2], |r| read_bool(r).map(drop)),
            WireError::Syntax { what: "bad bool" }
        );
        assert_eq!(
            bad(&[0, 0, 0, 9, b'a'], |r| read_text(r).map(drop)),
            WireError::Syntax {
                what: "text longer than its record"
            }
        );
        assert_eq!(
            bad(&[0, 0, 0, 1, 0xff], |r| read_text(r).map(drop)),
            WireError::Syntax {
                what: "text is not UTF-8"
            }
        );
        assert_eq!(
            bad(&[0xff, 0xff, 0xff, 0xff], |r| read_texts(r).map(drop)),
            WireError::Syntax { what: "too short" }
        );
        assert_eq!(
            bad(&[2], |r| read_opt_u64(r, "bad confirm flag").map(drop)),
            WireError::Syntax {
                what: "bad confirm flag"
            }
        );
    }
}
