//! Soak: a local cluster (etcd, 2 controllers, 2 routers, `sim` workers in two tiers) under a
//! sustained open-loop load of mixed requests for a bounded time. Writes a markdown report
//! (verdict, latency per window, every process's RSS, tasks and sockets) to stdout and to
//! `--out`, and exits 1 on any unexpected error, leak or memory growth (see
//! `switchback_tests::soak` for how each is judged).
//!
//!   cargo build --workspace --bins && $CARGO_TARGET_DIR/debug/soak \
//!       [--seconds 600] [--rate 20] [--window 30] [--warmup 200] [--seed 7] \
//!       [--small 2] [--large 2] [--out soak.md]
//!
//! Binaries come from `SWITCHBACK_BIN_DIR` or next to this one; the difficulty predictor
//! needs MiniLM's static table (`switchback-lab distill`, as tests/run.sh does).

use std::time::Duration;

use switchback_tests::{bench, soak};

// A usage error exits 64 before anything has started.
#[allow(clippy::disallowed_methods)]
fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => default,
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("soak: {name} needs a valid value");
                std::process::exit(64)
            }),
    }
}

#[tokio::main(flavor = "multi_thread")]
// Exits 1 on a failed verdict, once the run is over and its report written.
#[allow(clippy::disallowed_methods)]
async fn main() {
    let defaults = soak::Options::default();
    let options = soak::Options {
        seconds: arg("--seconds", defaults.seconds),
        rate: arg("--rate", defaults.rate),
        window_s: arg("--window", defaults.window_s),
        warmup_requests: arg("--warmup", defaults.warmup_requests),
        seed: arg("--seed", defaults.seed),
        workers: (
            arg("--small", defaults.workers.0),
            arg("--large", defaults.workers.1),
        ),
        settle_timeout: Duration::from_secs(arg("--settle-timeout", 60)),
        ..defaults
    };
    let out: Option<String> = std::env::args().skip_while(|a| a != "--out").nth(1);
    let command = format!(
        "soak {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let result = soak::run(options).await;
    let report = format!(
        "Soak on {} (`cargo build --workspace --bins`, debug profile).\n\n{}",
        bench::machine(),
        result.markdown(command.trim())
    );
    println!("{report}");
    if let Some(path) = out {
        std::fs::write(&path, &report).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
    if !result.failures().is_empty() {
        std::process::exit(1);
    }
}
