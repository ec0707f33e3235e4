//! The shared end-to-end test kit: starts real `warren` processes on loopback ports it picks,
//! connects real AMQP clients (lapin) to them, and speaks hand-written frames ([`raw`]).
//!
//! Set `WARREN_TEST_URI` to run the same tests against a broker started elsewhere (RabbitMQ 3.10,
//! to check that every test encodes RabbitMQ's behaviour); then [`Broker::start`] starts nothing.

pub mod certs;
pub mod cluster;
pub mod management;
pub mod mqtt;
pub mod raw;
pub mod stomp;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures_lite::StreamExt;
pub use lapin;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, Event};
pub use raw::{RawConn, RawFrame};
pub use serde_json;

/// How long any single awaited step may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// How long a broker process may take to accept TCP connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A broker under test: a `warren` child process this kit started, or an external broker.
pub struct Broker {
    child: Option<Child>,
    data_dir: Option<PathBuf>,
    /// The extra flags the node was started with, reused on restart.
    extra: Vec<String>,
    addr: SocketAddr,
    uri: String,
    /// The management API's port (a free one picked at start; 0 for an external broker).
    management_port: u16,
    /// The STOMP port (a free one picked at start unless the extra flags give one; 0 for an
    /// external broker).
    stomp_port: u16,
    /// The MQTT port (as the STOMP one).
    mqtt_port: u16,
}

/// The `warren` binary: `WARREN_BIN`, else `$CARGO_TARGET_DIR/debug/warren`, else the
/// workspace's `target/debug/warren`.
pub fn warren_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WARREN_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/warren")
}

/// Whether the tests run against a broker started elsewhere (`WARREN_TEST_URI`).
pub fn is_external() -> bool {
    std::env::var_os("WARREN_TEST_URI").is_some()
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out a free loopback port")
}

