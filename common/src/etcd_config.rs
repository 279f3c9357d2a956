//! The `etcd:` config section every binary shares (worker, controller, router, and
//! `sbctl`'s flags): how to reach etcd, checked at start (endpoints well-formed; TLS and
//! authentication files named, readable and parseable), where the cluster's keys live,
//! and the TTL of this process's lease.

use std::path::PathBuf;

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeSeed, IntoDeserializer, MapAccess, Visitor, value::MapAccessDeserializer},
};

use crate::{
    config::{ConfigError, invalid},
    etcd::{EtcdAccess, EtcdTls, EtcdUser},
};

/// `etcd:`, as read: every key optional, unknown keys rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    /// TTL of this process's lease: the worker's registration, the controller's election
    /// campaign. The router holds none ([`without_lease`]).
    pub lease_ttl_s: Option<i64>,
    /// CA of etcd's server certificate; turns TLS to etcd on (endpoints must be https://).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd user (etcd auth); the password is read from `password_file`.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// The `etcd:` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    pub access: EtcdAccess,
    /// Key prefix of this cluster (default [`switchback_proto::keys::DEFAULT_PREFIX`]).
    pub prefix: String,
    /// In 2..=300, default 5.
    pub lease_ttl_s: i64,
}

/// The keys of `etcd:` but `lease_ttl_s`, as an unknown-key error lists them.
const LEASELESS_KEYS: &[&str] = &[
    "endpoints",
    "prefix",
    "ca_file",
    "cert_file",
    "key_file",
    "username",
    "password_file",
];

/// `#[serde(default, deserialize_with = "without_lease")]` for a process that holds no
/// etcd lease (the router): `etcd.lease_ttl_s` is an unknown key there. Each key is checked
/// as serde's own struct check does, inside the key's deserialization, so an unknown key
/// is refused with the same message, key path and position as a section without the
/// field would give.
pub fn without_lease<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RawEtcd>, D::Error> {
    Ok(Option::<Leaseless>::deserialize(d)?.map(|l| l.0))
}

/// [`RawEtcd`] read with [`LEASELESS_KEYS`] as its keys.
struct Leaseless(RawEtcd);

impl<'de> Deserialize<'de> for Leaseless {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("RawEtcd", LEASELESS_KEYS, LeaselessVisitor)
    }
}

struct LeaselessVisitor;

impl<'de> Visitor<'de> for LeaselessVisitor {
    type Value = Leaseless;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("struct RawEtcd")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Leaseless, A::Error> {
        RawEtcd::deserialize(MapAccessDeserializer::new(KnownKeys(map))).map(Leaseless)
    }
}

/// A map whose keys must be among [`LEASELESS_KEYS`]; values pass through untouched.
struct KnownKeys<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for KnownKeys<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.0.next_key_seed(KnownKey)? {
            None => Ok(None),
            Some(key) => seed
                .deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                .map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// Reads one key, refusing any outside [`LEASELESS_KEYS`].
struct KnownKey;

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KnownKey {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<&'static str, E> {
        LEASELESS_KEYS
            .iter()
            .find(|k| **k == key)
            .copied()
            .ok_or_else(|| E::unknown_field(key, LEASELESS_KEYS))
    }
}

/// The etcd endpoints, defaulting to a local etcd. Each must read `[http[s]://]host:port`:
/// a typo is a clear error at startup, while an endpoint that is well-formed but down is
/// retried with backoff by whoever uses it.
pub fn etcd_endpoints(endpoints: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let endpoints = endpoints.unwrap_or_else(|| vec!["http://127.0.0.1:2379".to_owned()]);
    if endpoints.is_empty() {
        return Err(invalid("etcd.endpoints", "needs at least one endpoint"));
    }
    for e in &endpoints {
        check_endpoint(e).map_err(|why| invalid("etcd.endpoints", format!("`{e}`: {why}")))?;
    }
    Ok(endpoints)
}

impl RawEtcd {
    /// The whole section: [`RawEtcd::access`], the prefix, and the lease TTL.
    pub fn validate(self) -> Result<EtcdConfig, ConfigError> {
        let prefix = self
            .prefix
            .clone()
            .unwrap_or_else(|| switchback_proto::keys::DEFAULT_PREFIX.to_owned());
        let lease_ttl_s = self.lease_ttl_s.unwrap_or(5);
        let access = self.access()?;
        if !(2..=300).contains(&lease_ttl_s) {
            return Err(invalid(
                "etcd.lease_ttl_s",
                format!("{lease_ttl_s} is outside 2..=300"),
            ));
        }
        Ok(EtcdConfig {
            access,
            prefix,
            lease_ttl_s,
        })
    }

