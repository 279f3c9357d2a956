//! Judging a lower tier's answer from its token log-probabilities, to decide whether the
//! query escalates to the next tier (FrugalGPT-style cascades, judged by the model's own
//! confidence instead of a separate scorer, so the judgement costs nothing extra).

use switchback_proto::pb;

use crate::policy::Floors;

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
    pub fn of(tokens: &[pb::TokenLogprob]) -> Option<Self> {
        let first = tokens.first()?;
        let sum: f32 = tokens.iter().map(|t| t.logprob).sum();
        let min = tokens
            .iter()
            .map(|t| t.logprob)
            .fold(f32::INFINITY, f32::min);
        // The runner-up is the best alternative that is not the chosen token itself
        // (engines list the chosen token among the alternatives when it is the top one).
        let runner_up = first
            .top
            .iter()
            .filter(|a| a.token != first.token)
            .map(|a| a.logprob)
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

/// Keep the answer, or escalate for the reason given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Escalate(&'static str),
}

/// Judges against `floors` raised by `boost` (the policy's idle boost, when the next tier
/// has a free slot). A measure the floors leave unset is not judged; a margin the worker
/// did not send is not judged either.
pub fn judge(confidence: Option<&Confidence>, floors: &Floors, boost: f32) -> Verdict {
    let Some(c) = confidence else {
        return Verdict::Escalate("empty-answer");
    };
    let raised = |floor: Option<f32>| floor.map(|f| (f + boost).min(0.0));
    if raised(floors.min_mean_logprob).is_some_and(|f| c.mean_logprob < f) {
        return Verdict::Escalate("low-mean-logprob");
    }
    if raised(floors.min_token_logprob).is_some_and(|f| c.min_logprob < f) {
        return Verdict::Escalate("low-token-logprob");
    }
    if let (Some(floor), Some(margin)) = (floors.min_first_margin, c.first_margin)
        && margin < floor + boost
    {
        return Verdict::Escalate("low-first-margin");
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

    fn tok(token: &str, logprob: f32, alternatives: &[(&str, f32)]) -> pb::TokenLogprob {
        pb::TokenLogprob {
            token: token.to_owned(),
            token_id: None,
            logprob,
            top: alternatives
                .iter()
                .map(|&(t, l)| pb::TopLogprob {
                    token_id: 0,
                    token: t.to_owned(),
                    logprob: l,
                    bytes: Vec::new(),
                })
                .collect(),
            bytes: Vec::new(),
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
            Verdict::Escalate("low-mean-logprob")
        );
        let min = Floors {
            min_token_logprob: Some(-2.0),
            ..mean
        };
        assert_eq!(
            judge(Some(&c), &min, 0.0),
            Verdict::Escalate("low-token-logprob")
        );
        let margin = Floors {
            min_mean_logprob: None,
            min_token_logprob: None,
            min_first_margin: Some(0.5),
        };
        assert_eq!(
            judge(Some(&c), &margin, 0.0),
            Verdict::Escalate("low-first-margin")
        );
        assert_eq!(judge(None, &mean, 0.0), Verdict::Escalate("empty-answer"));
    }
}
