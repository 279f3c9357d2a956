//! Switchback's routing core: every decision the router plane makes about a request, as
//! plain functions over plain data — no I/O, no clocks, no async. The live router, the
//! offline evaluator and the cluster simulator call the same code.
//!
//! - [`difficulty`]: the prompt's features and the predictor's per-tier success
//!   probabilities, and the quality knob over K tiers;
//! - [`service`]: what a request costs on a tier and how long a slot takes for it;
//! - [`placement`]: the joint tier × worker choice on a snapshot of the cluster;
//! - [`cascade`]: judging a lower tier's answer and the escalation step;
//! - [`policy`]: the routing policy every router of a cluster follows;
//! - [`rng`]: the one seeded generator of the property tests, the simulator and the soak.

pub mod cascade;
pub mod difficulty;
pub mod placement;
pub mod policy;
pub mod rng;
pub mod service;