/// A directory no other test (or earlier run) uses.
pub(crate) fn fresh_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique("warren-test"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Broker {
    /// Starts a fresh node (or uses `WARREN_TEST_URI`), waiting until it accepts connections.
    pub fn start() -> Broker {
        Broker::start_with(&[]).expect("warren starts")
    }

    /// Starts a node with extra command-line flags (or uses `WARREN_TEST_URI`).
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Broker> {
        match std::env::var("WARREN_TEST_URI") {
            Ok(uri) => Broker::external(uri),
            Err(_) => Broker::start_own(extra),
        }
    }

    fn external(uri: String) -> anyhow::Result<Broker> {
        let rest = uri.split('@').nth(1).unwrap_or(&uri);
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr = hostport
            .parse()
            .with_context(|| format!("WARREN_TEST_URI needs a numeric host:port: {uri}"))?;
        Ok(Broker {
            child: None,
            data_dir: None,
            extra: Vec::new(),
            addr,
            uri,
            management_port: 0,
            stomp_port: 0,
            mqtt_port: 0,
        })
    }

    /// Always starts a `warren` process, even when `WARREN_TEST_URI` is set: for tests of the
    /// process itself (flags, shutdown, timeouts). Retries on another port if the one picked was
    /// taken in the meantime.
    pub fn start_own(extra: &[&str]) -> anyhow::Result<Broker> {
        let mut last = None;
        for _ in 0..3 {
            match Broker::spawn(extra) {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts were made"))
    }

    fn spawn(extra: &[&str]) -> anyhow::Result<Broker> {
        let port = free_port();
        let dir = fresh_dir()?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Broker::spawn_at(port, dir, extra)
    }

    /// Starts a node on `port` with data in `dir` (a cluster member: see [`cluster`]).
    pub(crate) fn spawn_at(port: u16, dir: PathBuf, extra: Vec<String>) -> anyhow::Result<Broker> {
        // 127.0.0.1, or the address the flags bind to (e.g. `--bind ::1`).
        let ip = extra
            .iter()
            .position(|a| a == "--bind")
            .and_then(|i| extra.get(i + 1))
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let addr = SocketAddr::new(ip, port);
        let stomp_port = match extra.iter().position(|a| a == "--stomp-port") {
            Some(i) => extra.get(i + 1).and_then(|p| p.parse().ok()).unwrap_or(0),
            None => free_port(),
        };
        let mqtt_port = match extra.iter().position(|a| a == "--mqtt-port") {
            Some(i) => extra.get(i + 1).and_then(|p| p.parse().ok()).unwrap_or(0),
            None => free_port(),
        };
        let mut broker = Broker {
            child: None,
            data_dir: Some(dir),
            extra,
            addr,
            uri: format!("amqp://guest:guest@{addr}/%2f"),
            management_port: free_port(),
            stomp_port,
            mqtt_port,
        };
        broker.launch()?;
        Ok(broker)
    }

    /// Runs the binary on this broker's port and data dir, appending to its log, and waits until
    /// the port accepts TCP connections.
    fn launch(&mut self) -> anyhow::Result<()> {
        let dir = self
            .data_dir
            .clone()
            .context("only a node this kit owns is launched")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("warren.log"))?;
        let bin = warren_bin();
        // Loopback only, unless the test binds elsewhere itself (e.g. `--bind ::1`).
        let bind: &[&str] = if self.extra.iter().any(|a| a == "--bind") {
            &[]
        } else {
            &["--bind", "127.0.0.1"]
        };
        // Every node its own STOMP port (the default, 61613, is one per host); no Web-STOMP
        // unless a test asks (its default, 15674, too).
        let stomp_port = self.stomp_port.to_string();
        let mut stomp: Vec<&str> = Vec::new();
        if !self.extra.iter().any(|a| a == "--stomp-port") {
            stomp.extend(["--stomp-port", &stomp_port]);
        }
        if !self.extra.iter().any(|a| a == "--web-stomp-port") {
            stomp.extend(["--web-stomp-port", "0"]);
        }
        // Every node its own MQTT port too (1883 is one per host); no Web-MQTT unless asked.
        let mqtt_port = self.mqtt_port.to_string();
        if !self.extra.iter().any(|a| a == "--mqtt-port") {
            stomp.extend(["--mqtt-port", &mqtt_port]);
        }
        if !self.extra.iter().any(|a| a == "--web-mqtt-port") {
            stomp.extend(["--web-mqtt-port", "0"]);
        }
        // A node with a certificate would also take the default ports of STOMP, MQTT and their
        // WebSockets over TLS (one per host): none unless a test asks.
        for flag in [
            "--stomp-tls-port",
            "--mqtt-tls-port",
            "--web-stomp-tls-port",
            "--web-mqtt-tls-port",
        ] {
            if !self.extra.iter().any(|a| a == flag) {
                stomp.extend([flag, "0"]);
            }
        }
        let child = Command::new(&bin)
            .args(bind)
            .args(["--port", &self.addr.port().to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--management-port", &self.management_port.to_string()])
            .args(&stomp)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "warren exited before listening on {}; log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "warren did not listen on {} within {START_TIMEOUT:?}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the node with SIGKILL (no shutdown of any kind) and starts it again on the same
    /// port and data dir with the same flags.
    pub fn kill9_and_restart(&mut self) -> anyhow::Result<()> {
        let mut child = self
            .child
            .take()
            .context("kill9_and_restart needs a node this kit started (Broker::start_own)")?;
        child.kill()?;
        child.wait()?;
        self.launch()
    }

    /// The data directory of a node this kit started.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// Whether this kit started the node and has not killed it.
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the node with SIGKILL and leaves it down.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self
            .child
            .take()
            .context("not a running node of this kit")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts a node that was killed again, on the same port, data and flags.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the node still runs");
        self.launch()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` (or `WARREN_TEST_URI`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The URI with `vhost` (already percent-encoded) instead of "/".
    pub fn uri_with_vhost(&self, vhost: &str) -> String {
        let base = self.uri.split('?').next().unwrap_or(&self.uri);
        let at = base.rfind('/').expect("an amqp URI has a path");
        let host_end = base[..at].rfind('@').map_or(0, |i| i + 1);
        assert!(at > host_end, "an amqp URI has a vhost path");
        format!("{}/{vhost}", &base[..at])
    }

    /// The management API's address (`127.0.0.1:PORT`); a later `--management-port` in the
    /// extra flags wins over it.
    pub fn management_addr(&self) -> String {
        format!("127.0.0.1:{}", self.management_port)
    }

    /// The STOMP listener's address (0 as the port for an external broker).
    pub fn stomp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.stomp_port)
    }

    /// The MQTT listener's address (0 as the port for an external broker).
    pub fn mqtt_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.mqtt_port)
    }

    /// The AMQP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's log so far (empty for an external broker).
    pub fn log(&self) -> String {
        self.data_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("warren.log")).ok())
            .unwrap_or_default()
    }

    /// The process id of a node this kit started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the broker process is still running (true for an external broker).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Connects a lapin client.
    pub async fn connect(&self) -> Connection {
        connect(&self.uri).await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // WARREN_TEST_KEEP=1 keeps the data directories (and the nodes' logs) for a post-mortem.
        if let Some(d) = self.data_dir.take() {
            if std::env::var_os("WARREN_TEST_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

/// Connects a lapin client to `uri`, failing the test after [`STEP`].
pub async fn connect(uri: &str) -> Connection {
    within(Connection::connect(uri, ConnectionProperties::default()))
        .await
        .unwrap_or_else(|e| panic!("connect to {uri}: {e}"))
}

/// Awaits `f`, panicking after [`STEP`] so a hang fails the test.
/// Bytes used by the files under `dir` (recursively); 0 if it does not exist.
pub fn disk_usage(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f).await.expect("step timed out")
}

/// A name no other test, process or earlier run uses.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The reply code and text of the channel.close or connection.close behind a lapin error; panics
/// if the error is something else.
pub fn closed_with(e: &lapin::Error) -> (u16, String) {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => (p.get_id(), p.get_message().to_string()),
        other => panic!("expected an AMQP error from the server, got {other:?}"),
    }
}

/// The reply code of a lapin error that closed a channel or connection.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

/// The reply text of a lapin error that closed a channel or connection.
pub fn reply_text(e: &lapin::Error) -> Option<String> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_message().to_string()),
        _ => None,
    }
}

/// The first error the connection reports (the server's connection.close), within [`STEP`].
pub async fn connection_error(
    events: &mut (impl futures_lite::Stream<Item = Event> + Unpin),
) -> lapin::Error {
    loop {
        match within(events.next()).await {
            Some(Event::Error(e)) => return e,
            Some(_) => continue,
            None => panic!("the connection's events ended without an error"),
        }
    }
}

/// Opens a channel.
pub async fn channel(conn: &Connection) -> Channel {
    within(conn.create_channel()).await.expect("channel.open")
}

/// Opens a channel in publisher-confirm mode: [`publish`] on it returns once the broker took
/// the message, so what follows sees it.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    ch
}

/// Publishes and, on a confirm channel, waits for the broker's confirm.
pub async fn publish(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Confirmation {
    let confirm = within(ch.basic_publish(
        exchange.into(),
        routing_key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    ))
    .await
    .expect("basic.publish");
    within(confirm).await.expect("publisher confirm")
}

/// Declares `name` with `options` and no arguments.
pub async fn declare_queue(ch: &Channel, name: &str, options: QueueDeclareOptions) -> lapin::Queue {
    within(ch.queue_declare(name.into(), options, FieldTable::default()))
        .await
        .unwrap_or_else(|e| panic!("queue.declare {name}: {e}"))
}

/// `queue.declare` with passive=true: the queue's counts, or the error that closed the channel.
pub async fn declare_passive(ch: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    within(ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
}

/// Declares a server-named exclusive queue and returns its name.
pub async fn exclusive_queue(ch: &Channel) -> String {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    declare_queue(ch, "", options).await.name().to_string()
}

/// Every body left in the queue, in order (basic.get no-ack until get-empty).
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

/// Starts a consumer with the given tag ("" lets the server pick one).
pub async fn consume(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
) -> Consumer {
    within(ch.basic_consume(queue.into(), tag.into(), options, FieldTable::default()))
        .await
        .unwrap_or_else(|e| panic!("basic.consume {queue}: {e}"))
}

/// The consumer's next delivery, within [`STEP`].
pub async fn next_delivery(c: &mut Consumer) -> Delivery {
    within(c.next())
        .await
        .expect("the consumer ended")
        .expect("a delivery")
}

/// Whether no delivery arrives for `ms` milliseconds.
pub async fn stays_quiet(c: &mut Consumer, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), c.next())
        .await
        .is_err()
}

/// The body of a delivery as text.
pub fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

/// Checks from a fresh lapin connection that the broker still routes, confirms and delivers.
pub async fn assert_serves_clients(broker: &Broker) {
    let conn = broker.connect().await;
    let ch = confirm_channel(&conn).await;
    let q = exclusive_queue(&ch).await;
    let confirmation = publish(&ch, "", &q, b"still here", BasicProperties::default()).await;
    assert!(confirmation.is_ack(), "publish confirmed");
    assert_eq!(drain(&ch, &q).await, ["still here"]);
    within(conn.close(200, "bye".into()))
        .await
        .expect("connection.close");
}

/// Runs async test code from a plain (non-async) test, on a runtime of its own.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// [`assert_serves_clients`] for plain (non-async) tests.
pub fn assert_serves_clients_blocking(broker: &Broker) {
    block_on(assert_serves_clients(broker));
}
