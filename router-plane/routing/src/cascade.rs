//! Judging a lower tier's answer from its token log-probabilities, to decide whether the
//! query escalates to the next tier (FrugalGPT-style cascades, judged by the model's own
//! confidence instead of a separate scorer, so the judgement costs nothing extra), and the
//! escalation step itself, which the live router and the simulator both take.

use serde::Serialize;

use crate::policy::{CascadePolicy, Floors};

/// One generated token as the judgement sees it: its text, its log-probability and the
/// alternatives the engine listed for its position (text, log-probability).
#[derive(Debug, Clone, PartialEq)]
pub struct Token<'a> {
    pub text: &'a str,
    pub logprob: f32,
    pub alternatives: Vec<(&'a str, f32)>,
}

/// What the judged tokens say about the answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    pub tokens: usize,
    pub mean_logprob: f32,
    pub min_logprob: f32,
    /// First token: chosen minus runner-up log-probability, when the worker sent
    /// alternatives.
    pub first_margin: Option<f32>,
}

impl Confidence {
    /// `None` for an empty answer (nothing to be confident about).
    pub fn of(tokens: &[Token<'_>]) -> Option<Self> {
        let first = tokens.first()?;
        let sum: f32 = tokens.iter().map(|t| t.logprob).sum();
        let min = tokens
            .iter()
            .map(|t| t.logprob)
            .fold(f32::INFINITY, f32::min);
        // The runner-up is the best alternative that is not the chosen token itself
        // (engines list the chosen token among the alternatives when it is the top one).
        let runner_up = first
            .alternatives
            .iter()
            .filter(|(text, _)| *text != first.text)
            .map(|&(_, l)| l)
            .fold(None, |best: Option<f32>, l| {
                Some(best.map_or(l, |b| b.max(l)))
            });
        Some(Self {
            tokens: tokens.len(),
            mean_logprob: sum / tokens.len() as f32,
            min_logprob: min,
            first_margin: runner_up.map(|r| (first.logprob - r).max(0.0)),
        })
    }
}

/// Why a lower tier's answer was dropped for the next tier's. The names are what
/// responses, metrics and traces show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EscalationReason {
    /// The lower tier answered nothing.
    EmptyAnswer,
    /// The mean log-probability of the judged tokens is below its floor.
    LowMeanLogprob,
    /// The least likely judged token is below its floor.
    LowTokenLogprob,
    /// The first token's margin over the runner-up is below its floor.
    LowFirstMargin,
    /// The lower tier's answer broke off before the judged tokens were read.
    LowerTierFailed,
    /// A tool call or JSON answer cut off by the length limit: not valid output.
    UnfinishedStructuredOutput,
}

impl EscalationReason {
    pub const ALL: [EscalationReason; 6] = [
        Self::EmptyAnswer,
        Self::LowMeanLogprob,
        Self::LowTokenLogprob,
        Self::LowFirstMargin,
        Self::LowerTierFailed,
        Self::UnfinishedStructuredOutput,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyAnswer => "empty-answer",
            Self::LowMeanLogprob => "low-mean-logprob",
            Self::LowTokenLogprob => "low-token-logprob",
            Self::LowFirstMargin => "low-first-margin",
            Self::LowerTierFailed => "lower-tier-failed",
            Self::UnfinishedStructuredOutput => "unfinished-structured-output",
        }
    }
}

impl std::fmt::Display for EscalationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keep the answer, or escalate for the reason given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Escalate(EscalationReason),
}

/// A lower tier's answer, as far as the cascade read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    /// Of the judged tokens; `None` for an empty answer.
    pub confidence: Option<Confidence>,
    /// The answer broke off (worker error, deadline) before the judged tokens were read.
    pub broke: bool,
    /// The request needs a tool call or structured output and the answer stopped at the
    /// length limit.
    pub unfinished_structured: bool,
}

impl Answer {
    /// A whole answer that was read to its end without trouble.
    pub fn judged(confidence: Option<Confidence>) -> Self {
        Self {
            confidence,
            broke: false,
            unfinished_structured: false,
        }
    }
}

/// Whether a request may escalate once more: its cascade is on and it has escalated fewer
/// times than the policy allows. (Whether a tier above exists that the request may use is
/// the caller's to know.) Checked before reading an answer for judgement, which costs time.
pub fn may_escalate(policy: &CascadePolicy, cascade_on: bool, escalations: usize) -> bool {
    cascade_on && escalations < policy.max_escalations as usize
}

