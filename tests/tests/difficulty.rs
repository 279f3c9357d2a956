//! Difficulty routing end to end: a router with the shipped predictor (MiniLM static
//! features) places `model: "auto"` by the request's quality target and shows why; and the
//! MiniLM encoder itself behaves like a sentence encoder.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};
use switchback_lab::{artifact, minilm::MiniLm};
use switchback_routing::difficulty::embed::Embed;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http, models_dir};

fn minilm_dir() -> PathBuf {
    let dir = models_dir().join("all-minilm-l6-v2");
    assert!(
        dir.join("static-table.bin").is_file(),
        "{} lacks static-table.bin: run deploy/local/fetch-models.sh minilm and \
         switchback-lab distill (tests/run.sh does both)",
        dir.display()
    );
    dir
}

fn predictor() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/routing/predictor.json"
    ))
}

/// etcd, a controller and one `sim` worker per tier (`small`, `large`), all ready.
async fn two_tiers() -> (Etcd, Controller, [Worker; 2]) {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let small = Worker::start(&etcd, WorkerSpec::sim("w-small", "small", "sim-small", 0.1)).await;
    let large = Worker::start(&etcd, WorkerSpec::sim("w-large", "large", "sim-large", 0.1)).await;
    for id in ["w-small", "w-large"] {
        controller.wait_ready(id, Duration::from_secs(20)).await;
    }
    (etcd, controller, [small, large])
}

/// A router with `yaml` appended to its config, once it can place on both tiers.
async fn router(etcd: &Etcd, yaml: &str) -> Router {
    let router = Router::start(etcd, yaml).await;
    router.wait_model("sim-small").await;
    router.wait_model("sim-large").await;
    router
}

/// The router config block for difficulty routing with the predictor at `artifact`.
fn difficulty_yaml_for(artifact: &std::path::Path) -> String {
    format!(
        "difficulty: {{predictor: {:?}, minilm_dir: {:?}}}",
        artifact.display().to_string(),
        minilm_dir().display().to_string()
    )
}

fn difficulty_yaml() -> String {
    difficulty_yaml_for(&predictor())
}

const HARD: &str = "The following are multiple choice questions (with answers) about abstract algebra.\n\nFind the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:";

