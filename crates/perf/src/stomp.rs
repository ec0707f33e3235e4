//! STOMP producers and consumers (`--protocol-uri stomp://…`), over a minimal STOMP 1.2 client
//! written here: a frame is a command line, header lines, a blank line and a body ended by NUL,
//! and this client needs only CONNECT, SEND, SUBSCRIBE, ACK and DISCONNECT. It shares no code
//! with Warren's STOMP adapter, so it measures RabbitMQ's plugin and Warren's alike.
//!
//! A producer SENDs to `/amq/queue/NAME` (the queue warren-perf declared over AMQP) with a
//! `receipt` header when confirms are asked (-c): both brokers send the RECEIPT once the message
//! is confirmed, so the receipt's delay is the confirm latency. A consumer SUBSCRIBEs to the same
//! destination with `prefetch-count` (-q) and acks each message (`client-individual`), or every
//! N-th with `client` mode's cumulative ACK (-A N), or not at all (-a: `auto`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Mutex, OwnedSemaphorePermit, Semaphore};

use crate::consumer::{keep_pace, ConsumerPlan, Drain};
use crate::options::ProtocolUri;
use crate::producer::{paced, ProducerPlan};
use crate::stats::{stamp, Stats};

/// Frames larger than this are refused (warren-perf's bodies are at most a few MiB).
const MAX_FRAME: usize = 64 << 20;

/// One STOMP frame as read.
#[derive(Debug)]
struct Frame {
    command: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Frame {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The broker's ERROR frame as an error.
    fn error(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "STOMP ERROR: {} {}",
            self.header("message").unwrap_or_default(),
            String::from_utf8_lossy(&self.body).trim()
        )
    }
}

/// Splits the next frame off the front of `buf`, if it holds a whole one. Heart-beat EOLs before
/// a frame are skipped.
fn parse(buf: &mut BytesMut) -> anyhow::Result<Option<Frame>> {
    while buf.first() == Some(&b'\n') || buf.starts_with(b"\r\n") {
        let eol = if buf[0] == b'\r' { 2 } else { 1 };
        buf.advance(eol);
    }
    // The blank line that ends the headers.
    let Some(end) = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, 2))
        .or_else(|| {
            buf.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| (p, 4))
        })
    else {
        if buf.len() > MAX_FRAME {
            bail!("a STOMP frame's headers exceed {MAX_FRAME} bytes");
        }
        return Ok(None);
    };
    let (head_len, blank) = end;
    let head = std::str::from_utf8(&buf[..head_len]).context("STOMP headers are not UTF-8")?;
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let command = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let body_at = head_len + blank;
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse::<usize>())
        .transpose()
        .context("a bad content-length")?;
    let body_len = match length {
        Some(n) => {
            if n > MAX_FRAME {
                bail!("a STOMP body of {n} bytes");
            }
            if buf.len() < body_at + n + 1 {
                return Ok(None);
            }
            n
        }
        None => match buf[body_at..].iter().position(|b| *b == 0) {
            Some(n) => n,
            None if buf.len() > MAX_FRAME => bail!("a STOMP frame without its NUL"),
            None => return Ok(None),
        },
    };
    if buf[body_at + body_len] != 0 {
        bail!("a STOMP frame whose body is not followed by NUL");
    }
    let mut frame = buf.split_to(body_at + body_len + 1).freeze();
    frame.advance(body_at);
    frame.truncate(body_len);
    Ok(Some(Frame {
        command,
        headers,
        body: frame,
    }))
}

/// Appends a frame to `out`. Header values here never hold `:`, `\n` or `\\` (destinations are
/// queue names warren-perf made, ids are numbers), so nothing is escaped.
fn encode(out: &mut Vec<u8>, command: &str, headers: &[(&str, &str)], body: &[u8]) {
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
}

/// Reads frames from one half of a connection.
struct Reader {
    inner: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// The next frame; an error if the connection ended.
    async fn next(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = parse(&mut self.buf)? {
                return Ok(frame);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                bail!("the broker closed the STOMP connection");
            }
        }
    }
}

/// A STOMP connection after CONNECTED.
pub(crate) struct StompConnection {
    reader: Reader,
    writer: BufWriter<OwnedWriteHalf>,
}

