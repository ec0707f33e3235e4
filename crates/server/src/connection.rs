//! The tokio task of one client connection: moves bytes between the socket and its [`Session`],
//! forwards the session's inputs to the broker task and applies the effects that come back.
//!
//! Back-pressure: the socket is not read while the outbound buffer is above the high watermark,
//! so a client that does not read cannot make the server buffer without bound.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::debug;
use warren_core::{ConnId, Input, CONNECTION_NAME_PROPERTY};
use warren_wire::FieldValue;

use crate::broker_task::ToBroker;
use crate::clock::now_ms;
use crate::relay::image::SharedImage;
use crate::session::Session;
use crate::ServerConfig;

pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    config: ServerConfig,
    broker: mpsc::Sender<ToBroker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let (effects_tx, mut effects_rx) = mpsc::unbounded_channel();
    let image = SharedImage::default();
    if broker
        .send(ToBroker::Register {
            conn,
            effects: effects_tx,
            image: Some(image.clone()),
        })
        .await
        .is_err()
    {
        return;
    }
    let high = config.high_watermark;
    let mut session = Session::new(conn, &config, peer.ip().is_loopback(), now_ms());
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut inputs: Vec<Input> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        return;
    }
    loop {
        if session.is_finished() && session.out().is_empty() {
            break;
        }
        let want_read = !session.is_finished() && session.out().len() < high;
        let want_write = !session.out().is_empty();
        tokio::select! {
            r = rd.read_buf(&mut inbuf), if want_read => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => session.receive(&mut inbuf, now_ms(), &mut inputs),
            },
            r = wr.write_buf(session.out()), if want_write => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => session.after_write(&mut inputs),
            },
            Some(effects) = effects_rx.recv() => {
                let now = now_ms();
                let mut image = image.lock();
                for e in effects {
                    if image.observe(&e) {
                        session.apply(e, now, &mut inputs);
                    }
                }
                inputs.extend(image.take_requeues(conn));
            }
            _ = ticker.tick() => session.tick(now_ms(), &mut inputs),
            r = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if r.is_ok() {
                    session.shutdown(now_ms(), &mut inputs);
                }
            }
        }
        for mut input in inputs.drain(..) {
            if let Input::Login {
                client_properties, ..
            } = &mut input
            {
                // RabbitMQ's connection name, shown by the deciding broker (see
                // `CONNECTION_NAME_PROPERTY`).
                client_properties.insert(
                    CONNECTION_NAME_PROPERTY,
                    FieldValue::LongStr(format!("{peer} -> {local}").into()),
                );
            }
            if broker.send(ToBroker::Input(input)).await.is_err() {
                return;
            }
        }
    }
    // Ended by the client's connection.close, and close-ok has been written.
    let closed_by_client = session.closed_by_client() && session.out().is_empty();
    debug!(conn, %peer, "connection ended");
    if session.known_to_core() {
        let _ = broker
            .send(ToBroker::Input(Input::ConnectionClosed { conn }))
            .await;
    }
    let _ = broker.send(ToBroker::Unregister { conn }).await;
    if closed_by_client && !shutting_down {
        await_client_close(&mut rd, &mut shutdown).await;
    }
    let _ = wr.shutdown().await;
}

/// How long the socket stays open after the close handshake for the client to close it
/// (RabbitMQ's reader waits `CLOSING_TIMEOUT`, 30 s, too).
const CLOSING_TIMEOUT: Duration = Duration::from_secs(30);

/// After close-ok, RabbitMQ leaves closing the TCP connection to the client. Clients expect
/// it: lapin, seeing the server's FIN before it has handled close-ok, logs "Socket was
/// readable but we read 0". The broker has already forgotten the connection; this only keeps
/// the socket, reading and discarding until the client closes it, the timeout, or shutdown.
async fn await_client_close(rd: &mut OwnedReadHalf, shutdown: &mut watch::Receiver<bool>) {
    let mut scratch = [0u8; 512];
    let until_eof = async {
        while let Ok(n) = rd.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        () = until_eof => {}
        () = tokio::time::sleep(CLOSING_TIMEOUT) => {}
        _ = shutdown.changed() => {}
    }
}
