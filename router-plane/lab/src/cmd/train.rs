//! `train`: the predictor's heads on the train split, its quality knob on the calibration
//! split (or both on train + calibration, cross-fitted); writes the artifact the router
//! loads.

use std::path::PathBuf;

use switchback_routing::policy::{Policy, TierFloors};

use super::args::{EncoderArgs, tier_model};
use crate::{
    Error, artifact, data,
    train::{self, TrainOptions},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled JSONL files (several are concatenated).
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// TIER=MODEL, cheaper tier first; MODEL is a key of the items' `scores`.
    #[arg(long = "tier", required = true, value_parser = tier_model)]
    pub tiers: Vec<(String, String)>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// L2 penalty of the heads. 3e-4 scored best on the RouteLLM calibration split of
    /// MMLU and GSM8K among 3e-5..3e-3 (docs/ROUTING.md).
    #[arg(long, default_value_t = 3e-4)]
    pub l2: f32,
    /// The quality target of requests that set none.
    #[arg(long, default_value_t = 0.95)]
    pub default_quality: f32,
    /// Fit the heads on train + calibration (the knob is fitted on calibration with
    /// cross-fitted gains: each fold scored by heads that did not see it).
    #[arg(long)]
    pub heads_on_calibration: bool,
    /// Fit the knob on train + calibration, not the calibration split alone (implies
    /// --heads-on-calibration): each item is scored by heads fitted without its fold
    /// (5 folds), so the knob sees several times the items and `--knob-z` costs less.
    #[arg(long)]
    pub knob_on_train: bool,
    /// Also fit a head on the top tier's gain itself, and decide on it.
    #[arg(long)]
    pub gap_head: bool,
    /// How conservative the quality knob is: a threshold serves target q only if the
    /// quality it keeps on the calibration items, less this many standard errors,
    /// reaches q of the top tier's. 0 takes them at face value; 1.645 (a one-sided 95 %
    /// bound) keeps the promise on new prompts when the calibration items are few.
    #[arg(long, default_value_t = 0.0)]
    pub knob_z: f64,
    /// Fit the knob for cascade routing: a routing policy (YAML, e.g. what `fit-cascade`
    /// prints) whose `cascade.per_tier` floors escalate a routed answer below them, as the
    /// router's cascade will. The artifact records the floors; serve it with the same
    /// floors in the policy and `cascade.enabled`. Without it the knob is fitted for
    /// routing alone.
    #[arg(long, value_name = "POLICY.yaml")]
    pub cascade: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn run(a: Args) -> Result<(), Error> {
    if !(0.0..=10.0).contains(&a.knob_z) {
        return Err(Error::usage("--knob-z must be in [0, 10]"));
    }
    let cascade_floors = a.cascade.as_deref().map(cascade_floors).transpose()?;
    let items = data::read_all(&a.data)?;
    let p = train::train(
        &items,
        &TrainOptions {
            tiers: a.tiers,
            epochs: a.epochs,
            l2: a.l2,
            default_quality: a.default_quality,
            heads_on_calibration: a.heads_on_calibration,
            knob_on_train: a.knob_on_train,
            gap_head: a.gap_head,
            knob_z: a.knob_z,
            cascade_floors,
        },
        a.encoder.encoder()?,
    )?;
    artifact::save_predictor(&p, &a.out)?;
    eprintln!("wrote {} ({})", a.out.display(), p.trained_on);
    Ok(())
}

/// The per-tier cascade floors of the routing policy in `path`, checked as the router
/// checks a policy.
fn cascade_floors(path: &std::path::Path) -> Result<TierFloors, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("--cascade {}: {e}", path.display())))?;
    let policy = Policy::from_yaml(&text).map_err(|e| {
        Error::usage(format!(
            "--cascade {}: not a routing policy: {e}",
            path.display()
        ))
    })?;
    if policy.cascade.per_tier.is_empty() {
        return Err(Error::usage(format!(
            "--cascade {}: no `cascade.per_tier` floors (`fit-cascade` prints them)",
            path.display()
        )));
    }
    Ok(policy.cascade.per_tier)
}
