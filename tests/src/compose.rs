//! The Docker Compose cluster of `deploy/compose.yaml` for end-to-end tests: `up` under a
//! project name of its own with its own published router ports, the `docker` commands a
//! test breaks things with (kill, start, network disconnect and connect, exec), and
//! `down -v --remove-orphans` when dropped, also when the test panics. Every command is
//! bounded by a timeout; a missing Docker engine or stale images fail with a message that
//! says what to do.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::process::Command;

use crate::{free_port, wait_for};

/// Prefix of the project names this module makes; the rest is `<pid>-<nonce>`.
const PROJECT_PREFIX: &str = "sbtest-";
/// Bound on one docker command (an `up` pulls nothing but starts nine containers).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// A running compose project, torn down on drop.
#[derive(Debug)]
pub struct Compose {
    pub project: String,
    /// `["docker", "compose"]` or `["docker-compose"]`.
    compose: Vec<String>,
    file: PathBuf,
    env: Vec<(String, String)>,
    /// Base URLs of the published routers, `http://127.0.0.1:PORT`.
    pub router_a: String,
    pub router_b: String,
}

/// The repository root (the tests crate is one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The compose command of this machine: the `docker compose` plugin, else `docker-compose`.
/// Panics, saying what is missing, when there is no Docker engine or no compose.
pub fn compose_command() -> Vec<String> {
    let hint = "the compose end-to-end test needs a running Docker engine and Docker Compose \
                (Debian: apt-get install docker.io docker-compose)";
    let info = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match info {
        Err(e) => panic!("docker is not available (cannot run `docker`: {e}): {hint}"),
        Ok(out) if !out.status.success() => panic!(
            "docker is not available (`docker info` failed: {}): {hint}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => {}
    }
    for candidate in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let ok = std::process::Command::new(candidate[0])
            .args(&candidate[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate.iter().map(|s| (*s).to_owned()).collect();
        }
    }
    panic!("neither `docker compose` nor `docker-compose` works: {hint}");
}

/// Output of a finished command: stdout on success, else an error with the exit status
/// and stderr.
async fn output(what: &str, cmd: &mut Command) -> Result<String, String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("`{what}` did not finish within {COMMAND_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run `{what}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Runs `docker ARGS`; stdout, or an error that says which command failed and why.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    output(
        &format!("docker {}", args.join(" ")),
        Command::new("docker").args(args),
    )
    .await
}

impl Compose {
    /// Brings up `deploy/compose.yaml` under a fresh project name, with both routers
    /// published on free loopback ports. Checks first that the images exist and hold the
    /// binaries this test run was built with (`deploy/docker/build-images.sh --check`).
    pub async fn up() -> Self {
        let compose = compose_command();
        let root = repo_root();
        let bin_dir = crate::bin("switchback-worker")
            .parent()
            .expect("bin dir")
            .to_owned();
        let check = output(
            "deploy/docker/build-images.sh --check",
            Command::new(root.join("deploy/docker/build-images.sh"))
                .arg("--check")
                .env(switchback_common::env::BIN_DIR, &bin_dir),
        )
        .await;
        if let Err(e) = check {
            panic!(
                "the Switchback images are missing or older than {}: {e}\n\
                 build them with deploy/docker/build-images.sh (tests/run.sh does)",
                bin_dir.display()
            );
        }
        reap_abandoned(&compose).await;

        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let project = format!("{PROJECT_PREFIX}{}-{nonce:x}", std::process::id());
        let port_a = free_port();
        let port_b = std::iter::repeat_with(free_port)
            .find(|p| *p != port_a)
            .expect("a second free port");
        let env = vec![
            (
                switchback_common::env::ROUTER_A_PORT.to_owned(),
                port_a.to_string(),
            ),
            (
                switchback_common::env::ROUTER_B_PORT.to_owned(),
                port_b.to_string(),
            ),
            (
                switchback_common::env::IMAGE_TAG.to_owned(),
                "dev".to_owned(),
            ),
        ];
        // Built before `up` runs, so that a failing `up` is torn down too.
        let cluster = Self {
            project,
            compose,
            file: root.join("deploy/compose.yaml"),
            env,
            router_a: format!("http://127.0.0.1:{port_a}"),
            router_b: format!("http://127.0.0.1:{port_b}"),
        };
        println!(
            "compose project {} (routers on {} and {})",
            cluster.project, cluster.router_a, cluster.router_b
        );
        cluster
            .compose(&["up", "-d", "--no-build"])
            .await
            .unwrap_or_else(|e| panic!("compose up of {}: {e}", cluster.project));
        cluster
    }

    fn compose_cmd(&self, args: &[&str]) -> (String, std::process::Command) {
        let mut cmd = std::process::Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let what = format!(
            "{} -p {} {}",
            self.compose.join(" "),
            self.project,
            args.join(" ")
        );
        (what, cmd)
    }

    /// Runs a compose subcommand on this project.
    pub async fn compose(&self, args: &[&str]) -> Result<String, String> {
        let (what, cmd) = self.compose_cmd(args);
        output(&what, &mut Command::from(cmd)).await
    }

