//! `switchback-lab COMMAND`: the offline side of difficulty routing (see `cmd/`).

use std::process::ExitCode;

use clap::Parser;
use switchback_lab::cmd;

#[derive(Debug, Parser)]
#[command(
    name = "switchback-lab",
    version,
    about = "Offline tools of Switchback's difficulty routing: import and label data, train, evaluate, fit cascades, simulate"
)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchback-lab: {err}");
            ExitCode::FAILURE
        }
    }
}
