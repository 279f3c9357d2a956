//! Harness for end-to-end tests: starts real etcd, controllers, workers and routers as
//! processes on free loopback ports, waits on their readiness (never on log lines or
//! sleeps), and kills them when dropped.
//!
//! Binaries are found next to the test executable (`target/<profile>/`), or in
//! `SWITCHBACK_BIN_DIR`. The README's test command builds them first.

#![allow(clippy::unwrap_used)]

pub mod bench;
pub mod compose;
pub mod http;
pub mod instructions;
pub mod metrics;
pub mod otlp;
pub mod soak;
pub mod tls;
pub mod traffic;

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use switchback_proto::pb;
use tokio::process::{Child, Command};

/// Bounded polling: runs `check` until it returns `Some`, or panics after `timeout`
/// saying what did not happen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port for a server a test starts, reserved for the life of this test
/// process.
///
/// A port the kernel hands out for `bind(:0)` comes from the ephemeral range, where any
/// outgoing connection of any test running beside this one can take it between the
/// moment it is freed here and the moment the server binds it (seen as "Address already
/// in use" from a controller). So ports come from below the ephemeral range instead, and
/// each is reserved across the concurrently running test processes by an exclusive lock
/// on a file named after it, held until this process exits; a port that something else
/// already listens on is skipped.
pub fn free_port() -> u16 {
    ports::reserve()
}

mod ports {
    use std::{
        fs::File,
        sync::{Mutex, OnceLock},
    };

    /// Lock files held for the life of the process: dropping one frees its port.
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    static NEXT: OnceLock<Mutex<u32>> = OnceLock::new();

    /// Ports below the kernel's ephemeral range, above the well-known ones.
    fn range() -> (u16, u16) {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        (10_000, ephemeral_low.saturating_sub(1).max(10_001))
    }

    pub(super) fn reserve() -> u16 {
        let (low, high) = range();
        let span = u32::from(high - low) + 1;
        let dir = std::env::temp_dir().join("switchback-test-ports");
        std::fs::create_dir_all(&dir).expect("create the port lock directory");
        // Processes start at different points of the range so that they rarely contend.
        let next = NEXT.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            Mutex::new((std::process::id().wrapping_mul(7919) ^ nanos) % span)
        });
        let mut next = next.lock().expect("port counter");
        for _ in 0..span {
            let port = low + (*next % span) as u16;
            *next = (*next + 1) % span;
            let Ok(file) = File::create(dir.join(port.to_string())) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue; // another test process holds it
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue; // something outside the tests listens there
            }
            HELD.lock().expect("held ports").push(file);
            return port;
        }
        panic!("no free loopback port in {low}..={high}");
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ports_are_below_the_ephemeral_range_distinct_and_held_against_other_processes() {
            let (low, high) = range();
            let ephemeral_low = high + 1;
            let ports: Vec<u16> = (0..64).map(|_| reserve()).collect();
            let mut distinct = ports.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                ports.len(),
                "a port was handed out twice: {ports:?}"
            );
            let dir = std::env::temp_dir().join("switchback-test-ports");
            for port in ports {
                assert!(
                    (low..ephemeral_low).contains(&port),
                    "{port} is not in {low}..{ephemeral_low}, below the kernel's ephemeral ports"
                );
                // Another process opening the lock file would find it taken (a second
                // open file description conflicts even within this process).
                let other = File::create(dir.join(port.to_string())).expect("open lock file");
                assert!(other.try_lock().is_err(), "port {port} is not held");
            }
        }
    }
}

