//! The certificates of the clusters this kit starts, made with `warren cert` as an operator
//! would: one CA per test process, a node certificate per node id (for 127.0.0.1 and
//! localhost) and an operator's client certificate, which [`crate::cluster::warren_cli`] uses.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::Context;

use crate::{fresh_dir, warren_bin};

/// The certificates of this test process.
pub struct TestCerts {
    root: PathBuf,
    /// Serializes the making of node certificates.
    made: Mutex<()>,
}

static CERTS: OnceLock<TestCerts> = OnceLock::new();

/// This process's certificates (the CA and the operator's are made at the first call).
pub fn certs() -> &'static TestCerts {
    CERTS.get_or_init(|| {
        let root = fresh_dir().expect("a directory for the test certificates");
        let certs = TestCerts {
            root,
            made: Mutex::new(()),
        };
        cert(&[
            "create-ca",
            "--certs-dir",
            &certs.ca_dir().display().to_string(),
        ])
        .expect("warren cert create-ca");
        certs
            .issue(&certs.operator_dir(), &["create-client", "kit-operator"])
            .expect("warren cert create-client");
        certs
    })
}

/// Runs `warren cert ARGS`.
fn cert(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(warren_bin())
        .arg("cert")
        .args(args)
        .output()
        .context("running warren cert")?;
    anyhow::ensure!(
        out.status.success(),
        "warren cert {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl TestCerts {
    /// The CA's certificate and key (`ca.crt`, `ca.key`).
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// An operator's directory: `ca.crt`, `client.crt`, `client.key`.
    pub fn operator_dir(&self) -> PathBuf {
        self.root.join("operator")
    }

    /// Node `id`'s directory (`ca.crt`, `node.crt`, `node.key` for 127.0.0.1 and localhost),
    /// made at the first call for that id.
    pub fn node_dir(&self, id: usize) -> PathBuf {
        let dir = self.root.join(format!("node{id}"));
        let _made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.join("node.crt").exists() {
            self.issue(
                &dir,
                &[
                    "create-node",
                    &id.to_string(),
                    "--host",
                    "127.0.0.1",
                    "--host",
                    "localhost",
                ],
            )
            .expect("warren cert create-node");
        }
        dir
    }

    /// Runs `warren cert ARGS` signing with this CA into `dir`.
    pub fn issue(&self, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
        let ca = self.ca_dir();
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        for (flag, value) in [
            ("--certs-dir", dir.to_path_buf()),
            ("--ca-cert", ca.join("ca.crt")),
            ("--ca-key", ca.join("ca.key")),
        ] {
            all.push(flag.into());
            all.push(value.display().to_string());
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        cert(&all)
    }

    /// The flags of an AMQPS listener on `port` with a certificate for 127.0.0.1 and localhost
    /// from this CA, verifying client certificates of this CA as `client_auth` says (none,
    /// optional, required).
    pub fn amqps_flags(&self, port: u16, client_auth: &str) -> Vec<String> {
        let server = self.node_dir(1);
        let path = |name: &str| server.join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            path("node.crt"),
            "--tls-key".into(),
            path("node.key"),
            "--tls-ca".into(),
            path("ca.crt"),
            "--tls-client-auth".into(),
            client_auth.into(),
            "--amqps-port".into(),
            port.to_string(),
        ]
    }

    /// A client certificate of this CA for AMQP user `name` (`--amqp-only`): its directory
    /// (`ca.crt`, `client.crt`, `client.key`).
    pub fn amqp_client_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(format!("amqp-client-{name}"));
        let _made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.join("client.crt").exists() {
            self.issue(&dir, &["create-client", name, "--amqp-only"])
                .expect("warren cert create-client --amqp-only");
        }
        dir
    }

    /// A second, unrelated CA with a node certificate for `id` (for tests of certificates the
    /// cluster must refuse): its directory.
    pub fn foreign_node_dir(&self, id: usize) -> PathBuf {
        let dir = self.root.join(format!("foreign-node{id}"));
        let _made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.join("node.crt").exists() {
            let ca = self.root.join("foreign-ca");
            if !ca.join("ca.crt").exists() {
                cert(&["create-ca", "--certs-dir", &ca.display().to_string()])
                    .expect("warren cert create-ca");
            }
            cert(&[
                "create-node",
                &id.to_string(),
                "--host",
                "127.0.0.1",
                "--certs-dir",
                &dir.display().to_string(),
                "--ca-cert",
                &ca.join("ca.crt").display().to_string(),
                "--ca-key",
                &ca.join("ca.key").display().to_string(),
            ])
            .expect("warren cert create-node");
        }
        dir
    }
}
