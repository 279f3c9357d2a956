//! What was decided for a request, as the client sees it: the `switchback` object of the
//! body (and the `x-switchback-*` headers the HTTP shell takes from it). Assembled once,
//! at the end of the pipeline, from what the stages produced; plain data, no wire types.

use serde::{Serialize, Serializer, ser::SerializeMap};

use super::failure::Failure;
use crate::{
    cascade::{Confidence, EscalationReason},
    difficulty::predictor::Prediction,
    placement::Move,
};

/// How the tier was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// `auto`, by the difficulty predictor.
    Difficulty,
    /// `auto` without a predictor: the configured default tier.
    AutoDefaultTier,
    /// The request named a tier.
    Tier,
    /// The request named a model id.
    Model,
    /// An answer was escalated to a higher tier.
    Cascade,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Difficulty => "difficulty",
            Route::AutoDefaultTier => "auto-default-tier",
            Route::Tier => "tier",
            Route::Model => "model",
            Route::Cascade => "cascade",
        }
    }
}

/// What was decided for a request. Serializes to the `switchback` body object; fields in
/// the order the object lists them.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub tier: String,
    pub worker: String,
    /// The chosen worker's machine.
    pub node: String,
    pub model: String,
    /// How the tier was chosen.
    pub reason: Route,
    pub candidates: usize,
    /// The chosen worker's outstanding requests when it was chosen.
    pub queue_depth: u32,
    /// Workers tried before this one, each with why it failed (before the first token).
    pub retries: Vec<Retry>,
    /// Lower tiers whose answers were judged not confident, in order.
    pub escalations: Vec<Escalation>,
    /// For `auto`: the joint decision over (tier, worker) of the first placement.
    pub joint: Option<JointView>,
    /// For `auto` with difficulty routing: the predictor's view of the prompt.
    #[serde(serialize_with = "difficulty")]
    pub difficulty: Option<Prediction>,
}

/// A worker tried before the one that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    pub worker: String,
    /// Why the attempt failed, as its bounded label (`queue_full`, `unreachable`, ...).
    pub reason: Failure,
}

/// The joint decision, as the client and the trace see it.
#[derive(Debug, Clone, Serialize)]
pub struct JointView {
    #[serde(rename = "preferred_tier")]
    pub preferred: String,
    /// The headroom tier (taken only onto a free slot).
    #[serde(rename = "stretch_tier")]
    pub stretch: String,
    #[serde(serialize_with = "round6_opt")]
    pub routed_quality: Option<f32>,
    pub deadline_ms: Option<u64>,
    pub moved: Move,
    pub considered: Vec<ConsideredView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsideredView {
    pub tier: String,
    pub worker: String,
    pub queue_depth: u32,
    pub expected_wait_ms: u64,
    pub expected_e2e_ms: u64,
    pub meets_deadline: bool,
    pub cost: f64,
}

/// One escalation: which answer was dropped, why, and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Escalation {
    pub from_tier: String,
    pub from_worker: String,
    pub to_tier: String,
    pub reason: EscalationReason,
    /// Tokens the lower tier generated for nothing.
    pub wasted_tokens: u32,
    #[serde(serialize_with = "confidence")]
    pub confidence: Option<Confidence>,
}

/// An f32 as the short decimal it stands for (0.95, not 0.949999988079071).
fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

fn round6_opt<S: Serializer>(x: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    x.map(round6).serialize(s)
}

fn confidence<S: Serializer>(c: &Option<Confidence>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct View {
        tokens: usize,
        mean_logprob: f64,
        min_logprob: f64,
        first_margin: Option<f64>,
    }
    c.map(|c| View {
        tokens: c.tokens,
        mean_logprob: round6(c.mean_logprob),
        min_logprob: round6(c.min_logprob),
        first_margin: c.first_margin.map(round6),
    })
    .serialize(s)
}

fn difficulty<S: Serializer>(p: &Option<Prediction>, s: S) -> Result<S::Ok, S::Error> {
    /// Tier → value pairs as an object, each value rounded.
    struct Rounded<'a>(&'a [(String, f32)]);
    impl Serialize for Rounded<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (tier, v) in self.0 {
                map.serialize_entry(tier, &round6(*v))?;
            }
            map.end()
        }
    }
    #[derive(Serialize)]
    struct View<'a> {
        quality_target: f64,
        threshold: f64,
        gain: f64,
        tier: &'a str,
        reason: &'a str,
        probabilities: Rounded<'a>,
        gaps: Rounded<'a>,
    }
    p.as_ref()
        .map(|p| View {
            quality_target: round6(p.quality),
            threshold: round6(p.threshold),
            gain: round6(p.gain),
            tier: &p.tier,
            reason: &p.reason,
            probabilities: Rounded(&p.probabilities),
            gaps: Rounded(&p.gaps),
        })
        .serialize(s)
}

