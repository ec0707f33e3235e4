//! Primitive readers and writers: integers, strings and tables in network byte order.
//!
//! [`Reader`] reads from a `Bytes` payload, so strings and byte arrays it returns share that
//! payload's memory. Every read checks the remaining length first: a short payload is a syntax
//! error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::table::{FieldTable, FieldValue, MAX_NESTING};
use crate::{LongStr, ShortStr, WireError};

/// A cursor over a payload in AMQP's encodings (also used for Warren's own log records). Strings,
/// byte arrays and tables it returns share the payload's memory; every read checks the remaining
/// length first, so a short payload is an error, never a panic.
pub struct Reader {
    buf: Bytes,
    depth: usize,
}

const SHORT: WireError = WireError::Syntax {
    what: "payload (too short)",
};

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, depth: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            Err(SHORT)
        } else {
            Ok(())
        }
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn i8(&mut self) -> Result<i8, WireError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn i64(&mut self) -> Result<i64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    pub(crate) fn f32(&mut self) -> Result<f32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_f32())
    }

    pub(crate) fn f64(&mut self) -> Result<f64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_f64())
    }

    pub fn bytes(&mut self, n: usize) -> Result<Bytes, WireError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    pub fn short_str(&mut self) -> Result<ShortStr, WireError> {
        let n = usize::from(self.u8()?);
        let b = self.bytes(n)?;
        ShortStr::from_utf8(b).ok_or(WireError::Syntax {
            what: "shortstr (not UTF-8)",
        })
    }

    pub(crate) fn long_str(&mut self) -> Result<LongStr, WireError> {
        let n = self.u32()? as usize;
        Ok(LongStr::from(self.bytes(n)?))
    }

    /// Reads a length-prefixed table; nested tables and arrays count towards [`MAX_NESTING`].
    pub fn table(&mut self) -> Result<FieldTable, WireError> {
        let n = self.u32()? as usize;
        let body = self.bytes(n)?;
        let mut inner = Reader {
            buf: body,
            depth: self.depth + 1,
        };
        if inner.depth > MAX_NESTING {
            return Err(WireError::Syntax {
                what: "field table (nested too deeply)",
            });
        }
        let mut table = FieldTable::default();
        while inner.remaining() > 0 {
            let key = inner.short_str()?;
            let value = inner.field_value()?;
            table.push(key, value);
        }
        Ok(table)
    }

    fn array(&mut self) -> Result<Vec<FieldValue>, WireError> {
        let n = self.u32()? as usize;
        let body = self.bytes(n)?;
        let mut inner = Reader {
            buf: body,
            depth: self.depth + 1,
        };
        if inner.depth > MAX_NESTING {
            return Err(WireError::Syntax {
                what: "field array (nested too deeply)",
            });
        }
        let mut items = Vec::new();
        while inner.remaining() > 0 {
            items.push(inner.field_value()?);
        }
        Ok(items)
    }

    /// One tagged value, with the type letters RabbitMQ uses (`rabbit_binary_parser`).
    fn field_value(&mut self) -> Result<FieldValue, WireError> {
        Ok(match self.u8()? {
            b't' => FieldValue::Bool(self.u8()? != 0),
            b'b' => FieldValue::I8(self.i8()?),
            b'B' => FieldValue::U8(self.u8()?),
            b's' => FieldValue::I16(self.i16()?),
            b'u' => FieldValue::U16(self.u16()?),
            b'I' => FieldValue::I32(self.i32()?),
            b'i' => FieldValue::U32(self.u32()?),
            b'l' => FieldValue::I64(self.i64()?),
            b'f' => FieldValue::F32(self.f32()?),
            b'd' => FieldValue::F64(self.f64()?),
            b'D' => {
                let scale = self.u8()?;
                let value = self.u32()?;
                FieldValue::Decimal { scale, value }
            }
            b'S' => FieldValue::LongStr(self.long_str()?),
            b'x' => {
                let n = self.u32()? as usize;
                FieldValue::ByteArray(self.bytes(n)?)
            }
            b'A' => FieldValue::Array(self.array()?),
            b'T' => FieldValue::Timestamp(self.u64()?),
            b'F' => FieldValue::Table(self.table()?),
            b'V' => FieldValue::Void,
            _ => {
                return Err(WireError::Syntax {
                    what: "field value (unknown type)",
                })
            }
        })
    }
}

