//! A real query through the whole cluster: etcd, controller, a `small` worker running
//! SmolLM2-135M through mistral.rs, and the router's OpenAI-compatible API.

use std::time::Duration;

use serde_json::json;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http};

// SmolLM2-135M is tiny: for the bare question its first token is a near-tie ("L" at -2.04
// against "The" at -2.14) and it rambles in French; asking for one sentence tips it to the
// answer.
const QUESTION: &str = "What is the capital of France? Answer in one sentence.";

struct Cluster {
    _etcd: Etcd,
    _controller: Controller,
    worker: Worker,
    router: Router,
}

async fn cluster() -> Cluster {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let worker = Worker::start(&etcd, WorkerSpec::small_real("small-0")).await;
    controller
        .wait_ready("small-0", Duration::from_secs(30))
        .await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("smollm2-135m").await;
    Cluster {
        _etcd: etcd,
        _controller: controller,
        worker,
        router,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn small_tier_answers_paris_whole_and_streamed() {
    let c = cluster().await;
    let url = c.router.url("/v1/chat/completions");

    // Whole response.
    let reply = http::post_json(
        &url,
        &json!({"model": "small", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-switchback-tier"), Some("small"));
    assert_eq!(reply.header("x-switchback-worker"), Some("small-0"));
    let body = reply.json();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(answer.contains("Paris"), "answer without Paris: {answer:?}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "smollm2-135m");
    assert_eq!(body["switchback"]["tier"], "small");
    assert_eq!(body["switchback"]["worker"], "small-0");
    let usage = &body["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().expect("prompt"),
        usage["completion_tokens"].as_u64().expect("completion"),
    );
    assert!(
        prompt > 5,
        "a chat-templated question is more than 5 tokens: {usage}"
    );
    assert!((1..=24).contains(&completion), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));

    // Streamed, with log-probabilities and usage, so token counts can be checked.
    let reply = http::post_json(
        &url,
        &json!({
            "model": "auto",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 24,
            "stream": true,
            "stream_options": {"include_usage": true},
            "logprobs": true,
            "top_logprobs": 2
        }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        reply.header("x-switchback-tier"),
        Some("small"),
        "auto uses the default tier"
    );
    let sse = http::Sse::parse(&reply.body);
    assert_eq!(sse.events.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse.json();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    let content_chunks = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(
        content_chunks >= 3,
        "expected several content chunks, got {content_chunks}"
    );
    assert!(!text.trim().is_empty());
    assert!(
        text.contains("Paris"),
        "streamed answer without Paris: {text:?}"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["finish_reason"].as_str())
        .collect();
    assert_eq!(finish.len(), 1, "exactly one finish_reason");
    let streamed_tokens: usize = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["logprobs"]["content"]
                .as_array()
                .map(Vec::len)
        })
        .sum();
    for c in &chunks {
        if let Some(lps) = c["choices"]
            .get(0)
            .and_then(|ch| ch["logprobs"]["content"].as_array())
        {
            for lp in lps {
                assert!(lp["logprob"].as_f64().expect("logprob") <= 0.0);
                assert_eq!(lp["top_logprobs"].as_array().map(Vec::len), Some(2));
            }
        }
    }
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(
        usage["completion_tokens"].as_u64(),
        Some(streamed_tokens as u64),
        "usage counts every token streamed with its log-probability"
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().expect("prompt") + streamed_tokens as u64)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_endpoint_and_models_listing() {
    let c = cluster().await;
    let reply = http::post_json(
        &c.router.url("/v1/completions"),
        &json!({"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 8}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "text_completion");
    assert!(
        !body["choices"][0]["text"]
            .as_str()
            .expect("text")
            .is_empty()
    );
    assert!(
        body["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion")
            >= 1
    );
    assert!(
        body["usage"]["prompt_tokens"].as_u64().expect("prompt") >= 5,
        "{}",
        body["usage"]
    );
    assert_eq!(reply.header("x-switchback-model"), Some("smollm2-135m"));

    let models: serde_json::Value = reqwest::get(c.router.url("/v1/models"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["auto", "small", "smollm2-135m"]);
}

/// The official `openai` Python client against the router.
#[tokio::test(flavor = "multi_thread")]
async fn openai_python_client_works() {
    let c = cluster().await;
    let python = switchback_tests::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .arg(script)
            .arg(c.router.url("/v1"))
            .output(),
    )
    .await
    .expect("the openai client script did not finish within 300 s")
    .unwrap_or_else(|e| panic!("cannot run {python} (run deploy/local/ensure-deps.sh): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("script prints JSON");
    assert!(
        report["models"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m == "small")
    );
    assert!(
        report["chat"].as_str().expect("chat").contains("Paris"),
        "{report}"
    );
    assert!(
        report["stream_chunks"].as_u64().expect("chunks") >= 3,
        "{report}"
    );
    assert!(
        report["stream"].as_str().expect("stream").contains("Paris"),
        "{report}"
    );
    assert_eq!(report["tier"], "small");
    assert_eq!(report["retrieved"], report["models"]);
    assert_eq!(report["request_id"], report["chat_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn label_scores_multiple_choice_by_the_letters_probabilities() {
    let c = cluster().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_root = dir.path().join("data");
    std::fs::create_dir_all(data_root.join("mmlu/test")).expect("mkdir");
    std::fs::write(
        data_root.join("mmlu/test/geography_test.csv"),
        "question,choice0,choice1,choice2,choice3,answer\n\
         What is the capital of France?,Berlin,Paris,Madrid,Rome,1\n\
         What is the capital of Italy?,Rome,Oslo,Lima,Cairo,0\n\
         What is the capital of Japan?,Seoul,Beijing,Tokyo,Bangkok,2\n",
    )
    .expect("write");
    let out = dir.path().join("labels.jsonl");
    let run = tokio::process::Command::new(switchback_tests::bin("switchback-lab"))
        .args(["label", "mmlu", "--tier", "small", "--limit", "3"])
        .arg("--root")
        .arg(&data_root)
        .args(["--router", &c.router.base])
        .arg("--out")
        .arg(&out)
        .output()
        .await
        .expect("run label");
    assert!(run.status.success(), "{run:?}");
    let items = switchback_lab::data::read_jsonl(&out).expect("labelled JSONL");
    assert_eq!(items.len(), 3, "{items:?}");
    for i in &items {
        // A real model's top 20 alternatives after "Answer with the letter…" hold a letter,
        // so every answer is graded and carries that letter's log-probability.
        let score = i.scores["small"];
        assert!(score == 0.0 || score == 1.0, "{i:?}");
        let confidence = *i
            .confidence
            .get("small")
            .expect("a letter among the top 20");
        assert!((-30.0..=0.0).contains(&confidence), "{i:?}");
    }
}

/// The resident set of process `pid`, in bytes, from `/proc/PID/status`.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// mistral.rs keeps every finished sequence's KV cache for prefix reuse and evicts only
/// caches on an accelerator, so on CPU a worker held one more cache (at least 512 tokens
/// of K and V, 24 MB for SmolLM2-135M) for every distinct prompt it had answered, until
/// the machine ran out of memory after a few hundred. The worker switches that cache off
/// on CPU; this sends distinct prompts one at a time and checks the worker's resident set
/// does not grow by more than a quarter of what the kept caches would hold.
#[tokio::test(flavor = "multi_thread")]
async fn worker_memory_does_not_grow_with_each_distinct_prompt() {
    let c = cluster().await;
    let url = c.router.url("/v1/chat/completions");
    let ask = |i: usize| {
        let url = url.clone();
        async move {
            let prompt = format!(
                "Question {i}: what is {i} plus {}? Answer with a number.",
                i * 7
            );
            let reply = http::post_json(
                &url,
                &json!({"model": "small", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4}),
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    };
    // Warm up: the first requests allocate the worker's buffers for good.
    for i in 0..4 {
        ask(i).await;
    }
    let pid = c.worker.proc.pid();
    let before = resident_bytes(pid);
    const PROMPTS: u64 = 30;
    for i in 4..4 + PROMPTS as usize {
        ask(i).await;
    }
    let after = resident_bytes(pid);
    // SmolLM2-135M: 30 layers x 3 KV heads x 64 dims x f32, for K and V, 512 tokens.
    let kept_cache = 30 * 3 * 64 * 4 * 2 * 512;
    let growth = after.saturating_sub(before);
    assert!(
        growth < PROMPTS * kept_cache / 4,
        "the worker grew by {} MB over {PROMPTS} prompts ({} MB -> {} MB)",
        growth >> 20,
        before >> 20,
        after >> 20
    );
}
