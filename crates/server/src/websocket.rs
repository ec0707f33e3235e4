//! The WebSocket side of Web-STOMP and Web-MQTT (RabbitMQ's `rabbitmq_web_stomp` and
//! `rabbitmq_web_mqtt`): the handshake at `/ws` with the protocol's sub-protocols, then the
//! messages as the bytes of a [`crate::translated`] client — each message the client sends
//! holds protocol bytes; each one the server sends holds whole frames or packets.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::translated::{ClientRead, ClientWrite};

/// The largest WebSocket message a client may send (one frame or packet's worth; bounds one
/// message's memory).
const MAX_MESSAGE: usize = 64 << 20;
/// Messages waiting for the client's socket.
const QUEUE: usize = 16;

/// The byte stream under a WebSocket: a TCP socket, or TLS over one (`wss://`).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Box<dyn Io>;

/// What a protocol's WebSocket endpoint speaks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoint {
    /// The sub-protocols it accepts, best first (browsers refuse a connection whose offer of
    /// sub-protocols goes unanswered).
    pub(crate) protocols: &'static [&'static str],
    /// Messages to the client are binary (MQTT); otherwise text when the bytes are UTF-8
    /// (STOMP), binary when not.
    pub(crate) binary: bool,
    /// For logs.
    pub(crate) name: &'static str,
}

/// A WebSocket client after its handshake: its messages in, messages out through a writer
/// task (ended when [`Writer::finish`] sends the close, or the writer is dropped).
pub(crate) struct Accepted {
    pub(crate) reader: Reader,
    pub(crate) writer: Writer,
    pub(crate) task: JoinHandle<()>,
}

/// The WebSocket handshake at `/ws` within `timeout`; `None` (logged) if it fails.
pub(crate) async fn accept(
    stream: Stream,
    peer: SocketAddr,
    endpoint: Endpoint,
    timeout: Duration,
) -> Option<Accepted> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    // The callback's error type is tungstenite's (a whole HTTP response).
    #[allow(clippy::result_large_err)]
    let choose = move |request: &Request, response: Response| choose(endpoint, request, response);
    let accept = tokio_tungstenite::accept_hdr_async_with_config(stream, choose, Some(config));
    let ws = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, endpoint = endpoint.name, "WebSocket handshake failed");
            return None;
        }
        Err(_) => {
            debug!(%peer, endpoint = endpoint.name, "WebSocket handshake timed out");
            return None;
        }
    };
    let (sink, stream) = StreamExt::split(ws);
    let (tx, rx) = mpsc::channel(QUEUE);
    Some(Accepted {
        reader: Reader(stream),
        writer: Writer {
            tx,
            binary: endpoint.binary,
        },
        task: tokio::spawn(write_messages(sink, rx)),
    })
}

/// The handshake's answer: 404 for a path other than `/ws`; the best sub-protocol the client
/// offers.
#[allow(clippy::result_large_err)]
fn choose(
    endpoint: Endpoint,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != "/ws" {
        let mut refused = ErrorResponse::new(Some(format!("{} is served at /ws", endpoint.name)));
        *refused.status_mut() = StatusCode::NOT_FOUND;
        return Err(refused);
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if let Some(p) = endpoint.protocols.iter().find(|p| offered.contains(p)) {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(p));
    }
    Ok(response)
}

/// Messages from the client, as bytes.
pub(crate) struct Reader(SplitStream<WebSocketStream<Stream>>);

impl ClientRead for Reader {
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(Message::Text(t))) if !t.is_empty() => {
                    buf.extend_from_slice(t.as_bytes());
                    return Ok(t.len());
                }
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    buf.extend_from_slice(&b);
                    return Ok(b.len());
                }
                // Pings are answered by tungstenite; empty messages carry nothing.
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Messages to the client: handed to [`write_messages`] through a bounded queue.
pub(crate) struct Writer {
    tx: mpsc::Sender<Message>,
    binary: bool,
}

impl ClientWrite for Writer {
    async fn write_from(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let permit = self.tx.reserve().await.map_err(io::Error::other)?;
        let bytes = buf.split().freeze();
        let n = bytes.len();
        let message = if self.binary {
            Message::Binary(bytes)
        } else {
            match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(bytes),
            }
        };
        permit.send(message);
        Ok(n)
    }

    async fn finish(&mut self) {
        let _ = self.tx.send(Message::Close(None)).await;
    }
}

/// Writes the queued messages to the client's socket until the queue closes or a close has
/// been sent.
async fn write_messages(
    mut sink: SplitSink<WebSocketStream<Stream>, Message>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(message) = rx.recv().await {
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            break;
        }
    }
    let _ = sink.close().await;
}
