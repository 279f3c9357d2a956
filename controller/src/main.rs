//! `switchback-controller --config controller.yaml`: reads config, starts telemetry, runs.

use clap::Parser;
use switchback_controller::config;

const BINARY: &str = "switchback-controller";

#[tokio::main]
async fn main() {
    let _telemetry = switchback_common::init(BINARY);
    let config = switchback_common::config_or_exit(BINARY, config::load(config::Args::parse()));
    let listener = switchback_common::bind_or_exit(BINARY, config.listen).await;
    let metrics = switchback_common::bind_or_exit(BINARY, config.metrics_listen).await;
    let shutdown = switchback_common::shutdown_on_signal();
    switchback_common::exit_on_error(
        BINARY,
        switchback_controller::run(config, listener, metrics, shutdown).await,
    );
}