/// The escalation step: keeps `tier`'s answer or escalates it, and says why. An answer cut
/// off in the middle of a tool call or a JSON document is never kept, however sure the
/// model was of it; one that broke off is escalated (the next tier may well answer);
/// otherwise the confidence is judged against the tier's floors, raised by the policy's
/// idle boost while the next tier has a free slot (`next_tier_idle`).
pub fn next(policy: &CascadePolicy, tier: &str, answer: &Answer, next_tier_idle: bool) -> Verdict {
    if answer.unfinished_structured {
        return Verdict::Escalate(EscalationReason::UnfinishedStructuredOutput);
    }
    if answer.broke {
        return Verdict::Escalate(EscalationReason::LowerTierFailed);
    }
    let boost = if next_tier_idle && policy.idle_boost > 0.0 {
        policy.idle_boost
    } else {
        0.0
    };
    judge(answer.confidence.as_ref(), &policy.floors_for(tier), boost)
}

/// Judges against `floors` raised by `boost` (the policy's idle boost, when the next tier
/// has a free slot). A measure the floors leave unset is not judged; a margin the worker
/// did not send is not judged either.
pub fn judge(confidence: Option<&Confidence>, floors: &Floors, boost: f32) -> Verdict {
    let Some(c) = confidence else {
        return Verdict::Escalate(EscalationReason::EmptyAnswer);
    };
    let raised = |floor: Option<f32>| floor.map(|f| (f + boost).min(0.0));
    if raised(floors.min_mean_logprob).is_some_and(|f| c.mean_logprob < f) {
        return Verdict::Escalate(EscalationReason::LowMeanLogprob);
    }
    if raised(floors.min_token_logprob).is_some_and(|f| c.min_logprob < f) {
        return Verdict::Escalate(EscalationReason::LowTokenLogprob);
    }
    if let (Some(floor), Some(margin)) = (floors.min_first_margin, c.first_margin)
        && margin < floor + boost
    {
        return Verdict::Escalate(EscalationReason::LowFirstMargin);
    }
    Verdict::Keep
}

/// One labelled answer of a lower tier, for fitting its floor: its confidence (e.g. mean
/// log-probability), its score, and the next tier's score on the same prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Labelled {
    pub confidence: f32,
    pub lower: f64,
    pub upper: f64,
}

/// The floor that escalates the fewest answers while the cascade's quality (escalated
/// answers scored by the upper tier, the rest by the lower) reaches `quality` × the upper
/// tier's. `None` for no data; `-inf` when the lower tier alone reaches it; `+inf` when
/// only escalating everything does.
pub fn fit_floor(points: &[Labelled], quality: f64) -> Option<f32> {
    if points.is_empty() {
        return None;
    }
    let target = quality * points.iter().map(|p| p.upper).sum::<f64>();
    let mut total: f64 = points.iter().map(|p| p.lower).sum();
    if total >= target {
        return Some(f32::NEG_INFINITY);
    }
    let mut by_confidence = points.to_vec();
    by_confidence.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
    // Escalating the k least confident answers swaps their scores for the upper tier's.
    for (k, p) in by_confidence.iter().enumerate() {
        total += p.upper - p.lower;
        if total >= target {
            return Some(
                by_confidence
                    .get(k + 1)
                    .map_or(f32::INFINITY, |next| (p.confidence + next.confidence) / 2.0),
            );
        }
    }
    Some(f32::INFINITY)
}

