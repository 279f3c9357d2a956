//! Switchback worker: serves one model (through mistral.rs, or the `sim` engine) over the
//! `Inference` gRPC service, registers itself in etcd under a lease, and streams its load
//! to the controller leader.
//!
//! [`run`] is the whole worker; `main.rs` only reads config and starts telemetry.

pub mod config;
pub mod drain;
pub mod engine;
pub mod load;
pub mod metrics;
pub mod service;

use std::{sync::Arc, time::SystemTime};

use switchback_proto::{Keys, WorkerRecord, pb::inference_server::InferenceServer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::TcpIncoming;

use crate::{
    config::{EngineConfig, WorkerConfig},
    engine::{Engine, mistral::MistralEngine, sim::SimEngine},
    load::Load,
    service::{Identity, InferenceService, Limits},
};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("loading the engine: {0}")]
    Engine(#[from] engine::EngineError),
    /// The configured model file is missing or not one this worker can load: a
    /// configuration error (exit 64), found before mistral.rs reads the file.
    #[error("engine.model_path: {0}")]
    Model(#[from] engine::gguf::GgufError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(#[from] switchback_common::tls::TlsError),
}

pub async fn build_engine(config: &WorkerConfig) -> Result<Arc<dyn Engine>, WorkerError> {
    Ok(match &config.engine {
        EngineConfig::Sim(sim) => Arc::new(SimEngine::new(sim.clone())),
        EngineConfig::Mistralrs {
            model_path,
            device,
            dtype,
        } => {
            let summary = engine::gguf::check(model_path)?;
            tracing::info!(
                path = %model_path.display(),
                architecture = %summary.architecture,
                tensor_types = ?summary.tensor_types,
                ?device,
                ?dtype,
                "loading model"
            );
            let started = std::time::Instant::now();
            let dtype = match dtype {
                config::Dtype::Auto => mistralrs::ModelDType::Auto,
                config::Dtype::F32 => mistralrs::ModelDType::F32,
                config::Dtype::F16 => mistralrs::ModelDType::F16,
                config::Dtype::Bf16 => mistralrs::ModelDType::BF16,
            };
            let engine =
                MistralEngine::load(model_path, *device, dtype, config.max_concurrency as usize)
                    .await?;
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "model loaded"
            );
            Arc::new(engine)
        }
    })
}

