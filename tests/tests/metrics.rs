//! The three components' `/metrics` move with the traffic: the router counts requests,
//! the worker counts the tokens it generated, the controller's per-tier gauges show the
//! worker; and each serves its process gauges (live tokio tasks, open fds and sockets).

use std::time::Duration;

use serde_json::json;
use switchback_tests::{
    Controller, Etcd, Router, Worker, WorkerSpec, free_port, http, metrics::Scrape, wait_for,
};

const REQUESTS: u64 = 3;

async fn scrape(what: &str, url: &str) -> Scrape {
    Scrape::get(url)
        .await
        .unwrap_or_else(|e| panic!("cannot scrape the {what}'s metrics: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn router_worker_and_controller_metrics_follow_the_traffic() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let mut spec = WorkerSpec::sim("small-0", "small", "sim-small", 1.0);
    spec.extra = format!("metrics_listen: {worker_metrics}");
    let _worker = Worker::start(&etcd, spec).await;
    controller
        .wait_ready("small-0", Duration::from_secs(30))
        .await;
    let router = Router::start(&etcd, "tiers: [small]").await;
    router.wait_model("sim-small").await;

    let router_url = router.url("/metrics");
    let worker_url = format!("http://{worker_metrics}/metrics");
    let controller_url = format!("http://{}/metrics", controller.metrics);

    // The controller's per-tier gauges show the worker once it leads.
    controller.wait_leader(Duration::from_secs(30)).await;
    let tier = [("tier", "small")];
    let view = wait_for(
        "the controller's metrics to show one ready small worker",
        Duration::from_secs(10),
        || async {
            let s = Scrape::get(&controller_url).await.ok()?;
            (s.value(
                "switchback_controller_tier_workers",
                &[("tier", "small"), ("health", "ready")],
            ) == Some(1.0))
            .then_some(s)
        },
    )
    .await;
    assert_eq!(view.value("switchback_controller_leader", &[]), Some(1.0));
    assert_eq!(
        view.value("switchback_controller_tier_capacity", &tier),
        Some(4.0),
        "capacity is the worker's max_concurrency"
    );

    let ok = [("tier", "small"), ("outcome", "ok")];
    let router_before = scrape("router", &router_url).await;
    let worker_before = scrape("worker", &worker_url).await;
    let requests = "switchback_router_requests_total";
    let generated = "switchback_worker_generated_tokens_total";

    let mut completion_tokens = 0;
    for i in 0..REQUESTS {
        let answer = http::post_json(
            &router.url("/v1/chat/completions"),
            &json!({
                "model": "small",
                "messages": [{"role": "user", "content": format!("request {i}")}],
                "max_tokens": 4 + i,
            }),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        completion_tokens += answer.json()["usage"]["completion_tokens"]
            .as_u64()
            .expect("usage.completion_tokens");
    }
    assert_eq!(completion_tokens, 4 + 5 + 6);

    let router_after = scrape("router", &router_url).await;
    assert_eq!(
        router_after.counter(requests, &ok) - router_before.counter(requests, &ok),
        REQUESTS as f64,
        "router {requests}{{tier=small,outcome=ok}}"
    );
    let completion = [("tier", "small"), ("kind", "completion")];
    let tokens = "switchback_router_tokens_total";
    assert_eq!(
        router_after.counter(tokens, &completion) - router_before.counter(tokens, &completion),
        completion_tokens as f64,
        "router {tokens}{{tier=small,kind=completion}}"
    );
    let worker_after = scrape("worker", &worker_url).await;
    assert_eq!(
        worker_after.counter(generated, &tier) - worker_before.counter(generated, &tier),
        completion_tokens as f64,
        "worker {generated}"
    );
    // Every process shows what it holds: tasks of its runtime, fds, and among them at least
    // its listeners and this scrape's connection.
    let controller_now = scrape("controller", &controller_url).await;
    for (what, prefix, s) in [
        ("router", "switchback_router", &router_after),
        ("worker", "switchback_worker", &worker_after),
        ("controller", "switchback_controller", &controller_now),
    ] {
        let gauge = |name: &str| {
            s.value(&format!("{prefix}_{name}"), &[])
                .unwrap_or_else(|| panic!("the {what} serves no {prefix}_{name}"))
        };
        let (tasks, fds, sockets) = (
            gauge("tokio_alive_tasks"),
            gauge("open_fds"),
            gauge("open_sockets"),
        );
        assert!(tasks >= 1.0, "{what}: {tasks} tasks");
        assert!(sockets >= 2.0, "{what}: {sockets} sockets");
        assert!(fds >= sockets, "{what}: {fds} fds < {sockets} sockets");
    }
    // Idle again, and the controller's view agrees (it hears load reports every 100 ms).
    assert_eq!(
        worker_after.value("switchback_worker_running_requests", &[]),
        Some(0.0)
    );
    wait_for(
        "the controller's metrics to show the small tier idle",
        Duration::from_secs(10),
        || async {
            let s = Scrape::get(&controller_url).await.ok()?;
            (s.value("switchback_controller_tier_running", &tier) == Some(0.0)
                && s.value("switchback_controller_tier_waiting", &tier) == Some(0.0))
            .then_some(())
        },
    )
    .await;
}
