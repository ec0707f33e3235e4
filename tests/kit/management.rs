//! The management API and `warrenctl` of nodes this kit started.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
pub use warrenctl::{segment, ApiClient};

use crate::cluster::CliOutput;
use crate::Broker;

/// The management API of `broker` as `user`.
pub fn api(broker: &Broker, user: &str, password: &str) -> ApiClient {
    ApiClient::new(&broker.management_addr(), user, password)
}

/// The management API of `broker` as guest (an administrator, from loopback).
pub fn guest_api(broker: &Broker) -> ApiClient {
    api(broker, "guest", "guest")
}

/// Polls `get(path)` until `ok` holds for the JSON answer (or fails after `timeout`), and returns
/// that answer: values the broker computes asynchronously (rates, replication) settle.
pub async fn wait_for_json(
    api: &ApiClient,
    path: &str,
    timeout: Duration,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = api.get(path).await?;
        if ok(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("GET {path} did not reach the expected state within {timeout:?}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `warrenctl` binary: `WARRENCTL_BIN`, else next to the `warren` binary.
pub fn warrenctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WARRENCTL_BIN") {
        return p.into();
    }
    crate::warren_bin().with_file_name("warrenctl")
}

/// Runs `warrenctl` against `broker`'s management API as guest, failing after 120 s.
pub fn warrenctl(broker: &Broker, args: &[&str]) -> anyhow::Result<CliOutput> {
    let mut child = Command::new(warrenctl_bin())
        .args(["--node", &broker.management_addr()])
        .args(args)
        .env_remove("WARREN_USER")
        .env_remove("WARREN_PASSWORD")
        .env("WARREN_CERTS_DIR", crate::certs::certs().operator_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting warrenctl (cargo build -p warrenctl)")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("warrenctl {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    Ok(CliOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
