//! The joint (tier × worker) decision end to end, with `sim` workers: a request whose
//! preferred tier cannot meet its deadline moves to the next eligible tier instead of
//! queueing, the decision shows why, and the routing policy comes from etcd (a bad one is
//! refused and the previous one kept).

use std::time::Duration;

use serde_json::json;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http, wait_for};

fn auto(deadline_ms: u64) -> serde_json::Value {
    json!({
        "model": "auto",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 4,
        "switchback": {"deadline_ms": deadline_ms},
    })
}

async fn applied(router: &Router, outcome: &str, at_least: f64) {
    let series = format!(r#"switchback_router_policy_updates_total{{outcome="{outcome}"}}"#);
    wait_for(
        &format!("the router to count a policy update ({outcome})"),
        Duration::from_secs(10),
        || async { (router.metric(&series).await? >= at_least).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_preferred_tier_sends_deadline_bound_requests_up() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    // One slow small slot (100 ms a token) and a fast large tier.
    let mut small = WorkerSpec::sim("w-small", "small", "sim-small", 100.0);
    small.max_concurrency = 1;
    let _small = Worker::start(&etcd, small).await;
    let _large = Worker::start(&etcd, WorkerSpec::sim("w-large", "large", "sim-large", 1.0)).await;
    for id in ["w-small", "w-large"] {
        controller.wait_ready(id, Duration::from_secs(20)).await;
    }
    let router = Router::start(&etcd, "tiers: [small, large]\ndefault_tier: small").await;
    router.wait_model("sim-small").await;
    router.wait_model("sim-large").await;
    // The service model the decision estimates waits with: the small tier as slow as it
    // is, answers of 40 tokens.
    let base = applied_count(&router).await;
    etcd.set_policy(
        "tiers: {small: {decode_ms_per_token: 100, expected_output_tokens: 40}, large: {decode_ms_per_token: 1, expected_output_tokens: 40}}",
    )
    .await;
    applied(&router, "ok", base + 1.0).await;
    let url = router.url("/v1/chat/completions");

    // Idle: the preferred (default) tier meets a 2 s deadline.
    let idle = http::post_json(&url, &auto(2000)).await;
    assert_eq!(idle.status, 200, "{}", idle.body);
    assert_eq!(idle.header("x-switchback-tier"), Some("small"));
    let joint = &idle.json()["switchback"]["joint"];
    assert_eq!(joint["moved"], "preferred");
    assert_eq!(joint["deadline_ms"], 2000);

    // Occupy the only small slot with a long stream (40 tokens, 4 s), held open.
    let held = reqwest::Client::new()
        .post(&url)
        .json(&json!({"model": "small", "messages": [{"role": "user", "content": "long"}], "max_tokens": 40, "stream": true}))
        .send()
        .await
        .expect("held stream");
    assert_eq!(held.status(), 200);

    // Now the small tier's expected wait (one 4 s answer ahead) misses a 2 s deadline:
    // the request goes up instead of queueing.
    let moved = http::post_json(&url, &auto(2000)).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.header("x-switchback-tier"), Some("large"));
    let joint = &moved.json()["switchback"]["joint"];
    assert_eq!(joint["moved"], "up-for-latency", "{joint}");
    let small_view = joint["considered"]
        .as_array()
        .expect("considered")
        .iter()
        .find(|c| c["tier"] == "small")
        .expect("small was considered")
        .clone();
    assert_eq!(small_view["meets_deadline"], false, "{small_view}");
    assert!(small_view["expected_wait_ms"].as_u64().expect("wait") >= 2000);
    assert_eq!(
        router
            .metric(
                r#"switchback_router_joint_decisions_total{tier="large",moved="up-for-latency"}"#
            )
            .await,
        Some(1.0)
    );
    drop(held);

    // A policy that does not validate is refused; the one in force stays.
    etcd.set_policy("quality_margin: 7").await;
    applied(&router, "invalid", 1.0).await;
    let still = http::post_json(&url, &auto(60_000)).await;
    assert_eq!(still.status, 200, "{}", still.body);
    let considered = still.json()["switchback"]["joint"]["considered"].clone();
    let small_e2e = considered
        .as_array()
        .expect("considered")
        .iter()
        .find(|c| c["tier"] == "small")
        .and_then(|c| c["expected_e2e_ms"].as_u64())
        .expect("small considered");
    // 4 tokens at the etcd policy's 100 ms (the default model would say 80 ms).
    assert!(small_e2e >= 400, "{considered}");
}

async fn applied_count(router: &Router) -> f64 {
    router
        .metric(r#"switchback_router_policy_updates_total{outcome="ok"}"#)
        .await
        .unwrap_or(0.0)
}
