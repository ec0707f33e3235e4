//! Certificates and keys on disk: the layout of a certs directory (`ca.crt`, `node.crt`,
//! `node.key`, `client.crt`, `client.key`, as CockroachDB names them), reading PEM files, and
//! writing new ones (keys readable by their owner only, nothing overwritten unless asked).

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// A directory of certificates and keys.
#[derive(Clone, Debug)]
pub struct CertsDir(pub PathBuf);

impl CertsDir {
    pub fn new(path: impl Into<PathBuf>) -> CertsDir {
        CertsDir(path.into())
    }

    /// The cluster CA's certificate, which every node and operator trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt")
    }

    /// The CA's key: only where certificates are made (`--ca-key` puts it elsewhere).
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }

    pub fn node_cert(&self) -> PathBuf {
        self.0.join("node.crt")
    }

    pub fn node_key(&self) -> PathBuf {
        self.0.join("node.key")
    }

    /// An operator's certificate, for `warren status|member|user|...` and `warrenctl join|leave`.
    pub fn client_cert(&self) -> PathBuf {
        self.0.join("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.0.join("client.key")
    }
}

/// Reads a file as text, naming it in the error.
pub fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::file(path, e))
}

/// Every certificate in a PEM file, in order (a chain: the end-entity certificate first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_text(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(path.display().to_string(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(
            path.display().to_string(),
            "no certificate in it".into(),
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_text(path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| TlsError::Pem(path.display().to_string(), e.to_string()))
}

/// Writes a new file; a private key is created readable by its owner only. An existing file is
/// an error unless `overwrite`.
pub fn write_new(
    path: &Path,
    contents: &str,
    private: bool,
    overwrite: bool,
) -> Result<(), TlsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| TlsError::file(dir, e))?;
    }
    if path.exists() && !overwrite {
        return Err(TlsError::Exists(path.display().to_string()));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| TlsError::file(path, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| TlsError::file(path, e))
}
