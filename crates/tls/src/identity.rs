//! What a peer's certificate says about its holder: the names in its subject and subject
//! alternative names, and the Warren role it carries (a node of the cluster, or an operator).
//! Reading only: whether the certificate is trusted is decided by rustls before it gets here.

use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI a node certificate carries in its subject alternative names, followed by the node
/// id: `urn:warren:node:3`.
pub const NODE_URI_PREFIX: &str = "urn:warren:node:";
/// The URI an operator certificate carries, followed by the operator's name:
/// `urn:warren:operator:alice`.
pub const OPERATOR_URI_PREFIX: &str = "urn:warren:operator:";

/// The names in a certificate, and the role Warren gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's first common name.
    pub common_name: Option<String>,
    /// The subject as RFC 4514 text, most significant part last as printed by OpenSSL's
    /// `-nameopt RFC2253` (e.g. `CN=alice,O=Example`).
    pub distinguished_name: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
    /// The node id of a node certificate (`urn:warren:node:ID`).
    pub node: Option<u64>,
    /// The operator name of an operator certificate (`urn:warren:operator:NAME`).
    pub operator: Option<String>,
    /// The end of the certificate's validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Which name of a client certificate SASL EXTERNAL logs in as (RabbitMQ's
/// `ssl_cert_login_from`, `ssl_cert_login_san_type` and `ssl_cert_login_san_index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoginFrom {
    /// The subject's common name (RabbitMQ's `common_name`).
    #[default]
    CommonName,
    /// The whole subject, RFC 4514 (RabbitMQ's `distinguished_name`).
    DistinguishedName,
    /// The `index`-th subject alternative name of a type (RabbitMQ's
    /// `subject_alternative_name`).
    SubjectAlternativeName { kind: SanKind, index: usize },
}

/// A kind of subject alternative name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SanKind {
    #[default]
    Dns,
    Email,
    Uri,
    Ip,
}

impl std::str::FromStr for SanKind {
    type Err = String;

    fn from_str(s: &str) -> Result<SanKind, String> {
        match s {
            "dns" => Ok(SanKind::Dns),
            "email" => Ok(SanKind::Email),
            "uri" => Ok(SanKind::Uri),
            "ip" => Ok(SanKind::Ip),
            other => Err(format!("expected dns, email, uri or ip, got {other:?}")),
        }
    }
}

/// A certificate that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the certificate: {0}")]
pub struct BadCertificate(String);

impl PeerIdentity {
    /// Reads the identity of a DER certificate (the end-entity certificate of a chain).
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, BadCertificate> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| BadCertificate(e.to_string()))?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut parts = Vec::new();
        for rdn in subject.iter() {
            for attr in rdn.iter() {
                let key = x509_parser::objects::oid2abbrev(
                    attr.attr_type(),
                    x509_parser::objects::oid_registry(),
                )
                .map(str::to_owned)
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
                let value = attr.as_str().unwrap_or("").to_owned();
                parts.push(format!("{key}={}", escape_rfc4514(&value)));
            }
        }
        parts.reverse();
        let mut id = PeerIdentity {
            common_name,
            distinguished_name: parts.join(","),
            not_after: cert.validity().not_after.timestamp(),
            ..PeerIdentity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => id.dns_names.push((*n).to_owned()),
                    GeneralName::RFC822Name(n) => id.emails.push((*n).to_owned()),
                    GeneralName::URI(u) => id.uris.push((*u).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            id.ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            id.ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        id.node = id
            .uris
            .iter()
            .find_map(|u| u.strip_prefix(NODE_URI_PREFIX)?.parse().ok());
        id.operator = id
            .uris
            .iter()
            .find_map(|u| u.strip_prefix(OPERATOR_URI_PREFIX).map(str::to_owned));
        Ok(id)
    }

    /// True if the certificate names `host` (a DNS name or an IP address) among its subject
    /// alternative names.
    pub fn names_host(&self, host: &str) -> bool {
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.ip_addresses.contains(&ip),
            Err(_) => self.dns_names.iter().any(|d| d.eq_ignore_ascii_case(host)),
        }
    }

    /// The user name SASL EXTERNAL logs in as, if the certificate has the name `from` asks for.
    pub fn login_name(&self, from: LoginFrom) -> Option<String> {
        match from {
            LoginFrom::CommonName => self.common_name.clone(),
            LoginFrom::DistinguishedName => Some(self.distinguished_name.clone()),
            LoginFrom::SubjectAlternativeName { kind, index } => match kind {
                SanKind::Dns => self.dns_names.get(index).cloned(),
                SanKind::Email => self.emails.get(index).cloned(),
                SanKind::Uri => self.uris.get(index).cloned(),
                SanKind::Ip => self.ip_addresses.get(index).map(IpAddr::to_string),
            },
        }
        .filter(|name| !name.is_empty())
    }

    /// A short description for logs and errors: the common name, or the DN.
    pub fn describe(&self) -> String {
        match (&self.node, &self.operator, &self.common_name) {
            (Some(id), _, _) => format!("node {id}"),
            (None, Some(name), _) => format!("operator '{name}'"),
            (None, None, Some(cn)) => format!("'{cn}'"),
            (None, None, None) => format!("'{}'", self.distinguished_name),
        }
    }
}

/// Escapes the characters RFC 4514 reserves in an attribute value.
fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4514_escapes_reserved_characters() {
        assert_eq!(escape_rfc4514("a,b"), "a\\,b");
        assert_eq!(escape_rfc4514(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
        assert_eq!(escape_rfc4514("plain"), "plain");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(PeerIdentity::from_der(b"not a certificate").is_err());
        assert!(PeerIdentity::from_der(&[]).is_err());
    }
}
