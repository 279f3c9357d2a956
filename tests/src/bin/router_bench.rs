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
use switchback_lab::plot::{Plot, Series, Style};
use switchback_proto::pb;
use switchback_tests::{
    Controller, Etcd, Proc, Router, Worker, WorkerSpec, bin, free_port, wait_for,
};

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

/// One path's run, and the CPU time per request of each process in `pids` (the load
/// generator, the worker, the proxy if any) over it.
async fn measure<F, Fut>(
    requests: usize,
    concurrency: usize,
    path: F,
    pids: [Option<u32>; 3],
) -> (Run, [Duration; 3])
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = pids.map(|p| p.map(cpu_time));
    let r = run(requests, concurrency, path).await;
    let cpu = std::array::from_fn(|i| match (pids[i], before[i]) {
        (Some(p), Some(b)) => (cpu_time(p) - b) / requests as u32,
        _ => Duration::ZERO,
    });
    (r, cpu)
}

/// The bench's chat request, to the router or to the bare proxy at `url`.
async fn post(http: &reqwest::Client, url: &str, body: &str) -> reqwest::Result<reqwest::Response> {
    http.post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
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
    let mut instructions = false;
    let mut pin = false;
    let mut plot = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--instructions" => instructions = true,
            "--pin" => pin = true,
            "--requests" => {
                requests = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--requests N")
            }
            "--out" => out = args.next().expect("--out FILE"),
            "--plot" => plot = Some(args.next().expect("--plot FILE")),
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
                     docs/BENCHMARKS.md (section `router-overhead`) and a plot of the added \
                     latency per concurrency into docs/img/router-overhead.svg.\n\n\
                     With --instructions it instead counts the user-space instructions per \
                     request of the router and of the bare proxy under callgrind (valgrind; \
                     runs itself at 1,000 and 3,000 requests, concurrency 8, and takes the \
                     difference), counts that stay put on a busy machine, and writes them into \
                     section `router-instructions`.\n\n\
                     Options:\n  --requests N           requests per cell (default 2000)\n  \
                     --concurrency N[,N..]  concurrency levels (default 1,8,32)\n  \
                     --instructions         instructions per request under callgrind instead\n  \
                     --pin                  the proxies on CPU 1, everything else on CPU 0 (a \
                     proxy with a core of its own; needs taskset; section \
                     `router-overhead-pinned`, plot router-overhead-pinned.svg)\n  \
                     --out FILE             the markdown file to write (default docs/BENCHMARKS.md)\n  \
                     --plot FILE            the SVG plot to write (default docs/img/<section>.svg)"
                );
                return;
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }

    if instructions {
        let exe = std::env::current_exe().expect("current_exe");
        let [router, bare] = switchback_tests::instructions::per_request(&exe);
        let table = format!(
            "User-space instructions per request, counted by callgrind (`router-bench \
             --instructions`: each proxy under valgrind, 3,000 requests minus 1,000 at \
             concurrency 8, {MAX_TOKENS} tokens each, `sim` worker; kernel time is not counted). \
             Measured on {machine}.\n\n\
             | proxy | instructions per request | vs bare proxy |\n|---|---|---|\n\
             | bare proxy | {bare:.0} | 1.00 |\n| router | {router:.0} | {:.2} |",
            router / bare,
            machine = switchback_tests::bench::machine(),
        );
        switchback_tests::bench::write_section(
            std::path::Path::new(&out),
            "router-instructions",
            &table,
        );
        println!("{table}");
        return;
    }

    let section = if pin {
        "router-overhead-pinned"
    } else {
        "router-overhead"
    };
    let plot =
        plot.unwrap_or_else(|| format!("{}/../docs/img/{section}.svg", env!("CARGO_MANIFEST_DIR")));
    // Before `--pin` narrows this process to one CPU.
    let machine = switchback_tests::bench::machine();
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
    let mut router = Router::start(&etcd, "").await;
    router.wait_model("sim").await;
    let bare_port = free_port();
    let mut bare = Proc::spawn(
        "bare-proxy",
        &bin("bare-proxy"),
        &[
            "--listen".into(),
            format!("127.0.0.1:{bare_port}"),
            "--worker".into(),
            worker.address.clone(),
        ],
        &[],
    );

    if pin {
        // The load generator (this process), etcd, the controller and the worker share
        // CPU 0; each proxy has CPU 1 to itself, as on a node of its own.
        for (pid, cpu) in [
            (std::process::id(), 0),
            (etcd.proc.pid(), 0),
            (controller.proc.pid(), 0),
            (worker.proc.pid(), 0),
            (router.proc.pid(), 1),
            (bare.pid(), 1),
        ] {
            let status = std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run taskset");
            assert!(status.success(), "taskset -c {cpu} {pid} failed");
        }
    }
    let grpc = worker.client().await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("http client");
    let router_url = Arc::new(router.url("/v1/chat/completions"));
    let bare_url = Arc::new(format!("http://127.0.0.1:{bare_port}/v1/chat/completions"));
    let body = Arc::new(
        json!({"model": "small", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": MAX_TOKENS})
            .to_string(),
    );
    wait_for("bare-proxy to answer", Duration::from_secs(20), || {
        let (http, url, body) = (http.clone(), Arc::clone(&bare_url), Arc::clone(&body));
        async move {
            let r = post(&http, &url, &body).await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;

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
    // The same HTTP request, to the router or to the bare proxy.
    let over_http = |url: &Arc<String>| {
        let (http, url, body) = (http.clone(), Arc::clone(url), Arc::clone(&body));
        move || {
            let (http, url, body) = (http.clone(), Arc::clone(&url), Arc::clone(&body));
            async move {
                let r = post(&http, &url, &body).await.expect("POST");
                assert_eq!(r.status(), 200);
                let v: serde_json::Value = r.json().await.expect("json");
                assert_eq!(v["usage"]["completion_tokens"], MAX_TOKENS);
            }
        }
    };
    let routed = over_http(&router_url);
    let floor = over_http(&bare_url);

    // Warm up connections and caches on every path.
    run(200, 8, direct).await;
    run(200, 8, &floor).await;
    run(200, 8, &routed).await;

    let mut rows = Vec::new();
    // Added latency (ms, against direct) per concurrency: bare p50, bare p99, router p50,
    // router p99.
    let mut added: [Vec<(f64, f64)>; 4] = Default::default();
    let mut cpu_rows = Vec::new();
    let me = std::process::id();
    for concurrency in levels {
        // CPU per request of each process on each path: where the added latency goes on a
        // machine where the load generator shares the cores with what it measures.
        let pids = |proxy: Option<u32>| [Some(me), Some(worker.proc.pid()), proxy];
        let (d, [d_client, d_worker, _]) =
            measure(requests, concurrency, &direct, pids(None)).await;
        let (b, [b_client, b_worker, b_proxy]) =
            measure(requests, concurrency, &floor, pids(Some(bare.pid()))).await;
        let (r, [r_client, r_worker, r_router]) = measure(
            requests,
            concurrency,
            &routed,
            pids(Some(router.proc.pid())),
        )
        .await;
        let p = |run: &Run, q: f64| ms(run.percentile(q));
        cpu_rows.push(format!(
            "| {concurrency} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            ms(d_client),
            ms(d_worker),
            ms(d_client + d_worker),
            ms(b_client),
            ms(b_proxy),
            ms(b_worker),
            ms(b_client + b_proxy + b_worker),
            ms(r_client),
            ms(r_router),
            ms(r_worker),
            ms(r_client + r_router + r_worker),
        ));
        eprintln!(
            "c={concurrency}: direct p50 {:.3} ms p99 {:.3} ms {:.0} rps | bare proxy p50 {:.3} ms p99 {:.3} ms {:.0} rps, {:.3} ms CPU/request | router p50 {:.3} ms p99 {:.3} ms {:.0} rps, {:.3} ms CPU/request",
            p(&d, 0.5),
            p(&d, 0.99),
            d.rps(),
            p(&b, 0.5),
            p(&b, 0.99),
            b.rps(),
            ms(b_proxy),
            p(&r, 0.5),
            p(&r, 0.99),
            r.rps(),
            ms(r_router),
        );
        let c = concurrency as f64;
        added[0].push((c, p(&b, 0.5) - p(&d, 0.5)));
        added[1].push((c, p(&b, 0.99) - p(&d, 0.99)));
        added[2].push((c, p(&r, 0.5) - p(&d, 0.5)));
        added[3].push((c, p(&r, 0.99) - p(&d, 0.99)));
        rows.push(format!(
            "| {concurrency} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | **{:+.3} / {:+.3}** | {:+.3} / {:+.3} | {:+.3} / {:+.3} | {:.0} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} |",
            p(&d, 0.5),
            p(&d, 0.99),
            p(&b, 0.5),
            p(&b, 0.99),
            p(&r, 0.5),
            p(&r, 0.99),
            p(&r, 0.5) - p(&d, 0.5),
            p(&r, 0.99) - p(&d, 0.99),
            p(&b, 0.5) - p(&d, 0.5),
            p(&b, 0.99) - p(&d, 0.99),
            p(&r, 0.5) - p(&b, 0.5),
            p(&r, 0.99) - p(&b, 0.99),
            d.rps(),
            b.rps(),
            r.rps(),
            r.rps() / d.rps(),
            ms(b_proxy),
            ms(r_router),
        ));
    }

    let placement = if pin {
        " Pinned (`--pin`): each proxy on a CPU of its own, the load generator, etcd, the \
         controller and the worker sharing the other."
    } else {
        ""
    };
    let table = format!(
        "Measured on {machine}, {requests} requests per cell, {MAX_TOKENS} tokens each, \
         `sim` worker with zero prefill/decode time; latency is to the last token, p50 / p99 in \
         ms. Three paths to the same worker: `direct` (a gRPC client), `bare proxy` (the least \
         an HTTP-to-gRPC proxy on the router's stack does: `bare-proxy`, parse, one gRPC call, \
         JSON back) and `router` (Switchback's router; the requests name the `small` tier). `added` \
         is against direct; `router − bare` is what Switchback's own work adds over that floor. \
         CPU is each proxy process's CPU time (all threads) per request.{placement}\n\n\
         | concurrency | direct | bare proxy | router | router added | bare proxy added | router − bare | direct req/s | bare req/s | router req/s | router/direct throughput | bare CPU ms/request | router CPU ms/request |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\n\
         CPU time per request of each process (ms, all threads, kernel time included): the \
         load generator (`client`, a gRPC client direct, an HTTP client through a proxy), the \
         proxy and the worker.\n\n\
         | concurrency | direct: client | direct: worker | direct: total | bare: client | bare: proxy | bare: worker | bare: total | routed: client | routed: router | routed: worker | routed: total |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n{cpu_rows}",
        rows = rows.join("\n"),
        cpu_rows = cpu_rows.join("\n"),
    );
    // Stopped, not killed: a profiler around either proxy (SWITCHBACK_BIN_DIR) writes its
    // report when the process exits.
    for p in [&mut bare, &mut router.proc] {
        p.signal("TERM").await;
        p.wait_exit(Duration::from_secs(60)).await;
    }
    let [bare_p50, bare_p99, router_p50, router_p99] = added;
    let svg = Plot {
        title: format!("Latency added to a {MAX_TOKENS}-token answer, against direct gRPC"),
        x_label: "concurrency".into(),
        y_label: "added latency (ms)".into(),
        series: vec![
            Series::new("router p99", router_p99, Style::LinePoints),
            Series::new("router p50", router_p50, Style::LinePoints),
            Series::new("bare proxy p99", bare_p99, Style::Dashed),
            Series::new("bare proxy p50", bare_p50, Style::Dashed),
        ],
        marks: Vec::new(),
    }
    .svg();
    std::fs::write(&plot, svg).unwrap_or_else(|e| panic!("cannot write {plot}: {e}"));
    let plot_name = std::path::Path::new(&plot)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let table = format!(
        "{table}\n\n![Added latency per concurrency, router and bare proxy](img/{plot_name})"
    );
    switchback_tests::bench::write_section(std::path::Path::new(&out), section, &table);
    println!("{table}");
}
