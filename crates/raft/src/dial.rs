//! How to dial a peer's gRPC port: where, and over what. The membership records each node's
//! gRPC address as the node announced it; where that address is not reachable as is from every
//! node (NAT, port forwarding, or the chaos suite's per-link proxies), `warren --peer-address
//! RECORDED=DIAL` tells this node to dial another address instead. Calls are mutual TLS with the
//! cluster's certificates unless the process was started `--insecure` (see [`set_tls`]); the
//! server's certificate must name the *recorded* host. Set once at start-up; every gRPC dial of
//! a node or an operator's command goes through [`endpoint`].

use std::collections::HashMap;
use std::sync::OnceLock;

use tonic::transport::Endpoint;
use warren_tls::ClusterTls;

static OVERRIDES: OnceLock<HashMap<String, String>> = OnceLock::new();
static TLS: OnceLock<Option<ClusterTls>> = OnceLock::new();

/// Sets how this process calls gRPC: mutual TLS with `tls`, or plaintext with `None`
/// (`--insecure`). Only the first call counts; a process that never calls it dials plaintext
/// (in-process tests).
pub fn set_tls(tls: Option<ClusterTls>) {
    let _ = TLS.set(tls);
}

/// True if gRPC calls of this process are plaintext.
pub fn insecure() -> bool {
    TLS.get().is_none_or(Option::is_none)
}

pub use warren_tls::config::host_of;

/// The endpoint to call the node whose recorded gRPC address is `recorded`: the address to
/// dial (see [`dial_addr`]), and TLS unless this process is insecure.
pub fn endpoint(recorded: &str) -> Result<Endpoint, tonic::transport::Error> {
    warren_tls::config::grpc_endpoint(
        TLS.get().and_then(Option::as_ref),
        dial_addr(recorded),
        recorded,
    )
}

/// Sets the overrides (recorded address → address to dial). Only the first call counts.
pub fn set_overrides(overrides: HashMap<String, String>) {
    let _ = OVERRIDES.set(overrides);
}

/// The address to dial for a peer whose recorded gRPC address is `recorded`.
pub fn dial_addr(recorded: &str) -> &str {
    OVERRIDES
        .get()
        .and_then(|o| o.get(recorded))
        .map_or(recorded, String::as_str)
}

/// A channel to the node whose recorded gRPC address is `recorded`, connected now.
pub async fn connect(recorded: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    endpoint(recorded)?.connect().await
}

/// An error and its sources, on one line (tonic's transport errors say little at the top).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Parses `RECORDED=DIAL`.
pub fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
            Ok((from.to_string(), to.to_string()))
        }
        _ => Err(format!(
            "expected RECORDED_HOST:PORT=DIAL_HOST:PORT, got {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_apply() {
        assert_eq!(
            parse_override("10.0.0.1:7100=127.0.0.1:9000"),
            Ok(("10.0.0.1:7100".into(), "127.0.0.1:9000".into()))
        );
        assert!(parse_override("10.0.0.1:7100").is_err());
        assert!(parse_override("=x").is_err());
        set_overrides(HashMap::from([("a:1".to_string(), "b:2".to_string())]));
        assert_eq!(dial_addr("a:1"), "b:2");
        assert_eq!(dial_addr("c:3"), "c:3");
        assert_eq!(
            endpoint("a:1").unwrap().uri().to_string(),
            "http://b:2/",
            "dialled plaintext where this process set no TLS"
        );
        assert_eq!(host_of("10.0.0.1:7100"), "10.0.0.1");
        assert_eq!(host_of("[::1]:7100"), "::1");
        assert_eq!(host_of("node1.example:7100"), "node1.example");
    }
}
