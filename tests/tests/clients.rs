//! The client libraries applications call Switchback with — the official `openai` SDK,
//! langchain-openai, litellm and instructor, at the versions pinned in
//! `python/requirements.txt` — driven through a whole cluster by `python/clients.py`, which
//! also validates every response shape against OpenAI's OpenAPI spec (`python/openapi/`).
//!
//! The wire checks (shapes, streaming, models, request ids, error bodies) run on `sim`
//! workers; the checks about a model's behaviour (stop strings inside a token, a completion's
//! leading space, tool calls and JSON output, `small` refusing tools) run on the real
//! ladder's `small` (SmolLM2-135M, no tool support) and `medium` (Qwen2.5-Coder-0.5B).

use std::time::Duration;

use serde_json::{Map, Value};
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec};

struct Cluster {
    _etcd: Etcd,
    _controller: Controller,
    _workers: Vec<Worker>,
    router: Router,
}

/// etcd, a controller, the two workers (started together: real models load for a while),
/// and a router whose tiers are theirs (so `auto` can reach `medium`).
async fn cluster(small: WorkerSpec, medium: WorkerSpec) -> Cluster {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let models = [small.model.clone(), medium.model.clone()];
    let ids = [small.id.clone(), medium.id.clone()];
    let (small, medium) = tokio::join!(Worker::start(&etcd, small), Worker::start(&etcd, medium));
    for id in &ids {
        controller.wait_ready(id, Duration::from_secs(120)).await;
    }
    let router = Router::start(&etcd, "tiers: [small, medium]").await;
    for model in &models {
        router.wait_model(model).await;
    }
    Cluster {
        _etcd: etcd,
        _controller: controller,
        _workers: vec![small, medium],
        router,
    }
}

/// Runs `python/clients.py --kind KIND` against the router with the test venv's python
/// (`$SWITCHBACK_PYTHON`, else the one `deploy/local/ensure-deps.sh` makes); returns its
/// report, `{check: {"ok": bool, "detail": ...}}`.
async fn run_checks(router: &Router, kind: &str) -> Map<String, Value> {
    let python = switchback_tests::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/clients.py");
    let out = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::process::Command::new(&python)
            .arg(script)
            .arg(router.url("/v1"))
            .args(["--kind", kind])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client checks did not finish within 900 s")
    .unwrap_or_else(|e| panic!("cannot run {python} (run deploy/local/ensure-deps.sh): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "clients.py failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("clients.py printed no JSON report ({e}):\n{stdout}\n{stderr}"));
    report
        .as_object()
        .expect("the report is a JSON object")
        .clone()
}

/// Every check passed; otherwise the failures, each with what it saw and what it sent.
fn assert_all_ok(report: &Map<String, Value>) {
    assert!(!report.is_empty(), "clients.py ran no checks");
    let failed: Vec<String> = report
        .iter()
        .filter(|(_, r)| r["ok"] != Value::Bool(true))
        .map(|(name, r)| {
            format!(
                "{name}: {}",
                serde_json::to_string_pretty(&r["detail"]).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} client checks failed:\n\n{}",
        failed.len(),
        report.len(),
        failed.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_libraries_speak_the_spec_on_the_wire() {
    let c = cluster(
        WorkerSpec::sim("small-0", "small", "sim-small", 1.0),
        WorkerSpec::sim("medium-0", "medium", "sim-medium", 1.0),
    )
    .await;
    assert_all_ok(&run_checks(&c.router, "wire").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_libraries_get_real_models_behaviour() {
    let c = cluster(
        WorkerSpec::small_real("small-0"),
        WorkerSpec::medium_real("medium-0"),
    )
    .await;
    assert_all_ok(&run_checks(&c.router, "model").await);
}