/// Where the Switchback binaries are.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os(switchback_common::env::BIN_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/<profile>/deps/<test-binary>  ->  target/<profile>/
            let exe = std::env::current_exe().expect("current_exe");
            let deps = exe.parent().expect("exe dir");
            if deps.ends_with("deps") {
                deps.parent().expect("profile dir").to_owned()
            } else {
                deps.to_owned()
            }
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`, as tests/run.sh does)",
        path.display()
    );
    path
}

/// Directory with the unpacked models (see deploy/local/fetch-models.sh).
pub fn models_dir() -> PathBuf {
    std::env::var_os(switchback_common::env::MODELS_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os(switchback_common::env::CACHE)
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/switchback")
                });
            cache.join("models")
        })
}

/// A GGUF under [`models_dir`], which `deploy/local/fetch-models.sh <tier>` fetches.
fn model_file(relative: &str, tier: &str) -> PathBuf {
    let path = models_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run deploy/local/fetch-models.sh {tier}",
        path.display()
    );
    path
}

/// The SmolLM2-135M GGUF for the `small` tier.
pub fn small_model() -> PathBuf {
    model_file("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf", "small")
}

/// The Qwen2.5-Coder-0.5B GGUF for the `medium` tier.
pub fn medium_model() -> PathBuf {
    model_file(
        "qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "medium",
    )
}

/// The Qwen2.5-Coder-1.5B GGUF for the `large` tier.
pub fn large_model() -> PathBuf {
    model_file(
        "qwen2.5-coder-1.5b/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "large",
    )
}

/// One model of the ladder: tier, model id, and where its GGUF file is.
pub type Rung = (&'static str, &'static str, fn() -> PathBuf);

/// The quickstart's model ladder, cheapest first.
/// The Python the client tests run: `$SWITCHBACK_PYTHON`, else the venv
/// `deploy/local/ensure-deps.sh` makes (with the pinned client libraries).
pub fn python() -> String {
    std::env::var(switchback_common::env::PYTHON).unwrap_or_else(|_| {
        format!(
            "{}/.cache/switchback/venv/bin/python",
            std::env::var("HOME").expect("HOME")
        )
    })
}

pub fn ladder() -> [Rung; 3] {
    [
        ("small", "smollm2-135m", small_model),
        ("medium", "qwen2.5-coder-0.5b", medium_model),
        ("large", "qwen2.5-coder-1.5b", large_model),
    ]
}

/// A running process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], envs: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var(switchback_common::env::TEST_LOG).unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // Tests must not pick up a developer's SWITCHBACK_* settings.
        for (k, _) in std::env::vars() {
            if k.starts_with(switchback_common::env::PREFIX)
                || k == switchback_common::env::OTLP_ENDPOINT
            {
                cmd.env_remove(k);
            }
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process already reaped")
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// Sends a signal by name (TERM, STOP, CONT…).
    pub async fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.name);
    }

    /// Waits for the process to exit, bounded.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {timeout:?}", self.name))
            .expect("wait")
    }
}

/// A single-member etcd on loopback with its data in a temp dir. It can be stopped and
/// started again on the same ports and data (an outage).
#[derive(Debug)]
pub struct Etcd {
    pub proc: Proc,
    pub endpoint: String,
    args: Vec<String>,
    /// For an etcd started with [`Etcd::start_tls`]: how the harness's client connects.
    tls: Option<etcd_client::TlsOptions>,
    _dir: tempfile::TempDir,
}

/// The files of an etcd with TLS: its server certificate and key, and the CA whose
/// client certificates it accepts (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    /// The harness's own client identity, PEM (cert, key); with etcd auth on, its common
    /// name is the etcd user it acts as.
    pub client_pem: (String, String),
}

impl Etcd {
    pub async fn start() -> Self {
        Self::start_at(free_port()).await
    }

    /// etcd on a chosen client port (for tests that point a component at it before it runs).
    pub async fn start_at(client_port: u16) -> Self {
        Self::start_with(format!("http://127.0.0.1:{client_port}"), None).await
    }

    /// etcd serving clients over TLS only, requiring a client certificate from the CA.
    pub async fn start_tls(tls: &EtcdTls) -> Self {
        Self::start_with(format!("https://127.0.0.1:{}", free_port()), Some(tls)).await
    }

    /// One member serving clients at `client` (`http://` or, with `tls`, `https://`).
    async fn start_with(client: String, tls: Option<&EtcdTls>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            "--name".into(),
            "test".into(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client.clone(),
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("test={peer}"),
            "--log-level".into(),
            "error".into(),
        ];
        let options = tls.map(|tls| {
            let path = |p: &PathBuf| p.display().to_string();
            args.extend([
                "--cert-file".into(),
                path(&tls.cert_file),
                "--key-file".into(),
                path(&tls.key_file),
                "--trusted-ca-file".into(),
                path(&tls.ca_file),
                "--client-cert-auth".into(),
            ]);
            let ca = std::fs::read(&tls.ca_file).expect("read the etcd CA");
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(ca))
                .identity(etcd_client::Identity::from_pem(
                    &tls.client_pem.0,
                    &tls.client_pem.1,
                ))
        });
        let etcd = Self {
            proc: Self::spawn(&args),
            endpoint: client,
            args,
            tls: options,
            _dir: dir,
        };
        etcd.wait_up().await;
        etcd
    }

    fn spawn(args: &[String]) -> Proc {
        let etcd = which("etcd").unwrap_or_else(|| {
            panic!("etcd is not installed: run deploy/local/ensure-deps.sh (Debian package etcd-server)")
        });
        Proc::spawn(
            "etcd",
            &etcd,
            args,
            &[("ETCD_UNSUPPORTED_ARCH", String::new())],
        )
    }

    async fn wait_up(&self) {
        wait_for("etcd to answer", Duration::from_secs(30), || async {
            let mut c = self.client().await.ok()?;
            c.get("health-probe", None).await.ok().map(|_| ())
        })
        .await;
    }

    /// Stops etcd (SIGKILL: an outage, not a maintenance stop).
    pub async fn stop(&mut self) {
        self.proc.kill().await;
    }

    /// Starts etcd again on the same ports and data, and waits until it answers.
    pub async fn restart(&mut self) {
        self.proc = Self::spawn(&self.args);
        self.wait_up().await;
    }

    pub async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3));
        let options = match &self.tls {
            Some(tls) => options.with_tls(tls.clone()),
            None => options,
        };
        etcd_client::Client::connect([self.endpoint.as_str()], Some(options)).await
    }

    /// Whether `key` exists.
    pub async fn has_key(&self, key: &str) -> bool {
        self.lease_of(key).await.is_some()
    }

    /// The lease `key` is bound to (0: none), if the key exists.
    pub async fn lease_of(&self, key: &str) -> Option<i64> {
        let mut c = self.client().await.expect("etcd client");
        c.get(key, None)
            .await
            .expect("etcd get")
            .kvs()
            .first()
            .map(|kv| kv.lease())
    }

    /// The controller leader's address, as the election says.
    /// Writes the cluster's routing policy (YAML) where every router follows it.
    pub async fn set_policy(&self, yaml: &str) {
        let mut client = self.client().await.expect("etcd client");
        client
            .put(
                switchback_proto::Keys::default().policy(),
                yaml.as_bytes().to_vec(),
                None,
            )
            .await
            .expect("put the routing policy");
    }

    pub async fn leader(&self) -> Option<String> {
        let mut c = self.client().await.ok()?;
        let resp = c
            .leader(switchback_proto::Keys::default().controller_election())
            .await
            .ok()?;
        resp.kv()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok())
            .map(str::to_owned)
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A controller on a free port.
#[derive(Debug)]
pub struct Controller {
    pub proc: Proc,
    pub address: String,
    /// Where its `/metrics` listens (`host:port`).
    pub metrics: String,
    /// Mutual TLS on its gRPC port: the harness asks with its own certificate.
    pki: Option<tls::ClusterPki>,
    _dir: Option<tempfile::TempDir>,
}

