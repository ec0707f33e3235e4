//! Field tables and field values (`table`, `array`), as RabbitMQ reads and writes them.

use bytes::Bytes;

use crate::{LongStr, ShortStr};

/// How deeply tables and arrays may nest inside one another before decoding fails.
pub const MAX_NESTING: usize = 16;

/// One field value. The variants are the type letters RabbitMQ accepts:
/// t b B s u I i l f d D S x A T F V.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal { scale: u8, value: u32 },
    LongStr(LongStr),
    ByteArray(Bytes),
    Array(Vec<FieldValue>),
    Timestamp(u64),
    Table(FieldTable),
    Void,
}

impl FieldValue {
    /// The value as text, for a UTF-8 `longstr`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(s) => s.to_str(),
            _ => None,
        }
    }

    /// The value as an integer, for any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(x) => i64::from(x),
            FieldValue::U8(x) => i64::from(x),
            FieldValue::I16(x) => i64::from(x),
            FieldValue::U16(x) => i64::from(x),
            FieldValue::I32(x) => i64::from(x),
            FieldValue::U32(x) => i64::from(x),
            FieldValue::I64(x) => x,
            FieldValue::Timestamp(x) => i64::try_from(x).ok()?,
            _ => return None,
        })
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> FieldValue {
        FieldValue::LongStr(LongStr::from(s))
    }
}

impl From<bool> for FieldValue {
    fn from(b: bool) -> FieldValue {
        FieldValue::Bool(b)
    }
}

/// A field table: keys in the order they arrived (re-encoding yields the same bytes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldTable(Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// Sets `key`, replacing an existing entry in place.
    pub fn insert(&mut self, key: impl Into<ShortStr>, value: FieldValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let at = self.0.iter().position(|(k, _)| k.as_str() == key)?;
        Some(self.0.remove(at).1)
    }

    /// Appends as decoded, keeping duplicates (the first one wins in [`get`](Self::get)).
    pub(crate) fn push(&mut self, key: ShortStr, value: FieldValue) {
        self.0.push((key, value));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<ShortStr>> FromIterator<(K, FieldValue)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, FieldValue)>>(iter: I) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in iter {
            t.insert(k, v);
        }
        t
    }
}

#[cfg(test)]
pub(crate) mod strategy {
    //! Arbitrary strings, values and tables for property tests.
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_short_str() -> impl Strategy<Value = ShortStr> {
        "[a-zA-Z0-9.#*_ é-]{0,40}".prop_map(ShortStr::from)
    }

    pub(crate) fn arb_long_str() -> impl Strategy<Value = LongStr> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| LongStr::from(v.as_slice()))
    }

    fn arb_leaf() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            // NaN != NaN would fail equality; finite floats round-trip exactly.
            (-1e30f32..1e30f32).prop_map(FieldValue::F32),
            (-1e300f64..1e300f64).prop_map(FieldValue::F64),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            arb_long_str().prop_map(FieldValue::LongStr),
            proptest::collection::vec(any::<u8>(), 0..16)
                .prop_map(|v| FieldValue::ByteArray(Bytes::from(v))),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
        ]
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = FieldValue> {
        arb_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(FieldValue::Array),
                proptest::collection::vec(("[a-z-]{1,12}", inner), 0..4)
                    .prop_map(|kv| { FieldValue::Table(kv.into_iter().collect()) }),
            ]
        })
    }

    pub(crate) fn arb_table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::vec(("[a-z_-]{1,16}", arb_value()), 0..5)
            .prop_map(|kv| kv.into_iter().collect())
    }
}
