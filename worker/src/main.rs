//! `switchback-worker --config worker.yaml`: reads config, starts telemetry, runs the worker.

use clap::Parser;
use switchback_worker::config;

const BINARY: &str = "switchback-worker";

#[tokio::main]
// Exits 64 after `run` has returned (its shutdown is over) when the model was the cause.
#[allow(clippy::disallowed_methods)]
async fn main() {
    let _telemetry = switchback_common::init(BINARY);
    let config = switchback_common::config_or_exit(BINARY, config::load(config::Args::parse()));
    let listener = switchback_common::bind_or_exit(BINARY, config.listen).await;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(switchback_common::bind_or_exit(BINARY, addr).await),
        None => None,
    };
    let shutdown = switchback_common::shutdown_on_signal();
    let result = switchback_worker::run(config, listener, metrics, shutdown).await;
    // A model file it cannot load is bad configuration, like a bad key: exit 64.
    if let Err(err @ switchback_worker::WorkerError::Model(_)) = &result {
        tracing::error!(%err, "{BINARY} failed");
        eprintln!("{BINARY}: bad configuration: {err}");
        std::process::exit(switchback_common::EXIT_BAD_CONFIG);
    }
    switchback_common::exit_on_error(BINARY, result);
}
