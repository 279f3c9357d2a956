//! The routing policy: how `model: "auto"` trades quality, cost and latency, and when a
//! lower tier's answer is escalated.
//!
//! One policy governs every router of a cluster. It lives in etcd under `<prefix>/policy`
//! (YAML, the same shape as the `policy:` section of the router's config file, which is
//! the fallback while the key is absent), so an operator changes it for the whole cluster
//! at once, without restarts, by writing the key with an etcd client
//! (`etcdctl put /switchback/v1/policy < policy.yaml`; docs/ARCHITECTURE.md). Each router
//! follows the key (`follow_policy` in `lib.rs`); a policy that does not validate is
//! refused with its error and the router keeps the one it has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a policy document was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not YAML or JSON of the policy's shape (an unknown field, a wrong type).
    #[error("{0}")]
    Parse(String),
    /// A field outside what it may be.
    #[error("`{field}`: {rule}")]
    Invalid { field: String, rule: String },
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Whether `value` may name a tier: 1-128 characters of [A-Za-z0-9._-], the workers' own
/// rule for tier names (anything else can never match a tier).
pub fn is_valid_tier_name(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The whole policy. Every field has a default, so `{}` is a valid policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Quality target of requests that set none; absent: the predictor artifact's.
    pub default_quality: Option<f64>,
    /// Headroom above the request's quality target: a request that the target plus this
    /// margin would send to a more expensive tier goes there only while one of that
    /// tier's workers has a free slot. Idle expensive capacity buys quality; busy capacity
    /// is left to the requests whose own target needs it (see `placement::joint`).
    pub quality_margin: f64,
    /// Latency target (end to end, ms) of requests that set no `switchback.deadline_ms`.
    /// Absent: no deadline, so the joint decision never moves a request off its
    /// preferred tier for latency (it still never sends work a full worker would refuse).
    pub deadline_ms: Option<u64>,
    /// Per tier service model, used to predict a worker's wait from its queue until the
    /// worker has reported its own speed.
    pub tiers: BTreeMap<String, TierModel>,
    pub cascade: CascadePolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_quality: None,
            quality_margin: 0.02,
            deadline_ms: None,
            tiers: BTreeMap::new(),
            cascade: CascadePolicy::default(),
        }
    }
}

/// How long a tier takes, per slot, before any worker has reported its speed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierModel {
    pub prefill_ms_per_token: f64,
    pub decode_ms_per_token: f64,
    /// Output tokens assumed for a request that sets no `max_tokens`.
    pub expected_output_tokens: u32,
}

impl Default for TierModel {
    fn default() -> Self {
        Self {
            prefill_ms_per_token: 0.5,
            decode_ms_per_token: 20.0,
            expected_output_tokens: 128,
        }
    }
}

/// When and how a lower tier's answer is judged and escalated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadePolicy {
    /// Cascade requests that do not say (`switchback.cascade`).
    pub enabled: bool,
    /// How much of the lower tier's answer the judgement reads: 0 buffers the whole
    /// answer (the best judgement; a streaming client sees its first token only after
    /// the lower tier has finished), k > 0 judges the first k tokens and then streams the
    /// rest straight through (first token sooner; the rest of the answer is not judged).
    pub judge_tokens: u32,
    /// Escalations per request at most (each one goes one tier up).
    pub max_escalations: u32,
    /// Floors that apply to every tier without its own entry in `per_tier`.
    pub floors: Floors,
    /// Floors per tier name, fitted on calibration data
    /// (`switchback-lab fit-cascade`).
    pub per_tier: TierFloors,
    /// While the next tier up has an idle slot, every floor rises by this much (in
    /// log-probability units): spare capacity on the expensive tier buys quality cheaply.
    pub idle_boost: f32,
}

impl Default for CascadePolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            judge_tokens: 0,
            max_escalations: 1,
            floors: Floors::default(),
            per_tier: BTreeMap::new(),
            idle_boost: 0.0,
        }
    }
}

/// Floors per tier name.
pub type TierFloors = BTreeMap<String, Floors>;

/// An answer is confident when every measure set here is at or above its floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Floors {
    /// Mean log-probability of the judged tokens.
    pub min_mean_logprob: Option<f32>,
    /// The least likely judged token's log-probability.
    pub min_token_logprob: Option<f32>,
    /// First token: log-probability of the chosen token minus the runner-up's.
    pub min_first_margin: Option<f32>,
}

impl Default for Floors {
    fn default() -> Self {
        Self {
            min_mean_logprob: Some(-1.0),
            min_token_logprob: None,
            min_first_margin: None,
        }
    }
}

impl CascadePolicy {
    pub fn floors_for(&self, tier: &str) -> Floors {
        self.per_tier.get(tier).copied().unwrap_or(self.floors)
    }
}

