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

/// Reads the file at `path`, or gives the defaults when there is none.
pub fn read_yaml<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
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
}
