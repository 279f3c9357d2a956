//! The control plane under faults: controller failover, a worker killed mid-stream or hung,
//! an etcd outage, an operator drain, a saturated tier, a client that goes away, and etcd
//! missing at startup. Real etcd, controllers, `sim` workers and routers as processes;
//! every wait is bounded, and every request sent is counted.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use switchback_proto::{Keys, pb};
use switchback_tests::{
    Controller, Etcd, Router, Worker, WorkerSpec, http, sbctl, tls::ClusterPki, traffic::Traffic,
    wait_for,
};

/// A controller, with mutual TLS when `pki` is given.
async fn controller(etcd: &Etcd, pki: &Option<ClusterPki>) -> Controller {
    match pki {
        Some(pki) => Controller::start_tls(etcd, pki).await,
        None => Controller::start(etcd).await,
    }
}

/// A sim worker, with mutual TLS when `pki` is given.
async fn sim_worker(etcd: &Etcd, mut spec: WorkerSpec, pki: &Option<ClusterPki>) -> Worker {
    spec.tls = pki.clone();
    Worker::start(etcd, spec).await
}

/// A router, with mutual TLS towards the controller and workers when `pki` is given.
async fn router(etcd: &Etcd, pki: &Option<ClusterPki>) -> Router {
    let tls = pki
        .as_ref()
        .map(|p| p.yaml(switchback_common::tls::Role::Router, "router"))
        .unwrap_or_default();
    Router::start(etcd, &tls).await
}

