//! The API keys file: its YAML shape, its checks, and the token hashing. A key is stored
//! as the SHA-256 digest of its bearer token, never the token; `id` is the only part of a
//! key that is ever logged or used as a metric label.
//!
//! ```yaml
//! keys:
//!   - id: team-a
//!     sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     tiers: [small, large]      # optional: the tiers this key may use
//!     models: [smollm2-135m]     # optional: the model ids this key may name
//!     max_tier: small            # optional: `auto` (and named tiers) go no higher
//!     requests_per_minute: 60    # optional
//!     tokens_per_minute: 20000   # optional: prompt estimate + max_tokens, settled after
//!     default_quality: 0.8       # optional: `auto` quality target when a request sets none
//! ```
//!
//! Why SHA-256 and not a slow password hash: the tokens are 256 random bits made by
//! `keygen`, not human passwords. Slow hashes exist to make guessing low-entropy secrets
//! expensive; nobody can enumerate 2^256 candidates at any hash speed, so a fast,
//! collision-resistant digest is as safe here and costs microseconds per request instead
//! of the tens of milliseconds a password hash would add to every call.

use std::{collections::HashSet, path::Path};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The prefix of every token `keygen` makes; it lets secret scanners find leaked ones.
pub const TOKEN_PREFIX: &str = "sb-";

/// A keys file that cannot be used, with the entry and field it is about.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read the keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the keys file is not valid: {0}")]
    Parse(String),
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> KeysError {
    KeysError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeysFile {
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    sha256: String,
    tiers: Option<Vec<String>>,
    models: Option<Vec<String>>,
    max_tier: Option<String>,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u64>,
    default_quality: Option<f64>,
}

/// One checked key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub id: String,
    pub digest: [u8; 32],
    /// Router tier indexes this key may use (a contiguous run); `None`: all.
    pub tiers: Option<(usize, usize)>,
    /// Model ids this key may name; `None`: all.
    pub models: Option<Vec<String>>,
    /// The highest tier index this key may reach, from `max_tier` and `tiers`.
    pub ceiling: Option<usize>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub default_quality: Option<f64>,
}

#[cfg(test)]
impl Key {
    /// A key for `token` with no limits: the starting point the auth tests narrow.
    pub(crate) fn unlimited(id: &str, token: &str) -> Self {
        Self {
            id: id.into(),
            digest: digest(token),
            tiers: None,
            models: None,
            ceiling: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            default_quality: None,
        }
    }
}

/// SHA-256 of a bearer token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Ids go into logs and metric labels: short, and only characters that need no escaping.
fn id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses and checks a keys file against the router's tiers (cheapest first).
pub fn parse(text: &str, tiers: &[String]) -> Result<Vec<Key>, KeysError> {
    let raw: RawKeysFile =
        serde_yaml::from_str(text).map_err(|e| KeysError::Parse(e.to_string()))?;
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    let tier_index = |field: &str, name: &str| {
        tiers.iter().position(|t| t == name).ok_or_else(|| {
            invalid(
                field,
                format!("{name:?} is not one of the router's tiers {tiers:?}"),
            )
        })
    };
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.into_iter().enumerate() {
        let at = |field: &str| format!("keys[{i}].{field}");
        if !id_ok(&k.id) {
            return Err(invalid(
                at("id"),
                "must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
            ));
        }
        if !ids.insert(k.id.clone()) {
            return Err(invalid(at("id"), format!("{:?} is listed twice", k.id)));
        }
        let digest = from_hex(&k.sha256.to_ascii_lowercase()).ok_or_else(|| {
            invalid(
                at("sha256"),
                "must be the 64 hex digits of the token's SHA-256 (`switchback-router keygen` prints it)",
            )
        })?;
        if !digests.insert(digest) {
            return Err(invalid(
                at("sha256"),
                format!("key {:?} has the same hash as an earlier key", k.id),
            ));
        }
        let range = match &k.tiers {
            None => None,
            Some(names) if names.is_empty() => {
                return Err(invalid(
                    at("tiers"),
                    "list at least one tier, or leave it out",
                ));
            }
            Some(names) => {
                let mut idx = names
                    .iter()
                    .map(|n| tier_index(&at("tiers"), n))
                    .collect::<Result<Vec<_>, _>>()?;
                idx.sort_unstable();
                idx.dedup();
                let (lo, hi) = (idx[0], idx[idx.len() - 1]);
                if hi - lo + 1 != idx.len() {
                    return Err(invalid(
                        at("tiers"),
                        format!(
                            "must be a contiguous run of the router's tiers {tiers:?}: `auto` routes over a range of tiers"
                        ),
                    ));
                }
                Some((lo, hi))
            }
        };
        let max_tier = k
            .max_tier
            .as_deref()
            .map(|n| tier_index(&at("max_tier"), n))
            .transpose()?;
        if let (Some(m), Some((lo, _))) = (max_tier, range)
            && m < lo
        {
            return Err(invalid(
                at("max_tier"),
                "is below every tier in `tiers`: the key could use nothing",
            ));
        }
        let ceiling = match (max_tier, range) {
            (Some(m), Some((_, hi))) => Some(m.min(hi)),
            (m, r) => m.or(r.map(|(_, hi)| hi)),
        };
        if k.requests_per_minute == Some(0) {
            return Err(invalid(at("requests_per_minute"), "must be at least 1"));
        }
        if k.tokens_per_minute == Some(0) {
            return Err(invalid(at("tokens_per_minute"), "must be at least 1"));
        }
        if k.default_quality.is_some_and(|q| !(0.0..=1.0).contains(&q)) {
            return Err(invalid(at("default_quality"), "must be in [0, 1]"));
        }
        if k.models.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                at("models"),
                "list at least one model, or leave it out",
            ));
        }
        keys.push(Key {
            id: k.id,
            digest,
            tiers: range,
            models: k.models,
            ceiling,
            requests_per_minute: k.requests_per_minute,
            tokens_per_minute: k.tokens_per_minute,
            default_quality: k.default_quality,
        });
    }
    Ok(keys)
}

