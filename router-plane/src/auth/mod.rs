//! API keys at the front door: who is calling ([`Gate::authenticate`]), what its key may
//! use, its per-key rate limits (token buckets, per router replica), and reloading the
//! keys file when it changes. Only a key's configured `id` ever leaves this module: in
//! logs, span attributes and metric labels. It takes and returns plain strings: reading
//! headers and writing them is the HTTP shell's.

pub mod bucket;
pub mod caller;
pub mod error;
pub mod keys;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use self::{bucket::Bucket, keys::Key};
pub use self::{
    caller::{Caller, Charge},
    error::{AuthError, Limit},
};
use crate::config::{AuthConfig, ConfigError, RouterConfig};

/// How often the keys file is read again to look for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// When a read of the keys file is loaded: only content that differs from the content in
/// force and read the same on two reads in a row ([`RELOAD_EVERY`] apart). A file being
/// rewritten in place is caught half-written by some read; its next read differs, so the
/// half is never loaded. (Writing the file atomically, by a rename, as Kubernetes does for
/// Secret volumes, makes every read whole.)
#[derive(Debug, Default)]
pub struct Settle {
    in_force: Option<[u8; 32]>,
    pending: Option<[u8; 32]>,
}

impl Settle {
    /// Starting from the content loaded at start, if any.
    pub fn new(in_force: Option<[u8; 32]>) -> Self {
        Self {
            in_force,
            pending: None,
        }
    }

    /// A read with this content digest: whether to load it now.
    pub fn observe(&mut self, digest: [u8; 32]) -> bool {
        if self.in_force == Some(digest) {
            self.pending = None;
            return false;
        }
        if self.pending == Some(digest) {
            self.in_force = Some(digest);
            self.pending = None;
            return true;
        }
        self.pending = Some(digest);
        false
    }

    /// The file could not be read: whether that is news (it could before).
    pub fn unreadable(&mut self) -> bool {
        self.pending = None;
        self.in_force.take().is_some()
    }
}

/// The `key` label of requests served with auth disabled.
pub const NO_KEY: &str = "none";

pub(crate) type Shared = Arc<Mutex<Bucket>>;

/// One key in force, with its buckets (carried over reloads while its limits stay).
#[derive(Debug)]
pub struct Entry {
    pub key: Key,
    pub(crate) requests: Option<Shared>,
    pub(crate) tokens: Option<Shared>,
}

/// How many removed keys' buckets are remembered (see [`KeySet::retired`]).
const RETIRED_MAX: usize = 4096;

#[derive(Debug, Default)]
struct KeySet {
    by_digest: HashMap<[u8; 32], Arc<Entry>>,
    /// Keys removed by a reload, by id, with their buckets: a key that comes back (a file
    /// rewritten in two steps, a key taken out and put back) finds its bucket as it left
    /// it instead of a fresh minute.
    retired: HashMap<String, Arc<Entry>>,
}

impl KeySet {
    /// The new keys, reusing the buckets of keys whose id and limits are unchanged, so a
    /// reload does not hand every key a fresh minute.
    fn build(keys: Vec<Key>, old: &KeySet, now: Instant) -> Self {
        let old_by_id: HashMap<&str, &Arc<Entry>> = old
            .retired
            .iter()
            .map(|(id, e)| (id.as_str(), e))
            .chain(old.by_digest.values().map(|e| (e.key.id.as_str(), e)))
            .collect();
        let by_digest = keys
            .into_iter()
            .map(|key| {
                let previous = old_by_id.get(key.id.as_str());
                let requests = carry(
                    key.requests_per_minute.map(u64::from),
                    previous.map(|p| {
                        (
                            p.key.requests_per_minute.map(u64::from),
                            p.requests.as_ref(),
                        )
                    }),
                    now,
                );
                let tokens = carry(
                    key.tokens_per_minute,
                    previous.map(|p| (p.key.tokens_per_minute, p.tokens.as_ref())),
                    now,
                );
                (
                    key.digest,
                    Arc::new(Entry {
                        key,
                        requests,
                        tokens,
                    }),
                )
            })
            .collect::<HashMap<_, _>>();
        // What this reload removed joins the retired keys; what it brought back leaves them.
        let kept: std::collections::HashSet<&str> = by_digest
            .values()
            .map(|e: &Arc<Entry>| e.key.id.as_str())
            .collect();
        let mut retired: HashMap<String, Arc<Entry>> = old
            .retired
            .iter()
            .chain(old.by_digest.values().map(|e| (&e.key.id, e)))
            .filter(|(id, _)| !kept.contains(id.as_str()))
            .map(|(id, e)| (id.clone(), Arc::clone(e)))
            .collect();
        if retired.len() > RETIRED_MAX {
            retired.clear();
        }
        Self { by_digest, retired }
    }
}

