//! Config plumbing every binary shares: the error type, reading a YAML file into a raw
//! (all-optional, unknown-keys-rejected) struct, and the etcd endpoint check. Each crate
//! keeps its own raw struct, overlay and `validate()`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A field's value is wrong; `reason` says why.
pub fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Parses YAML; an empty document is the all-defaults struct.
pub fn from_yaml<T: DeserializeOwned + Default>(text: &str) -> Result<T, serde_yaml::Error> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml::from_str(text)
}

/// The largest config, keys, certificate or password file any binary reads (16 MiB). A
/// path that names something endless (`/dev/zero`, a FIFO fed by a runaway writer) is an
/// error instead of a process that reads until it runs out of memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// `std::fs::read`, but refusing files over [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// `std::fs::read_to_string`, with [`read_file`]'s bound.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_file(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"))
}

/// Reads the file at `path`, or gives the defaults when there is none.
pub fn read_yaml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = read_text(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_yaml(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Whether `value` may name a tier or a worker: such names end up in etcd keys, metric
/// labels and YAML keys, so they are 1-128 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_name(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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

/// The security keys of an `etcd:` section, as read (every binary's `RawEtcd` has them).
#[derive(Debug, Default, Clone)]
pub struct RawEtcdSecurity {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// How to reach etcd: [`etcd_endpoints`], plus TLS and authentication, checked now (files
/// named, readable and parseable; `https://` endpoints exactly when TLS is on).
pub fn etcd_access(
    endpoints: Option<Vec<String>>,
    security: RawEtcdSecurity,
) -> Result<crate::etcd::EtcdAccess, ConfigError> {
    use crate::etcd::{EtcdAccess, EtcdTls, EtcdUser};
    let endpoints = etcd_endpoints(endpoints)?;
    let RawEtcdSecurity {
        ca_file,
        cert_file,
        key_file,
        username,
        password_file,
    } = security;
    let identity = match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("etcd.key_file", "required with etcd.cert_file")),
        (None, Some(_)) => return Err(invalid("etcd.cert_file", "required with etcd.key_file")),
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
        crate::tls::check_etcd_files(tls, keys)?;
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
            let password = read_file(&password_file).map_err(|e| {
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
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        port: Option<u16>,
    }

    #[test]
    fn empty_is_default_and_typos_are_named() {
        assert!(from_yaml::<Raw>("  \n").expect("empty").port.is_none());
        let err = from_yaml::<Raw>("prot: 1").expect_err("typo");
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn endless_files_are_refused_not_read_forever() {
        let err = read_file(Path::new("/dev/zero")).expect_err("endless");
        assert!(err.to_string().contains("limit"), "{err}");
        let err = read_yaml::<Raw>(Some(Path::new("/dev/zero"))).expect_err("endless");
        assert!(err.to_string().contains("/dev/zero"), "{err}");
    }

    #[test]
    fn missing_file_says_which() {
        let err = read_yaml::<Raw>(Some(Path::new("/nonexistent/x.yaml"))).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/x.yaml"), "{err}");
        assert!(read_yaml::<Raw>(None).is_ok());
    }

    #[test]
    fn names_keep_to_a_safe_alphabet() {
        for good in ["small", "gpu-a.w_1", &"x".repeat(128)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "a b", "a/b", "tier\n", "ü", &"x".repeat(129)] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

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

    fn security() -> RawEtcdSecurity {
        RawEtcdSecurity::default()
    }

    fn etcd_err(endpoint: &str, security: RawEtcdSecurity) -> String {
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
            RawEtcdSecurity {
                cert_file: Some("c.pem".into()),
                ..security()
            },
        );
        assert!(err.contains("`etcd.key_file`"), "{err}");
        let err = etcd_err(
            "https://etcd:2379",
            RawEtcdSecurity {
                cert_file: Some("c.pem".into()),
                key_file: Some("k.pem".into()),
                ..security()
            },
        );
        assert!(err.contains("`etcd.ca_file`"), "{err}");
        let err = etcd_err(
            "http://etcd:2379",
            RawEtcdSecurity {
                username: Some("switchback".into()),
                ..security()
            },
        );
        assert!(err.contains("`etcd.password_file`"), "{err}");
        let err = etcd_err(
            "http://etcd:2379",
            RawEtcdSecurity {
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
        let with = |path: &Path| RawEtcdSecurity {
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
}
