//! Warren's management HTTP server: RabbitMQ's management API (its paths and JSON shapes, so
//! `rabbitmqadmin` and scripts written for RabbitMQ work), the web console (embedded assets, no
//! CDN) and a Prometheus `/metrics` endpoint.
//!
//! Any node answers for the whole cluster: listings come from the deciding broker's view (the
//! leader's, asked over gRPC by a node that does not lead), changes to users, vhosts,
//! permissions, topic permissions, limits and policies go through the Access service (committed
//! through Raft), and publish, get, purge and delete go through a direct connection logged in
//! as the HTTP user. This crate decides nothing about brokers: it translates.

mod aliveness;
mod api;
mod auth;
mod console;
mod definitions;
mod error;
mod https;
mod limits;
mod listing;
mod members;
mod metrics;
mod names;
mod policies;
mod prometheus_plugin;
mod rates;
mod shapes;
mod topic_permissions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::serve::ListenerExt;
use openraft::Raft;
use tokio::net::TcpListener;
use tracing::{info, warn};
use warren_raft::admin::AdminService;
use warren_raft::state_machine::BrokerStateMachine;
use warren_raft::TypeConfig;
use warren_server::access::AccessService;
use warren_server::counters::ClientCounters;
use warren_server::direct::DirectConnector;
use warren_server::management::ManagementService;

/// What the management server needs of its node.
pub struct Node {
    pub node_id: u64,
    /// The AMQP listener's address.
    pub amqp_addr: SocketAddr,
    /// The node's client listeners, RabbitMQ's protocol name (`amqp`, `amqp/ssl`) and address
    /// (`/api/overview`'s listeners, with the management server's own).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    pub management: ManagementService,
    pub access: AccessService,
    pub direct: DirectConnector,
    pub admin: AdminService<BrokerStateMachine>,
    pub raft: Raft<TypeConfig, BrokerStateMachine>,
    /// Users that may log in only from a loopback address (as for AMQP).
    pub loopback_users: Vec<String>,
    /// What this node's AMQP clients did (`/metrics`: RabbitMQ's global counters, churn, logins
    /// and message sizes).
    pub client_counters: Arc<ClientCounters>,
}

/// The largest request body accepted (a definitions file, a published payload).
const MAX_BODY: usize = 64 << 20;

/// Shared state of the handlers.
pub(crate) struct Ctx {
    pub(crate) node: Node,
    pub(crate) rates: rates::Rates,
    pub(crate) leader_changes: std::sync::atomic::AtomicU64,
    pub(crate) started: Instant,
    /// When the API or /metrics was last asked (ms since `started`): rates are sampled only
    /// while someone looks, so an unwatched cluster pays nothing for them.
    pub(crate) last_asked: std::sync::atomic::AtomicU64,
    /// The management server's own listeners: `http` or `https`, and address.
    pub(crate) http: Vec<(&'static str, SocketAddr)>,
}

impl Ctx {
    /// Records that someone asked (see [`Ctx::last_asked`]).
    pub(crate) fn asked(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_asked
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the API or /metrics was asked within `window`.
    pub(crate) fn watched(&self, window: std::time::Duration) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_asked.load(std::sync::atomic::Ordering::Relaxed);
        last > 0
            && now.saturating_sub(last) <= u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The node name RabbitMQ tools show (`rabbit@host` there).
pub(crate) fn node_name(id: u64) -> String {
    format!("warren@node{id}")
}

/// A bound listener of the management server: HTTP, or HTTPS with this TLS configuration.
pub struct HttpListener {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// How long an HTTPS client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the management API, console and metrics on every listener until `shutdown`
/// completes.
pub async fn serve(
    listeners: Vec<HttpListener>,
    node: Node,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = Vec::new();
    for l in &listeners {
        http.push((
            if l.tls.is_some() { "https" } else { "http" },
            l.socket.local_addr()?,
        ));
    }
    let ctx = Arc::new(Ctx {
        node,
        rates: rates::Rates::default(),
        leader_changes: Default::default(),
        started: Instant::now(),
        last_asked: Default::default(),
        http,
    });
    rates::spawn_sampler(ctx.clone());
    metrics::spawn_leader_watch(ctx.clone());
    let app = api::router(ctx.clone())
        .merge(console::router())
        .merge(metrics::router(ctx))
        // Definitions files and published payloads can exceed axum's default of 2 MiB.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for l in listeners {
        let addr = l.socket.local_addr()?;
        let service = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let mut stop = stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match l.tls {
            None => {
                info!(%addr, "management API, console and metrics listening (HTTP)");
                servers.spawn(async move {
                    axum::serve(l.socket, service)
                        .with_graceful_shutdown(stopped)
                        .await
                });
            }
            Some(tls) => {
                info!(%addr, "management API, console and metrics listening (HTTPS)");
                let listener = https::TlsListener::new(l.socket, tls, TLS_HANDSHAKE_TIMEOUT);
                servers.spawn(async move {
                    axum::serve(listener.tap_io(|_| {}), service)
                        .with_graceful_shutdown(stopped)
                        .await
                });
            }
        }
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            warn!(error = %e, "the management server failed");
            result = Err(e);
        }
    }
    result
}
