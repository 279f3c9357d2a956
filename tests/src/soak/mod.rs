//! The soak: a local cluster of real processes (etcd, two controllers, two routers, `sim`
//! workers in two tiers) under a sustained open-loop load of mixed requests for a bounded
//! time, watching every process's memory, tasks and sockets. Shared by the `soak` binary
//! (long runs, docs/BENCHMARKS.md) and the short soak in the test suite.
//!
//! Phases: start and wait until everything is ready; a warm-up pass of the same mix through
//! every router, so that every lasting connection (router → worker channels, controller
//! streams) exists; quiescence, then the **baseline** (each process's tasks, fds and
//! sockets, read until two readings agree); the load, with a reading of every process at
//! each window's end; the load's client dropped, then **settling**: polling until every
//! process holds no more tasks, fds and sockets than at the baseline, or a timeout, which is
//! a leak.

pub mod mix;
pub mod probe;
pub mod report;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use switchback_routing::rng::Rng;
use tokio::task::JoinSet;

use crate::{Controller, Etcd, Router, Worker, WorkerSpec, free_port, models_dir};

use self::{
    mix::Outcome,
    probe::{Probe, Sample},
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Length of the load (after the warm-up).
    pub seconds: f64,
    /// Requests per second, open loop (Poisson arrivals): a slow cluster does not slow it.
    pub rate: f64,
    /// Length of a reporting window.
    pub window_s: f64,
    /// Requests of the warm-up pass, before the baseline.
    pub warmup_requests: usize,
    pub seed: u64,
    /// `sim` workers per tier (`small`, `large`).
    pub workers: (u32, u32),
    /// How long the processes may take to return to their baseline after the load.
    pub settle_timeout: Duration,
    /// Memory is flat when RSS grows by at most this share of the mid-load RSS…
    pub rss_tolerance_pct: f64,
    /// …or this many MiB, whichever is larger, over the second half of the load.
    pub rss_tolerance_mib: f64,
    /// Per-request client timeout: a request not answered by then is an unexpected error.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: 600.0,
            rate: 20.0,
            window_s: 30.0,
            warmup_requests: 200,
            seed: 7,
            workers: (2, 2),
            settle_timeout: Duration::from_secs(60),
            rss_tolerance_pct: 10.0,
            rss_tolerance_mib: 4.0,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The cluster under load; its processes die with it.
#[derive(Debug)]
pub struct Cluster {
    pub etcd: Etcd,
    pub controllers: Vec<Controller>,
    pub workers: Vec<Worker>,
    pub routers: Vec<Router>,
    /// Holds the routers' API keys file.
    _keys: tempfile::TempDir,
}

/// Per-token times (ms) of the `sim` tiers: small is fast, large is slow.
const SMALL_DECODE_MS: f64 = 4.0;
const LARGE_DECODE_MS: f64 = 8.0;
const SLOTS: u32 = 4;

impl Cluster {
    pub async fn start(workers: (u32, u32)) -> Self {
        let etcd = Etcd::start().await;
        let mut controllers = vec![Controller::start(&etcd).await];
        controllers[0].wait_leader(Duration::from_secs(30)).await;
        controllers.push(Controller::start(&etcd).await);
        let mut started = Vec::new();
        for (tier, n, decode) in [
            ("small", workers.0, SMALL_DECODE_MS),
            ("large", workers.1, LARGE_DECODE_MS),
        ] {
            for k in 0..n {
                let id = format!("{tier}-{k}");
                let mut spec = WorkerSpec::sim(&id, tier, &format!("sim-{tier}"), decode);
                spec.max_concurrency = SLOTS;
                spec.extra = format!("metrics_listen: 127.0.0.1:{}", free_port());
                started.push(Worker::start(&etcd, spec).await);
            }
        }
        for w in &started {
            controllers[0]
                .wait_ready(&w.spec.id, Duration::from_secs(30))
                .await;
        }
        let minilm = models_dir().join("all-minilm-l6-v2");
        assert!(
            minilm.join("static-table.bin").is_file(),
            "{} lacks static-table.bin: run deploy/local/fetch-models.sh minilm and \
             switchback-lab distill (tests/run.sh does both)",
            minilm.display()
        );
        let predictor = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/routing/predictor.json"
        ));
        let yaml = format!(
            "tiers: [small, large]\nmax_body_bytes: {}\ndifficulty: {{predictor: {:?}, minilm_dir: {:?}}}",
            mix::MAX_BODY_BYTES,
            predictor.display().to_string(),
            minilm.display().to_string()
        );
        let keys = tempfile::tempdir().expect("tempdir");
        let keys_file = keys.path().join("keys.yaml");
        std::fs::write(
            &keys_file,
            format!(
                "keys:\n  - {{id: soak, sha256: {}}}\n",
                switchback_router::auth::keys::to_hex(&switchback_router::auth::keys::digest(
                    mix::API_KEY
                ))
            ),
        )
        .expect("write keys file");
        let mut routers = Vec::new();
        for _ in 0..2 {
            let r = Router::start_with_keys(&etcd, &yaml, &keys_file).await;
            r.wait_model_as("sim-small", Some(mix::API_KEY)).await;
            r.wait_model_as("sim-large", Some(mix::API_KEY)).await;
            routers.push(r);
        }
        Self {
            etcd,
            controllers,
            workers: started,
            routers,
            _keys: keys,
        }
    }

    /// Every process, Switchback's first, etcd last.
    pub fn probes(&self) -> Vec<Probe> {
        let mut probes = Vec::new();
        for (k, r) in self.routers.iter().enumerate() {
            probes.push(Probe {
                name: format!("router-{k}"),
                pid: r.proc.pid(),
                metrics: Some((r.url("/metrics"), "switchback_router")),
            });
        }
        for (k, c) in self.controllers.iter().enumerate() {
            probes.push(Probe {
                name: format!("controller-{k}{}", if k == 0 { " (leader)" } else { "" }),
                pid: c.proc.pid(),
                metrics: Some((
                    format!("http://{}/metrics", c.metrics),
                    "switchback_controller",
                )),
            });
        }
        for w in &self.workers {
            let listen = w
                .spec
                .extra
                .strip_prefix("metrics_listen: ")
                .unwrap_or_default();
            probes.push(Probe {
                name: format!("worker {}", w.spec.id),
                pid: w.proc.pid(),
                metrics: Some((format!("http://{listen}/metrics"), "switchback_worker")),
            });
        }
        probes.push(Probe {
            name: "etcd".into(),
            pid: self.etcd.proc.pid(),
            metrics: None,
        });
        probes
    }

    fn bases(&self) -> Vec<String> {
        self.routers.iter().map(|r| r.base.clone()).collect()
    }
}

