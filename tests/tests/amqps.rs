//! AMQPS as RabbitMQ serves it, through lapin: a TLS listener beside the plain one, client
//! certificates verified when asked for, SASL EXTERNAL logging in as the certificate's common
//! name, IPv6, and bad input over TLS — a garbled or stalled handshake, another CA's or an
//! expired certificate — closing only that connection, within the handshake timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use warren_tests::certs::certs;
use warren_tests::{assert_serves_clients, free_port, Broker, STEP};

/// A TLS client configuration trusting the kit's CA, presenting the certificate in `dir` (a
/// directory of `warren cert create-client`) if given.
fn tls(dir: Option<&std::path::Path>) -> OwnedTLSConfig {
    let ca = std::fs::read_to_string(certs().ca_dir().join("ca.crt")).expect("the kit's CA");
    OwnedTLSConfig {
        identity: dir.map(identity),
        cert_chain: Some(ca),
    }
}

/// lapin's identity: the certificate and its PKCS#8 key, PEM.
fn identity(dir: &std::path::Path) -> OwnedIdentity {
    identity_of(&dir.join("client.crt"), &dir.join("client.key"))
}

fn identity_of(cert: &std::path::Path, key: &std::path::Path) -> OwnedIdentity {
    OwnedIdentity::PKCS8 {
        pem: std::fs::read(cert).expect("a certificate"),
        key: std::fs::read(key).expect("a key"),
    }
}

