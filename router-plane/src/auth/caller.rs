//! A request's caller once authenticated: what its key may use, its per-minute budgets
//! (a request taken, tokens charged up front and settled against the answer's usage),
//! and the `x-ratelimit-*` values that report them.

use std::{sync::Arc, time::Instant};

use super::{
    AuthError, Entry, Limit, NO_KEY, Shared,
    bucket::{self, Refusal},
    keys::Key,
};

/// Who is calling: a key, or nobody when auth is disabled.
#[derive(Debug, Clone)]
pub struct Caller {
    pub entry: Option<Arc<Entry>>,
}

/// Tokens charged up front to a key's tokens-per-minute bucket; settled against the
/// answer's real usage. Not settled (a stream the client dropped), the full charge stays.
#[derive(Debug)]
pub struct Charge {
    bucket: Shared,
    taken: u64,
}

impl Charge {
    /// Corrects the charge to `used` tokens (prompt + completion).
    pub fn settle(self, used: u64) {
        self.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .settle(self.taken, used, Instant::now());
    }
}

impl Caller {
    /// The key's id, or `none` with auth disabled: the only thing logged about a key.
    pub fn id(&self) -> &str {
        self.entry.as_ref().map_or(NO_KEY, |e| e.key.id.as_str())
    }

    pub fn key(&self) -> Option<&Key> {
        self.entry.as_ref().map(|e| &e.key)
    }

    /// The highest tier index this caller may reach.
    pub fn ceiling(&self) -> Option<usize> {
        self.key().and_then(|k| k.ceiling)
    }

    /// The lowest tier index this caller may use.
    pub fn floor(&self) -> Option<usize> {
        self.key().and_then(|k| k.tiers.map(|(lo, _)| lo))
    }

    /// Whether the caller may use tier `index`.
    pub fn allows_tier(&self, index: usize) -> bool {
        self.floor().is_none_or(|lo| index >= lo) && self.ceiling().is_none_or(|hi| index <= hi)
    }