impl Controller {
    pub async fn start(etcd: &Etcd) -> Self {
        Self::start_with(&etcd.endpoint).await
    }

    /// A controller for the etcd at `endpoint` (which may not be up yet); waits until its
    /// gRPC server answers, not until it is elected.
    pub async fn start_with(etcd_endpoint: &str) -> Self {
        Self::start_with_env(etcd_endpoint, &[]).await
    }

    /// [`Controller::start_with`], with extra environment variables (e.g. OpenTelemetry's).
    pub async fn start_with_env(etcd_endpoint: &str, env: &[(&str, String)]) -> Self {
        Self::spawn(etcd_endpoint, env, None).await
    }

    /// A controller speaking mutual TLS with a certificate of `pki`.
    pub async fn start_tls(etcd: &Etcd, pki: &tls::ClusterPki) -> Self {
        Self::spawn(&etcd.endpoint, &[], Some(pki.clone())).await
    }

    async fn spawn(
        etcd_endpoint: &str,
        env: &[(&str, String)],
        pki: Option<tls::ClusterPki>,
    ) -> Self {
        let mut env = env.to_vec();
        let dir = pki.as_ref().map(|pki| {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("controller.yaml");
            std::fs::write(
                &config,
                pki.yaml(switchback_common::tls::Role::Controller, "controller"),
            )
            .expect("write controller config");
            env.push((switchback_common::env::CONFIG, config.display().to_string()));
            dir
        });
        let env = env.as_slice();
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{}", free_port());
        let proc = Proc::spawn(
            "controller",
            &bin("switchback-controller"),
            &[
                "--listen".into(),
                address.clone(),
                "--metrics-listen".into(),
                metrics.clone(),
                "--etcd-endpoints".into(),
                etcd_endpoint.to_owned(),
            ],
            env,
        );
        let c = Self {
            proc,
            address,
            metrics,
            pki,
            _dir: dir,
        };
        wait_for(
            "the controller to answer Status",
            Duration::from_secs(30),
            || async { c.status().await.ok().map(|_| ()) },
        )
        .await;
        c
    }