/// Reads and checks the keys file at `path`.
pub fn load(path: &Path, tiers: &[String]) -> Result<Vec<Key>, KeysError> {
    let text = switchback_common::fs::read_text(path).map_err(|source| KeysError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, tiers)
}

/// A fresh token (`sb-` and 32 random bytes in hex) and the keys-file entry for it.
pub fn generate(id: &str) -> Result<(String, String), KeysError> {
    if !id_ok(id) {
        return Err(invalid(
            "--id",
            "must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| invalid("keygen", format!("no system randomness: {e}")))?;
    let token = format!("{TOKEN_PREFIX}{}", to_hex(&secret));
    let entry = format!("  - id: {id}\n    sha256: {}\n", to_hex(&digest(&token)));
    Ok((token, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<String> {
        vec!["small".into(), "medium".into(), "large".into()]
    }

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    fn field_of(err: KeysError) -> String {
        match err {
            KeysError::Invalid { field, .. } => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    #[test]
    fn the_digest_is_sha256_of_the_token() {
        // sha256("test"), a published test vector.
        assert_eq!(to_hex(&digest("test")), HASH_A);
        assert_eq!(from_hex(HASH_A), Some(digest("test")));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"zz".repeat(32)), None);
        assert_eq!(from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn a_full_entry_parses() {
        let keys = parse(
            &format!(
                "keys:\n  - id: team-a\n    sha256: {}\n    tiers: [medium, small]\n    models: [m1]\n    max_tier: large\n    requests_per_minute: 5\n    tokens_per_minute: 100\n    default_quality: 0.7\n  - id: b\n    sha256: {HASH_B}\n",
                HASH_A.to_uppercase()
            ),
            &tiers(),
        )
        .expect("valid");
        assert_eq!(keys.len(), 2);
        let a = &keys[0];
        assert_eq!(a.digest, digest("test"));
        assert_eq!(a.tiers, Some((0, 1)));
        // max_tier large, but the key's tiers stop at medium.
        assert_eq!(a.ceiling, Some(1));
        assert_eq!(a.requests_per_minute, Some(5));
        assert_eq!(a.tokens_per_minute, Some(100));
        assert_eq!(a.default_quality, Some(0.7));
        assert_eq!(keys[1].ceiling, None);
        assert_eq!(keys[1].models, None);
    }

    #[test]
    fn typos_duplicates_and_bad_values_are_named() {
        let err = parse(
            &format!("keys:\n  - id: a\n    sha256: {HASH_A}\n    max_teir: small\n"),
            &tiers(),
        )
        .expect_err("typo");
        assert!(err.to_string().contains("max_teir"), "{err}");
        let err = parse("keyz: []\n", &tiers()).expect_err("typo");
        assert!(err.to_string().contains("keyz"), "{err}");
        for (entries, field) in [
            (
                format!("  - {{id: a, sha256: {HASH_A}}}\n  - {{id: a, sha256: {HASH_B}}}\n"),
                "keys[1].id",
            ),
            (
                format!("  - {{id: a, sha256: {HASH_A}}}\n  - {{id: b, sha256: {HASH_A}}}\n"),
                "keys[1].sha256",
            ),
            (
                "  - {id: a, sha256: sb-token}\n".to_owned(),
                "keys[0].sha256",
            ),
            (
                format!("  - {{id: 'a b', sha256: {HASH_A}}}\n"),
                "keys[0].id",
            ),
            (format!("  - {{id: '', sha256: {HASH_A}}}\n"), "keys[0].id"),
            (
                format!("  - {{id: a, sha256: {HASH_A}, max_tier: huge}}\n"),
                "keys[0].max_tier",
            ),
            (
                format!("  - {{id: a, sha256: {HASH_A}, tiers: [small, large]}}\n"),
                "keys[0].tiers",
            ),
            (
                format!("  - {{id: a, sha256: {HASH_A}, tiers: [large], max_tier: small}}\n"),
                "keys[0].max_tier",
            ),
            (
                format!("  - {{id: a, sha256: {HASH_A}, requests_per_minute: 0}}\n"),
                "keys[0].requests_per_minute",
            ),
            (
                format!("  - {{id: a, sha256: {HASH_A}, tokens_per_minute: 0}}\n"),
                "keys[0].tokens_per_minute",
            ),
            (
                format!("  - {{id: a, sha256: {HASH_A}, default_quality: 1.5}}\n"),
                "keys[0].default_quality",
            ),
            (
                format!("  - {{id: a, sha256: {HASH_A}, models: []}}\n"),
                "keys[0].models",
            ),
        ] {
            let err = parse(&format!("keys:\n{entries}"), &tiers()).expect_err(field);
            assert_eq!(field_of(err), field, "{entries}");
        }
    }

    #[test]
    fn keygen_makes_a_token_whose_entry_parses() {
        let (token, entry) = generate("ci").expect("keygen");
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 64);
        let keys = parse(&format!("keys:\n{entry}"), &tiers()).expect("the entry parses");
        assert_eq!(keys[0].digest, digest(&token));
        assert!(!entry.contains(&token), "the entry never holds the token");
        let (other, _) = generate("ci").expect("keygen");
        assert_ne!(token, other);
        assert!(generate("bad id").is_err());
    }
}
