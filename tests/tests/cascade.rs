//! Cascades with real tiers: SmolLM2-135M (`small`) and Qwen2.5-Coder-0.5B (`medium`), both
//! through mistral.rs on CPU, on two "nodes". The router judges the small tier's answer by
//! its log-probabilities against floors that the test moves through the routing policy in
//! etcd: a floor below the answer's confidence keeps it on the small tier; a floor above
//! it escalates to the medium tier, visibly (header, decision object, metrics).

use std::time::Duration;

use serde_json::{Value, json};
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http, wait_for};

const QUESTION: &str = "What is the capital of France? Answer in one sentence.";

fn ask(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 12,
        "stream": stream,
        "logprobs": true,
        "switchback": {"cascade": true},
    })
}

/// Puts `yaml` as the routing policy in etcd and waits until the router applied it (its
/// count of applied policies went up).
async fn apply_policy(etcd: &Etcd, router: &Router, yaml: &str) {
    const APPLIED: &str = r#"switchback_router_policy_updates_total{outcome="ok"}"#;
    let before = router.metric(APPLIED).await.expect("policy metric");
    etcd.set_policy(yaml).await;
    wait_for(
        "the router to apply the new policy",
        Duration::from_secs(10),
        || async { (router.metric(APPLIED).await? > before).then_some(()) },
    )
    .await;
}