    /// Waits until this controller says it is the leader.
    pub async fn wait_leader(&self, timeout: Duration) {
        wait_for("the controller to be elected", timeout, || async {
            (self.status().await.ok()?.role == "leader").then_some(())
        })
        .await;
    }

    pub async fn status(&self) -> Result<pb::ClusterView, Box<dyn std::error::Error>> {
        let channel = match &self.pki {
            None => {
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))?
                    .connect()
                    .await?
            }
            Some(pki) => tls::grpc_channel(&self.address, pki.client()).await?,
        };
        let mut client = pb::controller_client::ControllerClient::new(channel);
        Ok(client.status(pb::StatusRequest {}).await?.into_inner())
    }

    /// The worker's health in the controller's view, if it is there.
    pub async fn health_of(&self, worker_id: &str) -> Option<pb::WorkerHealth> {
        let view = self.status().await.ok()?;
        view.workers
            .iter()
            .find(|w| w.info.as_ref().is_some_and(|i| i.id == worker_id))
            .and_then(|w| pb::WorkerHealth::try_from(w.health).ok())
    }

    /// The worker's state in the controller's view, if it is there.
    pub async fn worker(&self, worker_id: &str) -> Option<pb::WorkerState> {
        self.status()
            .await
            .ok()?
            .workers
            .into_iter()
            .find(|w| w.info.as_ref().is_some_and(|i| i.id == worker_id))
    }

    pub async fn wait_ready(&self, worker_id: &str, timeout: Duration) {
        wait_for(
            &format!("worker {worker_id} to be READY in the controller's view"),
            timeout,
            || async {
                (self.health_of(worker_id).await == Some(pb::WorkerHealth::Ready)).then_some(())
            },
        )
        .await;
    }

    pub async fn wait_gone(&self, worker_id: &str, timeout: Duration) {
        wait_for(
            &format!("worker {worker_id} to leave the controller's view"),
            timeout,
            || async {
                let view = self.status().await.ok()?;
                (!view
                    .workers
                    .iter()
                    .any(|w| w.info.as_ref().is_some_and(|i| i.id == worker_id)))
                .then_some(())
            },
        )
        .await;
    }
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub id: String,
    pub tier: String,
    pub model: String,
    /// The `engine:` block, as YAML flow mapping, e.g. `{kind: sim, decode_ms_per_token: 5}`.
    pub engine: String,
    pub max_concurrency: u32,
    pub lease_ttl_s: u32,
    /// Extra top-level YAML lines.
    pub extra: String,
    /// Extra environment variables (e.g. OpenTelemetry's).
    pub env: Vec<(&'static str, String)>,
    /// Mutual TLS with a certificate of this PKI (named after the worker id).
    pub tls: Option<tls::ClusterPki>,
}