/// The readings at the end of one window of the load, and the requests that arrived in it.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub end_s: f64,
    pub outcomes: Vec<Outcome>,
    /// One per probe; empty when a reading failed (the reason is in `Soak::problems`).
    pub samples: Vec<Sample>,
}

/// Everything a soak saw.
#[derive(Debug, Clone)]
pub struct Soak {
    pub options: Options,
    pub probes: Vec<Probe>,
    pub warmup: Vec<Outcome>,
    pub baseline: Vec<Sample>,
    pub baseline_stable: bool,
    pub windows: Vec<Window>,
    /// The readings when every process was back to its baseline, or the last ones when
    /// the settle timeout ran out.
    pub settled: Vec<Sample>,
    pub settled_in: Duration,
    /// Readings that failed, or processes that died.
    pub problems: Vec<String>,
}

/// Starts a cluster, runs the soak on it, and stops it.
pub async fn run(options: Options) -> Soak {
    let cluster = Cluster::start(options.workers).await;
    let soak = run_on(&cluster, options).await;
    drop(cluster);
    soak
}

fn load_client() -> reqwest::Client {
    reqwest::Client::builder()
        .build()
        .expect("the load's HTTP client")
}

/// Runs the soak on a started cluster.
pub async fn run_on(cluster: &Cluster, options: Options) -> Soak {
    let probes = cluster.probes();
    let bases = cluster.bases();
    // One keep-alive connection per process for every reading: a constant socket and task.
    let scraper = reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .expect("the scraper's HTTP client");
    let mut problems = Vec::new();
    let mut rng = Rng::new(options.seed);

    eprintln!("soak: warm-up, {} requests", options.warmup_requests);
    let warmup = {
        let http = load_client();
        let seconds = options.warmup_requests as f64 / options.rate;
        let (mut windows, _) = drive(
            &http,
            &bases,
            &mut rng,
            &options,
            seconds,
            seconds.max(1.0),
            &[],
            &scraper,
        )
        .await;
        windows.drain(..).flat_map(|w| w.outcomes).collect()
    };

    let (baseline, baseline_stable) = stable_baseline(&probes, &scraper).await;
    eprintln!(
        "soak: baseline {} (stable: {baseline_stable})",
        brief(&probes, &baseline)
    );

    eprintln!(
        "soak: load, {} req/s for {} s",
        options.rate, options.seconds
    );
    let (windows, failures) = {
        let http = load_client();
        drive(
            &http,
            &bases,
            &mut rng,
            &options,
            options.seconds,
            options.window_s,
            &probes,
            &scraper,
        )
        .await
        // The load's connections close with its client.
    };
    problems.extend(failures);

    eprintln!("soak: settling");
    let started = Instant::now();
    let settled = loop {
        match probe::sample_all(&probes, &scraper).await {
            Ok(now) => {
                let back = judged(&probes).all(|i| now[i].settled_to(&baseline[i]));
                if back || started.elapsed() >= options.settle_timeout {
                    break now;
                }
            }
            Err(e) => {
                problems.push(format!("settling: {e}"));
                break Vec::new();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let settled_in = started.elapsed();
    eprintln!("soak: settled {}", brief(&probes, &settled));
    Soak {
        options,
        probes,
        warmup,
        baseline,
        baseline_stable,
        windows,
        settled,
        settled_in,
        problems,
    }
}

/// Indices of the processes whose tasks and sockets are judged: Switchback's, not etcd.
pub fn judged(probes: &[Probe]) -> impl Iterator<Item = usize> + '_ {
    probes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.metrics.is_some())
        .map(|(i, _)| i)
}

/// Reads every process until two readings in a row agree on tasks, fds and sockets with
/// nothing in flight (at most 30 s; the last reading otherwise).
async fn stable_baseline(probes: &[Probe], scraper: &reqwest::Client) -> (Vec<Sample>, bool) {
    let key = |s: &[Sample]| -> Vec<(Option<u64>, u64, u64, u64)> {
        s.iter()
            .map(|x| (x.tasks, x.fds, x.sockets, x.busy))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<Vec<Sample>> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = probe::sample_all(probes, scraper)
            .await
            .unwrap_or_else(|e| panic!("soak: reading the baseline: {e}"));
        let idle = now.iter().all(|s| s.busy == 0);
        if let Some(prev) = &last {
            // etcd's own connections are not judged and need not agree.
            if idle && judged(probes).all(|i| key(&prev[i..=i]) == key(&now[i..=i])) {
                return (now, true);
            }
        }
        if Instant::now() >= deadline {
            return (now, false);
        }
        last = Some(now);
    }
}

/// One line per process: RSS, tasks, sockets.
fn brief(probes: &[Probe], samples: &[Sample]) -> String {
    probes
        .iter()
        .zip(samples)
        .map(|(p, s)| {
            format!(
                "{}: {:.1} MiB, {} tasks, {} sockets",
                p.name,
                s.rss_kib as f64 / 1024.0,
                s.tasks.map_or("-".into(), |t| t.to_string()),
                s.sockets
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Open-loop load for `seconds`: Poisson arrivals at `options.rate`, each request on the
/// next router in turn. Returns the windows (requests by arrival window, with the readings
/// of `probes` at each window's end) once every request has finished, and the readings that
/// failed.
#[allow(clippy::too_many_arguments)]
async fn drive(
    http: &reqwest::Client,
    bases: &[String],
    rng: &mut Rng,
    options: &Options,
    seconds: f64,
    window_s: f64,
    probes: &[Probe],
    scraper: &reqwest::Client,
) -> (Vec<Window>, Vec<String>) {
    let n_windows = (seconds / window_s).ceil().max(1.0) as usize;
    let mut windows: Vec<Window> = (0..n_windows)
        .map(|k| Window {
            end_s: ((k + 1) as f64 * window_s).min(seconds),
            ..Window::default()
        })
        .collect();
    let started = Instant::now();
    // Readings at each window's end, on their own task so that arrivals keep their pace.
    let sampler = {
        let probes = probes.to_vec();
        let scraper = scraper.clone();
        let ends: Vec<f64> = windows.iter().map(|w| w.end_s).collect();
        tokio::spawn(async move {
            let mut readings = Vec::new();
            if probes.is_empty() {
                return readings;
            }
            for (k, end) in ends.into_iter().enumerate() {
                tokio::time::sleep_until((started + Duration::from_secs_f64(end)).into()).await;
                let r = probe::sample_all(&probes, &scraper).await;
                match &r {
                    Ok(s) => eprintln!("soak: {end:>6.0} s {}", brief(&probes, s)),
                    Err(e) => eprintln!("soak: window {k}: {e}"),
                }
                readings.push(r);
            }
            readings
        })
    };
    let mut inflight = JoinSet::new();
    let mut done = Vec::new();
    let mut at = 0.0f64;
    let mut next_router = 0usize;
    loop {
        at += -rng.unit().ln() / options.rate;
        if at >= seconds {
            break;
        }
        tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
        let request = mix::draw(rng);
        let base = bases[next_router % bases.len()].clone();
        next_router += 1;
        let (http, timeout) = (http.clone(), options.request_timeout);
        let window = ((at / window_s) as usize).min(n_windows - 1);
        inflight.spawn(async move { (window, mix::send(&http, &base, request, timeout).await) });
        while let Some(r) = inflight.try_join_next() {
            done.push(r.expect("a soak request task panicked"));
        }
    }
    while let Some(r) = inflight.join_next().await {
        done.push(r.expect("a soak request task panicked"));
    }
    for (window, outcome) in done {
        windows[window].outcomes.push(outcome);
    }
    let mut failures = Vec::new();
    for (w, r) in windows
        .iter_mut()
        .zip(sampler.await.expect("the sampler panicked"))
    {
        match r {
            Ok(s) => w.samples = s,
            Err(e) => failures.push(format!("reading at {:.0} s: {e}", w.end_s)),
        }
    }
    (windows, failures)
}
