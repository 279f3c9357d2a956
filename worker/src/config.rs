//! Worker configuration: defaults < YAML file < `SWITCHBACK_*` environment < flags.
//!
//! The YAML is read into [`RawConfig`] (every key optional, unknown keys rejected), the
//! environment and flags are laid over it, and [`RawConfig::validate`] turns the result
//! into the [`WorkerConfig`] the rest of the crate uses.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Deserialize;
pub use switchback_common::config::ConfigError;
use switchback_common::{config::invalid, env, etcd_config::RawEtcd};

/// Command-line flags; each also reads its `SWITCHBACK_*` variable.
#[derive(Debug, Parser)]
#[command(
    name = "switchback-worker",
    version,
    about = "Serves one model to the Switchback cluster"
)]
pub struct Args {
    /// YAML config file.
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    /// Unique worker id (default: <node>-<random>).
    #[arg(long, env = env::WORKER_ID)]
    pub id: Option<String>,
    /// Tier this worker serves, e.g. `small`.
    #[arg(long, env = env::TIER)]
    pub tier: Option<String>,
    /// Model id clients may name.
    #[arg(long, env = env::MODEL)]
    pub model: Option<String>,
    /// gRPC listen address.
    #[arg(long, env = env::LISTEN)]
    pub listen: Option<SocketAddr>,
    /// host:port other processes use to reach this worker.
    #[arg(long, env = env::ADVERTISE)]
    pub advertise: Option<String>,
    /// Node (machine) name shown in the cluster view.
    #[arg(long, env = env::NODE)]
    pub node: Option<String>,
    /// Comma-separated etcd endpoints.
    #[arg(long, env = env::ETCD_ENDPOINTS, value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Key prefix of this cluster in etcd.
    #[arg(long, env = env::ETCD_PREFIX)]
    pub etcd_prefix: Option<String>,
    /// Controller gRPC address; default: the elected leader found in etcd.
    #[arg(long, env = env::CONTROLLER)]
    pub controller: Option<String>,
    /// GGUF file for the `mistralrs` engine.
    #[arg(long, env = env::MODEL_PATH)]
    pub model_path: Option<PathBuf>,
    /// HTTP listen address for /metrics and /healthz (default: off).
    #[arg(long, env = env::METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,
}