impl WorkerSpec {
    pub fn sim(id: &str, tier: &str, model: &str, decode_ms: f64) -> Self {
        Self {
            id: id.into(),
            tier: tier.into(),
            model: model.into(),
            engine: format!(
                "{{kind: sim, prefill_ms_per_token: 0.1, decode_ms_per_token: {decode_ms}}}"
            ),
            max_concurrency: 4,
            lease_ttl_s: 3,
            extra: String::new(),
            env: Vec::new(),
            tls: None,
        }
    }

    pub fn small_real(id: &str) -> Self {
        Self::real(id, "small")
    }

    pub fn medium_real(id: &str) -> Self {
        Self::real(id, "medium")
    }

    pub fn large_real(id: &str) -> Self {
        Self::real(id, "large")
    }

    /// A mistral.rs worker serving `tier`'s model of the [`ladder`] on CPU.
    pub fn real(id: &str, tier: &str) -> Self {
        Self::real_on(id, tier, "cpu")
    }

    /// A mistral.rs worker serving `tier`'s model of the [`ladder`] on `device` (`cpu`,
    /// `cuda`, `cuda:N`).
    pub fn real_on(id: &str, tier: &str, device: &str) -> Self {
        let (tier, model, path) = ladder()
            .into_iter()
            .find(|(t, _, _)| *t == tier)
            .unwrap_or_else(|| panic!("no tier {tier} in the ladder"));
        Self {
            id: id.into(),
            tier: tier.into(),
            model: model.into(),
            engine: format!(
                "{{kind: mistralrs, model_path: {:?}, device: {device}}}",
                path().display().to_string()
            ),
            max_concurrency: 2,
            lease_ttl_s: 3,
            extra: String::new(),
            env: Vec::new(),
            tls: None,
        }
    }
}

/// A worker on a free port, configured through a YAML file.
#[derive(Debug)]
pub struct Worker {
    pub proc: Proc,
    pub spec: WorkerSpec,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Worker {
    pub async fn start(etcd: &Etcd, spec: WorkerSpec) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let yaml = format!(
            "id: {id}\ntier: {tier}\nmodel: {model}\nlisten: {address}\nengine: {engine}\nmax_concurrency: {mc}\n\
             etcd: {{endpoints: [{ep}], lease_ttl_s: {ttl}}}\nload_report_interval_ms: 100\n{extra}\n",
            id = spec.id,
            tier = spec.tier,
            model = spec.model,
            engine = spec.engine,
            mc = spec.max_concurrency,
            ep = etcd.endpoint,
            ttl = spec.lease_ttl_s,
            extra = spec.extra,
        );
        let yaml = match &spec.tls {
            Some(pki) => format!(
                "{yaml}{}",
                pki.yaml(switchback_common::tls::Role::Worker, &spec.id)
            ),
            None => yaml,
        };
        let config = dir.path().join("worker.yaml");
        std::fs::write(&config, yaml).expect("write worker config");
        let proc = Proc::spawn(
            &format!("worker {}", spec.id),
            &bin("switchback-worker"),
            &["--config".into(), config.display().to_string()],
            &spec.env,
        );
        let w = Self {
            proc,
            spec,
            address,
            _dir: dir,
        };
        wait_for(
            &format!("worker {} to answer Health", w.spec.id),
            Duration::from_secs(120),
            || async {
                let channel = match &w.spec.tls {
                    None => {
                        tonic::transport::Endpoint::from_shared(format!("http://{}", w.address))
                            .ok()?
                            .connect()
                            .await
                            .ok()?
                    }
                    Some(pki) => tls::grpc_channel(&w.address, pki.client()).await.ok()?,
                };
                let mut c = pb::inference_client::InferenceClient::new(channel);
                c.health(pb::HealthRequest {}).await.ok().map(|_| ())
            },
        )
        .await;
        w
    }

