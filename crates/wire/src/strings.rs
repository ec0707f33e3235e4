//! `shortstr` and `longstr`: byte strings that share the frame buffer they were decoded from.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// An AMQP `shortstr`: at most 255 bytes of UTF-8 (validated on decode). Cloning is a reference
/// count, not a copy. Hashes, compares and orders exactly as the `str` it holds, so maps keyed by
/// `ShortStr` can be queried with `&str`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

impl Hash for ShortStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl ShortStr {
    /// Wraps bytes already known to be UTF-8.
    pub(crate) fn from_utf8(bytes: Bytes) -> Option<ShortStr> {
        std::str::from_utf8(&bytes).ok()?;
        Some(ShortStr(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Every constructor checks UTF-8; an empty string is the only fallback and is unreachable.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ShortStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> ShortStr {
        ShortStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> ShortStr {
        ShortStr(Bytes::from(s))
    }
}

impl From<&String> for ShortStr {
    fn from(s: &String) -> ShortStr {
        ShortStr::from(s.as_str())
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An AMQP `longstr`: up to 4 GiB of arbitrary bytes (SASL responses, table values).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LongStr(Bytes);

impl LongStr {
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes as text, if they are UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Bytes> for LongStr {
    fn from(b: Bytes) -> LongStr {
        LongStr(b)
    }
}

impl From<&str> for LongStr {
    fn from(s: &str) -> LongStr {
        LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> LongStr {
        LongStr(Bytes::from(s))
    }
}

impl From<&[u8]> for LongStr {
    fn from(s: &[u8]) -> LongStr {
        LongStr(Bytes::copy_from_slice(s))
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => fmt::Debug::fmt(&self.0, f),
        }
    }
}
