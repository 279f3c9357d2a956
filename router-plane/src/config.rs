//! Router configuration: defaults < YAML file < `SWITCHBACK_*` environment < flags.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Deserialize;
pub use switchback_common::config::ConfigError;
use switchback_common::{config::invalid, env, etcd_config::RawEtcd};

#[derive(Debug, Parser)]
#[command(
    name = "switchback-router",
    version,
    about = "OpenAI-compatible front door of a Switchback cluster"
)]
pub struct Args {
    /// YAML config file.
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    /// HTTP listen address (default 0.0.0.0:8080).
    #[arg(long, env = env::LISTEN)]
    pub listen: Option<SocketAddr>,
    /// Comma-separated etcd endpoints.
    #[arg(long, env = env::ETCD_ENDPOINTS, value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Key prefix of this cluster in etcd.
    #[arg(long, env = env::ETCD_PREFIX)]
    pub etcd_prefix: Option<String>,
    /// Controller gRPC address; default: the elected leader found in etcd.
    #[arg(long, env = env::CONTROLLER)]
    pub controller: Option<String>,
    /// Tier that `model: "auto"` uses.
    #[arg(long, env = env::DEFAULT_TIER)]
    pub default_tier: Option<String>,
    /// The all-MiniLM-L6-v2 directory; overrides `difficulty.minilm_dir` (used only with
    /// a `difficulty:` section).
    #[arg(long, env = env::MINILM_DIR)]
    pub minilm_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<SocketAddr>,
    /// The shared `etcd:` section, less `lease_ttl_s`: the router holds no lease.
    #[serde(
        default,
        deserialize_with = "switchback_common::etcd_config::without_lease"
    )]
    pub etcd: Option<RawEtcd>,
    pub controller: Option<String>,
    /// Tier names in rising cost. Requests naming one get 503 (not 404) while it has no
    /// workers.
    pub tiers: Option<Vec<String>>,
    pub default_tier: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_tokens_limit: Option<u32>,
    pub max_messages: Option<usize>,
    pub request_timeout_s: Option<u64>,
    /// Workers tried per request before giving up (failures before the first token).
    pub max_attempts: Option<u32>,
    /// An attempt that has not produced its first token by then moves to another worker.
    pub first_token_timeout_s: Option<u64>,
    /// How long a request may wait in the router for a slot when its tier is saturated.
    pub admission_wait_ms: Option<u64>,
    /// Requests that may wait for a slot at once; beyond it the router answers 429 at once.
    pub max_pending: Option<usize>,
    /// How long a worker this router could not reach stays out of its routing set.
    pub suspect_hold_ms: Option<u64>,
    /// Difficulty routing for `model: "auto"`; without it, `auto` means `default_tier`.
    pub difficulty: Option<RawDifficulty>,
    /// The routing policy while etcd holds none under `<prefix>/policy`.
    pub policy: Option<crate::policy::Policy>,
    /// Cluster identity for gRPC to workers and the controller (mutual TLS).
    pub tls: Option<switchback_common::tls::RawClusterTls>,
    /// TLS on the HTTP API listener (server certificate only); absent: plain HTTP.
    pub http_tls: Option<switchback_common::tls::RawServerTls>,
    /// API keys (`keys_file`) or an explicit `disabled: true`; one of them is required.
    pub auth: Option<RawAuth>,
    /// The prompt size the router accepts, in estimated tokens (UTF-8 bytes / 4).
    pub max_prompt_tokens: Option<u32>,
    /// The longest content of one chat message, in UTF-8 bytes.
    pub max_message_bytes: Option<usize>,
    /// How many `stop` sequences a request may give.
    pub max_stop_sequences: Option<usize>,
    /// The longest `stop` sequence, in UTF-8 bytes.
    pub max_stop_bytes: Option<usize>,
    /// The most alternatives per token a chat request may ask for (`top_logprobs`).
    pub max_top_logprobs: Option<u32>,
    /// The HTTP listener's bounds: connection cap, header, body, idle and write timeouts.
    pub http: Option<switchback_common::http_serve::RawHttp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// The API keys file (YAML; `switchback-router keygen` prints entries for it).
    pub keys_file: Option<PathBuf>,
    /// `true` serves `/v1/*` without keys: an explicit choice, logged loudly at start.
    pub disabled: Option<bool>,
}

/// Whether and how the router checks API keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// Bearer tokens checked against the keys file, reloaded when it changes.
    Keys(PathBuf),
    /// No checks (`auth.disabled: true`).
    Disabled,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDifficulty {
    /// The predictor artifact (`switchback-lab train` writes it).
    pub predictor: PathBuf,
    /// The all-MiniLM-L6-v2 directory, for artifacts with MiniLM features.
    pub minilm_dir: Option<PathBuf>,
    /// The distilled table; default: static-table.bin in `minilm_dir`.
    pub table: Option<PathBuf>,
    /// Quality target of requests that set none; default: the artifact's.
    pub default_quality: Option<f64>,
}

