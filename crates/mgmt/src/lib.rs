//! Warren's management HTTP server: RabbitMQ's management API (its paths and JSON shapes, so
//! `rabbitmqadmin` and scripts written for RabbitMQ work), the web console (embedded assets, no
//! CDN) and a Prometheus `/metrics` endpoint.
//!
//! Any node answers for the whole cluster: listings come from the deciding broker's view (the
//! leader's, asked over gRPC by a node that does not lead), changes to users, vhosts and
//! permissions go through the Access service (committed through Raft), and publish, get, purge
//! and delete go through a direct connection logged in as the HTTP user. This crate decides
//! nothing about brokers: it translates.

mod api;
mod auth;
mod console;
mod definitions;
mod error;
mod metrics;
mod rates;
mod shapes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use openraft::Raft;
use tokio::net::TcpListener;
use tracing::{info, warn};
use warren_raft::admin::AdminService;
use warren_raft::state_machine::BrokerStateMachine;
use warren_raft::TypeConfig;
use warren_server::access::AccessService;
use warren_server::direct::DirectConnector;
use warren_server::management::ManagementService;

/// What the management server needs of its node.
pub struct Node {
    pub node_id: u64,
    /// The AMQP listener's address (shown in `/api/overview`'s listeners).
    pub amqp_addr: SocketAddr,
    pub management: ManagementService,
    pub access: AccessService,
    pub direct: DirectConnector,
    pub admin: AdminService<BrokerStateMachine>,
    pub raft: Raft<TypeConfig, BrokerStateMachine>,
    /// Users that may log in only from a loopback address (as for AMQP).
    pub loopback_users: Vec<String>,
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
    pub(crate) port: u16,
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

/// Serves the management API, console and metrics on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let ctx = Arc::new(Ctx {
        node,
        rates: rates::Rates::default(),
        leader_changes: Default::default(),
        started: Instant::now(),
        last_asked: Default::default(),
        port,
    });
    rates::spawn_sampler(ctx.clone());
    metrics::spawn_leader_watch(ctx.clone());
    let app = api::router(ctx.clone())
        .merge(console::router())
        .merge(metrics::router(ctx))
        // Definitions files and published payloads can exceed axum's default of 2 MiB.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    info!(addr = %listener.local_addr()?, "management API, console and metrics listening");
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    if let Err(e) = &served {
        warn!(error = %e, "the management server failed");
    }
    served
}