impl Policy {
    /// Parses and checks a policy document (YAML or JSON); the error names the field.
    /// An empty document is the default policy.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let policy: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?
        };
        policy.check()?;
        Ok(policy)
    }

    pub fn check(&self) -> Result<(), PolicyError> {
        if self
            .default_quality
            .is_some_and(|q| !(0.0..=1.0).contains(&q))
        {
            return Err(invalid("default_quality", "must be in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.quality_margin) {
            return Err(invalid("quality_margin", "must be in [0, 1]"));
        }
        if self.deadline_ms == Some(0) {
            return Err(invalid("deadline_ms", "must be at least 1"));
        }
        // Tier names are the workers' (1-128 of [A-Za-z0-9._-]): anything else can never
        // match a tier, so it is a mistake, and it would not survive a round trip through
        // YAML (keys past 1024 characters; found by fuzz/fuzz_targets/policy.rs).
        let names = (self.tiers.keys().map(|n| ("tiers", n))).chain(
            self.cascade
                .per_tier
                .keys()
                .map(|n| ("cascade.per_tier", n)),
        );
        for (at, name) in names {
            if !is_valid_tier_name(name) {
                let shown: String = name.chars().take(64).collect();
                return Err(invalid(
                    at,
                    format!("tier name {shown:?} is not 1-128 characters of [A-Za-z0-9._-]"),
                ));
            }
        }
        for (name, t) in &self.tiers {
            for (field, v) in [
                ("prefill_ms_per_token", t.prefill_ms_per_token),
                ("decode_ms_per_token", t.decode_ms_per_token),
            ] {
                if !(0.0..=60_000.0).contains(&v) {
                    return Err(invalid(
                        format!("tiers.{name}.{field}"),
                        "must be in 0..=60000",
                    ));
                }
            }
        }
        if self.cascade.max_escalations > 4 {
            return Err(invalid("cascade.max_escalations", "must be at most 4"));
        }
        if !(0.0..=10.0).contains(&self.cascade.idle_boost) {
            return Err(invalid("cascade.idle_boost", "must be in [0, 10]"));
        }
        let all = std::iter::once(("floors".to_owned(), &self.cascade.floors)).chain(
            self.cascade
                .per_tier
                .iter()
                .map(|(t, f)| (format!("per_tier.{t}"), f)),
        );
        for (at, f) in all {
            for (field, v) in [
                ("min_mean_logprob", f.min_mean_logprob),
                ("min_token_logprob", f.min_token_logprob),
            ] {
                if v.is_some_and(|v| !(-100.0..=0.0).contains(&v)) {
                    return Err(invalid(
                        format!("cascade.{at}.{field}"),
                        "must be in [-100, 0]",
                    ));
                }
            }
            if f.min_first_margin
                .is_some_and(|v| !(0.0..=100.0).contains(&v))
            {
                return Err(invalid(
                    format!("cascade.{at}.min_first_margin"),
                    "must be in [0, 100]",
                ));
            }
        }
        Ok(())
    }

    pub fn tier_model(&self, tier: &str) -> TierModel {
        self.tiers.get(tier).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_is_the_default() {
        assert_eq!(Policy::from_yaml("{}").expect("valid"), Policy::default());
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let err = Policy::from_yaml("cascade: {enabeld: true}").expect_err("typo");
        assert!(err.to_string().contains("enabeld"), "{err}");
        let err = Policy::from_yaml("cascade: {per_tier: {small: {min_mean_logprob: 2}}}")
            .expect_err("positive logprob");
        assert!(
            err.to_string()
                .contains("cascade.per_tier.small.min_mean_logprob"),
            "{err}"
        );
        let err = Policy::from_yaml("quality_margin: 1.5").expect_err("margin");
        assert!(err.to_string().contains("quality_margin"), "{err}");
    }

    #[test]
    fn tier_names_keep_to_the_workers_alphabet() {
        // Found by fuzz/fuzz_targets/policy.rs (corpus/policy/regression-long-tier-name): a
        // tier name past 1024 characters validated, but the policy's own JSON was then no
        // longer YAML that parses.
        // (An explicit `?` key: YAML refuses implicit keys past 1024 characters.)
        let long = format!(
            "cascade:\n  per_tier:\n    ? {}\n    : {{}}\n",
            "t".repeat(1100)
        );
        let err = Policy::from_yaml(&long).expect_err("long tier name");
        assert!(err.to_string().contains("cascade.per_tier"), "{err}");
        let err = Policy::from_yaml("tiers: {\"sm all\": {}}").expect_err("space");
        assert!(err.to_string().contains("`tiers`"), "{err}");
        let p = Policy::from_yaml("tiers: {small-v2.q4_k: {}}").expect("valid");
        let json = serde_json::to_string(&p).expect("serialises");
        assert_eq!(Policy::from_yaml(&json).expect("round trip"), p);
    }

    #[test]
    fn per_tier_floors_override_the_default() {
        let p = Policy::from_yaml(
            "cascade: {floors: {min_mean_logprob: -2}, per_tier: {small: {min_mean_logprob: -0.5}}}",
        )
        .expect("valid");
        assert_eq!(p.cascade.floors_for("small").min_mean_logprob, Some(-0.5));
        assert_eq!(p.cascade.floors_for("medium").min_mean_logprob, Some(-2.0));
    }
}