/// Writes a shortstr; a longer string is truncated to 255 bytes at a character boundary.
pub(crate) fn write_short_str(w: &mut BytesMut, s: &ShortStr) {
    let bytes = s.as_str();
    let mut end = bytes.len().min(255);
    while !bytes.is_char_boundary(end) {
        end -= 1;
    }
    w.put_u8(end as u8);
    w.put_slice(&bytes.as_bytes()[..end]);
}

pub(crate) fn write_long_str(w: &mut BytesMut, s: &LongStr) {
    w.put_u32(s.len() as u32);
    w.put_slice(s.as_bytes());
}

/// Writes a table with its length prefix, patched after the entries are written.
pub(crate) fn write_table(w: &mut BytesMut, t: &FieldTable) {
    let at = w.len();
    w.put_u32(0);
    for (k, v) in t.iter() {
        write_short_str(w, &ShortStr::from(k));
        write_value(w, v);
    }
    let n = (w.len() - at - 4) as u32;
    w[at..at + 4].copy_from_slice(&n.to_be_bytes());
}

fn write_value(w: &mut BytesMut, v: &FieldValue) {
    match v {
        FieldValue::Bool(b) => {
            w.put_u8(b't');
            w.put_u8(u8::from(*b));
        }
        FieldValue::I8(x) => {
            w.put_u8(b'b');
            w.put_i8(*x);
        }
        FieldValue::U8(x) => {
            w.put_u8(b'B');
            w.put_u8(*x);
        }
        FieldValue::I16(x) => {
            w.put_u8(b's');
            w.put_i16(*x);
        }
        FieldValue::U16(x) => {
            w.put_u8(b'u');
            w.put_u16(*x);
        }
        FieldValue::I32(x) => {
            w.put_u8(b'I');
            w.put_i32(*x);
        }
        FieldValue::U32(x) => {
            w.put_u8(b'i');
            w.put_u32(*x);
        }
        FieldValue::I64(x) => {
            w.put_u8(b'l');
            w.put_i64(*x);
        }
        FieldValue::F32(x) => {
            w.put_u8(b'f');
            w.put_f32(*x);
        }
        FieldValue::F64(x) => {
            w.put_u8(b'd');
            w.put_f64(*x);
        }
        FieldValue::Decimal { scale, value } => {
            w.put_u8(b'D');
            w.put_u8(*scale);
            w.put_u32(*value);
        }
        FieldValue::LongStr(s) => {
            w.put_u8(b'S');
            write_long_str(w, s);
        }
        FieldValue::ByteArray(b) => {
            w.put_u8(b'x');
            w.put_u32(b.len() as u32);
            w.put_slice(b);
        }
        FieldValue::Array(items) => {
            w.put_u8(b'A');
            let at = w.len();
            w.put_u32(0);
            for item in items {
                write_value(w, item);
            }
            let n = (w.len() - at - 4) as u32;
            w[at..at + 4].copy_from_slice(&n.to_be_bytes());
        }
        FieldValue::Timestamp(t) => {
            w.put_u8(b'T');
            w.put_u64(*t);
        }
        FieldValue::Table(t) => {
            w.put_u8(b'F');
            write_table(w, t);
        }
        FieldValue::Void => w.put_u8(b'V'),
    }
}

/// Decodes the entries of a field table that comes without its length prefix (the AMQPLAIN SASL
/// response is one).
pub fn decode_table_body(body: Bytes) -> Result<FieldTable, WireError> {
    let mut framed = BytesMut::with_capacity(body.len() + 4);
    framed.put_u32(body.len() as u32);
    framed.put_slice(&body);
    Reader::new(framed.freeze()).table()
}

/// Appends a field table with its 4-byte length prefix, as AMQP writes one.
pub fn encode_table(w: &mut BytesMut, table: &FieldTable) {
    write_table(w, table);
}

/// Decodes one length-prefixed field table that fills `bytes` exactly.
pub fn decode_table(bytes: Bytes) -> Result<FieldTable, WireError> {
    let mut r = Reader::new(bytes);
    let table = r.table()?;
    if r.remaining() != 0 {
        return Err(WireError::Syntax {
            what: "field table (trailing bytes)",
        });
    }
    Ok(table)
}