/// Difficulty routing settings, checked.
#[derive(Debug, Clone)]
pub struct DifficultyConfig {
    pub predictor: PathBuf,
    pub minilm_dir: Option<PathBuf>,
    pub table: Option<PathBuf>,
    pub default_quality: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    pub etcd: switchback_common::etcd::EtcdAccess,
    /// Client identity towards workers and the controller.
    pub tls: Option<switchback_common::tls::ClusterTlsFiles>,
    /// The HTTP API's server certificate.
    pub http_tls: Option<switchback_common::tls::ServerTlsFiles>,
    pub etcd_prefix: String,
    pub controller: Option<String>,
    pub tiers: Vec<String>,
    pub default_tier: String,
    pub max_body_bytes: usize,
    pub max_tokens_limit: u32,
    pub max_messages: usize,
    pub request_timeout: Duration,
    pub max_attempts: u32,
    pub first_token_timeout: Duration,
    pub admission_wait: Duration,
    pub max_pending: usize,
    pub suspect_hold: Duration,
    pub difficulty: Option<DifficultyConfig>,
    pub policy: crate::policy::Policy,
    pub auth: AuthConfig,
    pub max_prompt_tokens: u32,
    pub max_message_bytes: usize,
    pub max_stop_sequences: usize,
    pub max_stop_bytes: usize,
    pub max_top_logprobs: u32,
    pub http: switchback_common::http_serve::HttpLimits,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
}

