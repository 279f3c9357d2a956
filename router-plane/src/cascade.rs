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
                })
                .collect(),
        }
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
