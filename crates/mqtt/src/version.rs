//! The protocol versions a CONNECT may ask for, and how its protocol name and level name them.

use std::fmt;

/// A version of MQTT: what a CONNECT's protocol name and level ask for, and what decides the
/// shape of every later packet on the connection (MQTT 5 adds reason codes and properties).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// MQTT 3.1 (IBM's), protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1 (OASIS), protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0 (OASIS), protocol name `MQTT`, level 5.
    V5,
}

impl Version {
    /// The protocol name a CONNECT of this version carries.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Version::V3_1 => "MQIsdp",
            Version::V3_1_1 | Version::V5 => "MQTT",
        }
    }

    /// The protocol level a CONNECT of this version carries.
    pub fn protocol_level(self) -> u8 {
        match self {
            Version::V3_1 => 3,
            Version::V3_1_1 => 4,
            Version::V5 => 5,
        }
    }

    /// The version a CONNECT's protocol name and level name together; `None` for any other
    /// pair (as RabbitMQ, a name that does not go with its level is refused too).
    pub fn from_protocol(name: &[u8], level: u8) -> Option<Version> {
        match (name, level) {
            (b"MQIsdp", 3) => Some(Version::V3_1),
            (b"MQTT", 4) => Some(Version::V3_1_1),
            (b"MQTT", 5) => Some(Version::V5),
            _ => None,
        }
    }

    /// Whether packets carry MQTT 5's reason codes and properties.
    pub fn is_v5(self) -> bool {
        self == Version::V5
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V3_1 => "3.1",
            Version::V3_1_1 => "3.1.1",
            Version::V5 => "5.0",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_and_a_level_name_a_version_only_together() {
        for v in [Version::V3_1, Version::V3_1_1, Version::V5] {
            assert_eq!(
                Version::from_protocol(v.protocol_name().as_bytes(), v.protocol_level()),
                Some(v)
            );
        }
        assert_eq!(Version::from_protocol(b"MQTT", 3), None);
        assert_eq!(Version::from_protocol(b"MQIsdp", 4), None);
        assert_eq!(Version::from_protocol(b"MQTT", 6), None);
        assert_eq!(Version::from_protocol(b"mqtt", 4), None);
    }
}
