//! What happened during a run, as the clients and the nemesis saw it: every publish and its
//! outcome, every delivery, every metadata operation and every fault, each stamped with the
//! milliseconds since the run started. The checker reads only this; it is also written out as
//! JSON lines for later analysis.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How a publish ended, as the publisher knows it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Acked,
    Nacked,
    Returned,
    /// The connection failed before the broker said anything.
    Unknown,
}

/// How a metadata operation ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetaOutcome {
    Ok,
    /// The broker refused it (a channel error such as 404).
    Refused,
    Unknown,
}

/// A metadata operation of the metadata workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetaOp {
    DeclareQueue { queue: String },
    DeleteQueue { queue: String },
    DeclareExchange { exchange: String },
    DeleteExchange { exchange: String },
    Bind { exchange: String, queue: String },
    Unbind { exchange: String, queue: String },
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Publish {
        t: u64,
        id: u64,
        node: usize,
        queue: usize,
    },
    Outcome {
        t: u64,
        id: u64,
        outcome: Outcome,
    },
    Deliver {
        t: u64,
        /// None: the body could not be parsed (not a message of this run, or corrupt).
        id: Option<u64>,
        node: usize,
        get: bool,
        redelivered: bool,
        intact: bool,
    },
    /// A publish of the transient workload (into the worker's own exclusive queue, whose
    /// messages are not replicated: a leader's death may take them).
    TransientPublish {
        t: u64,
        id: u64,
        node: usize,
    },
    /// The broker confirmed a transient publish.
    TransientAcked {
        t: u64,
        id: u64,
    },
    /// A delivery from a transient worker's exclusive queue.
    TransientDeliver {
        t: u64,
        id: Option<u64>,
        node: usize,
        redelivered: bool,
        intact: bool,
    },
    Meta {
        t: u64,
        node: usize,
        #[serde(flatten)]
        op: MetaOp,
        outcome: MetaOutcome,
        /// When the operation was sent (`t` is when its outcome was known).
        sent: u64,
    },
    Fault {
        t: u64,
        kind: String,
        detail: String,
    },
    Heal {
        t: u64,
        kind: String,
        /// Milliseconds from the heal until every running node named the same running leader.
        recovered_ms: Option<u64>,
    },
    Note {
        t: u64,
        text: String,
    },
}

/// When the run started (now, by default).
#[derive(Clone, Copy)]
struct Start(Instant);

impl Default for Start {
    fn default() -> Start {
        Start(Instant::now())
    }
}

/// The shared, append-only record of a run.
#[derive(Clone, Default)]
pub struct History {
    start: Start,
    events: Arc<Mutex<Vec<Event>>>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Milliseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.0.elapsed().as_millis() as u64
    }

    pub fn push(&self, event: Event) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event);
        }
    }

    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!("{text}");
        self.push(Event::Note {
            t: self.now(),
            text,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// A message body: a header line with the id, the payload length and an FNV-1a checksum of the
/// payload, then the payload, derived from the id so that the checker can rebuild it.
pub fn body(id: u64, size: usize) -> Vec<u8> {
    let payload = payload(id, size);
    let mut b = format!("W {id} {size} {:016x}\n", fnv(&payload)).into_bytes();
    b.extend_from_slice(&payload);
    b
}

fn payload(id: u64, size: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id of a body and whether it is intact (header, checksum and payload as published).
pub fn parse(body: &[u8]) -> (Option<u64>, bool) {
    let Some(nl) = body.iter().position(|b| *b == b'\n') else {
        return (None, false);
    };
    let Ok(header) = std::str::from_utf8(&body[..nl]) else {
        return (None, false);
    };
    let mut parts = header.split(' ');
    if parts.next() != Some("W") {
        return (None, false);
    }
    let id = parts.next().and_then(|s| s.parse::<u64>().ok());
    let size = parts.next().and_then(|s| s.parse::<usize>().ok());
    let sum = parts.next().and_then(|s| u64::from_str_radix(s, 16).ok());
    match (id, size, sum) {
        (Some(id), Some(size), Some(sum)) => {
            let rest = &body[nl + 1..];
            let intact = rest.len() == size && fnv(rest) == sum && rest == payload(id, size);
            (Some(id), intact)
        }
        (id, _, _) => (id, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_parses_back_to_its_id_and_a_changed_byte_is_caught() {
        let b = body(42 << 40 | 7, 300);
        assert_eq!(parse(&b), (Some(42 << 40 | 7), true));
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(&bad), (Some(42 << 40 | 7), false));
        let mut short = b;
        short.pop();
        assert!(!parse(&short).1);
        assert_eq!(parse(b"hello"), (None, false));
    }
}
