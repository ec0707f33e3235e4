//! MQTT's data representation (spec §1.5): two and four byte integers, variable byte integers,
//! UTF-8 encoded strings and binary data, read out of one packet's bytes and written into a
//! buffer. Nothing here knows which packet holds the field.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::encoder::EncodeError;
use crate::error::MqttError;
use crate::packet::PacketType;

/// The largest value of a variable byte integer, and so of a remaining length.
pub(crate) const MAX_VARIABLE_BYTE_INTEGER: u32 = 268_435_455;

/// Reads the variable byte integer at the front of `bytes`: its value and how many bytes it
/// took, or `None` while it is not all there. More than four bytes, or more bytes than the
/// value needs (the specification asks for the shortest form), is malformed.
pub(crate) fn read_variable_byte_integer(bytes: &[u8]) -> Result<Option<(u32, usize)>, MqttError> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(MqttError::MalformedVariableByteInteger);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err(MqttError::MalformedVariableByteInteger);
    }
    Ok(None)
}

/// How many bytes `value` takes as a variable byte integer.
pub(crate) fn variable_byte_integer_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `value` as a variable byte integer.
pub(crate) fn put_variable_byte_integer(out: &mut BytesMut, value: u32) -> Result<(), EncodeError> {
    if value > MAX_VARIABLE_BYTE_INTEGER {
        return Err(EncodeError::VariableByteIntegerTooLarge(value));
    }
    let mut rest = value;
    loop {
        // Seven bits at a time; the mask keeps the cast lossless.
        let byte = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            out.put_u8(byte);
            return Ok(());
        }
        out.put_u8(byte | 0x80);
    }
}

/// Appends binary data: a two byte length, then the bytes.
pub(crate) fn put_binary(out: &mut BytesMut, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(bytes.len()))?;
    out.put_u16(len);
    out.put_slice(bytes);
    Ok(())
}

/// Appends a UTF-8 encoded string: a two byte length, then the bytes. The string is written as
/// it is: a U+0000 in it makes a packet the peer refuses.
pub(crate) fn put_string(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_binary(out, s.as_bytes())
}

/// Reads the fields of one packet's variable header and payload, in order. Every read past the
/// end is malformed: the packet's remaining length ended before the field did.
pub(crate) struct Reader {
    bytes: Bytes,
    packet: PacketType,
}

impl Reader {
    /// A reader over the bytes after the fixed header of a packet of type `packet`.
    pub(crate) fn new(bytes: Bytes, packet: PacketType) -> Reader {
        Reader { bytes, packet }
    }

    /// The type of the packet read, for errors.
    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn need(&self, n: usize) -> Result<(), MqttError> {
        if self.bytes.len() < n {
            return Err(MqttError::Truncated(self.packet));
        }
        Ok(())
    }

    /// A byte.
    pub(crate) fn u8(&mut self) -> Result<u8, MqttError> {
        self.need(1)?;
        Ok(self.bytes.get_u8())
    }

    /// A two byte integer, big-endian.
    pub(crate) fn u16(&mut self) -> Result<u16, MqttError> {
        self.need(2)?;
        Ok(self.bytes.get_u16())
    }

    /// A four byte integer, big-endian.
    pub(crate) fn u32(&mut self) -> Result<u32, MqttError> {
        self.need(4)?;
        Ok(self.bytes.get_u32())
    }

    /// A variable byte integer.
    pub(crate) fn variable_byte_integer(&mut self) -> Result<u32, MqttError> {
        match read_variable_byte_integer(&self.bytes)? {
            Some((value, len)) => {
                self.bytes.advance(len);
                Ok(value)
            }
            None => Err(MqttError::Truncated(self.packet)),
        }
    }

    /// The next `n` bytes, sharing the packet's buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, MqttError> {
        self.need(n)?;
        Ok(self.bytes.split_to(n))
    }

    /// Binary data: a two byte length, then that many bytes, sharing the packet's buffer.
    pub(crate) fn binary(&mut self) -> Result<Bytes, MqttError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string: well-formed UTF-8 without U+0000, or the packet is malformed
    /// ([MQTT-1.5.4-1], [MQTT-1.5.4-2]). Other control characters and non-characters are let
    /// through: the specification lets the receiver choose.
    pub(crate) fn string(&mut self) -> Result<String, MqttError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(&bytes).map_err(|_| MqttError::InvalidUtf8(self.packet))?;
        if s.contains('\0') {
            return Err(MqttError::NulCharacter(self.packet));
        }
        Ok(s.to_owned())
    }

    /// Everything not read yet, sharing the packet's buffer.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    /// Checks the packet was read to its end: bytes left over are malformed.
    pub(crate) fn finish(self) -> Result<(), MqttError> {
        if !self.bytes.is_empty() {
            return Err(MqttError::TrailingBytes(self.packet));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_byte_integers_at_the_edges_of_each_length() {
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            put_variable_byte_integer(&mut out, value).expect("fits");
            assert_eq!(&out[..], bytes, "{value}");
            assert_eq!(variable_byte_integer_len(value), bytes.len());
            assert_eq!(
                read_variable_byte_integer(bytes),
                Ok(Some((value, bytes.len())))
            );
            // Any prefix is "not yet".
            assert_eq!(
                read_variable_byte_integer(&bytes[..bytes.len() - 1]),
                Ok(None)
            );
        }
        assert_eq!(
            put_variable_byte_integer(&mut BytesMut::new(), 268_435_456),
            Err(EncodeError::VariableByteIntegerTooLarge(268_435_456))
        );
    }

    #[test]
    fn a_fifth_byte_or_a_longer_form_than_needed_is_malformed() {
        assert_eq!(
            read_variable_byte_integer(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(MqttError::MalformedVariableByteInteger)
        );
        assert_eq!(
            read_variable_byte_integer(&[0x80, 0x80, 0x80, 0x80]),
            Err(MqttError::MalformedVariableByteInteger)
        );
        assert_eq!(
            read_variable_byte_integer(&[0x80, 0x00]),
            Err(MqttError::MalformedVariableByteInteger)
        );
        assert_eq!(
            read_variable_byte_integer(&[0x81, 0x80, 0x00]),
            Err(MqttError::MalformedVariableByteInteger)
        );
    }

    #[test]
    fn strings_must_be_utf8_without_nul() {
        let read = |bytes: &'static [u8]| {
            Reader::new(Bytes::from_static(bytes), PacketType::Publish).string()
        };
        assert_eq!(read(b"\x00\x04a/\xc3\xa9"), Ok("a/é".to_owned()));
        assert_eq!(
            read(b"\x00\x02\xc3\x28"),
            Err(MqttError::InvalidUtf8(PacketType::Publish))
        );
        // A UTF-16 surrogate written as UTF-8 is not UTF-8.
        assert_eq!(
            read(b"\x00\x03\xed\xa0\x80"),
            Err(MqttError::InvalidUtf8(PacketType::Publish))
        );
        assert_eq!(
            read(b"\x00\x03a\x00b"),
            Err(MqttError::NulCharacter(PacketType::Publish))
        );
        assert_eq!(
            read(b"\x00\x04abc"),
            Err(MqttError::Truncated(PacketType::Publish))
        );
        assert_eq!(
            put_string(&mut BytesMut::new(), &"x".repeat(65_536)),
            Err(EncodeError::FieldTooLong(65_536))
        );
    }
}
