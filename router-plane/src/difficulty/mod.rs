//! Difficulty routing: predict, for each prompt, how likely each tier is to answer it
//! acceptably, and turn a request's quality target into a tier (Hybrid LLM, RouteLLM).
//!
//! - [`features`] and [`predictor`]: what runs on every request (the routing core's), and
//!   the artifact's file;
//! - [`minilm`]: the distilled MiniLM table behind the predictor's embedding features.
//!
//! The data, training and evaluation around them are `switchback-lab`'s.

pub use switchback_routing::difficulty::features;
pub mod minilm;
pub mod predictor;
