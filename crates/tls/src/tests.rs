//! Real handshakes between configurations made from certificates this crate issued, over an
//! in-memory pipe: which certificates a server accepts and what it reads from them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::authority::{Authority, ClientRole, Issued, Validity, LEAF_LIFETIME};
use crate::config::{provider, server_config, ClientAuth};
use crate::files::{write_new, CertsDir};
use crate::{ClusterTls, PeerIdentity};

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("test certificates are valid PEM")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("test keys are valid PEM")
}

fn valid() -> Validity {
    Validity::from_now(LEAF_LIFETIME)
}

/// A client trusting `ca`, presenting `own` if given.
fn client(ca: &Authority, own: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca.cert_pem()) {
        roots.add(c).expect("the test CA is a valid root");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots);
    Arc::new(match own {
        Some(i) => builder
            .with_client_auth_cert(certs(&i.cert_pem), key(&i.key_pem))
            .expect("test client certificate"),
        None => builder.with_no_client_auth(),
    })
}

/// Handshakes over a pipe and exchanges a byte: the server's view of the client's identity, or
/// the server's handshake error.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
    host: &str,
) -> Result<Option<PeerIdentity>, String> {
    let (a, b) = tokio::io::duplex(1 << 16);
    let name = ServerName::try_from(host.to_owned()).expect("test host name");
    let client_side = tokio::spawn(async move {
        let mut s = TlsConnector::from(client).connect(name, b).await?;
        s.write_all(b"x").await?;
        s.flush().await?;
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await?;
        Ok::<_, std::io::Error>(())
    });
    let result = async {
        let mut s = TlsAcceptor::from(server)
            .accept(a)
            .await
            .map_err(|e| e.to_string())?;
        let mut one = [0u8; 1];
        // TLS 1.3: a refused client certificate shows at the server's first read.
        s.read_exact(&mut one).await.map_err(|e| e.to_string())?;
        s.write_all(b"y").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let id = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| PeerIdentity::from_der(c).expect("a verified certificate reads"));
        Ok(id)
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), client_side).await;
    result
}

fn node_server(ca: &Authority, id: u64) -> Arc<rustls::ServerConfig> {
    let node = ca
        .node(id, &["127.0.0.1".into(), "node1.example".into()], valid())
        .expect("node certificate");
    server_config(
        certs(&node.cert_pem),
        key(&node.key_pem),
        Some(&certs(ca.cert_pem())),
        ClientAuth::Required,
        &[],
    )
    .expect("server configuration")
}

#[tokio::test]
async fn a_node_certificate_of_the_ca_is_accepted_and_read() {
    let ca = Authority::create("Warren test CA", Validity::from_now(LEAF_LIFETIME)).unwrap();
    let peer = ca
        .node(2, &["127.0.0.2".into(), "node2.example".into()], valid())
        .unwrap();
    let id = handshake(node_server(&ca, 1), client(&ca, Some(&peer)), "127.0.0.1")
        .await
        .expect("handshake")
        .expect("the client presented a certificate");
    assert_eq!(id.node, Some(2));
    assert_eq!(id.operator, None);
    assert_eq!(id.common_name.as_deref(), Some("warren node 2"));
    assert!(id.names_host("127.0.0.2"));
    assert!(id.names_host("NODE2.example"));
    assert!(!id.names_host("127.0.0.1"));
    assert_eq!(id.distinguished_name, "CN=warren node 2,O=Warren");
    // The server's certificate names its hosts: a client dialling another name is refused.
    assert!(handshake(
        node_server(&ca, 1),
        client(&ca, Some(&peer)),
        "node1.example"
    )
    .await
    .is_ok());
    assert!(handshake(
        node_server(&ca, 1),
        client(&ca, Some(&peer)),
        "elsewhere.example"
    )
    .await
    .is_err());
}