    /// Whether the caller may name this model id (tiers are checked separately).
    pub fn allows_model(&self, model: &str) -> bool {
        self.key()
            .and_then(|k| k.models.as_ref())
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// Whether the caller's key may use `model`: a tier name of `tiers` (the router's, in
    /// rising cost) or a model id, whose tier `served` (the cluster's (tier, model) pairs,
    /// read only when needed) tells. `auto` is capped in placement instead; unknown
    /// models pass (placement answers that they do not exist).
    pub fn authorize(
        &self,
        model: &str,
        tiers: &[String],
        served: impl FnOnce() -> Vec<(String, String)>,
    ) -> Result<(), AuthError> {
        if self.entry.is_none() || model == "auto" {
            return Ok(());
        }
        let tier = match tiers.iter().position(|t| t == model) {
            Some(i) => Some(i),
            None => {
                if !self.allows_model(model) {
                    return Err(AuthError::Forbidden {
                        model: model.to_owned(),
                        why: " (it is not in the key's `models`)".to_owned(),
                    });
                }
                served()
                    .iter()
                    .find(|(_, m)| m == model)
                    .and_then(|(t, _)| tiers.iter().position(|x| x == t))
            }
        };
        match tier {
            Some(i) if !self.allows_tier(i) => Err(AuthError::Forbidden {
                model: model.to_owned(),
                why: format!(
                    " (tier `{}` is outside the key's `tiers` and `max_tier`)",
                    tiers[i]
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Takes one request from the requests-per-minute bucket.
    pub fn take_request(&self, now: Instant) -> Result<(), AuthError> {
        let Some(e) = &self.entry else { return Ok(()) };
        let Some(b) = &e.requests else { return Ok(()) };
        let result = b.lock().unwrap_or_else(|e| e.into_inner()).take(1, now);
        result.map_err(|r| self.refused(Limit::Requests, r, 1))
    }

    /// Charges `n` tokens to the tokens-per-minute bucket.
    pub fn charge_tokens(&self, n: u64, now: Instant) -> Result<Option<Charge>, AuthError> {
        let Some(e) = &self.entry else {
            return Ok(None);
        };
        let Some(b) = &e.tokens else { return Ok(None) };
        let result = b.lock().unwrap_or_else(|e| e.into_inner()).take(n, now);
        match result {
            Ok(()) => Ok(Some(Charge {
                bucket: Arc::clone(b),
                taken: n,
            })),
            Err(r) => Err(self.refused(Limit::Tokens, r, n)),
        }
    }

    fn refused(&self, limit: Limit, refusal: Refusal, n: u64) -> AuthError {
        let id = self.id().to_owned();
        match refusal {
            Refusal::RetryAfter(wait) => {
                let secs = bucket::retry_after_secs(wait);
                AuthError::RateLimited {
                    limit,
                    retry_after: Some(secs),
                    message: format!(
                        "API key `{id}` is over its `{limit}` limit on this router; retry after {secs} s"
                    ),
                }
            }
            Refusal::TooLarge => AuthError::RateLimited {
                limit,
                retry_after: None,
                message: format!(
                    "this request needs {n} tokens (prompt estimate + max_tokens), more than API key `{id}` may use in a minute (`{limit}`); lower max_tokens or shorten the prompt"
                ),
            },
        }
    }

    /// OpenAI's `x-ratelimit-*` headers for the caller's limits, as they stand now: (name,
    /// value) pairs.
    pub fn rate_headers(&self, now: Instant) -> Vec<(&'static str, String)> {
        // Header names per bucket: limit, remaining, reset.
        const NAMES: [[&str; 3]; 2] = [
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ];
        let mut out = Vec::new();
        let Some(e) = &self.entry else { return out };
        for (names, b) in NAMES.iter().zip([&e.requests, &e.tokens]) {
            let Some(b) = b else { continue };
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            let values = [
                b.capacity().to_string(),
                b.remaining(now).to_string(),
                bucket::reset_text(b.until_full(now)),
            ];
            out.extend(names.iter().copied().zip(values));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Gate;

    fn tiers() -> Vec<String> {
        vec!["small".into(), "large".into()]
    }

    fn caller_with(key: Key) -> Caller {
        Caller {
            entry: Some(Arc::new(Entry {
                key,
                requests: None,
                tokens: None,
            })),
        }
    }

    #[test]
    fn token_charges_settle_and_headers_report_the_buckets() {
        let t0 = Instant::now();
        let mut k = Key::unlimited("a", "t");
        k.tokens_per_minute = Some(100);
        let gate = Gate::with_keys(vec![k], tiers(), t0);
        let caller = gate.authenticate(Some("Bearer t")).expect("key");
        let charge = caller
            .charge_tokens(90, t0)
            .expect("fits")
            .expect("limited");
        assert!(matches!(
            caller.charge_tokens(20, t0),
            Err(AuthError::RateLimited {
                limit: Limit::Tokens,
                retry_after: Some(_),
                ..
            })
        ));
        charge.settle(30);
        assert!(caller.charge_tokens(20, Instant::now()).is_ok());
        assert!(matches!(
            caller.charge_tokens(101, t0),
            Err(AuthError::RateLimited {
                retry_after: None,
                ..
            })
        ));
        let headers = caller.rate_headers(Instant::now());
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("x-ratelimit-limit-tokens").as_deref(), Some("100"));
        assert!(get("x-ratelimit-remaining-tokens").is_some());
        assert!(get("x-ratelimit-reset-tokens").is_some());
        assert_eq!(get("x-ratelimit-limit-requests"), None);
    }

    #[test]
    fn tier_and_model_permissions() {
        let mut k = Key::unlimited("a", "t");
        k.tiers = Some((1, 2));
        k.ceiling = Some(1);
        k.models = Some(vec!["m1".into()]);
        let caller = caller_with(k);
        assert!(!caller.allows_tier(0));
        assert!(caller.allows_tier(1));
        assert!(!caller.allows_tier(2));
        assert!(caller.allows_model("m1"));
        assert!(!caller.allows_model("m2"));
        let open = Caller { entry: None };
        assert!(open.allows_tier(5) && open.allows_model("anything"));
    }

    #[test]
    fn a_key_may_name_only_its_tiers_and_models() {
        let mut k = Key::unlimited("a", "t");
        k.tiers = Some((0, 0));
        k.ceiling = Some(0);
        k.models = Some(vec!["small-model".into(), "large-model".into()]);
        let caller = caller_with(k);
        let served = || {
            vec![
                ("small".to_owned(), "small-model".to_owned()),
                ("large".to_owned(), "large-model".to_owned()),
            ]
        };
        assert_eq!(caller.authorize("auto", &tiers(), served), Ok(()));
        assert_eq!(caller.authorize("small", &tiers(), served), Ok(()));
        assert_eq!(caller.authorize("small-model", &tiers(), served), Ok(()));
        // A tier above the key's, named or reached through its model.
        for model in ["large", "large-model"] {
            match caller.authorize(model, &tiers(), served) {
                Err(e @ AuthError::Forbidden { .. }) => {
                    assert!(e.to_string().contains("tier `large`"), "{e}")
                }
                other => panic!("{model}: {other:?}"),
            }
        }
        // A model outside the key's list; an unknown one within it passes (404 later).
        assert!(matches!(
            caller.authorize("other-model", &tiers(), served),
            Err(AuthError::Forbidden { .. })
        ));
        let mut k = Key::unlimited("b", "u");
        k.models = None;
        assert_eq!(
            caller_with(k).authorize("unknown", &tiers(), Vec::new),
            Ok(())
        );
        // Without auth anything goes.
        assert_eq!(
            Caller { entry: None }.authorize("large", &tiers(), served),
            Ok(())
        );
    }
}
