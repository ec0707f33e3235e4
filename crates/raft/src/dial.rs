//! Where to dial a peer. The membership records each node's gRPC address as the node announced
//! it; where that address is not reachable as is from every node (NAT, port forwarding, or the
//! chaos suite's per-link proxies), `warren --peer-address RECORDED=DIAL` tells this node to dial
//! another address instead. Set once at start-up; every gRPC dial to a peer goes through
//! [`dial_addr`].

use std::collections::HashMap;
use std::sync::OnceLock;

static OVERRIDES: OnceLock<HashMap<String, String>> = OnceLock::new();

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

/// `http://` and the address to dial for `recorded`.
pub fn dial_uri(recorded: &str) -> String {
    format!("http://{}", dial_addr(recorded))
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
        assert_eq!(dial_uri("a:1"), "http://b:2");
    }
}
