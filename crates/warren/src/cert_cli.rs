//! `warren cert create-ca | create-node | create-client`: the cluster's certificates in one
//! command each, written as PEM files into the certs directory (see `warren_tls::files` for
//! the names).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use warren_tls::authority::{Authority, ClientRole, Validity, CA_LIFETIME, DAY, LEAF_LIFETIME};
use warren_tls::files::{read_text, write_new, CertsDir};

// The variants are the command-line verbs (`create-ca`, as CockroachDB's `cert create-ca`).
#[allow(clippy::enum_variant_names)]
#[derive(clap::Subcommand, Clone, Debug)]
pub(crate) enum CertCmd {
    /// Create the cluster's certificate authority: `ca.crt` in --certs-dir, and its key
    /// (`ca.key` there, or --ca-key). Every node and operator gets a copy of `ca.crt`; keep the
    /// key where certificates are made, not on the nodes.
    CreateCa {
        #[command(flatten)]
        common: Common,
    },
    /// Create a node's certificate (`node.crt`, `node.key` in --certs-dir, with a copy of
    /// `ca.crt` if it has none), signed by the CA.
    /// It names the node id and every host name or address the node is reached at: its
    /// recorded gRPC address's host must be among them.
    CreateNode {
        /// The node's id (its --node-id).
        id: u64,
        /// A DNS name or IP address of the node; repeat for every name it is reached at.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Create a client certificate (`client.crt`, `client.key` in --certs-dir) with common
    /// name NAME: an operator's, for `warren status|member|user|vhost|permissions` and
    /// `warrenctl join|leave`; with --amqp-only, one for AMQPS with SASL EXTERNAL only (it
    /// logs in as the user NAME), which the gRPC port refuses.
    CreateClient {
        name: String,
        /// A certificate for AMQP clients only, not for operating the cluster.
        #[arg(long)]
        amqp_only: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Common {
    /// The CA's certificate, when --certs-dir has none yet (it is copied there) [default:
    /// ca.crt in --certs-dir].
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The CA's key [default: ca.key in --certs-dir].
    #[arg(long)]
    ca_key: Option<PathBuf>,
    /// How long the certificate is valid, in days [default: 3650 for the CA, 1826 otherwise].
    #[arg(long)]
    lifetime_days: Option<u64>,
    /// Replace files that exist.
    #[arg(long)]
    overwrite: bool,
}

impl Common {
    fn validity(&self, default: Duration) -> anyhow::Result<Validity> {
        let lifetime = match self.lifetime_days {
            Some(0) => anyhow::bail!("--lifetime-days must be at least 1"),
            Some(days) => DAY
                .checked_mul(u32::try_from(days).context("--lifetime-days is too large")?)
                .context("--lifetime-days is too large")?,
            None => default,
        };
        Ok(Validity::from_now(lifetime))
    }

    fn ca_key(&self, dir: &CertsDir) -> PathBuf {
        self.ca_key.clone().unwrap_or_else(|| dir.ca_key())
    }
}

/// The CA that signs (its certificate from --ca-cert or `dir`, its key from --ca-key or `dir`);
/// `dir` gets a copy of the CA's certificate if it has none, so it is complete for a node or
/// an operator.
fn load_ca(
    dir: &CertsDir,
    common: &Common,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<Authority> {
    let cert_path = common.ca_cert.clone().unwrap_or_else(|| dir.ca_cert());
    let cert = read_text(&cert_path).map_err(anyhow::Error::new).context(
        "the CA certificate (create it with `warren cert create-ca`, or give it with --ca-cert)",
    )?;
    let key = read_text(&common.ca_key(dir))
        .map_err(anyhow::Error::new)
        .context("the CA key (give it with --ca-key)")?;
    let ca = Authority::from_pem(&cert, &key)?;
    if !dir.ca_cert().exists() {
        write_new(&dir.ca_cert(), &cert, false, false)?;
        written.push(dir.ca_cert());
    }
    Ok(ca)
}

/// Runs a `warren cert` command; prints the files it wrote.
pub(crate) fn run(cmd: &CertCmd, dir: &Path) -> anyhow::Result<()> {
    let dir = CertsDir::new(dir);
    let mut written = Vec::new();
    match cmd {
        CertCmd::CreateCa { common } => {
            let ca = Authority::create("Warren CA", common.validity(CA_LIFETIME)?)?;
            let key = common.ca_key(&dir);
            write_new(&dir.ca_cert(), ca.cert_pem(), false, common.overwrite)?;
            write_new(&key, &ca.key_pem(), true, common.overwrite)?;
            written.extend([dir.ca_cert(), key]);
        }
        CertCmd::CreateNode { id, hosts, common } => {
            anyhow::ensure!(*id < 2048, "node ids are below 2048");
            let ca = load_ca(&dir, common, &mut written)?;
            let issued = ca.node(*id, hosts, common.validity(LEAF_LIFETIME)?)?;
            write_new(&dir.node_cert(), &issued.cert_pem, false, common.overwrite)?;
            write_new(&dir.node_key(), &issued.key_pem, true, common.overwrite)?;
            written.extend([dir.node_cert(), dir.node_key()]);
        }
        CertCmd::CreateClient {
            name,
            amqp_only,
            common,
        } => {
            anyhow::ensure!(!name.is_empty(), "a client certificate needs a name");
            let ca = load_ca(&dir, common, &mut written)?;
            let role = if *amqp_only {
                ClientRole::Amqp
            } else {
                ClientRole::Operator
            };
            let issued = ca.client(name, role, common.validity(LEAF_LIFETIME)?)?;
            write_new(
                &dir.client_cert(),
                &issued.cert_pem,
                false,
                common.overwrite,
            )?;
            write_new(&dir.client_key(), &issued.key_pem, true, common.overwrite)?;
            written.extend([dir.client_cert(), dir.client_key()]);
        }
    }
    let mut out = std::io::stdout().lock();
    for path in written {
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}