/// Runs the worker on `listener` until `shutdown` fires, then drains: new requests are
/// refused (and routers told via the load stream), in-flight ones finish within the grace
/// period, the etcd lease is revoked, and the server stops.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let engine = build_engine(&config).await?;
    let local = listener.local_addr()?;
    let advertise = config.advertise.clone().unwrap_or_else(|| {
        if local.ip().is_unspecified() {
            format!("{}:{}", config.node, local.port())
        } else {
            local.to_string()
        }
    });
    let keys = Keys::new(&config.etcd_prefix);
    let record = WorkerRecord {
        id: config.id.clone(),
        address: advertise.clone(),
        node: config.node.clone(),
        tier: config.tier.clone(),
        model: config.model.clone(),
        engine: engine.kind().to_owned(),
        accelerator: engine.accelerator(),
        max_concurrency: config.max_concurrency,
        max_queue: config.max_queue,
        tool_calls: engine.abilities().tool_calls,
        structured_output: engine.abilities().structured_output,
        cost_per_mtok_input: config.cost_per_mtok_input,
        cost_per_mtok_output: config.cost_per_mtok_output,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_unix_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };

    let load = Arc::new(Load::new(config.max_concurrency));
    let requests = TaskTracker::new();
    let abort_requests = CancellationToken::new();
    let service = InferenceService::new(
        Identity {
            worker_id: config.id.clone(),
            tier: config.tier.clone(),
            model: config.model.clone(),
        },
        engine,
        Arc::clone(&load),
        Limits {
            max_queue: config.max_queue,
            stalled_caller: config.stalled_caller,
            default_max_tokens: config.default_max_tokens,
            max_tokens_limit: config.max_tokens_limit,
        },
        requests.clone(),
        abort_requests.clone(),
    )
    .with_mtls(config.tls.is_some());

    let background = TaskTracker::new();
    let server_stop = CancellationToken::new();
    let tls = config
        .tls
        .as_ref()
        .map(switchback_common::tls::ClusterTls::load)
        .transpose()?;
    switchback_common::tls::log_hop("gRPC server (routers, sbctl → worker)", tls.is_some());
    switchback_common::tls::log_hop("gRPC client (worker → controller)", tls.is_some());
    switchback_common::tls::log_hop("etcd client", config.etcd.is_tls());
    let server =
        {
            let stop = server_stop.clone();
            let builder = tonic::transport::Server::builder().add_service(
                InferenceServer::new(service).max_decoding_message_size(service::MAX_REQUEST_BYTES),
            );
            match &tls {
                None => background.spawn(builder.serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stop.cancelled_owned(),
                )),
                Some(tls) => {
                    background.spawn(tls.clone().watch(server_stop.clone()));
                    let source = tls.clone();
                    let incoming = switchback_common::tls::incoming(
                        listener,
                        move || source.server_config(),
                        server_stop.clone(),
                        &background,
                    )?;
                    background.spawn(builder.serve_with_incoming_shutdown(
                        incoming.into_stream(),
                        stop.cancelled_owned(),
                    ))
                }
            }
        };
    if let Some(listener) = metrics {
        let scrape = metrics::Scrape {
            load: Arc::clone(&load),
            tier: config.tier.clone(),
            model: config.model.clone(),
            max_queue: config.max_queue,
        };
        let stop = server_stop.clone();
        background.spawn(async move {
            if let Err(err) = metrics::serve(listener, scrape, stop).await {
                tracing::error!(%err, "metrics server failed");
            }
        });
    }
    tracing::info!(id = %config.id, tier = %config.tier, model = %config.model, %advertise, "worker serving");

    let registration_stop = CancellationToken::new();
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let drain_key = keys.drain(&config.id);
    background.spawn(drain::watch_mark(
        switchback_common::registry::EtcdRegistry::new(config.etcd.clone()),
        drain_key.clone(),
        drain_tx,
        registration_stop.clone(),
    ));
    let registration = background.spawn(drain::manage(
        drain::Registration {
            etcd: config.etcd.clone(),
            key: keys.worker(&config.id),
            value: record.to_json(),
            ttl_s: config.lease_ttl_s,
        },
        drain_rx,
        Arc::clone(&load),
        requests.clone(),
        shutdown.clone(),
        registration_stop.clone(),
    ));
    let reporter_stop = CancellationToken::new();
    background.spawn(load::report_forever(
        Arc::clone(&load),
        config.id.clone(),
        switchback_common::etcd::ControllerTarget {
            address: config.controller.clone(),
            etcd: config.etcd.clone(),
            keys,
            dialer: switchback_common::tls::Dialer::new(tls.clone()),
        },
        config.load_report_interval,
        reporter_stop.clone(),
    ));

    shutdown.cancelled().await;
    tracing::info!(in_flight = load.running() + load.waiting(), "draining");
    load.start_draining();
    requests.close();
    if tokio::time::timeout(config.shutdown_grace, requests.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            abandoned = load.running() + load.waiting(),
            "grace period over; ending in-flight requests with UNAVAILABLE"
        );
        abort_requests.cancel();
        requests.wait().await;
    }
    registration_stop.cancel();
    let _ = registration.await;
    clear_drain_mark(&config.etcd, &drain_key).await;
    reporter_stop.cancel();
    server_stop.cancel();
    background.close();
    match server.await {
        Ok(result) => result?,
        Err(join) => tracing::error!(%join, "gRPC server task failed"),
    }
    background.wait().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// On a clean shutdown the worker's drain mark has served its purpose (a preStop drain);
/// removing it lets the next process with this id start undrained. Best effort, bounded.
async fn clear_drain_mark(etcd: &switchback_common::etcd::EtcdAccess, key: &str) {
    let result = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        let mut client = switchback_common::etcd::connect(etcd).await?;
        client.delete(key, None).await
    })
    .await;
    match result {
        Ok(Ok(r)) if r.deleted() > 0 => tracing::info!(key, "drain mark removed"),
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(%err, key, "could not remove the drain mark"),
        Err(_) => tracing::warn!(key, "etcd did not answer; the drain mark stays"),
    }
}