async fn connect_tls(uri: &str, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    tokio::time::timeout(
        STEP,
        Connection::connect_with_config(uri, ConnectionProperties::default(), tls, runtime),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {uri} took longer than {STEP:?}"))
}

/// A node with an AMQPS listener (client certificates as `client_auth` says), and its port.
fn node(client_auth: &str, extra: &[&str]) -> (Broker, u16) {
    let amqps = free_port();
    let mut flags = certs().amqps_flags(amqps, client_auth);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (Broker::start_own(&flags).expect("warren starts"), amqps)
}

/// Publishes and gets one message back over `conn`.
async fn round_trip(conn: &Connection, queue: &str) {
    let ch = warren_tests::confirm_channel(conn).await;
    warren_tests::declare_queue(&ch, queue, Default::default()).await;
    let confirm = warren_tests::publish(&ch, "", queue, b"over tls", Default::default()).await;
    assert!(confirm.is_ack());
    assert_eq!(warren_tests::drain(&ch, queue).await, ["over tls"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_serves_lapin_beside_plain_amqp() {
    let (broker, amqps) = node("none", &[]);
    for host in ["127.0.0.1", "localhost"] {
        let conn = connect_tls(
            &format!("amqps://guest:guest@{host}:{amqps}/%2f"),
            tls(None),
        )
        .await
        .expect("an AMQPS connection");
        round_trip(&conn, &format!("tls-{host}")).await;
    }
    // The plain listener goes on serving.
    assert_serves_clients(&broker).await;
    // A client that does not trust the server's CA refuses it.
    let untrusted = OwnedTLSConfig {
        identity: None,
        cert_chain: Some(
            std::fs::read_to_string(certs().foreign_node_dir(1).join("ca.crt"))
                .expect("another CA"),
        ),
    };
    assert!(
        connect_tls(
            &format!("amqps://guest:guest@127.0.0.1:{amqps}/%2f"),
            untrusted
        )
        .await
        .is_err(),
        "a server certificate of an unknown CA is refused by the client"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_external_logs_in_as_the_certificates_common_name() {
    // The user `app` exists (the default user, with its permissions on "/"); `ghost` does not.
    let (broker, amqps) = node(
        "required",
        &[
            "--default-user",
            "app",
            "--default-pass",
            "not-used-by-external",
        ],
    );
    let app = certs().amqp_client_dir("app");
    let uri = format!("amqps://127.0.0.1:{amqps}/%2f?auth_mechanism=external");
    let conn = connect_tls(&uri, tls(Some(&app)))
        .await
        .expect("EXTERNAL logs in as app");
    round_trip(&conn, "external").await;

    // A certificate of the CA for a user that does not exist: refused as RabbitMQ refuses.
    let ghost = certs().amqp_client_dir("ghost");
    let err = connect_tls(&uri, tls(Some(&ghost)))
        .await
        .expect_err("no user ghost");
    let text = format!("{err:?}");
    assert!(
        text.contains("ACCESS_REFUSED")
            && text.contains("Login was refused using authentication mechanism EXTERNAL"),
        "{text}"
    );
    // Client certificates are required: without one the handshake fails.
    assert!(
        connect_tls(&format!("amqps://app:x@127.0.0.1:{amqps}/%2f"), tls(None))
            .await
            .is_err(),
        "no client certificate, no connection"
    );
    // PLAIN still works over TLS with a certificate (EXTERNAL is offered, not forced).
    let conn = connect_tls(
        &format!("amqps://app:not-used-by-external@127.0.0.1:{amqps}/%2f"),
        tls(Some(&ghost)),
    )
    .await
    .expect("PLAIN over TLS");
    round_trip(&conn, "plain-over-tls").await;
    assert!(broker.log().contains("amqps"), "the listener is logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn external_is_not_offered_without_a_certificate() {
    let (_broker, amqps) = node("optional", &[]);
    let err = connect_tls(
        &format!("amqps://127.0.0.1:{amqps}/%2f?auth_mechanism=external"),
        tls(None),
    )
    .await
    .expect_err("no certificate, no EXTERNAL");
    // Refused as any mechanism the server did not offer.
    let text = format!("{err:?}");
    assert!(
        text.contains("unsupported authentication mechanism 'EXTERNAL'"),
        "{text}"
    );
    // The same client logs in with PLAIN over the same listener.
    let conn = connect_tls(
        &format!("amqps://guest:guest@127.0.0.1:{amqps}/%2f"),
        tls(None),
    )
    .await
    .expect("PLAIN over TLS without a certificate");
    round_trip(&conn, "plain").await;
}

#[test]
fn ipv6_loopback_serves_amqp() {
    // lapin cannot dial an IPv6 literal; the kit's raw client does the whole handshake (pika
    // over AMQPS on ::1: tests/python/test_tls.py).
    let (broker, amqps) = node("none", &["--bind", "::1"]);
    assert!(broker.addr().is_ipv6());
    // Handshake and channel.open, each answered.
    let _conn = warren_tests::RawConn::open(broker.addr());
    let log = broker.log();
    assert!(
        log.contains(&format!("addr=[::1]:{amqps} protocol=\"amqp/ssl\"")),
        "{log}"
    );
}

/// Reads until the server closes the socket; how long after `started` that was.
fn closed_within(mut s: TcpStream, started: Instant, limit: Duration) -> Duration {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("the server did not close the socket within {limit:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tls_input_closes_only_that_connection_within_the_handshake_timeout() {
    let (broker, amqps) = node("required", &["--handshake-timeout-ms", "1500"]);
    // A client that keeps working through all of it.
    let steady = broker.connect().await;
    let steady_ch = warren_tests::confirm_channel(&steady).await;
    let q = warren_tests::exclusive_queue(&steady_ch).await;

    // Garbage instead of a ClientHello: closed at once.
    let started = Instant::now();
    let mut garbage = TcpStream::connect(("127.0.0.1", amqps)).expect("connect");
    garbage
        .write_all(b"AMQP\x00\x00\x09\x01 this is not TLS at all\r\n")
        .expect("write");
    assert!(closed_within(garbage, started, Duration::from_secs(5)) < Duration::from_secs(1));

    // A client that stalls after connecting, and one that stalls mid-handshake (half a
    // ClientHello): both closed by the handshake timeout (1.5 s), not before it.
    let started = Instant::now();
    let silent = TcpStream::connect(("127.0.0.1", amqps)).expect("connect");
    let mut half = TcpStream::connect(("127.0.0.1", amqps)).expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .expect("write");
    for s in [silent, half] {
        let took = closed_within(s, started, Duration::from_secs(10));
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );
    }

    // A certificate of another CA, and an expired certificate of the right CA: refused.
    let foreign = certs().foreign_node_dir(2);
    let foreign_client = OwnedTLSConfig {
        identity: Some(identity_of(
            &foreign.join("node.crt"),
            &foreign.join("node.key"),
        )),
        cert_chain: tls(None).cert_chain,
    };
    let uri = format!("amqps://guest:guest@127.0.0.1:{amqps}/%2f");
    assert!(
        connect_tls(&uri, foreign_client).await.is_err(),
        "another CA"
    );
    let expired = expired_client_dir();
    assert!(
        connect_tls(&uri, tls(Some(&expired))).await.is_err(),
        "an expired certificate"
    );

    // Each was logged, and nobody else noticed.
    let log = broker.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(log.contains("TLS handshake not finished in time"), "{log}");
    let confirm =
        warren_tests::publish(&steady_ch, "", &q, b"still here", Default::default()).await;
    assert!(confirm.is_ack());
    assert_eq!(warren_tests::drain(&steady_ch, &q).await, ["still here"]);
    assert_serves_clients(&broker).await;
}

/// A client certificate of the kit's CA that expired yesterday.
fn expired_client_dir() -> std::path::PathBuf {
    use warren_tls::authority::{Authority, ClientRole, Validity};
    let ca_dir = certs().ca_dir();
    let read = |name: &str| std::fs::read_to_string(ca_dir.join(name)).expect("the kit's CA");
    let ca = Authority::from_pem(&read("ca.crt"), &read("ca.key")).expect("the CA signs");
    let now = SystemTime::now();
    let issued = ca
        .client(
            "guest",
            ClientRole::Amqp,
            Validity {
                not_before: now - Duration::from_secs(30 * 86_400),
                not_after: now - Duration::from_secs(86_400),
            },
        )
        .expect("an expired certificate");
    let dir = std::env::temp_dir().join(warren_tests::unique("expired-client"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("client.crt"), issued.cert_pem).expect("write");
    std::fs::write(dir.join("client.key"), issued.key_pem).expect("write");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_management_api_over_https_lists_every_listener() {
    let https = free_port();
    let port = https.to_string();
    let (wss_stomp, wss_mqtt) = (free_port(), free_port());
    let (web_stomp_tls, web_mqtt_tls) = (wss_stomp.to_string(), wss_mqtt.to_string());
    let (broker, amqps) = node(
        "none",
        &[
            "--management-tls-port",
            &port,
            "--web-stomp-tls-port",
            &web_stomp_tls,
            "--web-mqtt-tls-port",
            &web_mqtt_tls,
        ],
    );
    let ca = std::fs::read_to_string(certs().ca_dir().join("ca.crt")).expect("the kit's CA");
    let api = warren_tests::management::ApiClient::new(
        &format!("https://localhost:{https}"),
        "guest",
        "guest",
    )
    .trusting(&ca)
    .expect("the CA");
    let overview = api.get("/api/overview").await.expect("GET over HTTPS");
    let listeners: Vec<(String, u64)> = overview["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            (
                l["protocol"].as_str().unwrap_or("").to_owned(),
                l["port"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for expected in [
        ("amqp".to_owned(), u64::from(broker.addr().port())),
        ("amqp/ssl".to_owned(), u64::from(amqps)),
        ("https".to_owned(), u64::from(https)),
        ("https/web-stomp".to_owned(), u64::from(wss_stomp)),
        ("https/web-mqtt".to_owned(), u64::from(wss_mqtt)),
    ] {
        assert!(
            listeners.contains(&expected),
            "{expected:?} in {listeners:?}"
        );
    }
    let contexts = overview["contexts"].to_string();
    assert!(contexts.contains("\"ssl\":true"), "{contexts}");
    // Without the cluster's CA, the server's certificate is not trusted.
    let untrusted = warren_tests::management::ApiClient::new(
        &format!("https://localhost:{https}"),
        "guest",
        "guest",
    );
    assert!(untrusted.get("/api/overview").await.is_err());
    // Plain HTTP to the HTTPS port: closed at once, and the API goes on answering.
    let started = Instant::now();
    let mut plain = TcpStream::connect(("127.0.0.1", https)).expect("connect");
    plain
        .write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert!(closed_within(plain, started, Duration::from_secs(5)) < Duration::from_secs(1));
    assert!(api.get("/api/overview").await.is_ok());
    // warrenctl over HTTPS, trusting the CA of its certs directory.
    let out = std::process::Command::new(warren_tests::management::warrenctl_bin())
        .args([
            "--node",
            &format!("https://localhost:{https}"),
            "list",
            "queues",
        ])
        .env("WARREN_CERTS_DIR", certs().operator_dir())
        .output()
        .expect("warrenctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
