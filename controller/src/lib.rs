//! Switchback controller: keeps one view of the cluster (membership and drains from etcd,
//! live load from the workers' report streams, health with its reason) and streams it to
//! routers. Replicas campaign in an etcd election; the leader's address is how workers and
//! routers find it. Standbys mirror the leader's view so that a failover starts warm.

pub mod config;
pub mod membership;
pub mod metrics;
pub mod mirror;
pub mod report_limit;
pub mod service;
pub mod view;

use std::{sync::Arc, time::Duration};

use axum::{extract::State, http::header, response::IntoResponse, routing::get};
use switchback_proto::{Keys, pb::controller_server::ControllerServer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::TcpIncoming;

use crate::{config::ControllerConfig, service::ControllerService, view::ClusterView};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(#[from] switchback_common::tls::TlsError),
}

/// Runs the controller on `listener` (gRPC) and `metrics` (HTTP) until `shutdown` fires.
pub async fn run(
    config: ControllerConfig,
    listener: TcpListener,
    metrics: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let local = listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());
    let keys = Keys::new(&config.etcd_prefix);
    let view = Arc::new(ClusterView::new(config.id.clone(), config.stale_after));
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();

    let tls = config
        .tls
        .as_ref()
        .map(switchback_common::tls::ClusterTls::load)
        .transpose()?;
    switchback_common::tls::log_hop(
        "gRPC server (workers, routers, standbys, sbctl → controller)",
        tls.is_some(),
    );
    switchback_common::tls::log_hop("gRPC client (standby → leader)", tls.is_some());
    switchback_common::tls::log_hop("etcd client", config.etcd.is_tls());
    let dialer = switchback_common::tls::Dialer::new(tls.clone());

    let (synced_tx, _synced_rx) = tokio::sync::watch::channel(false);
    tasks.spawn(membership::follow(
        switchback_common::registry::EtcdRegistry::new(config.etcd.clone()),
        keys.clone(),
        Arc::clone(&view),
        synced_tx,
        stop.clone(),
    ));
    tasks.spawn({
        let view = Arc::clone(&view);
        let stop = stop.clone();
        let period = (config.stale_after / 4).max(Duration::from_millis(50));
        async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => view.sweep(),
                }
            }
        }
    });
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    tasks.spawn({
        let etcd = config.etcd.clone();
        let name = keys.controller_election();
        let advertise = advertise.clone();
        let stop = stop.clone();
        let ttl = config.lease_ttl_s;
        async move {
            switchback_common::etcd::campaign_forever(
                &etcd, &name, &advertise, ttl, stop, leader_tx,
            )
            .await;
        }
    });
    // The view learns of leadership changes (a new leader's grace for load streams; the
    // role in Status).
    tasks.spawn({
        let view = Arc::clone(&view);
        let mut leader = leader_rx.clone();
        let stop = stop.clone();
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = leader.changed() => if changed.is_err() { return },
                }
                let is_leader = *leader.borrow_and_update();
                view.set_leader(is_leader);
            }
        }
    });
    tasks.spawn(mirror::follow_leader(
        switchback_common::etcd::ControllerTarget {
            address: None,
            etcd: config.etcd.clone(),
            keys: keys.clone(),
            dialer,
        },
        advertise.clone(),
        Arc::clone(&view),
        leader_rx.clone(),
        stop.clone(),
    ));
    tasks.spawn({
        let app = axum::Router::new()
            .route("/metrics", get(scrape))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(Arc::clone(&view));
        let stop = stop.clone();
        switchback_common::http_serve::serve(
            metrics,
            app,
            switchback_common::http_serve::HttpLimits::for_metrics(),
            Default::default(),
            stop,
        )
    });

    tracing::info!(id = %config.id, %advertise, "controller serving");
    const MAX_REQUEST_BYTES: usize = 64 * 1024;
    // A router sends one report per failed attempt; this is far above that in an outage.
    const REPORTS_PER_SECOND: u32 = 20;
    let builder = tonic::transport::Server::builder().add_service(
        ControllerServer::new(ControllerService {
            view,
            leader: leader_rx,
            etcd: config.etcd.clone(),
            keys,
            stop: stop.clone(),
            reports: crate::report_limit::ReportLimit::new(REPORTS_PER_SECOND),
            tls: tls.is_some(),
        })
        // Every message the controller takes (a load report, a failure report, a
        // drain) is small; a caller cannot make it decode megabytes.
        .max_decoding_message_size(MAX_REQUEST_BYTES),
    );
    let signal = {
        let stop = stop.clone();
        async move {
            shutdown.cancelled().await;
            // End open streams first: the server waits for every connection to close.
            stop.cancel();
        }
    };
    let result = match &tls {
        None => {
            builder
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    signal,
                )
                .await
        }
        Some(tls) => {
            tasks.spawn(tls.clone().watch(stop.clone()));
            let source = tls.clone();
            let incoming = switchback_common::tls::incoming(
                listener,
                move || source.server_config(),
                stop.clone(),
                &tasks,
            )?;
            builder
                .serve_with_incoming_shutdown(incoming.into_stream(), signal)
                .await
        }
    };
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("controller stopped");
    Ok(result?)
}

async fn scrape(State(view): State<Arc<ClusterView>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&view.status()),
    )
}
