//! Switchback controller: keeps one view of the cluster (membership from etcd, live load
//! from the workers' report streams, health) and streams it to routers. Replicas campaign
//! in an etcd election; the leader's address is how workers and routers find it.

pub mod config;
pub mod membership;
pub mod service;
pub mod view;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

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
}

/// Runs the controller on `listener` until `shutdown` fires.
pub async fn run(
    config: ControllerConfig,
    listener: TcpListener,
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

    let (synced_tx, _synced_rx) = tokio::sync::watch::channel(false);
    tasks.spawn(membership::follow(
        config.etcd_endpoints.clone(),
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
    let leader = Arc::new(AtomicBool::new(false));
    tasks.spawn({
        let endpoints = config.etcd_endpoints.clone();
        let name = keys.controller_election();
        let advertise = advertise.clone();
        let stop = stop.clone();
        let leader = Arc::clone(&leader);
        let ttl = config.lease_ttl_s;
        async move {
            switchback_common::etcd::campaign_forever(
                &endpoints, &name, &advertise, ttl, stop, leader,
            )
            .await;
        }
    });

    tracing::info!(id = %config.id, %advertise, "controller serving");
    let result = tonic::transport::Server::builder()
        .add_service(ControllerServer::new(ControllerService {
            view,
            stop: stop.clone(),
        }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), {
            let stop = stop.clone();
            async move {
                shutdown.cancelled().await;
                // End open streams first: the server waits for every connection to close.
                stop.cancel();
            }
        })
        .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("controller stopped");
    Ok(result?)
}