/// The YAML file, every key optional. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub id: Option<String>,
    pub tier: Option<String>,
    pub model: Option<String>,
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub node: Option<String>,
    pub engine: Option<RawEngine>,
    pub max_concurrency: Option<u32>,
    pub max_queue: Option<u32>,
    /// Seconds a caller may leave the answer unread before its generation is cancelled and
    /// its slot freed (default 10).
    pub stalled_caller_s: Option<u64>,
    pub default_max_tokens: Option<u32>,
    pub max_tokens_limit: Option<u32>,
    pub cost: Option<RawCost>,
    pub etcd: Option<RawEtcd>,
    pub controller: Option<String>,
    pub load_report_interval_ms: Option<u64>,
    pub shutdown_grace_s: Option<u64>,
    /// HTTP listen address for /metrics and /healthz; off unless set (several workers
    /// often share a host, so there is no fixed default port).
    pub metrics_listen: Option<SocketAddr>,
    /// Cluster identity for gRPC (mutual TLS); absent: plaintext.
    pub tls: Option<switchback_common::tls::RawClusterTls>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawEngine {
    Mistralrs {
        /// Path of the GGUF file; tokenizer and chat template come from its metadata.
        model_path: Option<PathBuf>,
        /// `cpu` (default) or `cuda` / `cuda:N`.
        device: Option<String>,
        /// Activation dtype: `f32`, `f16`, `bf16` or `auto` (default: `f32` on CPU,
        /// `auto` on CUDA).
        dtype: Option<String>,
    },
    Sim {
        prefill_ms_per_token: Option<f64>,
        decode_ms_per_token: Option<f64>,
        /// Tokens generated when the request sets no `max_tokens`.
        default_tokens: Option<u32>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: String,
    pub tier: String,
    pub model: String,
    pub listen: SocketAddr,
    /// `None`: derive from the bound listener.
    pub advertise: Option<String>,
    pub node: String,
    pub engine: EngineConfig,
    pub max_concurrency: u32,
    pub max_queue: u32,
    pub stalled_caller: Duration,
    pub default_max_tokens: u32,
    pub max_tokens_limit: u32,
    pub cost_per_mtok_input: f64,
    pub cost_per_mtok_output: f64,
    pub etcd: switchback_common::etcd::EtcdAccess,
    /// The gRPC server's identity and the client identity towards the controller.
    pub tls: Option<switchback_common::tls::ClusterTlsFiles>,
    pub etcd_prefix: String,
    pub lease_ttl_s: i64,
    pub controller: Option<String>,
    pub load_report_interval: Duration,
    pub shutdown_grace: Duration,
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum EngineConfig {
    Mistralrs {
        model_path: PathBuf,
        device: Device,
        dtype: Dtype,
    },
    Sim(SimConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Auto,
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub prefill_ms_per_token: f64,
    pub decode_ms_per_token: f64,
    pub default_tokens: u32,
}

impl RawConfig {
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        switchback_common::config::from_yaml(text)
    }

    /// Lays flags (and the environment, which clap folded into them) over the file.
    pub fn overlay(mut self, args: Args) -> Self {
        macro_rules! set {
            ($($field:ident),*) => { $( if args.$field.is_some() { self.$field = args.$field; } )* };
        }
        set!(
            id,
            tier,
            model,
            listen,
            advertise,
            node,
            controller,
            metrics_listen
        );
        if args.etcd_endpoints.is_some() || args.etcd_prefix.is_some() {
            let etcd = self.etcd.get_or_insert_with(RawEtcd::default);
            if args.etcd_endpoints.is_some() {
                etcd.endpoints = args.etcd_endpoints;
            }
            if args.etcd_prefix.is_some() {
                etcd.prefix = args.etcd_prefix;
            }
        }
        if let Some(path) = args.model_path {
            match &mut self.engine {
                Some(RawEngine::Mistralrs { model_path, .. }) => *model_path = Some(path),
                _ => {
                    self.engine = Some(RawEngine::Mistralrs {
                        model_path: Some(path),
                        device: None,
                        dtype: None,
                    })
                }
            }
        }
        self
    }

    pub fn validate(self) -> Result<WorkerConfig, ConfigError> {
        let tier = required(self.tier, "tier")?;
        let model = required(self.model, "model")?;
        check_name("tier", &tier)?;
        let node = match self.node {
            Some(node) => node,
            None => hostname(),
        };
        let id = match self.id {
            Some(id) => id,
            None => format!("{node}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        check_name("id", &id)?;

        let engine = match self.engine {
            None => {
                return Err(invalid(
                    "engine",
                    "missing: set `engine.kind` to `mistralrs` or `sim`",
                ));
            }
            Some(RawEngine::Mistralrs {
                model_path,
                device,
                dtype,
            }) => {
                let model_path = model_path.ok_or_else(|| {
                    invalid("engine.model_path", "missing: the GGUF file to serve")
                })?;
                let device = parse_device(device.as_deref().unwrap_or("cpu"))?;
                let dtype = match dtype.as_deref() {
                    None if device == Device::Cpu => Dtype::F32,
                    None | Some("auto") => Dtype::Auto,
                    Some("f32") => Dtype::F32,
                    Some("f16") => Dtype::F16,
                    Some("bf16") => Dtype::Bf16,
                    Some(other) => {
                        return Err(invalid(
                            "engine.dtype",
                            format!("{other:?} is not one of auto, f32, f16, bf16"),
                        ));
                    }
                };
                EngineConfig::Mistralrs {
                    model_path,
                    device,
                    dtype,
                }
            }
            Some(RawEngine::Sim {
                prefill_ms_per_token,
                decode_ms_per_token,
                default_tokens,
            }) => {
                let sim = SimConfig {
                    prefill_ms_per_token: prefill_ms_per_token.unwrap_or(0.5),
                    decode_ms_per_token: decode_ms_per_token.unwrap_or(10.0),
                    default_tokens: default_tokens.unwrap_or(32),
                };
                for (field, v) in [
                    ("engine.prefill_ms_per_token", sim.prefill_ms_per_token),
                    ("engine.decode_ms_per_token", sim.decode_ms_per_token),
                ] {
                    if !(0.0..=60_000.0).contains(&v) {
                        return Err(invalid(field, format!("{v} is outside 0..=60000")));
                    }
                }
                EngineConfig::Sim(sim)
            }
        };

        let max_concurrency = self.max_concurrency.unwrap_or(4);
        if max_concurrency == 0 {
            return Err(invalid("max_concurrency", "must be at least 1"));
        }
        let stalled_caller_s = self.stalled_caller_s.unwrap_or(10);
        if !(1..=3600).contains(&stalled_caller_s) {
            return Err(invalid("stalled_caller_s", "must be in 1..=3600"));
        }
        let stalled_caller = Duration::from_secs(stalled_caller_s);
        let max_tokens_limit = self.max_tokens_limit.unwrap_or(4096);
        let default_max_tokens = self.default_max_tokens.unwrap_or(256);
        if default_max_tokens == 0 || default_max_tokens > max_tokens_limit {
            return Err(invalid(
                "default_max_tokens",
                format!("must be in 1..={max_tokens_limit} (max_tokens_limit)"),
            ));
        }
        let cost = self.cost.unwrap_or_default();
        let cost_per_mtok_input = cost.input_per_mtok.unwrap_or(0.0);
        let cost_per_mtok_output = cost.output_per_mtok.unwrap_or(0.0);
        if !(cost_per_mtok_input >= 0.0 && cost_per_mtok_output >= 0.0) {
            return Err(invalid("cost", "costs must be non-negative numbers"));
        }
        let etcd = self.etcd.unwrap_or_default().validate()?;
        let tls = self
            .tls
            .map(|t| {
                let keys = switchback_common::tls::CLUSTER_KEYS;
                let files = t.validate(keys)?;
                files.expect_role(keys, &[switchback_common::tls::Role::Worker], Some(&id))?;
                Ok::<_, ConfigError>(files)
            })
            .transpose()?;
        let load_report_interval_ms = self.load_report_interval_ms.unwrap_or(250);
        if !(10..=10_000).contains(&load_report_interval_ms) {
            return Err(invalid("load_report_interval_ms", "must be in 10..=10000"));
        }
        Ok(WorkerConfig {
            id,
            tier,
            model,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051))),
            advertise: self.advertise,
            node,
            engine,
            max_concurrency,
            max_queue: self.max_queue.unwrap_or(64),
            stalled_caller,
            default_max_tokens,
            max_tokens_limit,
            cost_per_mtok_input,
            cost_per_mtok_output,
            etcd: etcd.access,
            tls,
            etcd_prefix: etcd.prefix,
            lease_ttl_s: etcd.lease_ttl_s,
            controller: self.controller,
            load_report_interval: Duration::from_millis(load_report_interval_ms),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_s.unwrap_or(30)),
            metrics_listen: self.metrics_listen,
        })
    }
}

