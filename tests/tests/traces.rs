//! One query, one trace: a query that the cascade escalates from the small tier to the
//! large one is followed through the router and both workers by W3C trace context in
//! gRPC metadata, exported over OTLP/gRPC to a real (in-test) collector.

use std::time::Duration;

use serde_json::json;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http, otlp, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn an_escalated_query_is_one_trace_across_router_and_both_workers() {
    let collector = otlp::Collector::start().await;
    let env = collector.env();
    let etcd = Etcd::start().await;
    let controller = Controller::start_with_env(&etcd.endpoint, &env).await;
    let mut small = WorkerSpec::sim("small-0", "small", "sim-small", 2.0);
    small.extra = "node: node-a".into();
    small.env = env.clone();
    let mut large = WorkerSpec::sim("large-0", "large", "sim-large", 2.0);
    large.extra = "node: node-b".into();
    large.env = env.clone();
    let _small = Worker::start(&etcd, small).await;
    let _large = Worker::start(&etcd, large).await;
    for id in ["small-0", "large-0"] {
        controller.wait_ready(id, Duration::from_secs(30)).await;
    }
    let router =
        Router::start_with_env(&etcd, "tiers: [small, large]\ndefault_tier: small", &env).await;
    router.wait_model("sim-small").await;
    router.wait_model("sim-large").await;

    // A floor no sim answer meets (their logprobs are in (-1, 0]): the small tier's answer
    // is always escalated.
    let policy = r#"switchback_router_policy_updates_total{outcome="ok"}"#;
    let applied = router.metric(policy).await.expect("policy metric");
    etcd.set_policy("cascade: {per_tier: {small: {min_mean_logprob: -0.0001}}}")
        .await;
    wait_for(
        "the router to apply the policy from etcd",
        Duration::from_secs(10),
        || async { (router.metric(policy).await? > applied).then_some(()) },
    )
    .await;

    let answer = http::post_json(
        &router.url("/v1/chat/completions"),
        &json!({
            "model": "auto",
            "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": 6,
            "switchback": {"cascade": true, "quality": 0.8},
        }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-switchback-escalations"), Some("1"));
    assert_eq!(answer.header("x-switchback-tier"), Some("large"));
    let completion_tokens = answer.json()["usage"]["completion_tokens"]
        .as_u64()
        .expect("usage.completion_tokens");

    // Wait (bounded) until the whole trace has arrived: the router's request span, two
    // attempts, both workers' spans and the large worker's three phases.
    let (request, spans) = wait_for(
        "the query's trace (router request span, 2 attempts, 2 worker spans, 3 phases of the large worker) at the collector",
        Duration::from_secs(20),
        || async {
            let all = collector.spans();
            let request = all
                .iter()
                .find(|s| s.service == "switchback-router" && s.name == "chat auto")?
                .clone();
            let trace: Vec<otlp::Span> = all
                .into_iter()
                .filter(|s| s.trace_id == request.trace_id)
                .collect();
            let count = |name: &str| trace.iter().filter(|s| s.name == name).count();
            (count("switchback.attempt") == 2
                && count("switchback.worker.generate") == 2
                && count("switchback.decode") >= 1)
                .then_some((request, trace))
        },
    )
    .await;
    let tree = spans
        .iter()
        .map(|s| {
            format!(
                "  {} {} parent={} span={}",
                s.service, s.name, s.parent_span_id, s.span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let in_trace =
        |name: &str| -> Vec<&otlp::Span> { spans.iter().filter(|s| s.name == name).collect() };

    // The router's request span is the root, and carries the decision.
    assert!(
        request.parent_span_id.is_empty(),
        "request span has a parent:\n{tree}"
    );
    let attr = |key: &str| {
        request
            .attr(key)
            .unwrap_or_else(|| panic!("request span lacks {key}: {:?}", request.attributes))
    };
    assert_eq!(attr("gen_ai.operation.name"), "chat");
    assert_eq!(attr("gen_ai.request.model"), "auto");
    assert_eq!(attr("gen_ai.response.model"), "sim-large");
    assert_eq!(
        attr("gen_ai.usage.output_tokens"),
        completion_tokens.to_string()
    );
    assert_eq!(attr("switchback.tier"), "large");
    // Auth is off in this router: the key id attribute says so (never a token).
    assert_eq!(attr("switchback.key_id"), "none");
    // The request's id: the client's `x-request-id`, the answer's `id`.
    let request_id = answer.header("x-request-id").expect("x-request-id");
    assert_eq!(attr("switchback.request_id"), request_id);
    assert_eq!(answer.json()["id"], request_id);
    assert_eq!(attr("switchback.worker"), "large-0");
    assert_eq!(attr("switchback.decision"), "cascade");
    assert_eq!(attr("switchback.escalations"), "1");
    assert_eq!(attr("switchback.attempts"), "2");
    assert_eq!(attr("switchback.quality_target"), "0.8");
    assert!(!attr("switchback.joint.moved").is_empty());
    assert!(
        attr("switchback.candidates").contains("small/small-0 q=0"),
        "candidates: {}",
        attr("switchback.candidates")
    );
    let escalation = request
        .events
        .iter()
        .find(|e| e.name == "switchback.escalation")
        .unwrap_or_else(|| {
            panic!(
                "no escalation event on the request span: {:?}",
                request.events
            )
        });
    let ev = |key: &str| escalation.attributes.get(key).map(String::as_str);
    assert_eq!(ev("switchback.escalation.from"), Some("small"));
    assert_eq!(ev("switchback.escalation.from_worker"), Some("small-0"));
    assert_eq!(ev("switchback.escalation.to"), Some("large"));
    assert_eq!(ev("switchback.escalation.reason"), Some("low-mean-logprob"));

    // Two attempts under it: the small tier's (escalated), then the large tier's.
    let mut attempts = in_trace("switchback.attempt");
    attempts.sort_by_key(|s| s.start_ns);
    for a in &attempts {
        assert_eq!(
            a.parent_span_id, request.span_id,
            "attempt not under the request:\n{tree}"
        );
        assert_eq!(a.service, "switchback-router");
    }
    let summary = |s: &otlp::Span| {
        (
            s.attr("switchback.attempt").unwrap_or_default().to_owned(),
            s.attr("switchback.tier").unwrap_or_default().to_owned(),
            s.attr("switchback.worker").unwrap_or_default().to_owned(),
            s.attr("switchback.outcome").unwrap_or_default().to_owned(),
        )
    };
    assert_eq!(
        attempts.iter().map(|s| summary(s)).collect::<Vec<_>>(),
        vec![
            (
                "1".into(),
                "small".into(),
                "small-0".into(),
                "escalated".into()
            ),
            ("2".into(), "large".into(), "large-0".into(), "ok".into()),
        ],
        "\n{tree}"
    );

    // Each worker's span continues the trace under the attempt that called it.
    for (attempt, worker) in attempts.iter().zip(["small-0", "large-0"]) {
        let generate = in_trace("switchback.worker.generate")
            .into_iter()
            .find(|s| s.attr("switchback.worker") == Some(worker))
            .unwrap_or_else(|| panic!("no span from worker {worker} in the trace:\n{tree}"));
        assert_eq!(generate.service, "switchback-worker");
        assert_eq!(generate.attr("request_id"), Some(request_id), "{worker}");
        assert_eq!(
            generate.parent_span_id, attempt.span_id,
            "{worker}'s span is not a child of its attempt:\n{tree}"
        );
        for phase in ["switchback.queue", "switchback.prefill"] {
            assert!(
                spans
                    .iter()
                    .any(|s| s.name == phase && s.parent_span_id == generate.span_id),
                "no {phase} span under {worker}'s span:\n{tree}"
            );
        }
    }
    let large = in_trace("switchback.worker.generate")
        .into_iter()
        .find(|s| s.attr("switchback.worker") == Some("large-0"))
        .expect("large worker span");
    assert_eq!(large.attr("switchback.outcome"), Some("length"));
    assert_eq!(
        large.attr("gen_ai.usage.output_tokens"),
        Some(completion_tokens.to_string().as_str())
    );
    assert!(
        spans
            .iter()
            .any(|s| s.name == "switchback.decode" && s.parent_span_id == large.span_id),
        "no decode span under the large worker's span:\n{tree}"
    );
    eprintln!("trace {}:\n{tree}", request.trace_id);
    for s in &spans {
        let ours: Vec<_> = s
            .attributes
            .iter()
            .filter(|(k, _)| k.starts_with("switchback.") || k.starts_with("gen_ai."))
            .collect();
        eprintln!("{}: {ours:?}", s.name);
        for e in &s.events {
            eprintln!("  event {} {:?}", e.name, e.attributes);
        }
    }
}
