//! The one place the front end reads the wall clock; the core gets time as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

use warren_core::Millis;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