/// Reads the file named by `--config` (if any), overlays flags and environment, validates.
pub fn load(args: Args) -> Result<WorkerConfig, ConfigError> {
    let raw: RawConfig = switchback_common::config::read_yaml(args.config.as_deref())?;
    raw.overlay(args).validate()
}

fn required(value: Option<String>, field: &'static str) -> Result<String, ConfigError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid(field, "missing"))
}

/// Names end up in etcd keys and metric labels: keep them to a safe alphabet.
fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if switchback_common::config::is_valid_name(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} must be 1-128 characters of [A-Za-z0-9._-]"),
        ))
    }
}

fn parse_device(text: &str) -> Result<Device, ConfigError> {
    match text {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                invalid(
                    "engine.device",
                    format!("{other:?} is not `cpu`, `cuda` or `cuda:N`"),
                )
            }),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WorkerConfig, String> {
        RawConfig::from_yaml(yaml)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_quickstart_worker_configs_load() {
        let shipped = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/local/config")
                .join(name);
            let text = std::fs::read_to_string(&path).expect("shipped config");
            parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let ladder: Vec<WorkerConfig> = ["small", "medium", "large"]
            .into_iter()
            .map(|t| shipped(&format!("worker-{t}.yaml")))
            .collect();
        assert_eq!(
            ladder.iter().map(|c| c.tier.as_str()).collect::<Vec<_>>(),
            ["small", "medium", "large"]
        );
        for (i, c) in ladder.iter().enumerate() {
            assert!(matches!(c.engine, EngineConfig::Mistralrs { .. }));
            // All run on one machine: no port in common.
            for other in &ladder[i + 1..] {
                assert_ne!(c.listen, other.listen);
                assert_ne!(c.metrics_listen, other.metrics_listen);
            }
        }
        // Each tier up costs more, per input and per output token.
        for pair in ladder.windows(2) {
            assert!(pair[0].cost_per_mtok_input < pair[1].cost_per_mtok_input);
            assert!(pair[0].cost_per_mtok_output < pair[1].cost_per_mtok_output);
        }
    }

    #[test]
    fn minimal_sim_config_gets_defaults() {
        let c = parse("tier: small\nmodel: m\nengine: {kind: sim}\n").expect("valid");
        assert_eq!(c.tier, "small");
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.lease_ttl_s, 5);
        assert_eq!(c.etcd_prefix, "/switchback/v1/");
        assert!(matches!(c.engine, EngineConfig::Sim(_)));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse("tier: small\nmodel: m\nengine: {kind: sim}\nmax_concurency: 3\n")
            .expect_err("typo must fail");
        assert!(err.contains("max_concurency"), "{err}");
        let err = parse("tier: s\nmodel: m\nengine: {kind: sim, decode_ms: 3}\n")
            .expect_err("typo must fail");
        assert!(err.contains("decode_ms"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        for (yaml, field) in [
            ("model: m\nengine: {kind: sim}", "`tier`"),
            ("tier: s\nmodel: m", "`engine`"),
            (
                "tier: s\nmodel: m\nengine: {kind: mistralrs}",
                "`engine.model_path`",
            ),
            (
                "tier: s\nmodel: m\nengine: {kind: mistralrs, model_path: x, device: tpu}",
                "`engine.device`",
            ),
            (
                "tier: s\nmodel: m\nengine: {kind: sim}\nmax_concurrency: 0",
                "`max_concurrency`",
            ),
            ("tier: 'a b'\nmodel: m\nengine: {kind: sim}", "`tier`"),
            (
                "tier: s\nmodel: m\nengine: {kind: sim}\netcd: {lease_ttl_s: 1}",
                "`etcd.lease_ttl_s`",
            ),
        ] {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.contains(field), "{yaml}: {err}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let raw =
            RawConfig::from_yaml("tier: small\nmodel: m\nengine: {kind: sim}\n").expect("yaml");
        let args = Args::parse_from([
            "w",
            "--tier",
            "large",
            "--etcd-endpoints",
            "http://a:1,http://b:2",
        ]);
        let c = raw.overlay(args).validate().expect("valid");
        assert_eq!(c.tier, "large");
        assert_eq!(c.etcd.endpoints, vec!["http://a:1", "http://b:2"]);
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu").expect("cpu"), Device::Cpu);
        assert_eq!(parse_device("cuda:1").expect("cuda:1"), Device::Cuda(1));
        assert!(parse_device("cuda:x").is_err());
    }
}
