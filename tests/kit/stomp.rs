//! A small STOMP client for the end-to-end tests, on `warren-stomp`'s frame codec: frames are
//! written and read whole, with a step timeout on every read. (Real STOMP clients are tested
//! from Python with stomp.py: tests/python/test_stomp.py.)

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_stomp::{Command, Decoder, Frame, Item, Limits, Version};

use crate::STEP;

/// One STOMP connection.
pub struct StompClient {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    version: Version,
    /// Frames read while waiting for a receipt, handed out by [`StompClient::next`] first.
    pending: std::collections::VecDeque<Frame>,
}

impl StompClient {
    /// Opens a socket (no CONNECT yet).
    pub async fn open(addr: SocketAddr) -> anyhow::Result<StompClient> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .context("connecting to the STOMP port timed out")??;
        Ok(StompClient {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(Limits::default()),
            version: Version::V1_2,
            pending: std::collections::VecDeque::new(),
        })
    }

    /// Opens a socket and logs in (STOMP 1.2) as `login`, answered by CONNECTED.
    pub async fn connect(
        addr: SocketAddr,
        login: &str,
        passcode: &str,
    ) -> anyhow::Result<StompClient> {
        let mut c = StompClient::open(addr).await?;
        c.send(
            Frame::new(Command::Connect)
                .with_header("accept-version", "1.2")
                .with_header("host", "/")
                .with_header("login", login)
                .with_header("passcode", passcode),
        )
        .await?;
        let connected = c.next().await?;
        if connected.command != Command::Connected {
            bail!("expected CONNECTED, got {connected:?}");
        }
        c.decoder.set_version(Version::V1_2);
        Ok(c)
    }

    /// Writes a frame.
    pub async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        warren_stomp::encode(&frame, self.version, &mut out);
        self.write_raw(&out).await
    }

    /// Writes bytes as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// The next frame from the server (heart-beats skipped); an error at EOF or after
    /// [`STEP`].
    pub async fn next(&mut self) -> anyhow::Result<Frame> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(f);
        }
        self.read_frame().await
    }

    async fn read_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            while let Some(item) = self.decoder.decode(&mut self.buf)? {
                if let Item::Frame(f) = item {
                    return Ok(f);
                }
            }
            let n = tokio::time::timeout(STEP, self.stream.read_buf(&mut self.buf))
                .await
                .context("no frame from the server in time")??;
            if n == 0 {
                bail!("the server closed the connection");
            }
        }
    }

    /// Whether the server closes the connection (EOF) within [`STEP`], frames before it
    /// skipped.
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(STEP, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => self.buf.clear(),
                Err(_) => return false,
            }
        }
    }

    /// Sends `frame` with a receipt and waits for the RECEIPT (for a SEND: the broker has the
    /// message); MESSAGE frames that come first are kept for [`StompClient::next`].
    pub async fn send_confirmed(&mut self, frame: Frame, receipt: &str) -> anyhow::Result<()> {
        self.send(frame.with_header("receipt", receipt)).await?;
        loop {
            let answer = self.read_frame().await?;
            match answer.command {
                Command::Receipt if answer.header("receipt-id") == Some(receipt) => return Ok(()),
                Command::Message => self.pending.push_back(answer),
                _ => bail!("expected RECEIPT {receipt}, got {answer:?}"),
            }
        }
    }
}
