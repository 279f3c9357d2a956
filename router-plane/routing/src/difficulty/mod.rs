//! Difficulty routing at request time: the prompt's features, the predictor's per-tier
//! success probabilities and the quality knob over K tiers.

pub mod embed;
pub mod features;
pub mod predictor;
