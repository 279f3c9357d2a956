//! `switchback-router --config router.yaml`: reads config, starts telemetry, serves.
//! `switchback-router keygen --id NAME`: a new API key (see `cli.rs`). The offline side
//! of difficulty routing is `switchback-lab`.

use std::process::ExitCode;

use clap::Parser;
use switchback_router::{cli, config};

const BINARY: &str = "switchback-router";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "switchback-router",
    version,
    about = "OpenAI-compatible front door of a Switchback cluster",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<cli::Command>,
    #[command(flatten)]
    serve: config::Args,
}

fn main() -> ExitCode {
    let args = Cli::parse();
    if let Some(command) = args.command {
        if let Err(err) = cli::run(command) {
            eprintln!("{BINARY}: {err}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    serve(args.serve);
    ExitCode::SUCCESS
}

#[tokio::main]
async fn serve(args: config::Args) {
    let _telemetry = switchback_common::init(BINARY);
    let config = switchback_common::config_or_exit(BINARY, config::load(args));
    let difficulty =
        switchback_common::config_or_exit(BINARY, switchback_router::load_difficulty(&config));
    let auth =
        switchback_common::config_or_exit(BINARY, switchback_router::auth::Gate::load(&config));
    let listener = switchback_common::bind_or_exit(BINARY, config.listen).await;
    let shutdown = switchback_common::shutdown_on_signal();
    switchback_common::exit_on_error(
        BINARY,
        switchback_router::run(config, difficulty, auth, listener, shutdown).await,
    );
}
