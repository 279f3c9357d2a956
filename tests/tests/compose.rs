//! The container images and `deploy/compose.yaml` under faults: the whole cluster (etcd, two
//! controllers, three `sim` workers on their own containers and addresses, two routers) comes
//! up from the images, serves traffic through both routers, and keeps serving while a worker
//! is killed, a worker is cut off the network, the leader controller is killed and etcd is
//! restarted; after each, the cluster heals. Every request sent is counted.
//!
//! Needs Docker with compose and the images of this build (`deploy/docker/build-images.sh`,
//! which tests/run.sh runs after `cargo build`); without them it fails saying so.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchback_tests::{compose::Compose, http, traffic::Traffic, wait_for};

const WORKERS: [&str; 3] = ["worker-small-1", "worker-small-2", "worker-large-1"];
const CONTROLLERS: [&str; 2] = ["controller-a", "controller-b"];
/// The workers' etcd lease TTL in deploy/compose/worker-*.yaml.
const WORKER_LEASE_TTL: Duration = Duration::from_secs(5);

fn body(tier: &str) -> Value {
    json!({"model": tier, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
}

/// Steady traffic through both routers on both tiers, counted per phase.
struct Load {
    /// (router, tier, traffic)
    streams: Vec<(&'static str, &'static str, Traffic)>,
}

/// Where the counters stood when a phase began.
struct Mark {
    started: Instant,
    /// Attempts both routers moved to another worker (`switchback_router_retries_total`).
    retries: f64,
    failed: Vec<usize>,
    sent: Vec<usize>,
    by_worker: Vec<std::collections::HashMap<String, usize>>,
}

impl Load {
    fn start(cluster: &Compose) -> Self {
        let mut streams = Vec::new();
        for (router, base) in [
            ("router-a", &cluster.router_a),
            ("router-b", &cluster.router_b),
        ] {
            let url = format!("{base}/v1/chat/completions");
            // Two clients on `small` (two workers, the faults hit one), one on `large`.
            streams.push((
                router,
                "small",
                Traffic::start(url.clone(), body("small"), 2),
            ));
            streams.push((router, "large", Traffic::start(url, body("large"), 1)));
        }
        Self { streams }
    }

    async fn mark(&self, cluster: &Compose) -> Mark {
        let tallies: Vec<_> = self.streams.iter().map(|(_, _, t)| t.tally()).collect();
        Mark {
            started: Instant::now(),
            retries: retries(cluster).await,
            failed: tallies.iter().map(|t| t.failed.len()).collect(),
            sent: tallies.iter().map(|t| t.sent()).collect(),
            by_worker: tallies.into_iter().map(|t| t.by_worker).collect(),
        }
    }

    /// Waits until every stream has finished `n` more requests.
    async fn wait_more(&self, n: usize) {
        for (_, _, t) in &self.streams {
            t.wait_more(n, Duration::from_secs(60)).await;
        }
    }

    /// Requests sent and failed since `mark`, with the failures themselves.
    fn since(&self, mark: &Mark) -> (usize, Vec<String>) {
        let mut sent = 0;
        let mut failures = Vec::new();
        for (i, (router, tier, t)) in self.streams.iter().enumerate() {
            let tally = t.tally();
            sent += tally.sent() - mark.sent[i];
            for (status, body) in &tally.failed[mark.failed[i]..] {
                failures.push(format!("{router} {tier}: {status} {body}"));
            }
        }
        (sent, failures)
    }

    /// Waits until both routers' `small` traffic has reached `worker` since `mark`.
    async fn wait_served_by(&self, worker: &str, mark: &Mark) {
        for (i, (router, tier, t)) in self.streams.iter().enumerate() {
            if *tier != "small" {
                continue;
            }
            let before = mark.by_worker[i].get(worker).copied().unwrap_or(0);
            wait_for(
                &format!("{router} to send requests to {worker} again"),
                Duration::from_secs(30),
                || async {
                    let now = t.tally().by_worker.get(worker).copied().unwrap_or(0);
                    (now > before).then_some(())
                },
            )
            .await;
        }
    }

    async fn stop(self) -> usize {
        let mut sent = 0;
        for (_, _, t) in self.streams {
            sent += t.stop().await.sent();
        }
        sent
    }
}

/// The view of whichever controller is the leader, and its service name.
async fn leader(cluster: &Compose) -> Option<(&'static str, Value)> {
    for c in CONTROLLERS {
        if let Ok(view) = cluster.controller_view(c).await
            && view["role"] == "leader"
        {
            return Some((c, view));
        }
    }
    None
}

fn health_in(view: &Value, worker: &str) -> Option<String> {
    view["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == worker)
        .and_then(|w| w["health"].as_str())
        .map(str::to_owned)
}

/// Waits until the leader's view shows `worker` in a state `pred` accepts (None: absent).
async fn wait_health(
    cluster: &Compose,
    worker: &str,
    what: &str,
    pred: impl Fn(Option<&str>) -> bool,
) {
    wait_for(
        &format!("{worker} to be {what} in the leader's view"),
        Duration::from_secs(60),
        || async {
            let (_, view) = leader(cluster).await?;
            pred(health_in(&view, worker).as_deref()).then_some(())
        },
    )
    .await;
}

async fn wait_ready(cluster: &Compose, worker: &str) {
    wait_health(cluster, worker, "ready", |h| h == Some("ready")).await;
}

/// Both routers' retries so far: attempts that failed before their first token and moved
/// to another worker.
async fn retries(cluster: &Compose) -> f64 {
    let mut sum = 0.0;
    for base in [&cluster.router_a, &cluster.router_b] {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("router /metrics")
            .text()
            .await
            .expect("metrics body");
        sum += text
            .lines()
            .filter(|l| l.starts_with("switchback_router_retries_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// One line per fault: how long it took to break and heal, and what it cost the clients.
async fn report(cluster: &Compose, fault: &str, mark: &Mark, sent: usize, failures: &[String]) {
    println!(
        "compose fault {fault:<26} {:>5.1} s  {sent:>5} requests  {:>3} retried  {} failed",
        mark.started.elapsed().as_secs_f64(),
        retries(cluster).await - mark.retries,
        failures.len()
    );
}

fn assert_none_failed(fault: &str, sent: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{fault}: {} of {sent} requests failed; the first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_cluster_keeps_serving_through_worker_kill_partition_leader_kill_and_etcd_restart()
{
    let t0 = Instant::now();
    let cluster = Compose::up().await;
    println!("compose up: {:.1} s", t0.elapsed().as_secs_f64());

    // Both routers answer on both tiers: the controllers elected a leader, every worker
    // registered and reports load, and each router watches the leader.
    for base in [&cluster.router_a, &cluster.router_b] {
        for tier in ["small", "large"] {
            let url = format!("{base}/v1/chat/completions");
            wait_for(
                &format!("{base} to answer a `{tier}` chat completion"),
                Duration::from_secs(120),
                || async {
                    let resp = reqwest::Client::new()
                        .post(&url)
                        .json(&body(tier))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .ok()?;
                    (resp.status() == 200).then_some(())
                },
            )
            .await;
        }
    }
    for w in WORKERS {
        wait_ready(&cluster, w).await;
    }
    let (first_leader, view) = leader(&cluster).await.expect("a leader");
    let standby = CONTROLLERS
        .into_iter()
        .find(|c| *c != first_leader)
        .expect("two controllers");
    cluster
        .wait_role(standby, "standby", Duration::from_secs(30))
        .await;
    // Workers advertise their container's name on the compose network.
    for w in view["workers"].as_array().expect("workers") {
        assert_eq!(
            w["address"],
            format!("{}:50051", w["id"].as_str().expect("id")),
            "{w}"
        );
    }
    // The answer names the tier and worker that served it.
    let reply = http::post_json(
        &format!("{}/v1/chat/completions", cluster.router_b),
        &body("large"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-switchback-tier"), Some("large"));
    assert_eq!(reply.header("x-switchback-worker"), Some("worker-large-1"));
    println!("cluster ready: {:.1} s", t0.elapsed().as_secs_f64());

    let load = Load::start(&cluster);
    load.wait_more(10).await;

    // 1. A worker container is killed (SIGKILL). Requests on it or sent to it before anyone
    //    noticed move to the other `small` worker: whole requests are retried until their
    //    last token, so none fails.
    let mark = load.mark(&cluster).await;
    cluster.kill("worker-small-1").await;
    wait_health(&cluster, "worker-small-1", "out of the routing set", |h| {
        h != Some("ready")
    })
    .await;
    load.wait_more(10).await;
    cluster.start("worker-small-1").await;
    wait_ready(&cluster, "worker-small-1").await;
    load.wait_served_by("worker-small-1", &mark).await;
    let (sent, failures) = load.since(&mark);
    report(&cluster, "docker kill worker", &mark, sent, &failures).await;
    assert_none_failed("docker kill worker-small-1", sent, &failures);

    // 2. A worker is cut off the network until its lease expires, then reconnected. Its
    //    requests hang until the routers' HTTP/2 keep-alive gives up (5 + 3 s), then move.
    let mark = load.mark(&cluster).await;
    let network = cluster.network_of("worker-small-1").await;
    cluster.disconnect("worker-small-1", &network).await;
    wait_health(&cluster, "worker-small-1", "gone (lease expired)", |h| {
        h.is_none()
    })
    .await;
    load.wait_more(10).await;
    cluster.connect("worker-small-1", &network).await;
    wait_ready(&cluster, "worker-small-1").await;
    load.wait_more(5).await;
    load.wait_served_by("worker-small-1", &mark).await;
    let (sent, failures) = load.since(&mark);
    report(
        &cluster,
        "network disconnect worker",
        &mark,
        sent,
        &failures,
    )
    .await;
    assert_none_failed("network disconnect of worker-small-1", sent, &failures);

    // 3. The leader controller is killed. The standby, warm from mirroring, wins the
    //    election once the dead leader's lease (5 s) expires; workers and routers find it
    //    through etcd. Routers route on their last view meanwhile.
    let mark = load.mark(&cluster).await;
    let (old, _) = leader(&cluster).await.expect("a leader");
    let new = CONTROLLERS.into_iter().find(|c| *c != old).expect("other");
    let sessions = |base: &String| {
        let url = format!("{base}/metrics");
        async move {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("switchback_router_controller_watch_sessions "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        }
    };
    let sessions_before = [
        sessions(&cluster.router_a).await.expect("router-a metrics"),
        sessions(&cluster.router_b).await.expect("router-b metrics"),
    ];
    cluster.kill(old).await;
    cluster
        .wait_role(new, "leader", Duration::from_secs(30))
        .await;
    for w in WORKERS {
        wait_for(
            &format!("{w} to report its load to the new leader {new}"),
            Duration::from_secs(30),
            || async {
                let view = cluster.controller_view(new).await.ok()?;
                let w = view["workers"].as_array()?.iter().find(|x| x["id"] == w)?;
                (w["health"] == "ready" && w["load_age_ms"].as_u64()? < 1000).then_some(())
            },
        )
        .await;
    }
    for (base, before) in [&cluster.router_a, &cluster.router_b]
        .into_iter()
        .zip(sessions_before)
    {
        wait_for(
            &format!("{base} to watch the new leader"),
            Duration::from_secs(30),
            || async { (sessions(base).await? > before).then_some(()) },
        )
        .await;
    }
    load.wait_more(10).await;
    // The old leader comes back as a standby.
    cluster.start(old).await;
    cluster
        .wait_role(old, "standby", Duration::from_secs(30))
        .await;
    let (sent, failures) = load.since(&mark);
    report(&cluster, "kill leader controller", &mark, sent, &failures).await;
    assert_none_failed(&format!("killing the leader {old}"), sent, &failures);

    // 4. etcd is killed for twice the workers' lease TTL and started again (same data).
    //    Routers keep routing on their last view and workers keep serving; afterwards every
    //    worker registers again under a new lease and a leader is elected.
    let mark = load.mark(&cluster).await;
    let leases = cluster.worker_leases().await.expect("etcdctl get");
    let mut registered = WORKERS.to_vec();
    registered.sort_unstable();
    assert_eq!(
        leases.keys().map(String::as_str).collect::<Vec<_>>(),
        registered
    );
    cluster.kill("etcd").await;
    let outage = Instant::now();
    let before = load.mark(&cluster).await;
    // Not synchronisation: the outage must outlast the leases, and traffic must flow
    // through all of it.
    while outage.elapsed() < 2 * WORKER_LEASE_TTL {
        load.wait_more(1).await;
    }
    let (during, _) = load.since(&before);
    cluster.start("etcd").await;
    for w in WORKERS {
        let old_lease = leases[w];
        wait_for(
            &format!("{w} to register again under a new lease"),
            Duration::from_secs(60),
            || async {
                let now = cluster.worker_leases().await.ok()?;
                now.get(w).is_some_and(|l| *l != old_lease).then_some(())
            },
        )
        .await;
    }
    wait_for(
        "a controller to be elected after the etcd restart",
        Duration::from_secs(60),
        || leader(&cluster),
    )
    .await;
    for w in WORKERS {
        wait_ready(&cluster, w).await;
    }
    load.wait_more(10).await;
    let (sent, failures) = load.since(&mark);
    report(&cluster, "etcd restart", &mark, sent, &failures).await;
    println!("  {during} requests finished while etcd was down");
    assert!(during > 0, "no request finished while etcd was down");
    assert_none_failed("the etcd restart", sent, &failures);

    let total = load.stop().await;
    println!(
        "compose test: {total} requests in all, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