/// The cascade's quality and escalated share at `floor` (answers below it escalate).
pub fn outcome_at(points: &[Labelled], floor: f32) -> (f64, f64) {
    let n = points.len().max(1) as f64;
    let escalated = points.iter().filter(|p| p.confidence < floor).count() as f64;
    let quality = points
        .iter()
        .map(|p| {
            if p.confidence < floor {
                p.upper
            } else {
                p.lower
            }
        })
        .sum::<f64>()
        / n;
    (quality, escalated / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok<'a>(text: &'a str, logprob: f32, alternatives: &[(&'a str, f32)]) -> Token<'a> {
        Token {
            text,
            logprob,
            alternatives: alternatives.to_vec(),
        }
    }

    #[test]
    fn fitted_floor_reaches_the_target_with_the_fewest_escalations() {
        let p = |confidence, lower, upper| Labelled {
            confidence,
            lower,
            upper,
        };
        // Two unconfident wrong answers the upper tier gets right, one confident right one.
        let points = [p(-2.0, 0.0, 1.0), p(-1.5, 0.0, 1.0), p(-0.1, 1.0, 1.0)];
        let floor = fit_floor(&points, 1.0).expect("data");
        assert!(floor > -1.5 && floor < -0.1, "{floor}");
        assert_eq!(outcome_at(&points, floor), (1.0, 2.0 / 3.0));
        let floor = fit_floor(&points, 0.6).expect("data");
        assert!(floor > -2.0 && floor < -1.5, "escalate only one: {floor}");
        assert_eq!(fit_floor(&points, 0.3), Some(f32::NEG_INFINITY));
        assert_eq!(fit_floor(&[], 0.9), None);
    }

    #[test]
    fn measures_mean_min_and_first_margin() {
        let tokens = [
            tok(" Paris", -0.1, &[(" Paris", -0.1), (" Lyon", -2.6)]),
            tok(".", -0.5, &[]),
        ];
        let c = Confidence::of(&tokens).expect("non-empty");
        assert_eq!(c.tokens, 2);
        assert!((c.mean_logprob - -0.3).abs() < 1e-6);
        assert!((c.min_logprob - -0.5).abs() < 1e-6);
        assert!((c.first_margin.expect("alternatives") - 2.5).abs() < 1e-6);
        assert_eq!(Confidence::of(&[]), None);
    }

    #[test]
    fn escalates_below_any_floor_and_boost_raises_floors() {
        let c = Confidence {
            tokens: 3,
            mean_logprob: -0.8,
            min_logprob: -3.0,
            first_margin: Some(0.2),
        };
        let mean = Floors {
            min_mean_logprob: Some(-1.0),
            min_token_logprob: None,
            min_first_margin: None,
        };
        assert_eq!(judge(Some(&c), &mean, 0.0), Verdict::Keep);
        assert_eq!(
            judge(Some(&c), &mean, 0.5),
            Verdict::Escalate(EscalationReason::LowMeanLogprob)
        );
        let min = Floors {
            min_token_logprob: Some(-2.0),
            ..mean
        };
        assert_eq!(
            judge(Some(&c), &min, 0.0),
            Verdict::Escalate(EscalationReason::LowTokenLogprob)
        );
        let margin = Floors {
            min_mean_logprob: None,
            min_token_logprob: None,
            min_first_margin: Some(0.5),
        };
        assert_eq!(
            judge(Some(&c), &margin, 0.0),
            Verdict::Escalate(EscalationReason::LowFirstMargin)
        );
        assert_eq!(
            judge(None, &mean, 0.0),
            Verdict::Escalate(EscalationReason::EmptyAnswer)
        );
    }

    #[test]
    fn the_step_puts_invalid_output_and_broken_answers_before_confidence() {
        let policy = CascadePolicy::default();
        let sure = Some(Confidence {
            tokens: 4,
            mean_logprob: -0.01,
            min_logprob: -0.02,
            first_margin: Some(5.0),
        });
        assert_eq!(
            next(&policy, "small", &Answer::judged(sure), false),
            Verdict::Keep
        );
        let cut = Answer {
            unfinished_structured: true,
            broke: true,
            ..Answer::judged(sure)
        };
        assert_eq!(
            next(&policy, "small", &cut, false),
            Verdict::Escalate(EscalationReason::UnfinishedStructuredOutput)
        );
        let broke = Answer {
            broke: true,
            ..Answer::judged(sure)
        };
        assert_eq!(
            next(&policy, "small", &broke, false),
            Verdict::Escalate(EscalationReason::LowerTierFailed)
        );
    }

    #[test]
    fn the_step_uses_the_tiers_own_floors_and_the_idle_boost_only_when_idle() {
        let mut policy = CascadePolicy {
            idle_boost: 0.5,
            ..CascadePolicy::default()
        };
        policy.per_tier.insert(
            "medium".into(),
            Floors {
                min_mean_logprob: Some(-0.2),
                ..Floors::default()
            },
        );
        let answer = Answer::judged(Some(Confidence {
            tokens: 2,
            mean_logprob: -0.6,
            min_logprob: -0.7,
            first_margin: None,
        }));
        // The default floor (-1.0) keeps it; raised by the boost (-0.5) it escalates.
        assert_eq!(next(&policy, "small", &answer, false), Verdict::Keep);
        assert_eq!(
            next(&policy, "small", &answer, true),
            Verdict::Escalate(EscalationReason::LowMeanLogprob)
        );
        // medium's own floor (-0.2) escalates it, idle or not.
        assert_eq!(
            next(&policy, "medium", &answer, false),
            Verdict::Escalate(EscalationReason::LowMeanLogprob)
        );
        assert!(may_escalate(&policy, true, 0));
        assert!(!may_escalate(&policy, true, 1), "one escalation by default");
        assert!(!may_escalate(&policy, false, 0));
    }

    #[test]
    fn reasons_serialize_as_their_names() {
        for r in EscalationReason::ALL {
            assert_eq!(
                serde_json::to_value(r).expect("serializes"),
                serde_json::json!(r.as_str())
            );
        }
    }
}