impl StompConnection {
    async fn send(&mut self, command: &str, headers: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut frame = Vec::new();
        encode(&mut frame, command, headers, b"");
        self.writer.write_all(&frame).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// DISCONNECT with a receipt, awaited (so that the acks sent before it were taken), within
    /// five seconds.
    async fn disconnect(mut self) {
        if self
            .send("DISCONNECT", &[("receipt", "disconnect")])
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(f) = self.reader.next().await {
                if f.command == "RECEIPT" {
                    return;
                }
            }
        })
        .await;
    }
}

/// Connects and logs in (STOMP 1.2, no heart-beats, the URI's vhost as `host`).
pub(crate) async fn connect(uri: &ProtocolUri) -> anyhow::Result<StompConnection> {
    let stream = TcpStream::connect((uri.host.as_str(), uri.port))
        .await
        .with_context(|| format!("connecting to {}:{}", uri.host, uri.port))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut conn = StompConnection {
        reader: Reader {
            inner: read,
            buf: BytesMut::with_capacity(64 * 1024),
        },
        writer: BufWriter::new(write),
    };
    conn.send(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", &uri.vhost),
            ("login", &uri.user),
            ("passcode", &uri.password),
            ("heart-beat", "0,0"),
        ],
    )
    .await?;
    let reply = conn.reader.next().await?;
    match reply.command.as_str() {
        "CONNECTED" => Ok(conn),
        "ERROR" => Err(reply.error()),
        other => bail!("{other} in answer to CONNECT"),
    }
}