impl RouterConfig {
    /// The request limits the API validates against.
    pub fn limits(&self) -> crate::generation::RequestLimits {
        crate::generation::RequestLimits {
            max_tokens_limit: self.max_tokens_limit,
            max_messages: self.max_messages,
            max_prompt_tokens: self.max_prompt_tokens,
            max_message_bytes: self.max_message_bytes,
            max_stop_sequences: self.max_stop_sequences,
            max_stop_bytes: self.max_stop_bytes,
            max_top_logprobs: self.max_top_logprobs,
            max_deadline_ms: u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

fn auth(raw: Option<RawAuth>) -> Result<AuthConfig, ConfigError> {
    const HOW: &str = "set `auth.keys_file` to an API keys file (`switchback-router keygen` makes entries), or `auth.disabled: true` to serve without keys";
    let raw = raw.ok_or_else(|| invalid("auth", format!("is required: {HOW}")))?;
    match (raw.keys_file, raw.disabled) {
        (Some(_), Some(true)) => Err(invalid(
            "auth",
            "set either `auth.keys_file` or `auth.disabled: true`, not both",
        )),
        (Some(path), _) => Ok(AuthConfig::Keys(path)),
        (None, Some(true)) => Ok(AuthConfig::Disabled),
        (None, _) => Err(invalid("auth.keys_file", format!("is required: {HOW}"))),
    }
}

impl RawConfig {
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        switchback_common::config::from_yaml(text)
    }

    pub fn overlay(mut self, args: Args) -> Self {
        if args.listen.is_some() {
            self.listen = args.listen;
        }
        if args.controller.is_some() {
            self.controller = args.controller;
        }
        if args.default_tier.is_some() {
            self.default_tier = args.default_tier;
        }
        if let (Some(dir), Some(difficulty)) = (args.minilm_dir, &mut self.difficulty) {
            difficulty.minilm_dir = Some(dir);
        }
        let etcd = self.etcd.get_or_insert_with(RawEtcd::default);
        if args.etcd_endpoints.is_some() {
            etcd.endpoints = args.etcd_endpoints;
        }
        if args.etcd_prefix.is_some() {
            etcd.prefix = args.etcd_prefix;
        }
        self
    }

    pub fn validate(self) -> Result<RouterConfig, ConfigError> {
        let etcd = self.etcd.unwrap_or_default().validate()?;
        let tls = self
            .tls
            .map(|t| {
                let keys = switchback_common::tls::CLUSTER_KEYS;
                let files = t.validate(keys)?;
                files.expect_role(keys, &[switchback_common::tls::Role::Router], None)?;
                Ok::<_, ConfigError>(files)
            })
            .transpose()?;
        let http_tls = self
            .http_tls
            .map(|t| {
                t.validate(switchback_common::tls::Keys {
                    ca_file: "http_tls.ca_file",
                    cert_file: "http_tls.cert_file",
                    key_file: "http_tls.key_file",
                    server_name: "http_tls.server_name",
                })
            })
            .transpose()?;
        let tiers = self
            .tiers
            .unwrap_or_else(|| vec!["small".to_owned(), "large".to_owned()]);
        if tiers.is_empty() {
            return Err(invalid("tiers", "list at least one tier"));
        }
        let default_tier = self.default_tier.unwrap_or_else(|| tiers[0].clone());
        if !tiers.contains(&default_tier) {
            return Err(invalid(
                "default_tier",
                format!("{default_tier:?} is not one of `tiers` {tiers:?}"),
            ));
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(4 * 1024 * 1024);
        if max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        let max_tokens_limit = self.max_tokens_limit.unwrap_or(4096);
        if max_tokens_limit == 0 {
            return Err(invalid("max_tokens_limit", "must be at least 1"));
        }
        let request_timeout_s = self.request_timeout_s.unwrap_or(600);
        if request_timeout_s == 0 {
            return Err(invalid("request_timeout_s", "must be at least 1"));
        }
        let max_attempts = self.max_attempts.unwrap_or(3);
        if !(1..=10).contains(&max_attempts) {
            return Err(invalid("max_attempts", "must be in 1..=10"));
        }
        let first_token_timeout_s = self.first_token_timeout_s.unwrap_or(60);
        if first_token_timeout_s == 0 {
            return Err(invalid("first_token_timeout_s", "must be at least 1"));
        }
        let admission_wait_ms = self.admission_wait_ms.unwrap_or(1000);
        if admission_wait_ms > request_timeout_s * 1000 {
            return Err(invalid(
                "admission_wait_ms",
                "must not be longer than request_timeout_s",
            ));
        }
        let suspect_hold_ms = self.suspect_hold_ms.unwrap_or(5000);
        if !(100..=600_000).contains(&suspect_hold_ms) {
            return Err(invalid("suspect_hold_ms", "must be in 100..=600000"));
        }
        let max_messages = self.max_messages.unwrap_or(1024);
        if max_messages == 0 {
            return Err(invalid("max_messages", "must be at least 1"));
        }
        let max_prompt_tokens = self.max_prompt_tokens.unwrap_or(32_768);
        if max_prompt_tokens == 0 {
            return Err(invalid("max_prompt_tokens", "must be at least 1"));
        }
        let max_message_bytes = self.max_message_bytes.unwrap_or(max_body_bytes);
        if max_message_bytes == 0 {
            return Err(invalid("max_message_bytes", "must be at least 1"));
        }
        let max_stop_sequences = self.max_stop_sequences.unwrap_or(4);
        if max_stop_sequences > 16 {
            return Err(invalid("max_stop_sequences", "must be in 0..=16"));
        }
        let max_stop_bytes = self.max_stop_bytes.unwrap_or(256);
        if !(1..=4096).contains(&max_stop_bytes) {
            return Err(invalid("max_stop_bytes", "must be in 1..=4096"));
        }
        let max_top_logprobs = self.max_top_logprobs.unwrap_or(20);
        if max_top_logprobs > 20 {
            return Err(invalid(
                "max_top_logprobs",
                "must be in 0..=20 (OpenAI's own bound)",
            ));
        }
        let (http, body_timeout) = self.http.unwrap_or_default().validate()?;
        let auth = auth(self.auth)?;
        let policy = self.policy.unwrap_or_default();
        policy
            .check()
            .map_err(|reason| invalid("policy", reason.to_string()))?;
        Ok(RouterConfig {
            policy,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            etcd: etcd.access,
            tls,
            http_tls,
            etcd_prefix: etcd.prefix,
            controller: self.controller,
            tiers,
            default_tier,
            max_body_bytes,
            max_tokens_limit,
            max_messages,
            auth,
            max_prompt_tokens,
            max_message_bytes,
            max_stop_sequences,
            max_stop_bytes,
            max_top_logprobs,
            http,
            body_timeout,
            request_timeout: Duration::from_secs(request_timeout_s),
            max_attempts,
            first_token_timeout: Duration::from_secs(first_token_timeout_s),
            admission_wait: Duration::from_millis(admission_wait_ms),
            max_pending: self.max_pending.unwrap_or(1024),
            suspect_hold: Duration::from_millis(suspect_hold_ms),
            difficulty: match self.difficulty {
                None => None,
                Some(d) => {
                    if d.default_quality.is_some_and(|q| !(0.0..=1.0).contains(&q)) {
                        return Err(invalid("difficulty.default_quality", "must be in [0, 1]"));
                    }
                    Some(DifficultyConfig {
                        predictor: d.predictor,
                        minilm_dir: d.minilm_dir,
                        table: d.table,
                        default_quality: d.default_quality,
                    })
                }
            },
        })
    }
}

pub fn load(args: Args) -> Result<RouterConfig, ConfigError> {
    let raw: RawConfig = switchback_common::config::read_yaml(args.config.as_deref())?;
    raw.overlay(args).validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> RawConfig {
        RawConfig::from_yaml("auth: {disabled: true}").expect("yaml")
    }

    /// The quickstart's router configs, as shipped: every key known, every value valid.
    fn shipped(name: &str) -> RouterConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/local/config")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("shipped config");
        RawConfig::from_yaml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_shipped_router_configs_load() {
        let chat = shipped("router.yaml");
        assert_eq!(chat.tiers, ["small", "medium", "large"]);
        assert_eq!(chat.first_token_timeout, Duration::from_secs(60));
        // Every tier the shipped predictor scores is one of the router's (a head for an
        // unknown tier would silently fall back to the default tier).
        let predictor = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(
                &chat
                    .difficulty
                    .as_ref()
                    .expect("difficulty routing")
                    .predictor,
            );
        let artifact: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&predictor).expect("predictor"))
                .expect("predictor JSON");
        for head in artifact["heads"].as_array().expect("heads") {
            let tier = head["tier"].as_str().expect("tier");
            assert!(
                chat.tiers.iter().any(|t| t == tier),
                "{tier} not in {:?}",
                chat.tiers
            );
        }
        // The batch router shares the cluster and waits for slow CPU prefills.
        let batch = shipped("router-label.yaml");
        assert_eq!(batch.tiers, chat.tiers);
        assert_ne!(batch.listen, chat.listen);
        // Both serve without keys, so only this machine may reach them.
        assert!(chat.listen.ip().is_loopback(), "{}", chat.listen);
        assert!(batch.listen.ip().is_loopback(), "{}", batch.listen);
        assert_eq!(batch.first_token_timeout, Duration::from_secs(600));
        assert!(batch.request_timeout >= batch.first_token_timeout);
    }

    #[test]
    fn defaults_listen_on_8080_with_small_as_auto() {
        let c = open().validate().expect("valid");
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.default_tier, "small");
        assert_eq!(c.auth, AuthConfig::Disabled);
        let limits = c.limits();
        assert_eq!(limits.max_stop_sequences, 4);
        assert_eq!(limits.max_deadline_ms, 600_000);
    }

