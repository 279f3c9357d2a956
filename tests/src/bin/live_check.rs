//! The simulator's comparison at small scale on a real local cluster: etcd, a controller,
//! `sim` workers in two tiers with different speeds and prices, and the router with the
//! shipped difficulty predictor, driven over its HTTP API by an open-loop (Poisson) load
//! generator. Prompts come from the labelled test split, so the answering tier gives each
//! request its real outcome. Writes a table into docs/BENCHMARKS.md (section `live-check`).
//!
//!   cargo build --workspace --bins && $CARGO_TARGET_DIR/debug/live-check [--seconds 30] [--load 0.9]
//!
//! (Build with `--workspace`: building the tests package alone resolves the candle
//! features differently and recompiles half of the dependency tree.)
//!
//! The labelled files come from `switchback-lab import` (router-plane/lab/reproduce.sh
//! writes them to $SWITCHBACK_CACHE/routing).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use switchback_lab::data::{self, Split};
use switchback_routing::rng::Rng;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, bench, models_dir, wait_for};

const WEAK: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
const STRONG: &str = "gpt-4-1106-preview";
/// Per-token times (ms) of the tiers: the simulator's defaults.
const SMALL: (f64, f64) = (0.2, 10.0);
const LARGE: (f64, f64) = (0.6, 30.0);
const SLOTS: u32 = 4;
const WORKERS: (u32, u32) = (2, 3);

struct Item {
    prompt: String,
    scores: [f64; 2],
    words: u32,
    max_tokens: u32,
}

/// How a strategy asks for the n-th request.
type MakeRequest = fn(&Item, u64) -> serde_json::Value;