async fn auto(router: &Router, quality: Option<f64>, header: Option<&str>) -> http::Reply {
    let mut body = json!({"model": "auto", "max_tokens": 4,
                          "messages": [{"role": "user", "content": HARD}]});
    if let Some(q) = quality {
        body["switchback"] = json!({"quality": q});
    }
    let mut req = reqwest::Client::new()
        .post(router.url("/v1/chat/completions"))
        .json(&body);
    if let Some(h) = header {
        req = req.header("x-switchback-quality", h);
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    http::Reply {
        status,
        headers,
        body: resp.text().await.expect("body"),
    }
}

/// The decision's difficulty part, checked for consistency with the chosen tier.
fn difficulty(reply: &http::Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let d = body["switchback"]["difficulty"].clone();
    assert_eq!(body["switchback"]["reason"], "difficulty");
    let (small, large) = (
        d["probabilities"]["small"].as_f64().expect("p small"),
        d["probabilities"]["large"].as_f64().expect("p large"),
    );
    assert!(
        (0.0..=1.0).contains(&small) && (0.0..=1.0).contains(&large),
        "{d}"
    );
    let threshold = d["threshold"].as_f64().expect("threshold");
    let expected = if large - small > threshold {
        "large"
    } else {
        "small"
    };
    assert_eq!(d["tier"], expected, "{d}");
    assert_eq!(reply.header("x-switchback-tier"), Some(expected));
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_routes_by_predicted_difficulty_and_the_quality_knob() {
    let (etcd, _controller, _workers) = two_tiers().await;
    let router = router(&etcd, &difficulty_yaml()).await;

    // Target 0: any quality will do, so the small tier answers.
    let zero = difficulty(&auto(&router, Some(0.0), None).await);
    assert_eq!(zero["tier"], "small");
    // Target 1 (by header): the bar for the large tier is lower or equal.
    let one = difficulty(&auto(&router, None, Some("1")).await);
    assert!(
        one["threshold"].as_f64() <= zero["threshold"].as_f64(),
        "{one} vs {zero}"
    );
    assert_eq!(one["quality_target"], 1.0);
    // The same prompt gets the same probabilities whatever the target.
    assert_eq!(one["probabilities"], zero["probabilities"]);
    // The body's target wins over the header's.
    let both = difficulty(&auto(&router, Some(0.0), Some("1")).await);
    assert_eq!(both["quality_target"], 0.0);
    // No target: the predictor's default.
    let default = difficulty(&auto(&router, None, None).await);
    assert!(
        default["quality_target"]
            .as_f64()
            .is_some_and(|q| q > 0.0 && q < 1.0)
    );

    // A bad header is a 400 naming it.
    let bad = auto(&router, None, Some("1.5")).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error"]["param"], "x-switchback-quality");
    // Naming a tier bypasses the predictor.
    let named = http::post_json(
        &router.url("/v1/chat/completions"),
        &json!({"model": "large", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(named.status, 200);
    assert!(named.json()["switchback"]["difficulty"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_predictor_for_tiers_the_router_lacks_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("router.yaml");
    std::fs::write(
        &config,
        format!(
            "tiers: [a, b]\nauth: {{disabled: true}}\n{}\n",
            difficulty_yaml()
        ),
    )
    .expect("write");
    let out = tokio::process::Command::new(switchback_tests::bin("switchback-router"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("difficulty.predictor") && stderr.contains("small"),
        "{stderr}"
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn minilm_and_its_static_table_embed_like_sentence_encoders() {
    let dir = minilm_dir();
    let model = MiniLm::load(&dir).expect("MiniLM loads");
    let a = model
        .embed("What is the capital of France?")
        .expect("embed");
    let b = model
        .embed("Which city is France's capital?")
        .expect("embed");
    let c = model
        .embed("Give me a recipe for sourdough bread.")
        .expect("embed");
    assert_eq!(a.len(), 384);
    assert!((cosine(&a, &a) - 1.0).abs() < 1e-4, "normalised");
    assert!(
        cosine(&a, &b) > cosine(&a, &c) + 0.2,
        "{} vs {}",
        cosine(&a, &b),
        cosine(&a, &c)
    );

    let table = artifact::load_table(&dir.join("static-table.bin"), &dir).expect("table loads");
    let (sa, sb, sc) = (
        table.embed("What is the capital of France?"),
        table.embed("Which city is France's capital?"),
        table.embed("Give me a recipe for sourdough bread."),
    );
    assert!(
        cosine(&sa, &sb) > cosine(&sa, &sc),
        "the distilled table keeps the ordering"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn label_asks_every_tier_and_writes_what_train_reads() {
    let (etcd, _controller, _workers) = two_tiers().await;
    let router = router(&etcd, "").await;

    // A small dataset in MMLU's layout (the public one lives outside the repository).
    let dir = tempfile::tempdir().expect("tempdir");
    let data_root = dir.path().join("data");
    std::fs::create_dir_all(data_root.join("mmlu/test")).expect("mkdir");
    let mut csv = String::from("question,choice0,choice1,choice2,choice3,answer\n");
    for k in 0..15 {
        csv.push_str(&format!(
            "\"What is {k} + {k}?\",{},{},{},{},{}\n",
            2 * k,
            2 * k + 1,
            k,
            0,
            k % 4
        ));
    }
    std::fs::write(data_root.join("mmlu/test/arithmetic_test.csv"), csv).expect("write");
    let out = dir.path().join("labels.jsonl");
    let label = |limit: &'static str| {
        let mut cmd = tokio::process::Command::new(switchback_tests::bin("switchback-lab"));
        cmd.args([
            "label", "mmlu", "--tier", "small", "--tier", "large", "--limit", limit,
        ])
        .arg("--root")
        .arg(&data_root)
        .args(["--router", &router.base])
        .arg("--out")
        .arg(&out);
        cmd
    };
    let first = label("8").output().await.expect("run label");
    assert!(first.status.success(), "{first:?}");
    let after_first = std::fs::read_to_string(&out).expect("labels written");
    assert_eq!(after_first.lines().count(), 8);

    // A second run with a higher limit resumes: it asks only the questions not yet in the
    // file and appends them, leaving the finished ones as they were.
    let second = label("12").output().await.expect("run label");
    assert!(second.status.success(), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("8 questions already labelled, 4 to ask"),
        "{stderr}"
    );
    let after_second = std::fs::read_to_string(&out).expect("labels");
    assert!(after_second.starts_with(&after_first));
    let items = switchback_lab::data::read_jsonl(&out).expect("labelled JSONL");
    assert_eq!(items.len(), 12);
    let ids: std::collections::HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), 12, "no question labelled twice");
    for i in &items {
        assert_eq!(
            i.scores.keys().collect::<Vec<_>>(),
            vec!["large", "small"],
            "{i:?}"
        );
        assert!(i.prompt.contains("Answer with the letter"));
        // MMLU is scored by the letters' probabilities by default: the sim tiers' tokens
        // are lower-case words, never a letter A–D, so every answer is wrong and has no
        // confidence (text scoring would record the words' mean log-probability).
        assert_eq!(
            i.scores.values().copied().collect::<Vec<_>>(),
            [0.0, 0.0],
            "{i:?}"
        );
        assert!(i.confidence.is_empty(), "{i:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_predictor_is_reloaded_and_a_broken_one_is_ignored() {
    let (etcd, _controller, _workers) = two_tiers().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = dir.path().join("predictor.json");
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(predictor()).expect("read")).expect("json");
    std::fs::write(&artifact, json.to_string()).expect("write");
    let router = router(&etcd, &difficulty_yaml_for(&artifact)).await;
    let target =
        || async { difficulty(&auto(&router, None, None).await)["quality_target"].as_f64() };
    assert_eq!(target().await, Some(0.95));

    // A new artifact (another default target) is picked up without a restart.
    json["default_quality"] = json!(0.5);
    std::fs::write(&artifact, json.to_string()).expect("write");
    switchback_tests::wait_for(
        "the router to reload the predictor",
        Duration::from_secs(30),
        || async { (target().await == Some(0.5)).then_some(()) },
    )
    .await;
    // A broken one is refused; the router keeps routing with the last good one.
    std::fs::write(&artifact, "{ not json").expect("write");
    let failed_reloads =
        || router.metric(r#"switchback_router_predictor_reloads_total{outcome="failed"}"#);
    switchback_tests::wait_for(
        "the router to try the broken artifact",
        Duration::from_secs(30),
        || async { (failed_reloads().await? >= 1.0).then_some(()) },
    )
    .await;
    assert_eq!(target().await, Some(0.5));
}

/// Runs `fit-cascade` on the labelled `lines` for tiers small and large at quality 1, with
/// `extra` arguments; returns the policy it printed (which must be valid), its YAML and the
/// report on stderr.
fn fit_cascade(
    lines: &[String],
    extra: &[&str],
) -> (switchback_router::policy::Policy, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("labels.jsonl");
    std::fs::write(&data, lines.join("\n")).expect("write labels");
    let out = std::process::Command::new(switchback_tests::bin("switchback-lab"))
        .args(["fit-cascade", "--data"])
        .arg(&data)
        .args(["--tier", "small", "--tier", "large", "--quality", "1.0"])
        .args(extra)
        .output()
        .expect("run fit-cascade");
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{report}");
    let yaml = String::from_utf8(out.stdout).expect("utf-8");
    let policy = switchback_router::policy::Policy::from_yaml(&yaml).expect("a valid policy");
    (policy, yaml, report)
}

#[test]
fn fit_cascade_prints_a_policy_whose_floor_separates_wrong_from_right_answers() {
    // 200 labelled prompts: the small tier is wrong exactly on its 100 least confident
    // answers (mean log-probability at most -1.0), the large tier always right.
    let lines: Vec<String> = (0..200)
        .map(|k| {
            let confidence = -f64::from(200 - k) / 100.0;
            let small = if k > 100 { 1.0 } else { 0.0 };
            json!({"id": k.to_string(), "prompt": format!("question {k}"),
                   "scores": {"small": small, "large": 1.0},
                   "confidence": {"small": confidence, "large": -0.1}})
            .to_string()
        })
        .collect();
    let (policy, yaml, report) = fit_cascade(&lines, &[]);
    let floor = policy
        .cascade
        .floors_for("small")
        .min_mean_logprob
        .expect("a mean floor");
    // Fitted on train + calibration only, with quality target 1: it must escalate every
    // wrong answer there and keep every right one.
    use switchback_lab::data::{Split, split_of};
    let fitted: Vec<(f64, bool)> = (0..200)
        .filter(|k| split_of(&format!("question {k}")) != Split::Test)
        .map(|k| (-f64::from(200 - k) / 100.0, k > 100))
        .collect();
    let wrong = fitted.iter().filter(|(_, right)| !right).map(|(c, _)| *c);
    let right = fitted.iter().filter(|(_, right)| *right).map(|(c, _)| *c);
    let (most_confident_wrong, least_confident_right) = (
        wrong.fold(f64::NEG_INFINITY, f64::max),
        right.fold(f64::INFINITY, f64::min),
    );
    assert!(
        f64::from(floor) > most_confident_wrong && f64::from(floor) <= least_confident_right,
        "{floor} not in ({most_confident_wrong}, {least_confident_right}]\n{yaml}"
    );
    assert!(report.contains("small -> large"), "{report}");
}

#[test]
fn fit_cascade_on_the_margin_judges_the_margin_alone() {
    // The small tier is right exactly where its first step was sure (margin above 1), and
    // every answer's mean log-probability is low: a policy that also judged the default
    // mean floor would escalate every answer.
    let lines: Vec<String> = (0..200)
        .map(|k| {
            let margin = f64::from(k) / 100.0;
            let small = if margin > 1.0 { 1.0 } else { 0.0 };
            let answer = |m: f64| {
                json!({"text": "x", "tokens": 5, "mean_logprob": -3.0,
                "min_logprob": -6.0, "first_margin": m, "first_entropy": 0.5, "seconds": 1.0})
            };
            json!({"id": k.to_string(), "prompt": format!("question {k}"),
                   "scores": {"small": small, "large": 1.0},
                   "answers": {"small": answer(margin), "large": answer(3.0)}})
            .to_string()
        })
        .collect();
    let (policy, yaml, _) = fit_cascade(&lines, &["--signal", "margin"]);
    let floors = policy.cascade.floors_for("small");
    let margin = floors.min_first_margin.expect("a margin floor");
    // Fitted on train + calibration with quality target 1: above every wrong answer's
    // margin there, at or below every right one's.
    use switchback_lab::data::{Split, split_of};
    let fitted = (0..200).filter(|k| split_of(&format!("question {k}")) != Split::Test);
    let margins = fitted.map(|k| f64::from(k) / 100.0);
    let (wrong, right): (Vec<f64>, Vec<f64>) = margins.partition(|m| *m <= 1.0);
    let highest_wrong = wrong.into_iter().fold(f64::NEG_INFINITY, f64::max);
    let lowest_right = right.into_iter().fold(f64::INFINITY, f64::min);
    assert!(
        f64::from(margin) > highest_wrong && f64::from(margin) <= lowest_right,
        "{margin} not in ({highest_wrong}, {lowest_right}]\n{yaml}"
    );
    assert_eq!(
        (floors.min_mean_logprob, floors.min_token_logprob),
        (None, None),
        "only the fitted measure is judged\n{yaml}"
    );
}

/// Three tiers: `auto` places easy prompts on `small`, middling ones on `medium` and hard
/// ones on `large`, by a predictor with a head per tier; the decision shows every tier's
/// probability and gap to the top tier, and why.
#[tokio::test(flavor = "multi_thread")]
async fn auto_chooses_among_three_tiers_and_shows_every_tiers_prediction() {
    use std::collections::BTreeMap;
    use switchback_lab::{
        data::Item,
        train::{TrainOptions, train},
    };
    use switchback_routing::difficulty::predictor::Encoder;
    let items: Vec<Item> = (0..900)
        .map(|k| {
            let (prompt, scores) = match k % 3 {
                0 => (format!("say hello to friend {k}"), [1.0, 1.0, 1.0]),
                1 => (format!("sort the list of numbers {k}"), [0.0, 1.0, 1.0]),
                _ => (format!("prove the theorem number {k}"), [0.0, 0.0, 1.0]),
            };
            Item {
                id: k.to_string(),
                prompt,
                source: "synthetic".into(),
                scores: ["s", "m", "l"]
                    .iter()
                    .map(|m| (*m).to_owned())
                    .zip(scores)
                    .collect(),
                costs: BTreeMap::new(),
                confidence: BTreeMap::new(),
                answers: BTreeMap::new(),
            }
        })
        .collect();
    let opts = TrainOptions {
        tiers: vec![
            ("small".into(), "s".into()),
            ("medium".into(), "m".into()),
            ("large".into(), "l".into()),
        ],
        epochs: 200,
        l2: 1e-4,
        default_quality: 0.95,
        heads_on_calibration: true,
        knob_on_train: false,
        gap_head: false,
        knob_z: 0.0,
        cascade_floors: None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = dir.path().join("three-tiers.json");
    let trained = train(&items, &opts, Encoder::Lexical).expect("trains");
    switchback_lab::artifact::save_predictor(&trained, &artifact).expect("save");

    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut workers = Vec::new();
    for tier in ["small", "medium", "large"] {
        let id = format!("w-{tier}");
        workers.push(
            Worker::start(
                &etcd,
                WorkerSpec::sim(&id, tier, &format!("sim-{tier}"), 0.1),
            )
            .await,
        );
        controller.wait_ready(&id, Duration::from_secs(20)).await;
    }
    let router = Router::start(
        &etcd,
        &format!(
            "tiers: [small, medium, large]\ndifficulty: {{predictor: {:?}}}",
            artifact.display().to_string()
        ),
    )
    .await;
    for tier in ["small", "medium", "large"] {
        router.wait_model(&format!("sim-{tier}")).await;
    }
    for (prompt, want) in [
        ("say hello to friend 100001", "small"),
        ("sort the list of numbers 100002", "medium"),
        ("prove the theorem number 100003", "large"),
    ] {
        let reply = http::post_json(
            &router.url("/v1/chat/completions"),
            &json!({"model": "auto", "max_tokens": 2,
                    "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-switchback-tier"), Some(want), "{prompt}");
        let d = reply.json()["switchback"]["difficulty"].clone();
        assert_eq!(d["tier"], want, "{d}");
        for tier in ["small", "medium", "large"] {
            assert!(d["probabilities"][tier].is_number(), "{d}");
            assert!(d["gaps"][tier].is_number(), "{d}");
        }
        assert_eq!(d["gaps"]["large"], 0.0, "{d}");
        let reason = d["reason"].as_str().expect("reason");
        assert!(
            reason.contains(want) && reason.contains("threshold"),
            "{reason}"
        );
        // The chosen tier is the cheapest whose gap is within the threshold.
        let threshold = d["threshold"].as_f64().expect("threshold");
        let first = ["small", "medium", "large"]
            .into_iter()
            .find(|t| d["gaps"][*t].as_f64().is_some_and(|g| g <= threshold))
            .unwrap_or("large");
        assert_eq!(first, want, "{d}");
    }
    drop(workers);
}
