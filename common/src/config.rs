//! Config plumbing every binary shares: the error type and reading a YAML file into a raw
//! (all-optional, unknown-keys-rejected) struct. Each crate keeps its own raw struct,
//! overlay and `validate()`; the `etcd:` section they share is in `etcd_config`.

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
    let text = crate::fs::read_text(path).map_err(|source| ConfigError::Read {
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
}
