//! Difficulty routing: predict, for each prompt, how likely each tier is to answer it
//! acceptably, and turn a request's quality target into a tier (Hybrid LLM, RouteLLM).
//!
//! - [`data`]: the labelled JSONL format and the shared split rule;
//! - [`import`]: importers from the public routing datasets;
//! - [`features`] and [`predictor`]: what runs on every request (the routing core's), the
//!   artifact's files and its training;
//! - [`metrics`]: APGR, CPT, AIQ and the baselines, to judge a predictor on held-out data;
//! - [`ladder`]: cost and quality over K tiers for routing, cascades and cascade routing.

pub mod code;
pub mod data;
pub use switchback_routing::difficulty::features;
pub mod import;
pub mod label;
pub mod ladder;
pub mod metrics;
pub mod minilm;
pub mod predictor;
