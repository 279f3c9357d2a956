//! What the router plane adds to a request: the same requests against a `sim` worker
//! directly over gRPC and through the router over HTTP, in one run, at several
//! concurrencies. Writes a table into docs/BENCHMARKS.md.
//!
//!   cargo run -p switchback-tests --bin router-bench -- [--requests N] [--out docs/BENCHMARKS.md]
//!
//! The sim worker is set to zero prefill and decode time, so what is measured is the
//! serving path itself: HTTP parsing, validation, placement, the gRPC hop and relaying.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use serde_json::json;
use switchback_proto::pb;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec};

const MAX_TOKENS: u32 = 16;

struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i]
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

async fn run<F, Fut>(requests: usize, concurrency: usize, one: F) -> Run
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let latencies = stream::iter(0..requests)
        .map(|_| {
            let f = one();
            async move {
                let t = Instant::now();
                f.await;
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    Run {
        latencies,
        wall: started.elapsed(),
    }
}

fn direct_request() -> pb::GenerateRequest {
    pb::GenerateRequest {
        request_id: "bench".into(),
        prompt: Some(pb::generate_request::Prompt::Chat(pb::ChatPrompt {
            messages: vec![pb::ChatMessage {
                role: "user".into(),
                content: "hello there".into(),
                ..Default::default()
            }],
        })),
        sampling: Some(pb::SamplingParams {
            max_tokens: MAX_TOKENS,
            ..Default::default()
        }),
        top_logprobs: 0,
        ..Default::default()
    }
}

/// CPU time the process `pid` has used so far, all its threads together (the
/// scheduler's own account in `/proc/<pid>/task/*/schedstat`, in nanoseconds).
fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the router's /proc entry");
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut requests = 2000usize;
    let mut levels = vec![1usize, 8, 32];
    let mut out = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/BENCHMARKS.md").to_owned();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--requests" => {
                requests = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--requests N")
            }
            "--out" => out = args.next().expect("--out FILE"),
            "--concurrency" => {
                levels = args
                    .next()
                    .and_then(|v| v.split(',').map(|c| c.parse().ok()).collect())
                    .expect("--concurrency N[,N...]")
            }
            "--help" | "-h" => {
                println!(
                    "router-bench: sends the same chat requests to a zero-time `sim` worker directly \
                     over gRPC and through the router over HTTP, at each concurrency level, and \
                     reports the latency the router adds, its throughput against direct and the \
                     router's CPU time per request.\n\n\
                     Starts its own etcd, controller, worker and router on loopback ports (binaries \
                     from target/debug, or SWITCHBACK_BIN_DIR) and writes the table into \
                     docs/BENCHMARKS.md (section `router-overhead`).\n\n\
                     Options:\n  --requests N           requests per cell (default 2000)\n  \
                     --concurrency N[,N..]  concurrency levels (default 1,8,32)\n  \
                     --out FILE             the markdown file to write (default docs/BENCHMARKS.md)"
                );
                return;
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }

    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut spec = WorkerSpec::sim("bench-0", "small", "sim", 0.0);
    spec.engine = "{kind: sim, prefill_ms_per_token: 0, decode_ms_per_token: 0}".into();
    spec.max_concurrency = 256;
    spec.extra = "max_queue: 4096".into();
    let worker = Worker::start(&etcd, spec).await;
    controller
        .wait_ready("bench-0", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim").await;

    let grpc = worker.client().await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("http client");
    let url = Arc::new(router.url("/v1/chat/completions"));
    let body = Arc::new(
        json!({"model": "small", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": MAX_TOKENS})
            .to_string(),
    );

    let direct = || {
        let mut c = grpc.clone();
        async move {
            let mut s = c
                .generate(direct_request())
                .await
                .expect("generate")
                .into_inner();
            let mut n = 0;
            while let Some(chunk) = s.message().await.expect("chunk") {
                n += chunk.tokens.len();
            }
            assert_eq!(n, MAX_TOKENS as usize);
        }
    };
    let routed = || {
        let (http, url, body) = (http.clone(), Arc::clone(&url), Arc::clone(&body));
        async move {
            let r = http
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(body.as_str().to_owned())
                .send()
                .await
                .expect("POST");
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.expect("json");
            assert_eq!(v["usage"]["completion_tokens"], MAX_TOKENS);
        }
    };

    // Warm up connections and caches on both paths.
    run(200, 8, direct).await;
    run(200, 8, routed).await;

    let mut rows = Vec::new();
    let mut cpu_rows = Vec::new();
    for concurrency in levels {
        // CPU per request of each process on each path: where the added latency goes on a
        // machine where the load generator shares the cores with what it measures.
        let me = std::process::id();
        let per_request = |before: Duration, pid: u32| (cpu_time(pid) - before) / requests as u32;
        let (client_before, worker_before) = (cpu_time(me), cpu_time(worker.proc.pid()));
        let d = run(requests, concurrency, direct).await;
        let direct_client = per_request(client_before, me);
        let direct_worker = per_request(worker_before, worker.proc.pid());
        let (client_before, worker_before) = (cpu_time(me), cpu_time(worker.proc.pid()));
        let cpu_before = cpu_time(router.proc.pid());
        let r = run(requests, concurrency, routed).await;
        let cpu_per_request = per_request(cpu_before, router.proc.pid());
        let routed_client = per_request(client_before, me);
        let routed_worker = per_request(worker_before, worker.proc.pid());
        cpu_rows.push(format!(
            "| {concurrency} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            ms(direct_client),
            ms(direct_worker),
            ms(direct_client + direct_worker),
            ms(routed_client),
            ms(cpu_per_request),
            ms(routed_worker),
            ms(routed_client + cpu_per_request + routed_worker),
        ));
        eprintln!(
            "c={concurrency}: direct p50 {:.3} ms p99 {:.3} ms {:.0} rps | router p50 {:.3} ms p99 {:.3} ms {:.0} rps, {:.3} ms CPU/request",
            ms(d.percentile(0.5)),
            ms(d.percentile(0.99)),
            d.rps(),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            r.rps(),
            ms(cpu_per_request)
        );
        rows.push(format!(
            "| {concurrency} | {:.3} | {:.3} | {:.3} | {:.3} | **{:+.3}** | **{:+.3}** | {:.0} | {:.0} | {:.2} | {:.3} |",
            ms(d.percentile(0.5)),
            ms(d.percentile(0.99)),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            ms(r.percentile(0.5)) - ms(d.percentile(0.5)),
            ms(r.percentile(0.99)) - ms(d.percentile(0.99)),
            d.rps(),
            r.rps(),
            r.rps() / d.rps(),
            ms(cpu_per_request),
        ));
    }

    let table = format!(
        "Measured on {machine}, {requests} requests per cell, {MAX_TOKENS} tokens each, \
         `sim` worker with zero prefill/decode time; latency is to the last token; router CPU \
         is the router process's CPU time (all threads) per request.\n\n\
         | concurrency | direct p50 ms | direct p99 ms | router p50 ms | router p99 ms | added p50 ms | added p99 ms | direct req/s | router req/s | router/direct throughput | router CPU ms/request |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\n\
         CPU time per request of each process (ms, all threads, kernel time included): the \
         load generator (`client`, a gRPC client direct, an HTTP client routed), the router \
         and the worker.\n\n\
         | concurrency | direct: client | direct: worker | direct: total | routed: client | routed: router | routed: worker | routed: total |\n\
         |---|---|---|---|---|---|---|---|\n{cpu_rows}",
        machine = switchback_tests::bench::machine(),
        rows = rows.join("\n"),
        cpu_rows = cpu_rows.join("\n"),
    );
    switchback_tests::bench::write_section(std::path::Path::new(&out), "router-overhead", &table);
    println!("{table}");
}