    pub async fn client(&self) -> pb::inference_client::InferenceClient<tonic::transport::Channel> {
        pb::inference_client::InferenceClient::connect(format!("http://{}", self.address))
            .await
            .expect("connect to worker")
    }
}

/// A router on a free port.
#[derive(Debug)]
pub struct Router {
    pub proc: Proc,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Router {
    /// `extra` is appended to the router's YAML config. Without an `auth:` line of its own
    /// the router runs with `auth: {disabled: true}` (see [`Router::start_with_keys`]).
    pub async fn start(etcd: &Etcd, extra: &str) -> Self {
        Self::start_with_env(etcd, extra, &[]).await
    }

    /// [`Router::start`] requiring the API keys of the keys file at `keys_file`.
    pub async fn start_with_keys(etcd: &Etcd, extra: &str, keys_file: &Path) -> Self {
        let extra = format!(
            "{extra}\nauth: {{keys_file: {:?}}}\n",
            keys_file.display().to_string()
        );
        Self::start_with_env(etcd, &extra, &[]).await
    }

    /// [`Router::start`], with extra environment variables (e.g. OpenTelemetry's).
    pub async fn start_with_env(etcd: &Etcd, extra: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let auth = if extra.lines().any(|l| l.starts_with("auth:")) {
            ""
        } else {
            "auth: {disabled: true}\n"
        };
        let yaml = format!(
            "listen: 127.0.0.1:{port}\netcd: {{endpoints: [{}]}}\n{auth}{extra}\n",
            etcd.endpoint
        );
        let config = dir.path().join("router.yaml");
        std::fs::write(&config, yaml).expect("write router config");
        let proc = Proc::spawn(
            "router",
            &bin("switchback-router"),
            &["--config".into(), config.display().to_string()],
            env,
        );
        let r = Self {
            proc,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        wait_for(
            "the router to be ready (/readyz)",
            Duration::from_secs(30),
            || async {
                let resp = http.get(format!("{}/readyz", r.base)).send().await.ok()?;
                resp.status().is_success().then_some(())
            },
        )
        .await;
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The value of one series on the router's `/metrics`, e.g.
    /// `switchback_router_controller_watch_sessions` or `name{label="v"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    }

    /// Waits until `/v1/models` lists `id` (the router has seen a ready worker for it).
    pub async fn wait_model(&self, id: &str) {
        self.wait_model_as(id, None).await;
    }

    /// [`Router::wait_model`], asking with the API key `key` (routers with auth on).
    pub async fn wait_model_as(&self, id: &str, key: Option<&str>) {
        let http = reqwest::Client::new();
        wait_for(
            &format!("the router to list {id}"),
            Duration::from_secs(30),
            || async {
                let get = http.get(self.url("/v1/models"));
                let get = match key {
                    Some(key) => get.bearer_auth(key),
                    None => get,
                };
                let v: serde_json::Value = get.send().await.ok()?.json().await.ok()?;
                v["data"]
                    .as_array()?
                    .iter()
                    .any(|m| m["id"] == id)
                    .then_some(())
            },
        )
        .await;
    }
}

/// Runs `sbctl` against the cluster of `etcd`; returns (exit code, stdout, stderr).
pub async fn sbctl(etcd: &Etcd, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(bin("sbctl"))
            .args(args)
            .env(switchback_common::env::ETCD_ENDPOINTS, &etcd.endpoint)
            .env_remove(switchback_common::env::CONTROLLER)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("sbctl did not finish within 120 s")
    .expect("run sbctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