    /// How to reach etcd: [`etcd_endpoints`], plus TLS and authentication, checked now
    /// (files named, readable and parseable; `https://` endpoints exactly when TLS is on).
    pub fn access(self) -> Result<EtcdAccess, ConfigError> {
        let RawEtcd {
            endpoints,
            ca_file,
            cert_file,
            key_file,
            username,
            password_file,
            prefix: _,
            lease_ttl_s: _,
        } = self;
        let endpoints = etcd_endpoints(endpoints)?;
        let identity = match (cert_file, key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid("etcd.key_file", "required with etcd.cert_file"));
            }
            (None, Some(_)) => {
                return Err(invalid("etcd.cert_file", "required with etcd.key_file"));
            }
        };
        let tls = match (ca_file, identity) {
            (Some(ca_file), identity) => Some(EtcdTls { ca_file, identity }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(
                    "etcd.ca_file",
                    "required with etcd.cert_file (the CA that signed etcd's certificate)",
                ));
            }
        };
        if let Some(tls) = &tls {
            let keys = crate::tls::Keys {
                ca_file: "etcd.ca_file",
                cert_file: "etcd.cert_file",
                key_file: "etcd.key_file",
                server_name: "etcd.server_name",
            };
            let identity = tls
                .identity
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path()));
            crate::tls::check_etcd_files(&tls.ca_file, identity, keys)?;
        }
        for e in &endpoints {
            match (&tls, e.starts_with("https://")) {
                (Some(_), false) => {
                    return Err(invalid(
                        "etcd.endpoints",
                        format!(
                            "`{e}`: TLS to etcd is on (etcd.ca_file), so endpoints must be https://"
                        ),
                    ));
                }
                (None, true) => {
                    return Err(invalid(
                        "etcd.ca_file",
                        format!("endpoint `{e}` is https://; name the CA of etcd's certificate"),
                    ));
                }
                _ => {}
            }
        }
        let user = match (username, password_file) {
            (Some(name), Some(password_file)) => {
                if name.is_empty() {
                    return Err(invalid("etcd.username", "must not be empty"));
                }
                let password = crate::fs::read_file(&password_file).map_err(|e| {
                    invalid(
                        "etcd.password_file",
                        format!("cannot read {}: {e}", password_file.display()),
                    )
                })?;
                if password.iter().all(u8::is_ascii_whitespace) {
                    return Err(invalid(
                        "etcd.password_file",
                        format!("{} is empty", password_file.display()),
                    ));
                }
                Some(EtcdUser {
                    name,
                    password_file,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid("etcd.password_file", "required with etcd.username"));
            }
            (None, Some(_)) => {
                return Err(invalid("etcd.username", "required with etcd.password_file"));
            }
        };
        Ok(EtcdAccess {
            endpoints,
            tls,
            user,
        })
    }
}

