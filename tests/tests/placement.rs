//! Load-aware placement within a tier, with two `sim` workers behind one router.

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use serde_json::json;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http};

async fn ask(router: &Router, model: &str, max_tokens: u32) -> String {
    let reply = http::post_json(
        &router.url("/v1/chat/completions"),
        &json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
        .header("x-switchback-worker")
        .expect("worker header")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_workers_get_work_and_the_busy_one_gets_less() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    // Same tier, distinct model ids, so the test can load one of them on purpose.
    let a = Worker::start(
        &etcd,
        WorkerSpec::sim("sim-a", "small", "sim-model-a", 20.0),
    )
    .await;
    let b = Worker::start(
        &etcd,
        WorkerSpec::sim("sim-b", "small", "sim-model-b", 20.0),
    )
    .await;
    controller
        .wait_ready("sim-a", Duration::from_secs(20))
        .await;
    controller
        .wait_ready("sim-b", Duration::from_secs(20))
        .await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim-model-a").await;
    router.wait_model("sim-model-b").await;

    // Concurrent requests to the tier: both workers receive work.
    let workers = join_all((0..8).map(|_| ask(&router, "small", 10))).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in &workers {
        *counts.entry(w.clone()).or_default() += 1;
    }
    assert!(counts.get("sim-a").copied().unwrap_or(0) >= 1, "{counts:?}");
    assert!(counts.get("sim-b").copied().unwrap_or(0) >= 1, "{counts:?}");

    // Give sim-a a long queue (12 long requests on 4 slots), then send tier traffic.
    let busy = tokio::spawn({
        let url = router.url("/v1/chat/completions");
        async move {
            let body = json!({"model": "sim-model-a", "messages": [{"role": "user", "content": "long"}], "max_tokens": 150});
            join_all((0..12).map(|_| http::post_json(&url, &body))).await
        }
    });
    // Wait (bounded) until the controller sees sim-a's queue.
    switchback_tests::wait_for(
        "sim-a to report a queue",
        Duration::from_secs(20),
        || async {
            let view = controller.status().await.ok()?;
            let a = view
                .workers
                .iter()
                .find(|w| w.info.as_ref().is_some_and(|i| i.id == "sim-a"))?;
            (a.load.as_ref()?.waiting >= 4).then_some(())
        },
    )
    .await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        *counts.entry(ask(&router, "small", 2).await).or_default() += 1;
    }
    let (on_a, on_b) = (
        counts.get("sim-a").copied().unwrap_or(0),
        counts.get("sim-b").copied().unwrap_or(0),
    );
    assert!(
        on_b > on_a,
        "the idle worker should get more of the new requests: a={on_a} b={on_b}"
    );
    for reply in busy.await.expect("busy requests") {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-switchback-worker"), Some("sim-a"));
    }
    drop((a, b));
}
