//! Controller configuration: defaults < YAML file < `SWITCHBACK_*` environment < flags.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Deserialize;
pub use switchback_common::config::ConfigError;
use switchback_common::{config::invalid, env, etcd_config::RawEtcd};

#[derive(Debug, Parser)]
#[command(
    name = "switchback-controller",
    version,
    about = "Keeps the Switchback cluster view"
)]
pub struct Args {
    /// YAML config file.
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    /// Unique controller id (default: hostname + random suffix).
    #[arg(long, env = env::CONTROLLER_ID)]
    pub id: Option<String>,
    /// gRPC listen address.
    #[arg(long, env = env::LISTEN)]
    pub listen: Option<SocketAddr>,
    /// host:port that workers and routers use to reach this controller.
    #[arg(long, env = env::ADVERTISE)]
    pub advertise: Option<String>,
    /// Comma-separated etcd endpoints.
    #[arg(long, env = env::ETCD_ENDPOINTS, value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Key prefix of this cluster in etcd.
    #[arg(long, env = env::ETCD_PREFIX)]
    pub etcd_prefix: Option<String>,
    /// HTTP listen address for /metrics and /healthz.
    #[arg(long, env = env::METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub id: Option<String>,
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub etcd: Option<RawEtcd>,
    /// A worker whose last load report is older than this is shown as stale.
    pub stale_after_ms: Option<u64>,
    /// HTTP listen address for /metrics and /healthz.
    pub metrics_listen: Option<SocketAddr>,
    /// Cluster identity for gRPC (mutual TLS); absent: plaintext.
    pub tls: Option<switchback_common::tls::RawClusterTls>,
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub id: String,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub etcd: switchback_common::etcd::EtcdAccess,
    /// The gRPC server's identity and the client identity towards the leader (standbys).
    pub tls: Option<switchback_common::tls::ClusterTlsFiles>,
    pub etcd_prefix: String,
    pub lease_ttl_s: i64,
    pub stale_after: Duration,
    pub metrics_listen: SocketAddr,
}

impl RawConfig {
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        switchback_common::config::from_yaml(text)
    }

    pub fn overlay(mut self, args: Args) -> Self {
        if args.id.is_some() {
            self.id = args.id;
        }
        if args.listen.is_some() {
            self.listen = args.listen;
        }
        if args.advertise.is_some() {
            self.advertise = args.advertise;
        }
        if args.metrics_listen.is_some() {
            self.metrics_listen = args.metrics_listen;
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

    pub fn validate(self) -> Result<ControllerConfig, ConfigError> {
        let etcd = self.etcd.unwrap_or_default().validate()?;
        let tls = self
            .tls
            .map(|t| {
                let keys = switchback_common::tls::CLUSTER_KEYS;
                let files = t.validate(keys)?;
                files.expect_role(keys, &[switchback_common::tls::Role::Controller], None)?;
                Ok::<_, ConfigError>(files)
            })
            .transpose()?;
        let stale_after_ms = self.stale_after_ms.unwrap_or(2000);
        if !(100..=600_000).contains(&stale_after_ms) {
            return Err(invalid("stale_after_ms", "must be in 100..=600000"));
        }
        Ok(ControllerConfig {
            id: self.id.unwrap_or_else(|| {
                format!(
                    "controller-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )
            }),
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50050))),
            advertise: self.advertise,
            etcd: etcd.access,
            tls,
            etcd_prefix: etcd.prefix,
            lease_ttl_s: etcd.lease_ttl_s,
            stale_after: Duration::from_millis(stale_after_ms),
            metrics_listen: self
                .metrics_listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9090))),
        })
    }
}

pub fn load(args: Args) -> Result<ControllerConfig, ConfigError> {
    let raw: RawConfig = switchback_common::config::read_yaml(args.config.as_deref())?;
    raw.overlay(args).validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quickstart_controller_config_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/local/config/controller.yaml");
        let text = std::fs::read_to_string(&path).expect("shipped config");
        RawConfig::from_yaml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c = RawConfig::from_yaml("")
            .expect("empty is fine")
            .validate()
            .expect("valid");
        assert_eq!(c.listen.port(), 50050);
        assert_eq!(c.stale_after, Duration::from_secs(2));
        let err = RawConfig::from_yaml("stale_after: 3").expect_err("typo");
        assert!(err.to_string().contains("stale_after"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = RawConfig::from_yaml("etcd: {lease_ttl_s: 0}")
            .expect("yaml")
            .validate()
            .expect_err("ttl 0");
        assert!(err.to_string().contains("etcd.lease_ttl_s"), "{err}");
    }

    #[test]
    fn tls_and_etcd_security_keys_are_checked() {
        let err = RawConfig::from_yaml("tls: {ca_fle: /x}").expect_err("typo");
        assert!(err.to_string().contains("ca_fle"), "{err}");
        for (yaml, field) in [
            ("tls: {cert_file: /nonexistent/c.pem}", "tls.ca_file"),
            (
                "tls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}",
                "tls.cert_file",
            ),
            ("etcd: {endpoints: [\"https://e:2379\"]}", "etcd.ca_file"),
            ("etcd: {username: u}", "etcd.password_file"),
        ] {
            let err = RawConfig::from_yaml(yaml)
                .expect("yaml")
                .validate()
                .expect_err(yaml);
            assert!(
                err.to_string().contains(&format!("`{field}`")),
                "{yaml}: {err}"
            );
        }
    }
}
