//! Judging a predictor on labelled items it never saw.
//!
//! - [`pair`]: a predictor's two tiers as a two-model router, judged with
//!   [`crate::metrics`] beside random, the oracle, prompt length, the per-source prior and
//!   kNN;
//! - [`ladder`] and [`costs`]: cost and quality over all tiers for routing alone, cascade
//!   alone and cascade routing.

pub mod costs;
pub mod ladder;
pub mod pair;

use crate::data::Item;

/// What a cascade escalates on (higher is more confident for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    Confidence,
    Min,
    Margin,
    Entropy,
}

impl Signal {
    pub const ALL: [Signal; 4] = [Self::Confidence, Self::Min, Self::Margin, Self::Entropy];

    pub fn name(self) -> &'static str {
        match self {
            Self::Confidence => "confidence",
            Self::Min => "min",
            Self::Margin => "margin",
            Self::Entropy => "entropy",
        }
    }

    /// The signal of `tier`'s answer to `item`; `-inf` when it has none.
    pub fn of(self, item: &Item, tier: &str) -> f64 {
        let answer = item.answers.get(tier);
        match self {
            Self::Confidence => item.confidence.get(tier).copied(),
            Self::Min => answer.and_then(|a| a.min_logprob),
            Self::Margin => answer.and_then(|a| a.first_margin),
            Self::Entropy => answer.and_then(|a| a.first_entropy).map(|h| -h),
        }
        .filter(|v| v.is_finite())
        .unwrap_or(f64::NEG_INFINITY)
    }
}
