//! The shared end-to-end test kit: starts real `warren` processes on loopback ports it picks,
//! connects real AMQP clients (lapin) to them, and speaks raw frames for bad-input tests.
//!
//! Set `WARREN_TEST_URI` to run the same tests against a broker started elsewhere (e.g. RabbitMQ,
//! to check that a test encodes RabbitMQ's behaviour).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
pub use lapin;
use lapin::{Connection, ConnectionProperties};

/// How long any single awaited step may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// A broker under test: a `warren` child process, or an external broker.
pub struct Broker {
    child: Option<Child>,
    data_dir: Option<PathBuf>,
    addr: SocketAddr,
    uri: String,
}

fn warren_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WARREN_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/warren")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out a free loopback port")
}

impl Broker {
    /// Starts a fresh node (or uses `WARREN_TEST_URI`), waiting until it accepts connections.
    pub fn start() -> Broker {
        Broker::start_with(&[]).expect("warren starts")
    }

    /// Starts a node with extra command-line flags (or uses `WARREN_TEST_URI`).
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Broker> {
        if let Ok(uri) = std::env::var("WARREN_TEST_URI") {
            let rest = uri.split('@').nth(1).unwrap_or("127.0.0.1:5672");
            let hostport = rest.split('/').next().unwrap_or(rest);
            let addr = hostport.parse().context("WARREN_TEST_URI host:port")?;
            return Ok(Broker {
                child: None,
                data_dir: None,
                addr,
                uri,
            });
        }
        Broker::start_own(extra)
    }

    /// Always starts a `warren` process, even when `WARREN_TEST_URI` is set: for tests of the
    /// process itself (flags, shutdown, timeouts).
    pub fn start_own(extra: &[&str]) -> anyhow::Result<Broker> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "warren-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("warren.log"))?;
        let bin = warren_bin();
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut broker = Broker {
            child: Some(child),
            data_dir: Some(dir),
            addr,
            uri: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if let Some(Some(status)) = broker.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                bail!("warren exited early: {status}; log: {}", broker.log());
            }
            if Instant::now() > deadline {
                bail!("warren did not listen on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

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
        if let Some(d) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Connects a lapin client to `uri`, failing the test after [`STEP`].
pub async fn connect(uri: &str) -> Connection {
    within(Connection::connect(uri, ConnectionProperties::default()))
        .await
        .expect("connect")
}

/// Awaits `f`, panicking after [`STEP`] so a hang fails the test.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f).await.expect("step timed out")
}

/// `queue.declare` with passive=true: the queue's counts, or the error that closed the channel.
pub async fn declare_passive(ch: &lapin::Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    within(ch.queue_declare(
        queue.into(),
        lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    ))
    .await
}

/// Declares a server-named exclusive queue and returns its name.
pub async fn exclusive_queue(ch: &lapin::Channel) -> String {
    within(ch.queue_declare(
        "".into(),
        lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    ))
    .await
    .expect("queue.declare")
    .name()
    .to_string()
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        Instant::now().elapsed().subsec_nanos()
    )
}

/// The reply code of a lapin error that closed a channel or connection.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

/// The reply text of a lapin protocol error.
pub fn reply_text(e: &lapin::Error) -> Option<String> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_message().to_string()),
        _ => None,
    }
}

/// A hand-driven AMQP connection for sending bytes no client library would send. Its tiny
/// encoder is written here, independent of Warren's codec.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame the server sent, as far as the raw tests care.
#[derive(Debug, PartialEq, Eq)]
pub enum RawFrame {
    Method {
        channel: u16,
        class: u16,
        method: u16,
        args: Vec<u8>,
    },
    Other {
        kind: u8,
        channel: u16,
    },
}

/// A close method the server sent: (channel, reply code, reply text, class, method).
pub type Close = (u16, u16, String, u16, u16);

pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

pub fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    p
}

pub fn short_str(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

pub fn long_str(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

impl RawConn {
    /// Connects and sends nothing.
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes the handshake as guest on "/" (heartbeats off), then opens channel 1.
    pub fn open(addr: SocketAddr) -> RawConn {
        let mut c = RawConn::connect(addr);
        c.send(b"AMQP\x00\x00\x09\x01");
        assert!(matches!(
            c.read_frame(),
            Some(RawFrame::Method {
                class: 10,
                method: 10,
                ..
            })
        ));
        let mut start_ok = long_str(b"");
        start_ok.extend(short_str("PLAIN"));
        start_ok.extend(long_str(b"\0guest\0guest"));
        start_ok.extend(short_str("en_US"));
        c.send(&frame(1, 0, &method(10, 11, &start_ok)));
        assert!(matches!(
            c.read_frame(),
            Some(RawFrame::Method {
                class: 10,
                method: 30,
                ..
            })
        ));
        let mut tune_ok = 2047u16.to_be_bytes().to_vec();
        tune_ok.extend_from_slice(&131072u32.to_be_bytes());
        tune_ok.extend_from_slice(&0u16.to_be_bytes());
        c.send(&frame(1, 0, &method(10, 31, &tune_ok)));
        let mut open = short_str("/");
        open.extend(short_str(""));
        open.push(0);
        c.send(&frame(1, 0, &method(10, 40, &open)));
        assert!(matches!(
            c.read_frame(),
            Some(RawFrame::Method {
                class: 10,
                method: 41,
                ..
            })
        ));
        c.send(&frame(1, 1, &method(20, 10, &short_str(""))));
        assert!(matches!(
            c.read_frame(),
            Some(RawFrame::Method {
                channel: 1,
                class: 20,
                method: 11,
                ..
            })
        ));
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads raw bytes until `n` arrived or the peer closed; returns what arrived.
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        while out.len() < n {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => out.extend_from_slice(&chunk[..k]),
            }
        }
        out
    }

    /// Whether the server closed the socket (EOF) within the read timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// The next frame, or `None` on EOF/timeout.
    pub fn read_frame(&mut self) -> Option<RawFrame> {
        let mut chunk = [0u8; 65536];
        loop {
            if self.buf.len() >= 7 {
                let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]])
                    as usize;
                if self.buf.len() >= size + 8 {
                    let f: Vec<u8> = self.buf.drain(..size + 8).collect();
                    let channel = u16::from_be_bytes([f[1], f[2]]);
                    if f[0] == 1 {
                        return Some(RawFrame::Method {
                            channel,
                            class: u16::from_be_bytes([f[7], f[8]]),
                            method: u16::from_be_bytes([f[9], f[10]]),
                            args: f[11..7 + size].to_vec(),
                        });
                    }
                    return Some(RawFrame::Other {
                        kind: f[0],
                        channel,
                    });
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
    }

    /// Reads frames until a `connection.close` or `channel.close` arrives.
    pub fn expect_close(&mut self) -> Close {
        while let Some(f) = self.read_frame() {
            if let RawFrame::Method {
                channel,
                class,
                method,
                args,
            } = f
            {
                if (class, method) == (10, 50) || (class, method) == (20, 40) {
                    let code = u16::from_be_bytes([args[0], args[1]]);
                    let len = args[2] as usize;
                    let text = String::from_utf8_lossy(&args[3..3 + len]).into_owned();
                    let c = u16::from_be_bytes([args[3 + len], args[4 + len]]);
                    let m = u16::from_be_bytes([args[5 + len], args[6 + len]]);
                    return (channel, code, text, c, m);
                }
            }
        }
        panic!("no close arrived");
    }
}
