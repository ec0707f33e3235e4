//! Settings of the AMQP front end: listen address, negotiation limits, timeouts, buffer bounds.

use std::net::SocketAddr;
use std::time::Duration;

/// Front-end settings. The defaults are RabbitMQ's.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where the AMQP listener binds.
    pub listen: SocketAddr,
    /// Highest channel number a client may open (offered in `connection.tune`).
    pub channel_max: u16,
    /// Largest frame, in bytes, offered in `connection.tune`.
    pub frame_max: u32,
    /// Heartbeat interval offered in `connection.tune`, in seconds (0 disables).
    pub heartbeat: u16,
    /// Time a client has from TCP accept to `connection.open-ok`.
    pub handshake_timeout: Duration,
    /// Largest message body accepted (RabbitMQ's `max_message_size`).
    pub max_message_size: u64,
    /// Outbound bytes queued for one connection above which the server stops reading from it.
    pub high_watermark: usize,
    /// Outbound bytes below which a connection gets more deliveries again.
    pub low_watermark: usize,
    /// The `cluster_name` server property.
    pub cluster_name: String,
    /// This node's id (part of every connection id, so ids never collide across nodes).
    pub node_id: u64,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 128 << 20,
            node_id: 1,
            high_watermark: 4 << 20,
            low_watermark: 1 << 20,
            cluster_name: "warren".into(),
        }
    }
}
