//! Where each node slot listens. In network namespaces (the default) node N is
//! 10.231.77.(10+N) with AMQP on 5672 and gRPC on 7100. Without namespaces (the loopback
//! fallback) every node is on 127.0.0.1: AMQP on 21100+N, gRPC on 21200+N, and node A dials
//! node B's gRPC through a proxy of its own on 21300 + 10*A + B (`proxy.rs`), so faults can be
//! put on each link. The ports are fixed and below the kernel's ephemeral range (32768+), so
//! no client socket or test's free port takes them.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Netns,
    Loopback,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the mode for the run (only the first call counts).
pub fn set_mode(mode: Mode) {
    let _ = MODE.set(mode);
}

pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Netns)
}

/// The AMQP address (host:port) of the node in `slot`.
pub fn amqp(slot: usize) -> String {
    match mode() {
        Mode::Netns => format!("{}:5672", crate::net::node_ip(slot)),
        Mode::Loopback => format!("127.0.0.1:{}", 21100 + slot),
    }
}

/// The gRPC address (host:port) of the node in `slot`, as the membership records it.
pub fn grpc(slot: usize) -> String {
    match mode() {
        Mode::Netns => format!("{}:7100", crate::net::node_ip(slot)),
        Mode::Loopback => format!("127.0.0.1:{}", 21200 + slot),
    }
}

/// Loopback mode: the port of the proxy node `from` dials to reach node `to`.
pub fn link_port(from: usize, to: usize) -> u16 {
    21300 + 10 * from as u16 + to as u16
}
