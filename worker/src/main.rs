//! `switchback-worker --config worker.yaml`: reads config, starts telemetry, runs the worker.

use clap::Parser;
use switchback_worker::config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let _telemetry = switchback_common::init("switchback-worker");
    let config = match config::load(config::Args::parse()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("switchback-worker: bad configuration: {err}");
            std::process::exit(switchback_common::EXIT_BAD_CONFIG);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!(
                "switchback-worker: cannot listen on {}: {err}",
                config.listen
            );
            std::process::exit(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            switchback_common::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    if let Err(err) = switchback_worker::run(config, listener, shutdown).await {
        tracing::error!(%err, "worker failed");
        eprintln!("switchback-worker: {err}");
        std::process::exit(1);
    }
}
