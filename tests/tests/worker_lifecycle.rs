//! Workers dying and draining: etcd records, the controller's view and the router's
//! choices must follow.

use std::time::Duration;

use serde_json::json;
use switchback_proto::Keys;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http, wait_for};

async fn ask(router: &Router) -> http::Reply {
    http::post_json(
        &router.url("/v1/chat/completions"),
        &json!({"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_leaves_and_a_restarted_one_returns() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    // Distinct model ids in one tier let the test see, through /v1/models, which workers
    // the router knows.
    let mut a = Worker::start(&etcd, WorkerSpec::sim("w-a", "small", "sim-a", 1.0)).await;
    let _b = Worker::start(&etcd, WorkerSpec::sim("w-b", "small", "sim-b", 1.0)).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    controller.wait_ready("w-b", Duration::from_secs(20)).await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim-a").await;
    router.wait_model("sim-b").await;
    let key = Keys::default().worker("w-a");
    assert!(etcd.has_key(&key).await);

    a.proc.kill().await;
    // Lease TTL is 3 s; allow a generous margin on a loaded machine.
    wait_for(
        "w-a's etcd record to expire with its lease",
        Duration::from_secs(3 + 10),
        || async { (!etcd.has_key(&key).await).then_some(()) },
    )
    .await;
    controller.wait_gone("w-a", Duration::from_secs(10)).await;
    // The router follows the controller's view: every request now lands on w-b.
    wait_for(
        "the router to drop w-a from its view",
        Duration::from_secs(10),
        || async {
            let v: serde_json::Value = reqwest::get(router.url("/v1/models"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (!v["data"].as_array()?.iter().any(|m| m["id"] == "sim-a")).then_some(())
        },
    )
    .await;
    for _ in 0..6 {
        let reply = ask(&router).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-switchback-worker"), Some("w-b"));
    }

    // The same worker comes back, re-registers and receives work again.
    let _a2 = Worker::start(&etcd, WorkerSpec::sim("w-a", "small", "sim-a", 1.0)).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    wait_for(
        "the restarted w-a to receive a request",
        Duration::from_secs(20),
        || async {
            let reply = ask(&router).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            (reply.header("x-switchback-worker") == Some("w-a")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight_then_deregisters() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    // 60 tokens at 50 ms: the request is in flight for about 3 s.
    let mut worker = Worker::start(&etcd, WorkerSpec::sim("w-drain", "small", "sim", 50.0)).await;
    controller
        .wait_ready("w-drain", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim").await;

    let response = reqwest::Client::new()
        .post(router.url("/v1/chat/completions"))
        .json(&json!({"model": "small", "messages": [{"role": "user", "content": "long"}], "max_tokens": 60, "stream": true}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    use futures::StreamExt;
    // The first bytes mean generation has started on the worker.
    let mut body = String::from_utf8(
        stream
            .next()
            .await
            .expect("first chunk")
            .expect("bytes")
            .to_vec(),
    )
    .expect("utf8");

    worker.proc.signal("TERM").await;
    // The worker refuses new work while draining…
    wait_for(
        "the controller to show w-drain draining",
        Duration::from_secs(10),
        || async {
            (controller.health_of("w-drain").await
                == Some(switchback_proto::pb::WorkerHealth::Draining))
            .then_some(())
        },
    )
    .await;
    let refused = ask(&router).await;
    assert_eq!(
        refused.status, 503,
        "a draining worker takes no new requests: {}",
        refused.body
    );
    // …but finishes the one in flight.
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("stream broke during drain");
        body.push_str(std::str::from_utf8(&chunk).expect("utf8"));
    }
    let sse = http::Sse::parse(&body);
    assert_eq!(sse.events.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse.json();
    let tokens = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(tokens, 60, "all 60 tokens arrive");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "length")
    );

    let status = worker.proc.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "worker exits 0 after draining: {status}");
    assert!(
        !etcd.has_key(&Keys::default().worker("w-drain")).await,
        "lease revoked on exit"
    );
    controller
        .wait_gone("w-drain", Duration::from_secs(5))
        .await;
}