/// Sets the small tier's mean-logprob floor in etcd and waits until the router applied it.
async fn set_floor(etcd: &Etcd, router: &Router, floor: f64) {
    apply_policy(
        etcd,
        router,
        &format!("cascade: {{per_tier: {{small: {{min_mean_logprob: {floor}}}}}}}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn confident_answers_stay_low_and_unconfident_ones_escalate_to_another_node() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut small = WorkerSpec::small_real("small-0");
    small.extra = "node: node-a".into();
    let mut medium = WorkerSpec::medium_real("medium-0");
    medium.extra = "node: node-b".into();
    let _small = Worker::start(&etcd, small).await;
    let _medium = Worker::start(&etcd, medium).await;
    for id in ["small-0", "medium-0"] {
        controller.wait_ready(id, Duration::from_secs(60)).await;
    }
    let router = Router::start(&etcd, "tiers: [small, medium]").await;
    router.wait_model("smollm2-135m").await;
    router.wait_model("qwen2.5-coder-0.5b").await;
    let url = router.url("/v1/chat/completions");

    // The small tier's own confidence in its (greedy, so repeatable) answer.
    let probe = http::post_json(
        &url,
        &json!({"model": "small", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12, "logprobs": true}),
    )
    .await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    let tokens = probe.json()["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs")
        .clone();
    let mean = tokens
        .iter()
        .map(|t| t["logprob"].as_f64().expect("logprob"))
        .sum::<f64>()
        / tokens.len() as f64;
    assert!(mean < 0.0, "{mean}");

    // A floor below it: the answer is confident enough and stays on the small tier.
    set_floor(&etcd, &router, mean - 0.5).await;
    let kept = http::post_json(&url, &ask("small", false)).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert_eq!(kept.header("x-switchback-escalations"), Some("0"));
    assert_eq!(kept.header("x-switchback-tier"), Some("small"));
    let body = kept.json();
    assert_eq!(body["model"], "smollm2-135m");
    assert_eq!(body["switchback"]["escalations"], json!([]));
    // The cascade asked the worker for alternatives; the client asked for none.
    let first = &body["choices"][0]["logprobs"]["content"][0];
    assert_eq!(first["top_logprobs"], json!([]), "{first}");

    // A floor above it: escalated to the medium tier, on the other node.
    set_floor(&etcd, &router, mean / 2.0).await;
    let escalated = http::post_json(&url, &ask("small", false)).await;
    assert_eq!(escalated.status, 200, "{}", escalated.body);
    assert_eq!(escalated.header("x-switchback-escalations"), Some("1"));
    assert_eq!(escalated.header("x-switchback-tier"), Some("medium"));
    let body = escalated.json();
    assert_eq!(body["model"], "qwen2.5-coder-0.5b");
    let d = &body["switchback"];
    assert_eq!(d["reason"], "cascade");
    assert_eq!(d["node"], "node-b");
    let e = &d["escalations"][0];
    assert_eq!(e["from_tier"], "small");
    assert_eq!(e["from_worker"], "small-0");
    assert_eq!(e["to_tier"], "medium");
    assert_eq!(e["reason"], "low-mean-logprob");
    let judged = e["confidence"]["mean_logprob"].as_f64().expect("mean");
    assert!((judged - mean).abs() < 1e-3, "{judged} vs {mean}");
    let wasted = e["wasted_tokens"].as_u64().expect("wasted");
    assert_eq!(wasted, tokens.len() as u64);
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(!answer.is_empty());
    assert_eq!(
        router
            .metric(r#"switchback_router_escalations_total{from="small",to="medium",reason="low-mean-logprob"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        router
            .metric(r#"switchback_router_escalation_wasted_tokens_total{tier="small"}"#)
            .await,
        Some(wasted as f64)
    );

    // Streamed: the client gets the medium tier's answer only (the small one was
    // buffered and dropped), then [DONE].
    let streamed = http::post_json(&url, &ask("small", true)).await;
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    assert_eq!(streamed.header("x-switchback-escalations"), Some("1"));
    let events = http::Sse::parse(&streamed.body).json();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e["model"], "qwen2.5-coder-0.5b", "{e}");
    }
    assert!(streamed.body.trim_end().ends_with("data: [DONE]"));

    // A request that does not ask for a cascade is never judged.
    let plain = http::post_json(
        &url,
        &json!({"model": "small", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12}),
    )
    .await;
    assert_eq!(plain.header("x-switchback-escalations"), Some("0"));
    assert_eq!(plain.header("x-switchback-tier"), Some("small"));
}

/// The quickstart's whole ladder, three real models on three "nodes": each tier answers
/// when named, and with both lower tiers' floors above any answer's confidence a cascade
/// climbs from SmolLM2-135M through Qwen2.5-Coder-0.5B to Qwen2.5-Coder-1.5B.
#[tokio::test(flavor = "multi_thread")]
async fn an_unconfident_answer_climbs_the_three_tier_ladder() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut workers = Vec::new();
    for (node, tier) in ["small", "medium", "large"].into_iter().enumerate() {
        let mut spec = WorkerSpec::real(&format!("{tier}-0"), tier);
        spec.extra = format!("node: node-{node}");
        workers.push(Worker::start(&etcd, spec).await);
        controller
            .wait_ready(&format!("{tier}-0"), Duration::from_secs(60))
            .await;
    }
    let router = Router::start(&etcd, "tiers: [small, medium, large]").await;
    let ladder = [
        ("small", "smollm2-135m"),
        ("medium", "qwen2.5-coder-0.5b"),
        ("large", "qwen2.5-coder-1.5b"),
    ];
    for (_, model) in ladder {
        router.wait_model(model).await;
    }
    let url = router.url("/v1/chat/completions");

    for (tier, model) in ladder {
        let reply = http::post_json(
            &url,
            &json!({"model": tier, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12}),
        )
        .await;
        assert_eq!(reply.status, 200, "{tier}: {}", reply.body);
        assert_eq!(reply.header("x-switchback-tier"), Some(tier));
        let body = reply.json();
        assert_eq!(body["model"], model);
        let answer = body["choices"][0]["message"]["content"]
            .as_str()
            .expect("content");
        assert!(!answer.trim().is_empty(), "{tier} said nothing");
    }

    // Floors of 0: no answer of a lower tier is confident enough (a mean log-probability
    // of exactly 0 would take every token at probability 1).
    apply_policy(
        &etcd,
        &router,
        "cascade: {max_escalations: 2, per_tier: {small: {min_mean_logprob: 0}, medium: {min_mean_logprob: 0}}}",
    )
    .await;
    let climbed = http::post_json(&url, &ask("small", false)).await;
    assert_eq!(climbed.status, 200, "{}", climbed.body);
    assert_eq!(climbed.header("x-switchback-escalations"), Some("2"));
    assert_eq!(climbed.header("x-switchback-tier"), Some("large"));
    let body = climbed.json();
    assert_eq!(body["model"], "qwen2.5-coder-1.5b");
    assert_eq!(body["switchback"]["node"], "node-2");
    let steps: Vec<(String, String)> = body["switchback"]["escalations"]
        .as_array()
        .expect("escalations")
        .iter()
        .map(|e| {
            assert_eq!(e["reason"], "low-mean-logprob", "{e}");
            (
                e["from_tier"].as_str().expect("from").to_owned(),
                e["to_tier"].as_str().expect("to").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("small".to_owned(), "medium".to_owned()),
            ("medium".to_owned(), "large".to_owned())
        ]
    );
}
