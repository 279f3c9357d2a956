//! The whole difficulty decision (features + predictor + threshold) on one core, for a
//! short and a long prompt, with three encoders: lexical only, MiniLM distilled into a
//! static table (what the router runs), and the full MiniLM encoder (the baseline).
//!
//!   SWITCHBACK_MINILM_DIR=~/.cache/switchback/models/all-minilm-l6-v2 \
//!   taskset -c 0 cargo bench --workspace --bench decision --profile dev
//!
//! Besides criterion's own report, it times every call of a fixed number of decisions to
//! give p50 and p99, and writes that table into docs/BENCHMARKS.md.

use std::{hint::black_box, path::PathBuf, sync::Arc, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use switchback_lab::{artifact, minilm::MiniLm};
use switchback_routing::difficulty::predictor::{Encoder, Predictor};

const SHORT: &str = "What is the capital of France? Answer in one sentence.";

fn long_prompt() -> String {
    // An MMLU-style 5-shot prompt, about 1,400 characters (real MMLU prompts run longer).
    let mut p = String::from(
        "The following are multiple choice questions (with answers) about high school physics.\n\n",
    );
    for k in 0..5 {
        p.push_str(&format!(
            "A {k} kg block slides down a frictionless incline of angle 30 degrees from a height of {} m. \
             What is its speed at the bottom of the incline, and how long does the descent take?\n\
             A. {} m/s\nB. {} m/s\nC. {} m/s\nD. {} m/s\nAnswer: B\n\n",
            k + 2,
            k + 3,
            k + 4,
            k + 5,
            k + 6
        ));
    }
    p.push_str("Which of the following best explains why the sky appears blue during the day?\nA. Reflection from oceans\nB. Rayleigh scattering\nC. Absorption by ozone\nD. Refraction in clouds\nAnswer:");
    p
}

struct Case {
    encoder: &'static str,
    enc: Encoder,
}

fn setup() -> (Predictor, Vec<Case>) {
    let dir = PathBuf::from(
        std::env::var_os(switchback_common::env::MINILM_DIR)
            .expect("set SWITCHBACK_MINILM_DIR to the all-MiniLM-L6-v2 directory"),
    );
    let table = Arc::new(
        artifact::load_table(&dir.join("static-table.bin"), &dir)
            .expect("static table (run distill)"),
    );
    let shipped = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/routing/predictor.json"
    ));
    let predictor =
        artifact::load_predictor(&shipped, Encoder::Embedded(table.clone())).expect("predictor");
    let cases = vec![
        Case {
            encoder: "lexical only",
            enc: Encoder::Lexical,
        },
        Case {
            encoder: "MiniLM static table (router)",
            enc: Encoder::Embedded(table),
        },
        Case {
            encoder: "MiniLM full encoder (baseline)",
            enc: Encoder::Embedded(Arc::new(MiniLm::load(&dir).expect("MiniLM"))),
        },
    ];
    (predictor, cases)
}

/// The decision as the router makes it, with a chosen encoder (the heads' weights do not
/// change the work done).
fn decide(p: &Predictor, enc: &Encoder, prompt: &str) -> bool {
    let x = enc.extract(prompt, p.idf());
    let probs = p.probabilities(&x);
    probs[1] - probs[0] > p.threshold(0.95)
}

fn percentiles(p: &Predictor, enc: &Encoder, prompt: &str, n: usize) -> (f64, f64) {
    for _ in 0..n / 10 {
        black_box(decide(p, enc, prompt));
    }
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            black_box(decide(p, enc, black_box(prompt)));
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[n / 2], t[n * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let (predictor, cases) = setup();
    let long = long_prompt();
    let prompts = [("short", SHORT.to_owned()), ("long", long)];
    let mut rows = Vec::new();
    let mut baseline = std::collections::HashMap::new();
    for case in cases.iter().rev() {
        for (name, prompt) in &prompts {
            let n = if case.encoder.contains("full") {
                200
            } else {
                5000
            };
            let (p50, p99) = percentiles(&predictor, &case.enc, prompt, n);
            if case.encoder.contains("full") {
                baseline.insert(*name, p50);
            }
            let speedup = baseline.get(name).map_or(1.0, |b| b / p50);
            rows.push(format!(
                "| {} | {name} ({} chars) | {p50:.1} | {p99:.1} | {speedup:.0}× |",
                case.encoder,
                prompt.len()
            ));
            c.bench_function(&format!("{} / {name}", case.encoder), |b| {
                b.iter(|| decide(&predictor, &case.enc, black_box(prompt)))
            });
        }
    }
    let table = format!(
        "Measured on this machine, one core (`taskset -c 0`), dev profile (dependencies at \
         opt-level 3). Per-call timings over 5,000 decisions (200 for the full encoder).\n\n\
         | features | prompt | p50 µs | p99 µs | p50 speed-up vs full MiniLM |\n|---|---|---|---|---|\n{}",
        rows.join("\n")
    );
    let doc = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/BENCHMARKS.md"
    ));
    let text = std::fs::read_to_string(&doc).unwrap_or_default();
    let (start, end) = ("<!-- decision:start -->", "<!-- decision:end -->");
    let section = format!("{start}\n{table}\n{end}");
    let updated = match (text.find(start), text.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &text[..a], &text[b + end.len()..]),
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(&doc, updated).expect("write BENCHMARKS.md");
    println!("{table}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