struct Outcome {
    ok: bool,
    e2e: f64,
    tier: Option<usize>,
    escalated: bool,
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cache() -> PathBuf {
    models_dir().parent().map(PathBuf::from).unwrap_or_default()
}

fn service_s(t: (f64, f64), item: &Item) -> f64 {
    (t.0 * f64::from(item.words) + t.1 * f64::from(item.max_tokens)) / 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: f64 = arg("--seconds", 30.0);
    let load: f64 = arg("--load", 0.9);
    let quality: f64 = arg("--quality", 0.95);
    let out = PathBuf::from(arg("--out", "docs/BENCHMARKS.md".to_owned()));
    let routing = cache().join("routing");
    let mut rng = Rng::new(42);
    let mut items = Vec::new();
    for name in ["routellm-mmlu.jsonl", "routellm-gsm8k.jsonl"] {
        let path = routing.join(name);
        let all = data::read_jsonl(&path).unwrap_or_else(|e| {
            panic!("{e}: run router-plane/lab/reproduce.sh (or switchback-lab import) first")
        });
        for i in all {
            if data::split_of(&i.prompt) != Split::Test {
                continue;
            }
            let (Some(&w), Some(&s)) = (i.scores.get(WEAK), i.scores.get(STRONG)) else {
                continue;
            };
            let out = 32.0 * (0.5 * rng.normal() - 0.125).exp();
            items.push(Item {
                words: i.prompt.split_whitespace().count() as u32 + 4,
                prompt: i.prompt,
                scores: [w, s],
                max_tokens: (out.round() as u32).clamp(1, 256),
            });
        }
    }
    let mean = |t| items.iter().map(|i| service_s(t, i)).sum::<f64>() / items.len() as f64;
    let (small_s, large_s) = (mean(SMALL), mean(LARGE));
    let capacity = f64::from(WORKERS.0 * SLOTS) / small_s + f64::from(WORKERS.1 * SLOTS) / large_s;
    let slo_s = 3.0 * large_s;
    let rate = load * capacity;
    eprintln!(
        "{} test items; capacity {capacity:.1} req/s, offered {rate:.1} req/s, SLO {slo_s:.2} s",
        items.len()
    );

    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut workers = Vec::new();
    for (tier, n, (prefill, decode), price) in [
        ("small", WORKERS.0, SMALL, (0.02, 0.04)),
        ("large", WORKERS.1, LARGE, (0.10, 0.20)),
    ] {
        for k in 0..n {
            let id = format!("{tier}-{k}");
            let mut spec = WorkerSpec::sim(&id, tier, &format!("sim-{tier}"), decode);
            spec.engine = format!(
                "{{kind: sim, prefill_ms_per_token: {prefill}, decode_ms_per_token: {decode}}}"
            );
            spec.max_concurrency = SLOTS;
            spec.extra = format!(
                "node: node-{tier}-{k}\nmax_queue: 256\ncost: {{input_per_mtok: {}, output_per_mtok: {}}}",
                price.0, price.1
            );
            workers.push(Worker::start(&etcd, spec).await);
            controller.wait_ready(&id, Duration::from_secs(20)).await;
        }
    }
    let predictor = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/routing/predictor.json"
    ));
    let minilm = models_dir().join("all-minilm-l6-v2");
    let router = Router::start(
        &etcd,
        &format!(
            "tiers: [small, large]\nmax_pending: 100000\nadmission_wait_ms: 600000\nrequest_timeout_s: 600\ndifficulty: {{predictor: {:?}, minilm_dir: {:?}}}",
            predictor.display().to_string(),
            minilm.display().to_string()
        ),
    )
    .await;
    router.wait_model("sim-small").await;
    router.wait_model("sim-large").await;
    let url = router.url("/v1/chat/completions");
    let tiers_model = format!(
        "tiers: {{small: {{prefill_ms_per_token: {}, decode_ms_per_token: {}, expected_output_tokens: 32}}, large: {{prefill_ms_per_token: {}, decode_ms_per_token: {}, expected_output_tokens: 32}}}}",
        SMALL.0, SMALL.1, LARGE.0, LARGE.1
    );
    // Each strategy: the routing policy in etcd, and how a request is asked.
    let strategies: [(&str, String, MakeRequest); 4] = [
        ("round-robin over tiers", String::new(), |i, n| {
            body(i, if n % 2 == 0 { "small" } else { "large" }, json!({}))
        }),
        (
            "difficulty-only",
            format!("quality_margin: 0\n{tiers_model}"),
            |i, _| body(i, "auto", json!({})),
        ),
        (
            "cascade-only",
            format!("{tiers_model}\ncascade: {{floors: {{min_mean_logprob: -0.55}}}}"),
            |i, _| body(i, "small", json!({"cascade": true})),
        ),
        (
            "switchback-joint",
            format!(
                "quality_margin: 0.02\ndeadline_ms: {}\n{tiers_model}",
                (slo_s * 1000.0) as u64
            ),
            |i, _| body(i, "auto", json!({})),
        ),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client");
    let items = Arc::new(items);
    let mut rows = Vec::new();
    for (k, (name, policy, make)) in strategies.into_iter().enumerate() {
        let applied = router
            .metric(r#"switchback_router_policy_updates_total{outcome="ok"}"#)
            .await
            .unwrap_or(0.0);
        etcd.set_policy(&format!("default_quality: {quality}\n{policy}"))
            .await;
        wait_for("the policy", Duration::from_secs(10), || async {
            (router
                .metric(r#"switchback_router_policy_updates_total{outcome="ok"}"#)
                .await?
                > applied)
                .then_some(())
        })
        .await;
        let mut arrivals = Rng::new(7 + k as u64);
        let started = Instant::now();
        let mut at = 0.0f64;
        let mut tasks = Vec::new();
        let mut n = 0u64;
        while at < seconds {
            at += -arrivals.unit().ln() / rate;
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                started + Duration::from_secs_f64(at),
            ))
            .await;
            let item = (arrivals.next_u64() % items.len() as u64) as usize;
            let request = make(&items[item], n);
            n += 1;
            let (http, url) = (http.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let resp = http.post(&url).json(&request).send().await;
                let (ok, tier, escalated) = match resp {
                    Ok(r) if r.status().is_success() => {
                        let h = |n: &str| {
                            r.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let tier = h("x-switchback-tier").map(|t| usize::from(t == "large"));
                        let escalated = h("x-switchback-escalations").is_some_and(|e| e != "0");
                        (r.bytes().await.is_ok(), tier, escalated)
                    }
                    _ => (false, None, false),
                };
                (
                    item,
                    Outcome {
                        ok,
                        e2e: t.elapsed().as_secs_f64(),
                        tier,
                        escalated,
                    },
                )
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.expect("request task"));
        }
        let wall = started.elapsed().as_secs_f64();
        rows.push(summarise(name, &items, &outcomes, slo_s, wall));
        eprintln!("{}", rows.last().expect("row"));
    }
    let table = format!(
        "Measured on {} with `cargo build --workspace --bins && $CARGO_TARGET_DIR/debug/live-check --seconds {seconds} --load {load}`: \
         {} small + {} large `sim` workers ({SLOTS} slots each; small {} / {} ms per prompt word / output token, \
         large {} / {}), offered {rate:.1} req/s (load {load} of {capacity:.1} req/s) for {seconds} s per strategy, \
         SLO {slo_s:.2} s end to end, quality target {quality}; prompts from the RouteLLM MMLU + GSM8K test split, \
         quality = the real outcome of the answering tier's model (Mixtral for small, GPT-4 for large).\n\n\
         | strategy | requests | failed | quality (of always-large) | large share | escalated | e2e p50 / p99 (s) | goodput (req/s in SLO) | correct in SLO (/s) |\n|---|---|---|---|---|---|---|---|---|\n{}",
        bench::machine(),
        WORKERS.0,
        WORKERS.1,
        SMALL.0,
        SMALL.1,
        LARGE.0,
        LARGE.1,
        rows.join("\n")
    );
    bench::write_section(&out, "live-check", &table);
    println!("{table}");
    drop((router, workers, controller, etcd));
}

fn body(item: &Item, model: &str, switchback: serde_json::Value) -> serde_json::Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": item.prompt}],
        "max_tokens": item.max_tokens,
        "switchback": switchback,
    })
}