impl Decision {
    /// The `switchback` object of a body.
    pub fn json(&self) -> serde_json::Value {
        // Plain data with string keys: it always serializes.
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The object as the router has always written it, field by field.
    fn by_hand(d: &Decision) -> Value {
        json!({
            "tier": d.tier,
            "worker": d.worker,
            "node": d.node,
            "model": d.model,
            "reason": d.reason.as_str(),
            "candidates": d.candidates,
            "queue_depth": d.queue_depth,
            "retries": d.retries.iter().map(|r| json!({"worker": r.worker, "reason": r.reason.label()})).collect::<Vec<_>>(),
            "escalations": d.escalations.iter().map(|e| json!({
                "from_tier": e.from_tier,
                "from_worker": e.from_worker,
                "to_tier": e.to_tier,
                "reason": e.reason.as_str(),
                "wasted_tokens": e.wasted_tokens,
                "confidence": e.confidence.map(|c| json!({
                    "tokens": c.tokens,
                    "mean_logprob": round6(c.mean_logprob),
                    "min_logprob": round6(c.min_logprob),
                    "first_margin": c.first_margin.map(round6),
                })),
            })).collect::<Vec<_>>(),
            "joint": d.joint.as_ref().map(|j| json!({
                "preferred_tier": j.preferred,
                "stretch_tier": j.stretch,
                "routed_quality": j.routed_quality.map(round6),
                "deadline_ms": j.deadline_ms,
                "moved": j.moved.as_str(),
                "considered": j.considered.iter().map(|c| json!({
                    "tier": c.tier,
                    "worker": c.worker,
                    "queue_depth": c.queue_depth,
                    "expected_wait_ms": c.expected_wait_ms,
                    "expected_e2e_ms": c.expected_e2e_ms,
                    "meets_deadline": c.meets_deadline,
                    "cost": c.cost,
                })).collect::<Vec<_>>(),
            })),
            "difficulty": d.difficulty.as_ref().map(|p| json!({
                "quality_target": round6(p.quality),
                "threshold": round6(p.threshold),
                "gain": round6(p.gain),
                "tier": p.tier,
                "reason": p.reason,
                "probabilities": p.probabilities.iter().map(|(t, v)| (t.clone(), json!(round6(*v)))).collect::<serde_json::Map<_, _>>(),
                "gaps": p.gaps.iter().map(|(t, v)| (t.clone(), json!(round6(*v)))).collect::<serde_json::Map<_, _>>(),
            })),
        })
    }

    fn bare() -> Decision {
        Decision {
            tier: "small".into(),
            worker: "small-0".into(),
            node: "node-a".into(),
            model: "sim-small".into(),
            reason: Route::Tier,
            candidates: 1,
            queue_depth: 0,
            retries: Vec::new(),
            escalations: Vec::new(),
            joint: None,
            difficulty: None,
        }
    }

    fn full() -> Decision {
        Decision {
            reason: Route::Cascade,
            candidates: 3,
            queue_depth: 2,
            retries: vec![Retry {
                worker: "large-1".into(),
                reason: Failure::QueueFull,
            }],
            escalations: vec![
                Escalation {
                    from_tier: "small".into(),
                    from_worker: "small-0".into(),
                    to_tier: "large".into(),
                    reason: EscalationReason::LowMeanLogprob,
                    wasted_tokens: 12,
                    confidence: Some(Confidence {
                        tokens: 12,
                        mean_logprob: -1.1,
                        min_logprob: -3.3,
                        first_margin: Some(0.95),
                    }),
                },
                Escalation {
                    from_tier: "medium".into(),
                    from_worker: "medium-0".into(),
                    to_tier: "large".into(),
                    reason: EscalationReason::EmptyAnswer,
                    wasted_tokens: 0,
                    confidence: None,
                },
            ],
            joint: Some(JointView {
                preferred: "small".into(),
                stretch: "medium".into(),
                routed_quality: Some(0.95),
                deadline_ms: Some(1500),
                moved: Move::Up,
                considered: vec![ConsideredView {
                    tier: "small".into(),
                    worker: "small-0".into(),
                    queue_depth: 1,
                    expected_wait_ms: 20,
                    expected_e2e_ms: 340,
                    meets_deadline: true,
                    cost: 0.000_125,
                }],
            }),
            difficulty: Some(Prediction {
                probabilities: vec![("small".into(), 0.3), ("large".into(), 0.9)],
                tier: "large".into(),
                quality: 0.8,
                threshold: 0.05,
                gain: 0.6,
                gaps: vec![("small".into(), 0.6), ("large".into(), 0.0)],
                reason: "the small tier falls short".into(),
            }),
            ..bare()
        }
    }

    #[test]
    fn serializes_to_the_object_written_by_hand_byte_for_byte() {
        for d in [bare(), full()] {
            let want = by_hand(&d);
            assert_eq!(d.json(), want);
            assert_eq!(d.json().to_string(), want.to_string());
        }
    }

    #[test]
    fn floats_are_their_short_decimals_and_absent_parts_are_null() {
        let body = full().json();
        assert_eq!(body["joint"]["routed_quality"], json!(0.95));
        assert_eq!(body["difficulty"]["quality_target"], json!(0.8));
        assert_eq!(body["difficulty"]["probabilities"]["small"], json!(0.3));
        assert_eq!(
            body["escalations"][0]["confidence"]["mean_logprob"],
            json!(-1.1)
        );
        assert_eq!(body["escalations"][1]["confidence"], Value::Null);
        let body = bare().json();
        for part in ["joint", "difficulty"] {
            assert_eq!(body.get(part), Some(&Value::Null), "{part}");
        }
        assert_eq!(body["retries"], json!([]));
    }
}