fn check_endpoint(e: &str) -> Result<(), &'static str> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e);
    if rest.contains("://") {
        return Err("the scheme must be http or https");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or("expected host:port, e.g. http://127.0.0.1:2379")?;
    if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err("the host is empty or not a host name");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("the port must be a number in 1..=65535"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn endpoints_default_and_reject_empty() {
        assert_eq!(
            etcd_endpoints(None).expect("default"),
            vec!["http://127.0.0.1:2379"]
        );
        assert!(etcd_endpoints(Some(vec![])).is_err());
        assert!(etcd_endpoints(Some(vec![" ".into()])).is_err());
        for good in [
            "http://etcd:2379",
            "https://10.0.0.1:2379/",
            "localhost:2379",
        ] {
            assert!(etcd_endpoints(Some(vec![good.into()])).is_ok(), "{good}");
        }
        for bad in [
            "http://etcd",
            "etcd:port",
            "grpc://etcd:2379",
            "http://:2379",
            "http://a b:1",
        ] {
            let err = etcd_endpoints(Some(vec![bad.into()])).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    fn security() -> RawEtcd {
        RawEtcd::default()
    }

    /// The access of `security` with `endpoints` laid over it.
    fn etcd_access(
        endpoints: Option<Vec<String>>,
        security: RawEtcd,
    ) -> Result<EtcdAccess, ConfigError> {
        RawEtcd {
            endpoints,
            ..security
        }
        .access()
    }

    #[test]
    fn the_section_defaults_and_checks_the_lease() {
        let c = RawEtcd::default().validate().expect("defaults");
        assert_eq!(c.access.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix, switchback_proto::keys::DEFAULT_PREFIX);
        assert_eq!(c.lease_ttl_s, 5);
        let err = RawEtcd {
            lease_ttl_s: Some(1),
            ..security()
        }
        .validate()
        .expect_err("ttl 1");
        assert_eq!(err.to_string(), "`etcd.lease_ttl_s`: 1 is outside 2..=300");
    }

    /// The router's section refuses `lease_ttl_s` with the error serde gives a section
    /// that lacks the key.
    #[test]
    fn without_a_lease_the_ttl_is_an_unknown_key() {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Leaseless {
            #[serde(default, deserialize_with = "without_lease")]
            etcd: Option<RawEtcd>,
        }
        /// The router's section as it was, before it was shared.
        #[allow(dead_code)]
        mod old {
            use std::path::PathBuf;

            use serde::Deserialize;

            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct RawEtcd {
                pub endpoints: Option<Vec<String>>,
                pub prefix: Option<String>,
                pub ca_file: Option<PathBuf>,
                pub cert_file: Option<PathBuf>,
                pub key_file: Option<PathBuf>,
                pub username: Option<String>,
                pub password_file: Option<PathBuf>,
            }

            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct Config {
                pub etcd: Option<RawEtcd>,
            }
        }
        for yaml in [
            "etcd: {prefix: /p/, lease_ttl_s: 5}",
            "etcd:\n  endpoints: [\"http://e:2379\"]\n  prfix: /p/\n",
            "etcd: 5",
            "etcd: {prefix: [1]}",
        ] {
            let now = serde_yaml::from_str::<Leaseless>(yaml).expect_err(yaml);
            let before = serde_yaml::from_str::<old::Config>(yaml).expect_err(yaml);
            assert_eq!(now.to_string(), before.to_string(), "{yaml}");
        }
        let ok = serde_yaml::from_str::<Leaseless>("etcd: {prefix: /p/}").expect("valid");
        assert_eq!(ok.etcd.and_then(|e| e.prefix).as_deref(), Some("/p/"));
        assert!(
            serde_yaml::from_str::<Leaseless>("{}")
                .expect("absent")
                .etcd
                .is_none()
        );
    }

    fn etcd_err(endpoint: &str, security: RawEtcd) -> String {
        etcd_access(Some(vec![endpoint.into()]), security)
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn etcd_security_keys_come_in_pairs_and_match_the_scheme() {
        let plain = etcd_access(None, security()).expect("plaintext default");
        assert!(plain.tls.is_none() && plain.user.is_none());
        let err = etcd_err("https://etcd:2379", security());
        assert!(err.contains("`etcd.ca_file`"), "{err}");
        let err = etcd_err(
            "https://etcd:2379",
            RawEtcd {
                cert_file: Some("c.pem".into()),
                ..security()
            },
        );
        assert!(err.contains("`etcd.key_file`"), "{err}");
        let err = etcd_err(
            "https://etcd:2379",
            RawEtcd {
                cert_file: Some("c.pem".into()),
                key_file: Some("k.pem".into()),
                ..security()
            },
        );
        assert!(err.contains("`etcd.ca_file`"), "{err}");
        let err = etcd_err(
            "http://etcd:2379",
            RawEtcd {
                username: Some("switchback".into()),
                ..security()
            },
        );
        assert!(err.contains("`etcd.password_file`"), "{err}");
        let err = etcd_err(
            "http://etcd:2379",
            RawEtcd {
                password_file: Some("p".into()),
                ..security()
            },
        );
        assert!(err.contains("`etcd.username`"), "{err}");
    }

    #[test]
    fn etcd_password_file_must_be_readable_and_not_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        let with = |path: &Path| RawEtcd {
            username: Some("switchback".into()),
            password_file: Some(path.to_owned()),
            ..security()
        };
        let err = etcd_err("http://etcd:2379", with(&file));
        assert!(
            err.contains("`etcd.password_file`") && err.contains("password"),
            "{err}"
        );
        std::fs::write(&file, "\n").expect("write");
        let err = etcd_err("http://etcd:2379", with(&file));
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&file, "s3cret\n").expect("write");
        let access =
            etcd_access(Some(vec!["http://etcd:2379".into()]), with(&file)).expect("valid");
        assert_eq!(access.user.map(|u| u.name).as_deref(), Some("switchback"));
    }

    #[test]
    fn etcd_tls_files_are_checked_and_need_https_endpoints() {
        use crate::tls::tests::{ca, leaf, write};
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca("etcd CA");
        let (cert, key) = leaf(&ca, "worker");
        let security = RawEtcd {
            ca_file: Some(write(dir.path(), "ca.pem", &ca.cert.pem())),
            cert_file: Some(write(dir.path(), "cert.pem", &cert)),
            key_file: Some(write(dir.path(), "key.pem", &key)),
            ..RawEtcd::default()
        };
        let access = etcd_access(
            Some(vec!["https://127.0.0.1:2379".into()]),
            security.clone(),
        )
        .expect("valid");
        assert!(access.is_tls());
        let err = etcd_access(Some(vec!["http://127.0.0.1:2379".into()]), security.clone())
            .expect_err("http with TLS");
        assert!(err.to_string().contains("`etcd.endpoints`"), "{err}");
        let err = etcd_access(
            Some(vec!["https://127.0.0.1:2379".into()]),
            RawEtcd {
                ca_file: Some(dir.path().join("nope.pem")),
                ..security.clone()
            },
        )
        .expect_err("missing CA");
        assert!(err.to_string().contains("`etcd.ca_file`"), "{err}");
        let (_, other_key) = leaf(&ca, "other");
        let err = etcd_access(
            Some(vec!["https://127.0.0.1:2379".into()]),
            RawEtcd {
                key_file: Some(write(dir.path(), "other.pem", &other_key)),
                ..security
            },
        )
        .expect_err("mismatched key");
        assert!(err.to_string().contains("`etcd.key_file`"), "{err}");
    }
}