/// The bucket for a limit: the previous one while the limit is unchanged, else a full one.
fn carry(
    limit: Option<u64>,
    previous: Option<(Option<u64>, Option<&Shared>)>,
    now: Instant,
) -> Option<Shared> {
    let limit = limit?;
    match previous {
        Some((Some(old), Some(bucket))) if old == limit => Some(Arc::clone(bucket)),
        _ => Some(Arc::new(Mutex::new(Bucket::new(limit, now)))),
    }
}

/// Whether requests need a key, and the keys in force.
#[derive(Debug)]
pub struct Gate {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Disabled,
    Keys {
        path: PathBuf,
        tiers: Vec<String>,
        set: RwLock<Arc<KeySet>>,
    },
}

impl Gate {
    /// The gate the config asks for, with the keys file read and checked.
    pub fn load(config: &RouterConfig) -> Result<Self, ConfigError> {
        let mode = match &config.auth {
            AuthConfig::Disabled => Mode::Disabled,
            AuthConfig::Keys(path) => {
                let keys = keys::load(path, &config.tiers).map_err(|e| {
                    switchback_common::config::invalid("auth.keys_file", e.to_string())
                })?;
                Mode::Keys {
                    path: path.clone(),
                    tiers: config.tiers.clone(),
                    set: RwLock::new(Arc::new(KeySet::build(
                        keys,
                        &KeySet::default(),
                        Instant::now(),
                    ))),
                }
            }
        };
        Ok(Self { mode })
    }

    /// A gate over `keys` (tests).
    pub fn with_keys(keys: Vec<Key>, tiers: Vec<String>, now: Instant) -> Self {
        Self {
            mode: Mode::Keys {
                path: PathBuf::new(),
                tiers,
                set: RwLock::new(Arc::new(KeySet::build(keys, &KeySet::default(), now))),
            },
        }
    }

    pub fn disabled() -> Self {
        Self {
            mode: Mode::Disabled,
        }
    }

    pub fn enabled(&self) -> bool {
        matches!(self.mode, Mode::Keys { .. })
    }