/// Publishes as [`crate::producer::run`] does, with SEND frames to `/amq/queue/NAME`.
pub(crate) async fn produce(
    conn: StompConnection,
    plan: ProducerPlan,
    persistent: bool,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: Instant,
    grace: Duration,
) -> anyhow::Result<()> {
    let StompConnection { reader, mut writer } = conn;
    let confirming = plan.confirm > 0;
    let window = Arc::new(Semaphore::new(plan.confirm.max(1)));
    // Receipt id -> when its SEND went out, and its place in the window.
    let pending: Arc<Mutex<HashMap<u64, (Instant, OwnedSemaphorePermit)>>> = Arc::default();
    let receipts = tokio::spawn(take_receipts(reader, pending.clone(), stats.clone()));
    let destination = format!("/amq/queue/{}", plan.queue);
    let mut body = vec![0u8; plan.size];
    let length = plan.size.to_string();
    let mut frame = Vec::with_capacity(plan.size + 256);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let outcome: anyhow::Result<()> = async {
        while plan.count == 0 || sent < plan.count {
            if *stop.borrow() || receipts.is_finished() {
                break;
            }
            if !paced(started, sent, plan.rate, &mut stop).await {
                continue;
            }
            let permit = if confirming {
                tokio::select! {
                    p = window.clone().acquire_owned() => Some(p.context("the receipt window closed")?),
                    _ = stop.changed() => continue,
                }
            } else {
                None
            };
            stamp(&mut body);
            let receipt = sent.to_string();
            let mut headers: Vec<(&str, &str)> = vec![
                ("destination", &destination),
                ("content-length", &length),
            ];
            if persistent {
                headers.push(("persistent", "true"));
            }
            if let Some(permit) = permit {
                headers.push(("receipt", &receipt));
                pending.lock().await.insert(sent, (Instant::now(), permit));
            }
            frame.clear();
            encode(&mut frame, "SEND", &headers, &body);
            writer.write_all(&frame).await.context("SEND")?;
            writer.flush().await.context("SEND")?;
            sent += 1;
            stats.sent.fetch_add(1, Ordering::Relaxed);
            Stats::mark(&stats.last_sent_us, start.elapsed());
        }
        Ok(())
    }
    .await;
    // Wait (at most `grace`) for the outstanding receipts.
    let deadline = Instant::now() + grace;
    while confirming && !receipts.is_finished() && Instant::now() < deadline {
        if pending.lock().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = pending.lock().await.len();
    if receipts.is_finished() {
        receipts.await.context("the receipt task panicked")??;
    } else {
        receipts.abort();
    }
    outcome?;
    if left > 0 {
        tracing::warn!(queue = %plan.queue, left, "receipts still outstanding after the grace period");
    }
    let mut bye = Vec::new();
    encode(&mut bye, "DISCONNECT", &[], b"");
    let _ = writer.write_all(&bye).await;
    let _ = writer.flush().await;
    Ok(())
}

/// Times each RECEIPT against its SEND and frees its window slot; ends with the connection or
/// on an ERROR frame (returned as the error).
async fn take_receipts(
    mut reader: Reader,
    pending: Arc<Mutex<HashMap<u64, (Instant, OwnedSemaphorePermit)>>>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    loop {
        let frame = reader.next().await?;
        match frame.command.as_str() {
            "RECEIPT" => {
                let id = frame
                    .header("receipt-id")
                    .and_then(|v| v.parse::<u64>().ok())
                    .context("a RECEIPT without a receipt-id warren-perf sent")?;
                if let Some((t0, permit)) = pending.lock().await.remove(&id) {
                    stats.confirm_latency(t0.elapsed());
                    stats.confirmed.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                }
            }
            "ERROR" => return Err(frame.error()),
            _ => {}
        }
    }
}

/// Consumes as [`crate::consumer::run`] does, with a SUBSCRIBE to `/amq/queue/NAME`.
pub(crate) async fn consume(
    mut conn: StompConnection,
    plan: ConsumerPlan,
    drain: Option<Arc<Drain>>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    start: Instant,
) -> anyhow::Result<()> {
    let every = plan.multi_ack_every.max(1);
    let mode = if plan.autoack {
        "auto"
    } else if every > 1 {
        "client"
    } else {
        "client-individual"
    };
    let destination = format!("/amq/queue/{}", plan.queue);
    let prefetch = plan.qos.to_string();
    let mut headers = vec![
        ("id", "0"),
        ("destination", destination.as_str()),
        ("ack", mode),
    ];
    if plan.qos > 0 {
        headers.push(("prefetch-count", &prefetch));
    }
    conn.send("SUBSCRIBE", &headers).await?;
    let mut taken: u64 = 0;
    let mut unacked: u64 = 0;
    // The ack id of the newest message not acknowledged yet (`client` mode acks it and all before).
    let mut newest: Option<String> = None;
    let drained = || drain.as_ref().is_some_and(|d| d.done());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if *stop.borrow() || (plan.count > 0 && taken >= plan.count) || drained() {
            break;
        }
        let frame = tokio::select! {
            f = conn.reader.next() => f?,
            _ = stop.changed() => continue,
            _ = tick.tick() => continue,
        };
        match frame.command.as_str() {
            "MESSAGE" => {}
            "ERROR" => return Err(frame.error()),
            _ => continue,
        }
        stats.e2e_latency(&frame.body);
        stats.received.fetch_add(1, Ordering::Relaxed);
        Stats::mark(&stats.last_received_us, start.elapsed());
        if let Some(d) = &drain {
            d.taken.fetch_add(1, Ordering::Relaxed);
        }
        taken += 1;
        keep_pace(start, taken, plan.rate).await;
        if plan.autoack {
            continue;
        }
        let id = frame
            .header("ack")
            .context("a MESSAGE without an ack header in an acking subscription")?
            .to_owned();
        unacked += 1;
        if every == 1 || unacked >= every {
            conn.send("ACK", &[("id", &id)]).await.context("ACK")?;
            unacked = 0;
            newest = None;
        } else {
            newest = Some(id);
        }
    }
    if let Some(id) = newest {
        conn.send("ACK", &[("id", &id)]).await.context("ACK")?;
    }
    conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_their_nul_or_content_length_and_wait_for_the_rest() {
        let mut wire = Vec::new();
        encode(&mut wire, "RECEIPT", &[("receipt-id", "7")], b"");
        // A body holding NULs, framed by content-length.
        encode(
            &mut wire,
            "MESSAGE",
            &[("content-length", "3"), ("ack", "T_1")],
            b"a\0b",
        );
        let mut buf = BytesMut::from(&b"\n\r\n"[..]);
        buf.extend_from_slice(&wire[..wire.len() - 2]);
        let first = parse(&mut buf).unwrap().unwrap();
        assert_eq!(first.command, "RECEIPT");
        assert_eq!(first.header("receipt-id"), Some("7"));
        assert_eq!(&first.body[..], b"");
        assert!(
            parse(&mut buf).unwrap().is_none(),
            "the MESSAGE is not whole yet"
        );
        buf.extend_from_slice(&wire[wire.len() - 2..]);
        let second = parse(&mut buf).unwrap().unwrap();
        assert_eq!(second.command, "MESSAGE");
        assert_eq!(second.header("ack"), Some("T_1"));
        assert_eq!(&second.body[..], b"a\0b");
        assert!(buf.is_empty());
    }

    #[test]
    fn a_body_not_followed_by_nul_is_refused() {
        let mut buf = BytesMut::from(&b"MESSAGE\ncontent-length:1\n\nab\0"[..]);
        assert!(parse(&mut buf).is_err());
    }
}