    /// The container of a service (its id), running or stopped.
    pub async fn container(&self, service: &str) -> String {
        let id = self
            .compose(&["ps", "-a", "-q", service])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let id = id.trim();
        assert!(!id.is_empty(), "service {service} has no container");
        id.to_owned()
    }

    /// `docker kill` (SIGKILL) a service's container and wait until it has stopped.
    pub async fn kill(&self, service: &str) {
        let id = self.container(service).await;
        docker(&["kill", &id])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        docker(&["wait", &id])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `docker start` a service's stopped container. (The restart policy does not bring
    /// back a container stopped by `docker kill`: Docker counts that as a manual stop.)
    pub async fn start(&self, service: &str) {
        let id = self.container(service).await;
        docker(&["start", &id])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The compose network the service's container is on.
    pub async fn network_of(&self, service: &str) -> String {
        let id = self.container(service).await;
        let names = docker(&[
            "inspect",
            "-f",
            "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
            &id,
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = names.split_whitespace().collect();
        assert_eq!(names.len(), 1, "{service} is on networks {names:?}");
        names[0].to_owned()
    }

    /// Cuts the service's container off the network (a partition).
    pub async fn disconnect(&self, service: &str, network: &str) {
        let id = self.container(service).await;
        docker(&["network", "disconnect", network, &id])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Connects it again, under its service name (which the others use to reach it).
    pub async fn connect(&self, service: &str, network: &str) {
        let id = self.container(service).await;
        docker(&["network", "connect", "--alias", service, network, &id])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs a command in the service's container.
    pub async fn exec(&self, service: &str, args: &[&str]) -> Result<String, String> {
        let id = self.container(service).await;
        let mut all = vec!["exec", id.as_str()];
        all.extend_from_slice(args);
        docker(&all).await
    }

    /// The view of the controller replica `service` (`sbctl status --json` asked of that
    /// replica), or why not.
    pub async fn controller_view(&self, service: &str) -> Result<Value, String> {
        let out = self
            .exec(
                service,
                &[
                    "sbctl",
                    "--controller",
                    "127.0.0.1:50050",
                    "status",
                    "--json",
                ],
            )
            .await?;
        serde_json::from_str(&out).map_err(|e| format!("sbctl status --json: {e}: {out}"))
    }

    /// The lease of each worker record in etcd (`etcdctl get` in the etcd container).
    pub async fn worker_leases(&self) -> Result<BTreeMap<String, i64>, String> {
        let prefix = format!("{}workers/", switchback_proto::keys::DEFAULT_PREFIX);
        let out = self
            .exec(
                "etcd",
                &["etcdctl", "get", "--prefix", &prefix, "-w", "fields"],
            )
            .await?;
        // Records come as blocks of `"Key" : "..."` ... `"Lease" : N` lines.
        let mut leases = BTreeMap::new();
        let mut key = None;
        for line in out.lines() {
            if let Some(k) = line.strip_prefix("\"Key\" : ") {
                key = Some(k.trim_matches('"').trim_start_matches(&prefix).to_owned());
            } else if let Some(l) = line.strip_prefix("\"Lease\" : ") {
                let lease = l.trim().parse().map_err(|e| format!("lease {l:?}: {e}"))?;
                leases.insert(key.take().ok_or("a lease without a key")?, lease);
            }
        }
        Ok(leases)
    }

    /// Waits (bounded) until the replica `service` reports itself as `role`.
    pub async fn wait_role(&self, service: &str, role: &str, timeout: Duration) {
        wait_for(&format!("{service} to be {role}"), timeout, || async {
            let view = self.controller_view(service).await.ok()?;
            (view["role"] == role).then_some(())
        })
        .await;
    }

    /// The last lines of every container's log (for a failing test's output).
    fn dump_logs(&self) {
        let (what, mut cmd) = self.compose_cmd(&["logs", "--no-color", "--tail", "60"]);
        match cmd.stdin(Stdio::null()).output() {
            Ok(out) => eprintln!(
                "---- {what} ----\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run `{what}`: {e}"),
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let (what, mut cmd) =
            self.compose_cmd(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
        match cmd.stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "`{what}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run `{what}`: {e}"),
        }
    }
}

/// Takes down projects of earlier runs whose test process is gone without its drop
/// having run (killed by a timeout, say), so they do not pile up.
async fn reap_abandoned(compose: &[String]) {
    let Ok(projects) = docker(&[
        "ps",
        "-a",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ])
    .await
    else {
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    for project in projects.lines().filter(|p| p.starts_with(PROJECT_PREFIX)) {
        let pid = project[PROJECT_PREFIX.len()..]
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if alive || !seen.insert(project.to_owned()) {
            continue;
        }
        eprintln!("taking down the abandoned compose project {project}");
        let file = repo_root().join("deploy/compose.yaml");
        let mut cmd = Command::new(&compose[0]);
        cmd.args(&compose[1..]).arg("-f").arg(&file).args([
            "-p",
            project,
            "down",
            "-v",
            "--remove-orphans",
            "--timeout",
            "1",
        ]);
        if let Err(e) = output("compose down (abandoned project)", &mut cmd).await {
            eprintln!("{e}");
        }
    }
}
