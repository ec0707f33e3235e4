//! Content headers and the 14 `basic` properties, with their property-flags bitmap.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{write_short_str, write_table, Reader};
use crate::{FieldTable, ShortStr, WireError};

/// The `basic` class properties; `None` means the flag bit is clear.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicProperties {
    pub content_type: Option<ShortStr>,
    pub content_encoding: Option<ShortStr>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ShortStr>,
    pub reply_to: Option<ShortStr>,
    pub expiration: Option<ShortStr>,
    pub message_id: Option<ShortStr>,
    pub timestamp: Option<u64>,
    /// The spec's `type` property.
    pub kind: Option<ShortStr>,
    pub user_id: Option<ShortStr>,
    pub app_id: Option<ShortStr>,
    pub cluster_id: Option<ShortStr>,
}

impl BasicProperties {
    /// True when `delivery-mode` is 2 (persistent).
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<BasicProperties, WireError> {
        let mut flags = r.u16()?;
        let first = flags;
        // Bit 0 set means another flags word follows; the basic class defines none, skip them.
        while flags & 1 != 0 {
            flags = r.u16()?;
        }
        let flags = first;
        let has = |bit: u16| flags & (1 << bit) != 0;
        let mut p = BasicProperties::default();
        if has(15) {
            p.content_type = Some(r.short_str()?);
        }
        if has(14) {
            p.content_encoding = Some(r.short_str()?);
        }
        if has(13) {
            p.headers = Some(r.table()?);
        }
        if has(12) {
            p.delivery_mode = Some(r.u8()?);
        }
        if has(11) {
            p.priority = Some(r.u8()?);
        }
        if has(10) {
            p.correlation_id = Some(r.short_str()?);
        }
        if has(9) {
            p.reply_to = Some(r.short_str()?);
        }
        if has(8) {
            p.expiration = Some(r.short_str()?);
        }
        if has(7) {
            p.message_id = Some(r.short_str()?);
        }
        if has(6) {
            p.timestamp = Some(r.u64()?);
        }
        if has(5) {
            p.kind = Some(r.short_str()?);
        }
        if has(4) {
            p.user_id = Some(r.short_str()?);
        }
        if has(3) {
            p.app_id = Some(r.short_str()?);
        }
        if has(2) {
            p.cluster_id = Some(r.short_str()?);
        }
        Ok(p)
    }

    pub(crate) fn encode(&self, w: &mut BytesMut) {
        let mut flags = 0u16;
        let mut set = |bit: u16, present: bool| {
            if present {
                flags |= 1 << bit;
            }
        };
        set(15, self.content_type.is_some());
        set(14, self.content_encoding.is_some());
        set(13, self.headers.is_some());
        set(12, self.delivery_mode.is_some());
        set(11, self.priority.is_some());
        set(10, self.correlation_id.is_some());
        set(9, self.reply_to.is_some());
        set(8, self.expiration.is_some());
        set(7, self.message_id.is_some());
        set(6, self.timestamp.is_some());
        set(5, self.kind.is_some());
        set(4, self.user_id.is_some());
        set(3, self.app_id.is_some());
        set(2, self.cluster_id.is_some());
        w.put_u16(flags);
        let s = |w: &mut BytesMut, v: &Option<ShortStr>| {
            if let Some(v) = v {
                write_short_str(w, v);
            }
        };
        s(w, &self.content_type);
        s(w, &self.content_encoding);
        if let Some(h) = &self.headers {
            write_table(w, h);
        }
        if let Some(v) = self.delivery_mode {
            w.put_u8(v);
        }
        if let Some(v) = self.priority {
            w.put_u8(v);
        }
        s(w, &self.correlation_id);
        s(w, &self.reply_to);
        s(w, &self.expiration);
        s(w, &self.message_id);
        if let Some(v) = self.timestamp {
            w.put_u64(v);
        }
        s(w, &self.kind);
        s(w, &self.user_id);
        s(w, &self.app_id);
        s(w, &self.cluster_id);
    }
}

/// A content header frame's payload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub weight: u16,
    pub body_size: u64,
    pub properties: BasicProperties,
}

impl ContentHeader {
    /// Decodes a header frame payload; trailing bytes are a syntax error.
    pub fn decode(payload: Bytes) -> Result<ContentHeader, WireError> {
        let mut r = Reader::new(payload);
        let class_id = r.u16()?;
        let weight = r.u16()?;
        let body_size = r.u64()?;
        let properties = BasicProperties::decode(&mut r)?;
        if r.remaining() != 0 {
            return Err(WireError::Syntax {
                what: "content header (trailing bytes)",
            });
        }
        Ok(ContentHeader {
            class_id,
            weight,
            body_size,
            properties,
        })
    }

    pub fn encode(&self, w: &mut BytesMut) {
        w.put_u16(self.class_id);
        w.put_u16(self.weight);
        w.put_u64(self.body_size);
        self.properties.encode(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::strategy::{arb_short_str, arb_table};
    use proptest::prelude::*;

    fn arb_props() -> impl Strategy<Value = BasicProperties> {
        let s = || proptest::option::of(arb_short_str());
        (
            (
                s(),
                s(),
                proptest::option::of(arb_table()),
                proptest::option::of(any::<u8>()),
            ),
            (proptest::option::of(any::<u8>()), s(), s(), s(), s()),
            (proptest::option::of(any::<u64>()), s(), s(), s(), s()),
        )
            .prop_map(
                |((a, b, c, d), (e, f, g, h, i), (j, k, l, m, n))| BasicProperties {
                    content_type: a,
                    content_encoding: b,
                    headers: c,
                    delivery_mode: d,
                    priority: e,
                    correlation_id: f,
                    reply_to: g,
                    expiration: h,
                    message_id: i,
                    timestamp: j,
                    kind: k,
                    user_id: l,
                    app_id: m,
                    cluster_id: n,
                },
            )
    }

    proptest! {
        #[test]
        fn header_round_trips(props in arb_props(), size in any::<u64>()) {
            let h = ContentHeader { class_id: 60, weight: 0, body_size: size, properties: props };
            let mut w = BytesMut::new();
            h.encode(&mut w);
            prop_assert_eq!(ContentHeader::decode(w.freeze()).unwrap(), h);
        }
    }

    #[test]
    fn golden_persistent_text_plain() {
        let h = ContentHeader {
            class_id: 60,
            weight: 0,
            body_size: 5,
            properties: BasicProperties {
                content_type: Some("text/plain".into()),
                delivery_mode: Some(2),
                ..Default::default()
            },
        };
        let mut w = BytesMut::new();
        h.encode(&mut w);
        let mut expected = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0b1001_0000, 0, 10];
        expected.extend_from_slice(b"text/plain");
        expected.push(2);
        assert_eq!(&w[..], &expected[..]);
    }
}