    /// Keys in force (0 when disabled).
    pub fn len(&self) -> usize {
        match &self.mode {
            Mode::Disabled => 0,
            Mode::Keys { set, .. } => set
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .by_digest
                .len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys file, when auth is on.
    pub fn path(&self) -> Option<&std::path::Path> {
        match &self.mode {
            Mode::Disabled => None,
            Mode::Keys { path, .. } => Some(path),
        }
    }

    /// Replaces the keys with the file's current content; on error the old keys stay.
    pub fn reload(&self, text: &str, now: Instant) -> Result<usize, keys::KeysError> {
        let Mode::Keys { tiers, set, .. } = &self.mode else {
            return Ok(0);
        };
        let keys = keys::parse(text, tiers)?;
        let mut guard = set.write().unwrap_or_else(|e| e.into_inner());
        let next = KeySet::build(keys, &guard, now);
        let n = next.by_digest.len();
        *guard = Arc::new(next);
        Ok(n)
    }

    /// The caller whose request carries `authorization`, the value of its
    /// `Authorization` header (`Bearer <token>`), if it has one.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let Mode::Keys { set, .. } = &self.mode else {
            return Ok(Caller { entry: None });
        };
        let value = authorization.ok_or(AuthError::Missing)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        // The lookup compares digests, not tokens: its timing can leak at most a prefix
        // of a SHA-256 digest, which does not help anyone find a token.
        let digest = keys::digest(token);
        let set = Arc::clone(&set.read().unwrap_or_else(|e| e.into_inner()));
        set.by_digest
            .get(&digest)
            .map(|e| Caller {
                entry: Some(Arc::clone(e)),
            })
            .ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> Option<String> {
        Some(format!("Bearer {token}"))
    }

    fn tiers() -> Vec<String> {
        vec!["small".into(), "large".into()]
    }

    #[test]
    fn bearer_tokens_are_checked_by_digest() {
        let gate = Gate::with_keys(
            vec![Key::unlimited("a", "sb-secret")],
            tiers(),
            Instant::now(),
        );
        let caller = gate
            .authenticate(bearer("sb-secret").as_deref())
            .expect("known key");
        assert_eq!(caller.id(), "a");
        assert_eq!(
            gate.authenticate(bearer("sb-other").as_deref()).err(),
            Some(AuthError::Unknown)
        );
        assert_eq!(gate.authenticate(None).err(), Some(AuthError::Missing));
        for malformed in ["Basic abc", "Bearer", "Bearer  ", ""] {
            assert_eq!(
                gate.authenticate(Some(malformed)).err(),
                Some(AuthError::Malformed),
                "{malformed:?}"
            );
        }
        assert_eq!(
            gate.authenticate(Some("bearer sb-secret"))
                .map(|c| c.id().to_owned()),
            Ok("a".into())
        );
        let open = Gate::disabled();
        assert_eq!(
            open.authenticate(None).map(|c| c.id().to_owned()),
            Ok(NO_KEY.into())
        );
    }

    #[test]
    fn limits_refuse_with_a_computed_retry_after_and_survive_reloads() {
        let t0 = Instant::now();
        let mut k = Key::unlimited("a", "t");
        k.requests_per_minute = Some(2);
        let gate = Gate::with_keys(vec![k], tiers(), t0);
        let caller = gate.authenticate(bearer("t").as_deref()).expect("key");
        assert!(caller.take_request(t0).is_ok());
        assert!(caller.take_request(t0).is_ok());
        match caller.take_request(t0) {
            Err(AuthError::RateLimited {
                limit, retry_after, ..
            }) => {
                assert_eq!(limit, Limit::Requests);
                // 2 a minute: the next one in 30 s.
                assert_eq!(retry_after, Some(30));
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // A reload with the same limits keeps the (empty) bucket; a new limit starts full.
        gate.reload(
            &format!(
                "keys:\n  - {{id: a, sha256: {}, requests_per_minute: 2}}\n",
                keys::to_hex(&keys::digest("t"))
            ),
            t0,
        )
        .expect("reload");
        let caller = gate.authenticate(bearer("t").as_deref()).expect("key");
        assert!(caller.take_request(t0).is_err());
        gate.reload(
            &format!(
                "keys:\n  - {{id: a, sha256: {}, requests_per_minute: 3}}\n",
                keys::to_hex(&keys::digest("t"))
            ),
            t0,
        )
        .expect("reload");
        let caller = gate.authenticate(bearer("t").as_deref()).expect("key");
        assert!(caller.take_request(t0).is_ok());
        // A broken file leaves the keys as they were.
        assert!(gate.reload("keys: [{id: a}]", t0).is_err());
        assert!(gate.authenticate(bearer("t").as_deref()).is_ok());
    }

    #[test]
    fn a_keys_file_is_loaded_once_two_reads_agree() {
        let (a, half, b) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let mut settle = Settle::new(Some(a));
        assert!(!settle.observe(a), "unchanged");
        // A rewrite caught half-way, then finished: the half is never loaded.
        assert!(!settle.observe(half));
        assert!(!settle.observe(b));
        assert!(settle.observe(b), "the whole file, read twice");
        assert!(!settle.observe(b), "loaded once");
        // Unreadable, then readable again with the same content: loaded again once settled.
        assert!(settle.unreadable());
        assert!(!settle.unreadable(), "reported once");
        assert!(!settle.observe(b));
        assert!(settle.observe(b));
    }

    #[test]
    fn a_key_taken_out_and_put_back_keeps_its_bucket() {
        let t0 = Instant::now();
        let file = |ids: &[&str]| {
            let mut text = String::from("keys:\n");
            for id in ids {
                text.push_str(&format!(
                    "  - {{id: {id}, sha256: {}, requests_per_minute: 1}}\n",
                    keys::to_hex(&keys::digest(&format!("token-{id}")))
                ));
            }
            text
        };
        let gate = Gate::with_keys(Vec::new(), tiers(), t0);
        gate.reload(&file(&["a", "b"]), t0).expect("load");
        let a = gate
            .authenticate(bearer("token-a").as_deref())
            .expect("key a");
        assert!(a.take_request(t0).is_ok());
        assert!(a.take_request(t0).is_err(), "one a minute");
        // The first half of a rewrite: `a` is gone for a moment...
        assert_eq!(gate.reload(&file(&["b"]), t0).expect("half"), 1);
        assert_eq!(
            gate.authenticate(bearer("token-a").as_deref()).err(),
            Some(AuthError::Unknown)
        );
        // ...and back with the rest: still over its limit, not a fresh minute.
        assert_eq!(gate.reload(&file(&["a", "b"]), t0).expect("whole"), 2);
        let a = gate
            .authenticate(bearer("token-a").as_deref())
            .expect("key a");
        assert!(a.take_request(t0).is_err(), "the bucket it left with");
        let b = gate
            .authenticate(bearer("token-b").as_deref())
            .expect("key b");
        assert!(b.take_request(t0).is_ok());
    }
}