    #[test]
    fn auth_must_be_chosen_explicitly() {
        for yaml in ["{}", "auth: {}", "auth: {disabled: false}"] {
            let err = RawConfig::from_yaml(yaml)
                .expect("yaml")
                .validate()
                .expect_err("no auth choice");
            let text = err.to_string();
            assert!(text.contains("`auth"), "{yaml}: {text}");
            assert!(
                text.contains("keys_file") && text.contains("disabled: true"),
                "{text}"
            );
        }
        let err = RawConfig::from_yaml("auth: {disabled: true, keys_file: k.yaml}")
            .expect("yaml")
            .validate()
            .expect_err("both");
        assert!(err.to_string().contains("`auth`"), "{err}");
        let c = RawConfig::from_yaml("auth: {keys_file: /etc/keys.yaml}")
            .expect("yaml")
            .validate()
            .expect("keys");
        assert_eq!(c.auth, AuthConfig::Keys("/etc/keys.yaml".into()));
        let err = RawConfig::from_yaml("auth: {keys_flie: k}").expect_err("typo");
        assert!(err.to_string().contains("keys_flie"), "{err}");
    }

    #[test]
    fn limits_are_checked_and_named() {
        for (yaml, key) in [
            ("max_prompt_tokens: 0", "max_prompt_tokens"),
            ("max_message_bytes: 0", "max_message_bytes"),
            ("max_stop_sequences: 17", "max_stop_sequences"),
            ("max_stop_bytes: 0", "max_stop_bytes"),
            ("max_top_logprobs: 21", "max_top_logprobs"),
            ("max_messages: 0", "max_messages"),
        ] {
            let err = RawConfig::from_yaml(&format!("auth: {{disabled: true}}\n{yaml}"))
                .expect("yaml")
                .validate()
                .expect_err(yaml);
            assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let err = RawConfig::from_yaml("default_teir: small").expect_err("typo");
        assert!(err.to_string().contains("default_teir"), "{err}");
        let err = RawConfig::from_yaml("auth: {disabled: true}\ntiers: [a, b]\ndefault_tier: c")
            .expect("yaml")
            .validate()
            .expect_err("unknown tier");
        assert!(err.to_string().contains("`default_tier`"), "{err}");
    }
}
