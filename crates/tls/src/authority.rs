//! The cluster's certificate authority: creates the CA and signs node and client certificates
//! (`warren cert create-ca | create-node | create-client`). ECDSA P-256 keys; PEM text out. It
//! never touches the network and never writes a file itself (see [`crate::files`]).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::{NODE_URI_PREFIX, OPERATOR_URI_PREFIX};
use crate::TlsError;

/// One day.
pub const DAY: Duration = Duration::from_secs(86_400);
/// How long a CA certificate is valid by default: ten years, as CockroachDB's.
pub const CA_LIFETIME: Duration = Duration::from_secs(3_650 * 86_400);
/// How long node and client certificates are valid by default: five years, as CockroachDB's.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(1_826 * 86_400);

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks of the cluster's hosts differ a little) for `lifetime`.
    pub fn from_now(lifetime: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now.checked_sub(Duration::from_secs(3_600)).unwrap_or(now),
            not_after: now + lifetime,
        }
    }
}

/// A certificate and its private key, as PEM text.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that can sign: its certificate (PEM) and its key.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a client certificate lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRole {
    /// Calls the operator gRPC services (Admin, Access, Management) of the cluster, and may
    /// also log in over AMQPS with SASL EXTERNAL.
    Operator,
    /// A client certificate for AMQPS (SASL EXTERNAL) only; the gRPC port refuses it.
    Amqp,
}

fn rcgen_error(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn params(name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warren");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    params.use_authority_key_identifier_extension = true;
    params
}

impl Authority {
    /// A new CA with a fresh key, named `name` (its common name).
    pub fn create(name: &str, validity: Validity) -> Result<Authority, TlsError> {
        let mut params = params(name, validity);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = false;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of an existing certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| TlsError::Generate(format!("the CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| TlsError::Generate(format!("the CA certificate: {e}")))?;
        Ok(Authority {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA's certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A node certificate: common name `warren node ID`, the node's URI
    /// (`urn:warren:node:ID`) and every host (DNS name or IP address) it is reached at in its
    /// subject alternative names; usable as a server and as a client.
    pub fn node(&self, id: u64, hosts: &[String], validity: Validity) -> Result<Issued, TlsError> {
        if hosts.is_empty() {
            return Err(TlsError::Generate(
                "a node certificate needs at least one --host (the name or address other nodes and clients use)".into(),
            ));
        }
        let mut params = params(&format!("warren node {id}"), validity);
        params
            .subject_alt_names
            .push(uri(&format!("{NODE_URI_PREFIX}{id}"))?);
        for host in hosts {
            params.subject_alt_names.push(host_name(host)?);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params)
    }

    /// A server certificate for the AMQPS and HTTPS listeners of `hosts` (no Warren role).
    pub fn server(
        &self,
        name: &str,
        hosts: &[String],
        validity: Validity,
    ) -> Result<Issued, TlsError> {
        let mut params = params(name, validity);
        for host in hosts {
            params.subject_alt_names.push(host_name(host)?);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with common name `name` (the user name SASL EXTERNAL logs in
    /// as); an operator's also carries `urn:warren:operator:NAME`.
    pub fn client(
        &self,
        name: &str,
        role: ClientRole,
        validity: Validity,
    ) -> Result<Issued, TlsError> {
        let mut params = params(name, validity);
        if role == ClientRole::Operator {
            params
                .subject_alt_names
                .push(uri(&format!("{OPERATOR_URI_PREFIX}{name}"))?);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn uri(text: &str) -> Result<SanType, TlsError> {
    Ok(SanType::URI(text.try_into().map_err(|e| {
        TlsError::Generate(format!("bad URI {text:?}: {e}"))
    })?))
}

fn host_name(host: &str) -> Result<SanType, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(bare.try_into().map_err(|e| {
            TlsError::Generate(format!("bad host name {host:?}: {e}"))
        })?)),
    }
}