fn summarise(
    name: &str,
    items: &[Item],
    outcomes: &[(usize, Outcome)],
    slo_s: f64,
    wall: f64,
) -> String {
    let n = outcomes.len() as f64;
    let ok: Vec<&(usize, Outcome)> = outcomes.iter().filter(|(_, o)| o.ok).collect();
    let score = |(i, o): &(usize, Outcome)| o.tier.map_or(0.0, |t| items[*i].scores[t]);
    let quality = ok.iter().map(|x| score(x)).sum::<f64>() / n;
    let top = outcomes
        .iter()
        .map(|(i, _)| items[*i].scores[1])
        .sum::<f64>()
        / n;
    let mut e2e: Vec<f64> = ok.iter().map(|(_, o)| o.e2e).collect();
    e2e.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        e2e.get(((e2e.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let good: Vec<&&(usize, Outcome)> = ok.iter().filter(|(_, o)| o.e2e <= slo_s).collect();
    format!(
        "| {name} | {} | {} | {:.3} ({:.1} %) | {:.1} % | {:.1} % | {:.2} / {:.2} | {:.1} | {:.1} |",
        outcomes.len(),
        outcomes.len() - ok.len(),
        quality,
        100.0 * quality / top,
        100.0 * ok.iter().filter(|(_, o)| o.tier == Some(1)).count() as f64 / n,
        100.0 * ok.iter().filter(|(_, o)| o.escalated).count() as f64 / n,
        pct(0.5),
        pct(0.99),
        good.len() as f64 / wall,
        good.iter().map(|x| score(x)).sum::<f64>() / wall,
    )
}
