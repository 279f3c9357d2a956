//! Switchback router plane: the stateless, OpenAI-compatible front door. It keeps a copy
//! of the cluster view (streamed from the controller), places each request on a (tier,
//! worker) pair with the pure placement core, and relays the worker's stream.

pub mod api;
pub mod cli;
pub mod config;
pub mod difficulty;
pub mod dispatch;
pub mod metrics;
pub mod placement;
pub mod view;

use std::sync::{Arc, atomic::AtomicU64};

use switchback_proto::Keys;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::{AppState, openai::RequestLimits},
    config::RouterConfig,
    view::{ControllerTarget, View},
};

/// Serves the HTTP API on `listener` until `shutdown` fires; in-flight requests finish
/// before it returns.
pub async fn run(
    config: RouterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let view = Arc::new(View::default());
    let tasks = TaskTracker::new();
    let watch_stop = shutdown.child_token();
    let local = listener.local_addr()?;
    tasks.spawn(view::follow(
        Arc::clone(&view),
        ControllerTarget {
            address: config.controller.clone(),
            etcd_endpoints: config.etcd_endpoints.clone(),
            keys: Keys::new(&config.etcd_prefix),
        },
        format!("router@{local}"),
        watch_stop.clone(),
    ));
    let limits = RequestLimits {
        max_tokens_limit: config.max_tokens_limit,
        max_messages: config.max_messages,
    };
    let name = format!("router@{local}");
    let pending = tokio::sync::Semaphore::new(config.max_pending);
    let state = Arc::new(AppState {
        pending,
        name,
        config,
        view,
        clients: Default::default(),
        metrics: Default::default(),
        rotation: AtomicU64::new(0),
        limits,
    });
    tracing::info!(%local, "router serving");
    // Streamed tokens are small writes: without TCP_NODELAY, Nagle's algorithm and delayed
    // ACKs hold each one back by up to 40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(%err, "cannot set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    watch_stop.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("router stopped");
    result
}
