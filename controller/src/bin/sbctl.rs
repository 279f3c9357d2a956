//! `sbctl`: the operator's command line for a Switchback cluster.
//!
//!   sbctl status [--json]                 per-tier capacity and every worker's health
//!   sbctl drain <worker> [--wait]         stop new work to a worker; it deregisters when idle
//!   sbctl undrain <worker>                let it take work again
//!   sbctl etcd-roles [--print]            create the etcd roles of each component
//!
//! It finds the controller leader through etcd (like workers and routers do), or talks to
//! `--controller` directly. A Kubernetes preStop hook runs `sbctl drain $ID --wait`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use serde_json::json;
use switchback_common::{
    env,
    etcd::{ControllerError, ControllerTarget, EtcdAccess},
    tls::Dialer,
};
use switchback_proto::{
    Keys,
    pb::{self, controller_client::ControllerClient},
};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(name = "sbctl", version, about = "Operate a Switchback cluster")]
struct Cli {
    /// Controller gRPC address (host:port); default: the leader elected in etcd.
    #[arg(long, env = env::CONTROLLER, global = true)]
    controller: Option<String>,
    /// Comma-separated etcd endpoints, to find the leader.
    #[arg(
        long,
        env = env::ETCD_ENDPOINTS,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        global = true
    )]
    etcd_endpoints: Vec<String>,
    /// Key prefix of the cluster in etcd.
    #[arg(long, env = env::ETCD_PREFIX, default_value = switchback_proto::keys::DEFAULT_PREFIX, global = true)]
    etcd_prefix: String,
    /// CA of etcd's server certificate (TLS to etcd; endpoints must be https://).
    #[arg(long, env = env::ETCD_CA_FILE, global = true)]
    etcd_ca_file: Option<PathBuf>,
    /// Client certificate for etcd's client-cert auth.
    #[arg(long, env = env::ETCD_CERT_FILE, global = true)]
    etcd_cert_file: Option<PathBuf>,
    #[arg(long, env = env::ETCD_KEY_FILE, global = true)]
    etcd_key_file: Option<PathBuf>,
    /// etcd user; the password is read from --etcd-password-file.
    #[arg(long, env = env::ETCD_USERNAME, global = true)]
    etcd_username: Option<String>,
    #[arg(long, env = env::ETCD_PASSWORD_FILE, global = true)]
    etcd_password_file: Option<PathBuf>,
    /// Cluster CA, to verify the controller (mutual TLS; with --tls-cert-file and
    /// --tls-key-file, a certificate the cluster CA signed naming the role operator,
    /// spiffe://switchback/operator/<name>, or a worker's own for draining itself).
    #[arg(long, env = env::TLS_CA_FILE, global = true)]
    tls_ca_file: Option<PathBuf>,
    #[arg(long, env = env::TLS_CERT_FILE, global = true)]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, env = env::TLS_KEY_FILE, global = true)]
    tls_key_file: Option<PathBuf>,
    /// Check the controller's certificate against this DNS name instead of its address.
    #[arg(long, env = env::TLS_SERVER_NAME, global = true)]
    tls_server_name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tiers (capacity, load, cost) and workers (health and why).
    Status {
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Drain a worker: no new requests reach it, in-flight ones finish, then it
    /// deregisters. It stays drained until `undrain` (or its own clean shutdown).
    Drain {
        worker: String,
        /// Kept with the drain and shown in status.
        #[arg(long, default_value = "")]
        reason: String,
        /// Wait until the worker has finished its in-flight work and deregistered.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (exit code 3).
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Undrain a worker: it registers again and takes requests.
    Undrain { worker: String },
    /// Create (or complete) the etcd roles switchback-worker, -controller, -router and
    /// -operator, each with only the keys under --etcd-prefix that its component needs:
    /// only a worker may write worker records. Run it as etcd's root user, then give each
    /// component a user with its role (etcdctl user add / user grant-role) and turn etcd
    /// auth on. Writes nothing but those roles.
    EtcdRoles {
        /// Print the equivalent etcdctl commands instead of applying them.
        #[arg(long)]
        print: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sbctl: {err}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The etcd access and the gRPC dialer the flags describe, checked.
fn access(cli: &Cli) -> Result<(EtcdAccess, Dialer), Error> {
    let etcd = switchback_common::etcd_config::RawEtcd {
        endpoints: Some(cli.etcd_endpoints.clone()),
        ca_file: cli.etcd_ca_file.clone(),
        cert_file: cli.etcd_cert_file.clone(),
        key_file: cli.etcd_key_file.clone(),
        username: cli.etcd_username.clone(),
        password_file: cli.etcd_password_file.clone(),
        ..Default::default()
    }
    .access()?;
    let tls = match (&cli.tls_ca_file, &cli.tls_cert_file, &cli.tls_key_file) {
        (None, None, None) => None,
        (ca, cert, key) => {
            let files = switchback_common::tls::RawClusterTls {
                ca_file: ca.clone(),
                cert_file: cert.clone(),
                key_file: key.clone(),
                server_name: cli.tls_server_name.clone(),
            };
            let keys = switchback_common::tls::Keys {
                ca_file: "--tls-ca-file",
                cert_file: "--tls-cert-file",
                key_file: "--tls-key-file",
                server_name: "--tls-server-name",
            };
            let files = files.validate(keys)?;
            // An operator's certificate; a worker's own serves its preStop self-drain.
            files.expect_role(
                keys,
                &[
                    switchback_common::tls::Role::Operator,
                    switchback_common::tls::Role::Worker,
                ],
                None,
            )?;
            Some(switchback_common::tls::ClusterTls::load(&files)?)
        }
    };
    Ok((etcd, Dialer::new(tls)))
}

async fn connect(cli: &Cli) -> Result<ControllerClient<Channel>, Error> {
    let (etcd, dialer) = access(cli)?;
    let target = ControllerTarget {
        address: cli.controller.clone(),
        etcd,
        keys: Keys::new(&cli.etcd_prefix),
        dialer,
    };
    let (_, channel) = target.dial().await.map_err(|err| -> Error {
        match err {
            ControllerError::EtcdConnect(e) => {
                format!("cannot reach etcd at {:?}: {e}", cli.etcd_endpoints).into()
            }
            ControllerError::EtcdLeader(e) => e.into(),
            ControllerError::NoLeader => {
                "no controller leader is elected (is a controller running?)".into()
            }
            ControllerError::Dial { address, source } => {
                format!("cannot reach the controller at {address}: {source}").into()
            }
        }
    })?;
    Ok(ControllerClient::new(channel))
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    if let Command::EtcdRoles { print } = &cli.command {
        return etcd_roles(&cli, *print).await;
    }
    let mut client = connect(&cli).await?;
    match &cli.command {
        Command::Status { json } => {
            let view = client.status(pb::StatusRequest {}).await?.into_inner();
            if *json {
                println!("{}", status_json(&view));
            } else {
                print!("{}", status_table(&view));
            }
        }
        Command::Drain {
            worker,
            reason,
            wait,
            timeout_s,
        } => {
            let known = client
                .drain(pb::DrainRequest {
                    worker_id: worker.clone(),
                    undrain: false,
                    reason: reason.clone(),
                })
                .await?
                .into_inner()
                .known;
            if !known {
                eprintln!(
                    "sbctl: no worker {worker} is registered now; it stays drained if it starts"
                );
            }
            println!("drained {worker}");
            if *wait && known {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(*timeout_s);
                // Deregistration is the worker saying "nothing in flight": poll the
                // leader (reconnecting if it changes) until the worker leaves the view.
                loop {
                    let present = match client.status(pb::StatusRequest {}).await {
                        Ok(view) => view
                            .into_inner()
                            .workers
                            .iter()
                            .any(|w| w.info.as_ref().is_some_and(|i| &i.id == worker)),
                        Err(_) => {
                            if let Ok(c) = connect(&cli).await {
                                client = c;
                            }
                            true
                        }
                    };
                    if !present {
                        println!("{worker} finished its in-flight work and deregistered");
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        eprintln!("sbctl: {worker} is still registered after {timeout_s} s");
                        return Ok(ExitCode::from(3));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        Command::Undrain { worker } => {
            client
                .drain(pb::DrainRequest {
                    worker_id: worker.clone(),
                    undrain: true,
                    reason: String::new(),
                })
                .await?;
            println!("undrained {worker}");
        }
        // Talks to etcd only; handled before connecting to the controller.
        Command::EtcdRoles { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn etcd_roles(cli: &Cli, print: bool) -> Result<ExitCode, Error> {
    use switchback_common::etcd_roles;
    let keys = Keys::new(&cli.etcd_prefix);
    let roles = if print {
        etcd_roles::roles(&keys)
    } else {
        let (etcd_access, _) = access(cli)?;
        let mut etcd = switchback_common::etcd::connect(&etcd_access)
            .await
            .map_err(|e| format!("cannot reach etcd at {:?}: {e}", cli.etcd_endpoints))?;
        etcd_roles::apply(&mut etcd, &keys)
            .await
            .map_err(|e| format!("creating the roles (run as etcd's root user): {e}"))?
    };
    for role in &roles {
        if print {
            println!("etcdctl role add {}", role.name);
            for grant in &role.grants {
                println!("{}", grant.etcdctl(role.name));
            }
        } else {
            println!("role {} ({} permissions)", role.name, role.grants.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn health_name(h: i32) -> &'static str {
    match pb::WorkerHealth::try_from(h).unwrap_or(pb::WorkerHealth::Unspecified) {
        pb::WorkerHealth::Ready => "ready",
        pb::WorkerHealth::Stale => "stale",
        pb::WorkerHealth::Draining => "draining",
        pb::WorkerHealth::Unreachable => "unreachable",
        pb::WorkerHealth::Unspecified => "unknown",
    }
}

fn status_json(view: &pb::ClusterView) -> serde_json::Value {
    json!({
        "controller": view.controller_id,
        "role": view.role,
        "tiers": view.tiers.iter().map(|t| json!({
            "tier": t.tier,
            "workers": {
                "ready": t.workers_ready,
                "draining": t.workers_draining,
                "stale": t.workers_stale,
                "unreachable": t.workers_unreachable,
            },
            "capacity": t.capacity,
            "running": t.running,
            "waiting": t.waiting,
            "tokens_per_second": t.tokens_per_second,
            "cost_per_mtok": {"input": t.cost_per_mtok_input, "output": t.cost_per_mtok_output},
        })).collect::<Vec<_>>(),
        "workers": view.workers.iter().map(|w| {
            let info = w.info.clone().unwrap_or_default();
            let load = w.load.clone().unwrap_or_default();
            json!({
                "id": info.id,
                "tier": info.tier,
                "model": info.model,
                "address": info.address,
                "node": info.node,
                "health": health_name(w.health),
                "reason": w.health_reason,
                "drained": w.drained,
                "running": load.running,
                "waiting": load.waiting,
                "capacity": load.capacity.max(info.max_concurrency),
                "tokens_per_second": load.tokens_per_second,
                "load_age_ms": (w.load_age_ms != u64::MAX).then_some(w.load_age_ms),
            })
        }).collect::<Vec<_>>(),
        "drained": view.drained,
    })
}

fn status_table(view: &pb::ClusterView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "controller {} ({})\n", view.controller_id, view.role);
    let _ = writeln!(
        out,
        "{:<12} {:>5} {:>8} {:>5} {:>11} {:>5} {:>4} {:>6} {:>8} {:>15}",
        "TIER",
        "READY",
        "DRAINING",
        "STALE",
        "UNREACHABLE",
        "SLOTS",
        "USED",
        "QUEUED",
        "TOK/S",
        "$/MTOK IN/OUT"
    );
    for t in &view.tiers {
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>8} {:>5} {:>11} {:>5} {:>4} {:>6} {:>8.1} {:>15}",
            t.tier,
            t.workers_ready,
            t.workers_draining,
            t.workers_stale,
            t.workers_unreachable,
            t.capacity,
            t.running,
            t.waiting,
            t.tokens_per_second,
            format!("{:.2}/{:.2}", t.cost_per_mtok_input, t.cost_per_mtok_output)
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<12} {:<12} {:>7} {:>6} {:>8}  {:<22} REASON",
        "WORKER", "TIER", "HEALTH", "RUN/CAP", "QUEUED", "TOK/S", "ADDRESS"
    );
    for w in &view.workers {
        let info = w.info.clone().unwrap_or_default();
        let load = w.load.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:<12} {:>7} {:>6} {:>8.1}  {:<22} {}",
            info.id,
            info.tier,
            health_name(w.health),
            format!(
                "{}/{}",
                load.running,
                load.capacity.max(info.max_concurrency)
            ),
            load.waiting,
            load.tokens_per_second,
            info.address,
            w.health_reason
        );
    }
    let gone: Vec<&String> = view
        .drained
        .iter()
        .filter(|id| {
            !view
                .workers
                .iter()
                .any(|w| w.info.as_ref().is_some_and(|i| &i.id == *id))
        })
        .collect();
    if !gone.is_empty() {
        let _ = writeln!(
            out,
            "\ndrained and deregistered (sbctl undrain <id> to return): {}",
            gone.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}