#[tokio::test]
async fn no_certificate_another_ca_or_an_expired_one_is_refused() {
    let ca = Authority::create("Warren test CA", Validity::from_now(LEAF_LIFETIME)).unwrap();
    let other = Authority::create("Another CA", Validity::from_now(LEAF_LIFETIME)).unwrap();
    // No certificate at all.
    assert!(
        handshake(node_server(&ca, 1), client(&ca, None), "127.0.0.1")
            .await
            .is_err()
    );
    // A node certificate of another CA (the client trusts the right CA for the server).
    let foreign = other.node(2, &["127.0.0.2".into()], valid()).unwrap();
    let err = handshake(
        node_server(&ca, 1),
        client(&ca, Some(&foreign)),
        "127.0.0.1",
    )
    .await
    .expect_err("another CA's certificate is refused");
    assert!(
        err.contains("UnknownIssuer") || err.contains("issuer"),
        "{err}"
    );
    // An expired certificate of the right CA.
    let now = SystemTime::now();
    let expired = ca
        .node(
            2,
            &["127.0.0.2".into()],
            Validity {
                not_before: now - Duration::from_secs(10 * 86_400),
                not_after: now - Duration::from_secs(86_400),
            },
        )
        .unwrap();
    let err = handshake(
        node_server(&ca, 1),
        client(&ca, Some(&expired)),
        "127.0.0.1",
    )
    .await
    .expect_err("an expired certificate is refused");
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test]
async fn optional_client_auth_lets_a_client_without_a_certificate_in() {
    let ca = Authority::create("Warren test CA", Validity::from_now(LEAF_LIFETIME)).unwrap();
    let server_cert = ca.server("amqps", &["localhost".into()], valid()).unwrap();
    let server = server_config(
        certs(&server_cert.cert_pem),
        key(&server_cert.key_pem),
        Some(&certs(ca.cert_pem())),
        ClientAuth::Optional,
        &[],
    )
    .unwrap();
    assert_eq!(
        handshake(server.clone(), client(&ca, None), "localhost").await,
        Ok(None)
    );
    let alice = ca.client("alice", ClientRole::Amqp, valid()).unwrap();
    let id = handshake(server.clone(), client(&ca, Some(&alice)), "localhost")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id.common_name.as_deref(), Some("alice"));
    assert_eq!((id.node, id.operator), (None, None));
    let ops = ca.client("ops", ClientRole::Operator, valid()).unwrap();
    let id = handshake(server, client(&ca, Some(&ops)), "localhost")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id.operator.as_deref(), Some("ops"));
}

#[test]
fn a_certs_directory_round_trips_and_a_ca_signs_again_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = CertsDir::new(dir.path());
    let ca = Authority::create("Warren CA", Validity::from_now(LEAF_LIFETIME)).unwrap();
    write_new(&certs_dir.ca_cert(), ca.cert_pem(), false, false).unwrap();
    write_new(&certs_dir.ca_key(), &ca.key_pem(), true, false).unwrap();
    assert!(
        write_new(&certs_dir.ca_cert(), ca.cert_pem(), false, false).is_err(),
        "nothing is overwritten unless asked"
    );
    let reloaded = Authority::from_pem(
        &std::fs::read_to_string(certs_dir.ca_cert()).unwrap(),
        &std::fs::read_to_string(certs_dir.ca_key()).unwrap(),
    )
    .unwrap();
    let node = reloaded.node(3, &["localhost".into()], valid()).unwrap();
    write_new(&certs_dir.node_cert(), &node.cert_pem, false, false).unwrap();
    write_new(&certs_dir.node_key(), &node.key_pem, true, false).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs_dir.node_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "keys are readable by their owner only");
    }
    let tls = ClusterTls::load_node(&certs_dir).unwrap();
    assert_eq!(tls.identity().node, Some(3));
    tls.grpc_server_config().unwrap();
    // No client certificate: an operator's command on a node uses the node's.
    assert_eq!(
        ClusterTls::load_operator(&certs_dir)
            .unwrap()
            .identity()
            .node,
        Some(3)
    );
    // A missing file is named in the error.
    let empty = CertsDir::new(dir.path().join("nothing"));
    let err = ClusterTls::load_node(&empty).unwrap_err().to_string();
    assert!(err.contains("ca.crt"), "{err}");
}