fn short() -> Value {
    json!({"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
}

async fn ask(router: &Router) -> http::Reply {
    http::post_json(&router.url("/v1/chat/completions"), &short()).await
}

fn health(w: &pb::WorkerState) -> pb::WorkerHealth {
    pb::WorkerHealth::try_from(w.health).expect("health")
}

/// An open SSE response and what it has delivered so far.
struct Stream {
    worker: String,
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    text: String,
}

impl Stream {
    /// Starts a streamed request and waits for its first chunk (the worker is generating).
    async fn open(router: &Router, max_tokens: u32) -> Self {
        let resp = reqwest::Client::new()
            .post(router.url("/v1/chat/completions"))
            .json(
                &json!({"model": "small", "stream": true, "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": "tell me a story"}]}),
            )
            .send()
            .await
            .expect("stream request");
        assert_eq!(resp.status(), 200);
        let worker = resp.headers()["x-switchback-worker"]
            .to_str()
            .expect("header")
            .to_owned();
        let mut s = Self {
            worker,
            body: resp.bytes_stream().boxed(),
            text: String::new(),
        };
        let first = tokio::time::timeout(Duration::from_secs(30), s.body.next())
            .await
            .expect("first chunk in time")
            .expect("a first chunk")
            .expect("chunk");
        s.text.push_str(&String::from_utf8_lossy(&first));
        s
    }

    /// Reads to the end (bounded) and returns every SSE event.
    async fn finish(mut self, timeout: Duration) -> Vec<String> {
        tokio::time::timeout(timeout, async {
            while let Some(chunk) = self.body.next().await {
                match chunk {
                    Ok(b) => self.text.push_str(&String::from_utf8_lossy(&b)),
                    Err(e) => panic!("the stream broke instead of ending cleanly: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {timeout:?}"));
        http::Sse::parse(&self.text).events
    }
}

/// Opens streams until one lands on `worker` (placement alternates between idle workers);
/// returns it and the others.
async fn stream_on(router: &Router, worker: &str, max_tokens: u32) -> (Stream, Vec<Stream>) {
    let mut others = Vec::new();
    for _ in 0..6 {
        let s = Stream::open(router, max_tokens).await;
        if s.worker == worker {
            return (s, others);
        }
        others.push(s);
    }
    panic!("no stream landed on {worker}");
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_failover_under_traffic_fails_no_request() {
    leader_failover(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_failover_under_mutual_tls_fails_no_request() {
    leader_failover(Some(ClusterPki::new())).await;
}

async fn leader_failover(pki: Option<ClusterPki>) {
    let etcd = Etcd::start().await;
    let mut first = controller(&etcd, &pki).await;
    first.wait_leader(Duration::from_secs(20)).await;
    let standby = controller(&etcd, &pki).await;
    let _a = sim_worker(&etcd, WorkerSpec::sim("w-a", "small", "sim", 2.0), &pki).await;
    let _b = sim_worker(&etcd, WorkerSpec::sim("w-b", "small", "sim", 2.0), &pki).await;
    first.wait_ready("w-a", Duration::from_secs(20)).await;
    first.wait_ready("w-b", Duration::from_secs(20)).await;
    assert_eq!(standby.status().await.expect("status").role, "standby");
    // The standby's view is warm: it mirrors the leader's load reports.
    wait_for(
        "the standby to mirror both workers' load",
        Duration::from_secs(20),
        || async {
            let view = standby.status().await.ok()?;
            (view.workers.len() == 2
                && view
                    .workers
                    .iter()
                    .all(|w| health(w) == pb::WorkerHealth::Ready))
            .then_some(())
        },
    )
    .await;
    let router = router(&etcd, &pki).await;
    router.wait_model("sim").await;
    let sessions = || router.metric("switchback_router_controller_watch_sessions");
    assert_eq!(sessions().await, Some(1.0));

    let traffic = Traffic::start(router.url("/v1/chat/completions"), short(), 4);
    traffic.wait_more(20, Duration::from_secs(30)).await;
    first.proc.kill().await;
    standby.wait_leader(Duration::from_secs(30)).await;
    // Workers stream their load to the new leader, and the router watches it.
    for id in ["w-a", "w-b"] {
        wait_for(
            &format!("{id} reporting to the new leader"),
            Duration::from_secs(20),
            || async {
                let w = standby.worker(id).await?;
                (health(&w) == pb::WorkerHealth::Ready && w.load_age_ms < 1000).then_some(())
            },
        )
        .await;
    }
    wait_for(
        "the router to watch the new leader",
        Duration::from_secs(20),
        || async { (sessions().await? >= 2.0).then_some(()) },
    )
    .await;
    traffic.wait_more(20, Duration::from_secs(30)).await;
    let tally = traffic.stop().await;
    println!(
        "failover: {} requests sent, {} failed",
        tally.sent(),
        tally.failed.len()
    );
    assert!(
        tally.failed.is_empty(),
        "{} of {} requests failed during the failover: {:?}",
        tally.failed.len(),
        tally.sent(),
        tally.failed
    );
    assert!(tally.ok >= 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_mid_stream_ends_that_stream_cleanly_and_new_requests_move() {
    worker_killed_mid_stream(None).await;
}

/// The router's failure report travels through the TLS dialer too (the controller takes
/// the dead worker out long before its lease ends).
#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_mid_stream_under_mutual_tls_is_reported_and_requests_move() {
    worker_killed_mid_stream(Some(ClusterPki::new())).await;
}

async fn worker_killed_mid_stream(pki: Option<ClusterPki>) {
    let etcd = Etcd::start().await;
    let controller = controller(&etcd, &pki).await;
    // A long lease: only the router's report can take w-a out quickly.
    let mut spec = WorkerSpec::sim("w-a", "small", "sim", 20.0);
    spec.lease_ttl_s = 60;
    let mut a = sim_worker(&etcd, spec, &pki).await;
    let _b = sim_worker(&etcd, WorkerSpec::sim("w-b", "small", "sim", 20.0), &pki).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    controller.wait_ready("w-b", Duration::from_secs(20)).await;
    let router = router(&etcd, &pki).await;
    router.wait_model("sim").await;

    let (victim, others) = stream_on(&router, "w-a", 300).await;
    a.proc.kill().await;
    // Requests sent right after the kill, before anyone has noticed: some are placed on
    // w-a, fail to connect, and move to w-b. None fails.
    let replies = futures::future::join_all((0..8).map(|_| ask(&router))).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-switchback-worker"), Some("w-b"));
    }
    // The cut stream ends with an error event, then [DONE]; it does not hang.
    let events = victim.finish(Duration::from_secs(30)).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let error: Value = serde_json::from_str(&events[events.len() - 2]).expect("error event");
    assert!(error["error"]["message"].is_string(), "{error}");
    // Streams on the surviving worker are untouched.
    for s in others {
        let events = s.finish(Duration::from_secs(60)).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(
            !events.iter().any(|e| e.contains("\"error\"")),
            "{events:?}"
        );
    }
    // The router told the controller, which shows why, long before the lease expires.
    let w = wait_for(
        "the controller to mark w-a unreachable",
        Duration::from_secs(10),
        || async {
            controller
                .worker("w-a")
                .await
                .filter(|w| health(w) == pb::WorkerHealth::Unreachable)
        },
    )
    .await;
    assert!(w.health_reason.contains("router@"), "{}", w.health_reason);
    assert!(
        etcd.has_key(&Keys::default().worker("w-a")).await,
        "the lease is still alive"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_worker_goes_stale_leaves_with_its_lease_and_returns_on_sigcont() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut spec = WorkerSpec::sim("w-a", "small", "sim", 1.0);
    spec.lease_ttl_s = 4;
    let a = Worker::start(&etcd, spec).await;
    let _b = Worker::start(&etcd, WorkerSpec::sim("w-b", "small", "sim", 1.0)).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    controller.wait_ready("w-b", Duration::from_secs(20)).await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim").await;

    a.proc.signal("STOP").await;
    let stopped = Instant::now();
    // Its load reports stop first: stale, with the reason.
    let w = wait_for("w-a to be stale", Duration::from_secs(15), || async {
        controller
            .worker("w-a")
            .await
            .filter(|w| health(w) == pb::WorkerHealth::Stale)
    })
    .await;
    assert!(
        w.health_reason.contains("no load report"),
        "{}",
        w.health_reason
    );
    let stale_after = stopped.elapsed();
    // Then its lease expires and it leaves the view (TTL 4 s plus a margin).
    controller
        .wait_gone("w-a", Duration::from_secs(4 + 10))
        .await;
    println!(
        "SIGSTOP: stale after {stale_after:?}, gone after {:?}",
        stopped.elapsed()
    );
    for _ in 0..6 {
        let r = ask(&router).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-switchback-worker"), Some("w-b"));
    }

    a.proc.signal("CONT").await;
    controller.wait_ready("w-a", Duration::from_secs(30)).await;
    wait_for(
        "a request to reach w-a again",
        Duration::from_secs(20),
        || async {
            let r = ask(&router).await;
            assert_eq!(r.status, 200, "{}", r.body);
            (r.header("x-switchback-worker") == Some("w-a")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_outage_longer_than_the_lease_keeps_traffic_flowing_and_heals() {
    let mut etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _a = Worker::start(&etcd, WorkerSpec::sim("w-a", "small", "sim", 1.0)).await;
    let _b = Worker::start(&etcd, WorkerSpec::sim("w-b", "small", "sim", 1.0)).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    controller.wait_ready("w-b", Duration::from_secs(20)).await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim").await;
    let keys = Keys::default();
    let leases: Vec<i64> = futures::future::join_all(["w-a", "w-b"].map(|id| {
        let key = keys.worker(id);
        let etcd = &etcd;
        async move { etcd.lease_of(&key).await.expect("registered") }
    }))
    .await;

    let traffic = Traffic::start(router.url("/v1/chat/completions"), short(), 2);
    traffic.wait_more(10, Duration::from_secs(30)).await;
    etcd.stop().await;
    // Keep the traffic going for twice the workers' lease TTL (3 s) without etcd.
    let outage = Instant::now();
    let during_before = traffic.finished();
    while outage.elapsed() < Duration::from_secs(6) {
        traffic.wait_more(1, Duration::from_secs(30)).await;
    }
    let during = traffic.finished() - during_before;
    etcd.restart().await;

    // Workers register again under new leases; the controller's view is whole again.
    for (id, old) in ["w-a", "w-b"].iter().zip(&leases) {
        let key = keys.worker(id);
        wait_for(
            &format!("{id} to register again"),
            Duration::from_secs(30),
            || async { etcd.lease_of(&key).await.filter(|l| l != old) },
        )
        .await;
    }
    controller.wait_leader(Duration::from_secs(30)).await;
    for id in ["w-a", "w-b"] {
        controller.wait_ready(id, Duration::from_secs(30)).await;
    }
    traffic.wait_more(10, Duration::from_secs(30)).await;
    let tally = traffic.stop().await;
    println!(
        "etcd outage: {during} requests during the outage; {} sent, {} failed",
        tally.sent(),
        tally.failed.len()
    );
    assert!(during > 0);
    assert!(
        tally.failed.is_empty(),
        "{} of {} failed: {:?}",
        tally.failed.len(),
        tally.sent(),
        tally.failed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_under_traffic_stops_new_work_finishes_in_flight_and_deregisters() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _a = Worker::start(&etcd, WorkerSpec::sim("w-a", "small", "sim", 10.0)).await;
    let _b = Worker::start(&etcd, WorkerSpec::sim("w-b", "small", "sim", 10.0)).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    controller.wait_ready("w-b", Duration::from_secs(20)).await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim").await;

    let (in_flight, others) = stream_on(&router, "w-a", 300).await;
    drop(others);
    // `--wait` returns once the worker has finished its work and deregistered.
    let drain = tokio::spawn({
        let etcd_endpoint = etcd.endpoint.clone();
        async move {
            let out = tokio::process::Command::new(switchback_tests::bin("sbctl"))
                .args([
                    "--etcd-endpoints",
                    &etcd_endpoint,
                    "drain",
                    "w-a",
                    "--reason",
                    "kernel upgrade",
                    "--wait",
                    "--timeout-s",
                    "60",
                ])
                .output()
                .await
                .expect("run sbctl");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    });
    let w = wait_for(
        "w-a to show as drained",
        Duration::from_secs(10),
        || async { controller.worker("w-a").await.filter(|w| w.drained) },
    )
    .await;
    assert_eq!(health(&w), pb::WorkerHealth::Draining);
    assert!(
        w.health_reason.contains("kernel upgrade"),
        "{}",
        w.health_reason
    );
    // No new work reaches it.
    wait_for(
        "the router to see the drain",
        Duration::from_secs(10),
        || async {
            (ask(&router).await.header("x-switchback-worker") == Some("w-b")).then_some(())
        },
    )
    .await;
    for _ in 0..8 {
        let r = ask(&router).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-switchback-worker"), Some("w-b"));
    }
    // The request in flight completes normally, then the worker deregisters.
    let events = in_flight.finish(Duration::from_secs(60)).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        !events.iter().any(|e| e.contains("\"error\"")),
        "{events:?}"
    );
    let (code, out) = tokio::time::timeout(Duration::from_secs(90), drain)
        .await
        .expect("sbctl drain --wait returned")
        .expect("join");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("deregistered"), "{out}");
    assert!(!etcd.has_key(&Keys::default().worker("w-a")).await);
    controller.wait_gone("w-a", Duration::from_secs(10)).await;

    let (code, out, err) = sbctl(&etcd, &["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["role"], "leader");
    assert_eq!(status["drained"], json!(["w-a"]));
    assert_eq!(status["tiers"][0]["tier"], "small");
    assert_eq!(status["tiers"][0]["workers"]["ready"], 1);
    let (code, table, _) = sbctl(&etcd, &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("w-b") && table.contains("drained and deregistered"),
        "{table}"
    );

    // Undrain: it registers again and takes work.
    let (code, _, err) = sbctl(&etcd, &["undrain", "w-a"]).await;
    assert_eq!(code, 0, "{err}");
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    wait_for(
        "a request to reach w-a again",
        Duration::from_secs(20),
        || async {
            (ask(&router).await.header("x-switchback-worker") == Some("w-a")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn saturated_tier_answers_429_with_retry_after_and_every_request_is_accounted() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut spec = WorkerSpec::sim("w-a", "small", "sim", 20.0);
    spec.max_concurrency = 2;
    spec.extra = "max_queue: 2".into();
    let _a = Worker::start(&etcd, spec).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    let router = Router::start(&etcd, "admission_wait_ms: 200").await;
    router.wait_model("sim").await;

    const SENT: usize = 16;
    let body = json!({"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
    let url = router.url("/v1/chat/completions");
    let replies = futures::future::join_all((0..SENT).map(|_| http::post_json(&url, &body))).await;
    let accepted = replies.iter().filter(|r| r.status == 200).count();
    let rejected: Vec<_> = replies
        .iter()
        .filter(|r| r.status == 429 || r.status == 503)
        .collect();
    assert_eq!(
        accepted + rejected.len(),
        SENT,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // Two slots and two queue places were free when the burst arrived.
    assert!(accepted >= 4, "accepted {accepted}");
    assert!(!rejected.is_empty());
    for r in rejected {
        assert_eq!(r.header("retry-after"), Some("1"));
        let e = r.json();
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("small")),
            "{e}"
        );
        assert!(e["error"]["type"].is_string());
    }
    println!(
        "saturation: {SENT} sent, {accepted} accepted, {} rejected",
        SENT - accepted
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_cancels_the_generation_on_the_worker() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _a = Worker::start(&etcd, WorkerSpec::sim("w-a", "small", "sim", 50.0)).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    let router = Router::start(&etcd, "").await;
    router.wait_model("sim").await;
    // 2000 tokens at 50 ms each: 100 s if nobody cancels.
    let stream = Stream::open(&router, 2000).await;
    let running = |n: u32| {
        let controller = &controller;
        async move {
            let w = controller.worker("w-a").await?;
            (w.load?.running == n).then_some(())
        }
    };
    wait_for(
        "the worker to report the request running",
        Duration::from_secs(10),
        || running(1),
    )
    .await;
    drop(stream);
    wait_for(
        "the worker to stop generating",
        Duration::from_secs(20),
        || running(0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn components_started_before_etcd_wait_for_it_and_malformed_endpoints_exit_64() {
    let port = switchback_tests::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let controller = Controller::start_with(&endpoint).await;
    assert_eq!(controller.status().await.expect("status").role, "standby");
    let etcd = Etcd::start_at(port).await;
    controller.wait_leader(Duration::from_secs(30)).await;
    let _a = Worker::start(&etcd, WorkerSpec::sim("w-a", "small", "sim", 1.0)).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;

    for bin in ["switchback-controller", "switchback-router"] {
        let out = tokio::process::Command::new(switchback_tests::bin(bin))
            .args(["--etcd-endpoints", "etcd:notaport"])
            .output()
            .await
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{bin}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("etcd.endpoints") && stderr.contains("etcd:notaport"),
            "{bin}: {stderr}"
        );
    }
}

/// A worker whose one slot is busy takes the next request into its queue; when that one
/// waits past the first-token timeout, the worker is busy, not dead: the client gets 429
/// with Retry-After (the tier is saturated), and nobody takes the worker out of the
/// routing set.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_worker_is_saturated_not_unreachable() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut spec = WorkerSpec::sim("w-a", "small", "sim", 50.0);
    spec.max_concurrency = 1;
    spec.lease_ttl_s = 60;
    let _a = Worker::start(&etcd, spec).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    let router = Router::start(&etcd, "first_token_timeout_s: 1").await;
    router.wait_model("sim").await;

    // 2000 tokens at 50 ms each hold the one slot for 100 s.
    let busy = Stream::open(&router, 2000).await;
    let queued = ask(&router).await;
    assert_eq!(queued.status, 429, "{}", queued.body);
    assert_eq!(
        queued.json()["error"]["code"],
        "tier_saturated",
        "{}",
        queued.body
    );
    assert!(
        queued.header("retry-after").is_some(),
        "{:?}",
        queued.headers
    );
    // Still READY everywhere: the controller got no failure report, the router counted
    // no unreachable worker.
    assert_eq!(
        controller.health_of("w-a").await,
        Some(pb::WorkerHealth::Ready)
    );
    let metrics = http::get_with(&router.url("/metrics"), &[]).await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("switchback_router_worker_unreachable_total 0")),
        "{}",
        metrics.body
    );
    drop(busy);
}
