//! A small client of Warren's management HTTP API (RabbitMQ's paths), over HTTP or HTTPS, used
//! by `warrenctl` and by the end-to-end tests. Any node answers for the whole cluster.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The node answered with an error status; `reason` is RabbitMQ's `reason` field when given.
    #[error("{status}: {reason}")]
    Status { status: u16, reason: String },
    #[error("cannot reach the management API at {addr}: {why}")]
    Unreachable { addr: String, why: String },
    #[error("bad answer from the management API: {0}")]
    BadAnswer(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// A management API endpoint with credentials.
#[derive(Clone)]
pub struct ApiClient {
    /// `host:port`.
    addr: String,
    /// `http` or `https`.
    scheme: &'static str,
    authorization: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Encodes one path segment (a vhost `/` becomes `%2F`, as RabbitMQ's URLs want).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ApiClient {
    /// `addr` is `host:port` of any node's management port, or `https://host:port` of its
    /// HTTPS port (a server certificate of a public CA is trusted; another CA with
    /// [`ApiClient::trusting`]).
    pub fn new(addr: &str, user: &str, password: &str) -> ApiClient {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let (scheme, addr) = match addr.strip_prefix("https://") {
            Some(rest) => ("https", rest),
            None => ("http", addr.strip_prefix("http://").unwrap_or(addr)),
        };
        ApiClient {
            addr: addr.trim_end_matches('/').to_owned(),
            scheme,
            authorization: format!("Basic {credentials}"),
            client: client(&[]).expect(
                "ring supports TLS 1.2 and 1.3, and the public roots are valid: nothing to fail on",
            ),
        }
    }

    /// The same client, also trusting the CA certificates in `ca_pem` (the cluster's CA, for
    /// a node certificate from `warren cert`).
    pub fn trusting(mut self, ca_pem: &str) -> Result<ApiClient, ApiError> {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Tls(format!("the CA certificate: {e}")))?;
        self.client = client(&certs)?;
        Ok(self)
    }

    /// Sends a request; returns the status and the body parsed as JSON (`Null` when empty).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ApiError> {
        self.request_with(method, path, body, &[]).await
    }

    /// [`ApiClient::request`] with extra headers.
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), ApiError> {
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}://{}{}", self.scheme, self.addr, path))
            .header("authorization", &self.authorization)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ApiError::BadAnswer(e.to_string()))?;
        let unreachable = |why: String| ApiError::Unreachable {
            addr: self.addr.clone(),
            why,
        };
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| unreachable("no answer within 30 s".into()))?
            .map_err(|e| unreachable(format!("{e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::BadAnswer(e.to_string()))?
            .to_bytes();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        Ok((status, value))
    }

    /// A request that must succeed (2xx); its JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let (status, value) = self.request(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let reason = value
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            Err(ApiError::Status { status, reason })
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call("GET", path, None).await
    }
}

/// An HTTP(S) client trusting the public roots and `extra` (rustls with ring, HTTP/1.1).
fn client(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, ApiError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| ApiError::Tls(format!("the CA certificate: {e}")))?;
    }
    #[allow(deprecated)] // ring, as everywhere in Warren (see warren_tls::config::provider).
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}
