//! How fast the cluster notices faults and what they cost clients: a worker killed, a
//! worker hung (SIGSTOP), the leader controller killed, and etcd down for twice the lease
//! TTL, each under steady traffic through the router. Writes a table into
//! docs/BENCHMARKS.md; with `--mtls`, the same faults with mutual TLS on every gRPC hop (a
//! certificate per component) into a table of its own.
//!
//!   cargo run -p switchback-tests --bin fault-bench -- [--reps N] [--mtls] [--out docs/BENCHMARKS.md]
//!
//! Times are measured by polling the controller's Status every 50 ms, so they carry up to
//! 50 ms of polling error. The lease expiry column is the baseline: what detection would
//! take if the cluster relied on etcd leases alone.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use switchback_proto::pb;
use switchback_tests::{
    Controller, Etcd, Router, Worker, WorkerSpec, tls::ClusterPki, traffic::Traffic, wait_for,
};

const CLIENTS: usize = 4;
const WORKER_TTL_S: u32 = 5;

fn body() -> serde_json::Value {
    json!({"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
}

#[derive(Debug)]
struct Outcome {
    /// Out of the routing set (kill: unreachable; hang: stale; failover: new leader).
    detect: Duration,
    /// Lease expired (kill, hang); router re-connected (failover); view whole (etcd).
    second: Duration,
    failed: usize,
    sent: usize,
}

async fn health(c: &Controller, id: &str) -> Option<pb::WorkerHealth> {
    c.worker(id)
        .await
        .and_then(|w| pb::WorkerHealth::try_from(w.health).ok())
}

/// `pki`: mutual TLS on every gRPC hop (router → controller and workers, workers →
/// controller, standby → leader), each component with its own certificate.
async fn cluster(
    controllers: usize,
    pki: Option<ClusterPki>,
) -> (Etcd, Vec<Controller>, Vec<Worker>, Router) {
    let etcd = Etcd::start().await;
    let mut cs = Vec::new();
    for _ in 0..controllers {
        let c = match &pki {
            Some(pki) => Controller::start_tls(&etcd, pki).await,
            None => Controller::start(&etcd).await,
        };
        if cs.is_empty() {
            c.wait_leader(Duration::from_secs(20)).await;
        }
        cs.push(c);
    }
    let mut ws = Vec::new();
    for id in ["w-a", "w-b"] {
        let mut spec = WorkerSpec::sim(id, "small", "sim", 2.0);
        spec.lease_ttl_s = WORKER_TTL_S;
        spec.tls = pki.clone();
        ws.push(Worker::start(&etcd, spec).await);
        cs[0].wait_ready(id, Duration::from_secs(20)).await;
    }
    let router = Router::start(
        &etcd,
        &pki.map(|p| p.yaml(switchback_common::tls::Role::Router, "router"))
            .unwrap_or_default(),
    )
    .await;
    router.wait_model("sim").await;
    (etcd, cs, ws, router)
}

async fn under_traffic<F, Fut>(router: &Router, fault: F) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = (Duration, Duration)>,
{
    let traffic = Traffic::start(router.url("/v1/chat/completions"), body(), CLIENTS);
    traffic.wait_more(40, Duration::from_secs(30)).await;
    let before = traffic.tally();
    let (detect, second) = fault().await;
    traffic.wait_more(40, Duration::from_secs(60)).await;
    let after = traffic.stop().await;
    Outcome {
        detect,
        second,
        failed: after.failed.len() - before.failed.len(),
        sent: after.sent() - before.sent(),
    }
}

async fn kill_worker(pki: Option<ClusterPki>) -> Outcome {
    let (_etcd, cs, mut ws, router) = cluster(1, pki).await;
    let c = &cs[0];
    under_traffic(&router, || async {
        ws[0].proc.kill().await;
        let t0 = Instant::now();
        wait_for("w-a unreachable", Duration::from_secs(30), || async {
            matches!(
                health(c, "w-a").await,
                Some(pb::WorkerHealth::Unreachable) | None
            )
            .then_some(())
        })
        .await;
        let detect = t0.elapsed();
        c.wait_gone("w-a", Duration::from_secs(30)).await;
        (detect, t0.elapsed())
    })
    .await
}

async fn hang_worker(pki: Option<ClusterPki>) -> Outcome {
    let (_etcd, cs, ws, router) = cluster(1, pki).await;
    let c = &cs[0];
    let o = under_traffic(&router, || async {
        ws[0].proc.signal("STOP").await;
        let t0 = Instant::now();
        wait_for("w-a out of routing", Duration::from_secs(30), || async {
            (health(c, "w-a").await != Some(pb::WorkerHealth::Ready)).then_some(())
        })
        .await;
        let detect = t0.elapsed();
        c.wait_gone("w-a", Duration::from_secs(30)).await;
        (detect, t0.elapsed())
    })
    .await;
    ws[0].proc.signal("CONT").await;
    o
}

async fn kill_leader(pki: Option<ClusterPki>) -> Outcome {
    let (_etcd, mut cs, _ws, router) = cluster(2, pki).await;
    let sessions = || router.metric("switchback_router_controller_watch_sessions");
    let (first, rest) = cs.split_at_mut(1);
    let standby = &rest[0];
    under_traffic(&router, || async {
        first[0].proc.kill().await;
        let t0 = Instant::now();
        standby.wait_leader(Duration::from_secs(30)).await;
        let elected = t0.elapsed();
        wait_for(
            "router on the new leader",
            Duration::from_secs(30),
            || async { (sessions().await? >= 2.0).then_some(()) },
        )
        .await;
        (elected, t0.elapsed())
    })
    .await
}

async fn etcd_outage(pki: Option<ClusterPki>) -> Outcome {
    let (mut etcd, cs, _ws, router) = cluster(1, pki).await;
    let c = &cs[0];
    let etcd = &mut etcd;
    under_traffic(&router, || async move {
        etcd.stop().await;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2 * u64::from(WORKER_TTL_S)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        etcd.restart().await;
        let t1 = Instant::now();
        c.wait_leader(Duration::from_secs(30)).await;
        for id in ["w-a", "w-b"] {
            c.wait_ready(id, Duration::from_secs(30)).await;
        }
        (t0.elapsed(), t1.elapsed())
    })
    .await
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut reps = 3usize;
    let mut mtls = false;
    let mut out = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/BENCHMARKS.md").to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--out" => out = args.next().expect("--out FILE"),
            "--mtls" => mtls = true,
            "--help" | "-h" => {
                println!(
                    "fault-bench: injects faults (worker killed, worker hung, leader controller killed, \
                     etcd down) under steady traffic on a local sim cluster and measures detection \
                     times and failed requests.\n\n\
                     Writes the table into docs/BENCHMARKS.md (section `faults`, or `faults-mtls` with --mtls).\n\n\
                     Options:\n  --reps N     runs per fault (default 3; medians)\n  \
                     --mtls       mutual TLS on every gRPC hop, a certificate per component\n  \
                     --out FILE   the markdown file to write (default docs/BENCHMARKS.md)"
                );
                return;
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }
    let mut rows = Vec::new();
    type Scenario =
        fn(Option<ClusterPki>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>>;
    let scenarios: [(&str, &str, &str, Scenario); 4] = [
        (
            "worker killed (SIGKILL)",
            "out of routing (router report)",
            "lease expired (baseline)",
            |pki| Box::pin(kill_worker(pki)),
        ),
        (
            "worker hung (SIGSTOP)",
            "out of routing (stale load)",
            "lease expired",
            |pki| Box::pin(hang_worker(pki)),
        ),
        (
            "leader controller killed",
            "standby elected",
            "router on new leader",
            |pki| Box::pin(kill_leader(pki)),
        ),
        (
            "etcd down 2×TTL, restarted",
            "stop → view whole again",
            "restart → view whole",
            |pki| Box::pin(etcd_outage(pki)),
        ),
    ];
    for (name, first, second, run) in scenarios {
        let mut outcomes = Vec::new();
        for rep in 0..reps {
            let o = run(mtls.then(ClusterPki::new)).await;
            eprintln!("{name} #{rep}: {o:?}");
            outcomes.push(o);
        }
        let d = median(outcomes.iter().map(|o| o.detect).collect());
        let s = median(outcomes.iter().map(|o| o.second).collect());
        let failed: usize = outcomes.iter().map(|o| o.failed).sum();
        let sent: usize = outcomes.iter().map(|o| o.sent).sum();
        rows.push(format!(
            "| {name} | {first}: {} ms | {second}: {} ms | {failed} / {sent} |",
            ms(d),
            ms(s)
        ));
    }
    let table = format!(
        "Measured on {machine}: {reps} runs per fault, medians; {hops}; \
         {CLIENTS} clients sending 8-token requests through one router to two `sim` workers \
         (lease TTL {WORKER_TTL_S} s, controller `stale_after` 2 s, controller lease 5 s). \
         Failed / sent counts requests from the fault until the cluster healed, summed over the runs.\n\n\
         | fault | detection | second milestone | failed / sent |\n|---|---|---|---|\n{rows}",
        machine = switchback_tests::bench::machine(),
        rows = rows.join("\n"),
        hops = if mtls {
            "mutual TLS on every gRPC hop, a certificate per component naming its role"
        } else {
            "plaintext gRPC"
        },
    );
    let section = if mtls { "faults-mtls" } else { "faults" };
    switchback_tests::bench::write_section(std::path::Path::new(&out), section, &table);
    println!("{table}");
}
