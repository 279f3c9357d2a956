//! Switchback's offline tools around the routing core: the public datasets' readers,
//! labelling a cluster's own tiers, training and evaluating the difficulty predictor,
//! fitting the cascade's floors, and the cluster simulator. The router loads what these
//! produce (the predictor artifact, the policy's cascade floors); none of it runs in the
//! serving path.
//!
//! - [`cmd`]: the `switchback-lab` subcommands, one file each;
//! - [`data`]: the labelled JSONL format and the split rule;
//! - [`datasets`]: one reader per public dataset;
//! - [`label`]: the labelling client and its grading;
//! - [`train`]: fitting the predictor and its quality knob;
//! - [`eval`]: judging a predictor, over a pair of tiers and over all of them;
//! - [`metrics`]: APGR, CPT and AIQ, for `eval` and the learning curve;
//! - [`simulate`]: the cluster simulator;
//! - [`minilm`]: the MiniLM encoder (candle), for `distill` and offline comparison;
//! - [`plot`]: the SVG plots of the reports;
//! - [`artifact`]: the predictor's and the static table's files.

pub mod artifact;
pub mod cmd;
pub mod data;
pub mod datasets;
pub mod error;
pub mod eval;
pub mod label;
pub mod metrics;
pub mod minilm;
pub mod plot;
pub mod simulate;
pub mod train;

pub use error::Error;
