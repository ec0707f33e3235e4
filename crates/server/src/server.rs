//! The AMQP listener: accepts connections, gives each a task and a connection id, and on shutdown
//! closes every client with 320 CONNECTION_FORCED before returning.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};
use warren_core::Broker;

use crate::broker_task::{self, ToBroker, INPUT_CAPACITY};
use crate::{connection, ServerConfig};

/// A bound, not yet running AMQP server.
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
    broker: Broker,
}

impl Server {
    /// Binds the listener (so the caller learns the real port before serving).
    pub async fn bind(config: ServerConfig, broker: Broker) -> io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Server {
            listener,
            config,
            broker,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then closes every connection and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let (to_broker, from_conns) = mpsc::channel::<ToBroker>(INPUT_CAPACITY);
        let broker_handle = tokio::spawn(broker_task::run(self.broker, from_conns));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut next_conn = 1u64;
        tokio::pin!(shutdown);
        info!(addr = %self.listener.local_addr()?, "listening for AMQP 0-9-1 clients");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let conn = next_conn;
                        next_conn += 1;
                        tasks.spawn(connection::run(stream, peer, conn, self.config.clone(), to_broker.clone(), stop_rx.clone()));
                    }
                    // Out of file descriptors and the like: keep serving the connections we have.
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!(
            connections = tasks.len(),
            "shutting down: closing client connections"
        );
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("some connections did not close in time; dropping them");
            tasks.abort_all();
        }
        drop(to_broker);
        let _ = tokio::time::timeout(Duration::from_secs(2), broker_handle).await;
        Ok(())
    }
}
