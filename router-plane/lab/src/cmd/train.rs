//! `train`: the predictor's heads on the train split, its quality knob on the calibration
//! split; writes the artifact the router loads.

use std::path::PathBuf;

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
    /// Also fit a head on the top tier's gain itself, and decide on it.
    #[arg(long)]
    pub gap_head: bool,
    /// How conservative the quality knob is: a threshold serves target q only if the
    /// quality it keeps on the calibration items, less this many standard errors,
    /// reaches q of the top tier's. 0 takes them at face value; 1.645 (a one-sided 95 %
    /// bound) keeps the promise on new prompts when the calibration items are few.
    #[arg(long, default_value_t = 0.0)]
    pub knob_z: f64,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn run(a: Args) -> Result<(), Error> {
    if !(0.0..=10.0).contains(&a.knob_z) {
        return Err(Error::usage("--knob-z must be in [0, 10]"));
    }
    let items = data::read_all(&a.data)?;
    let p = train::train(
        &items,
        &TrainOptions {
            tiers: a.tiers,
            epochs: a.epochs,
            l2: a.l2,
            default_quality: a.default_quality,
            heads_on_calibration: a.heads_on_calibration,
            gap_head: a.gap_head,
            knob_z: a.knob_z,
        },
        a.encoder.encoder()?,
    )?;
    artifact::save_predictor(&p, &a.out)?;
    eprintln!("wrote {} ({})", a.out.display(), p.trained_on);
    Ok(())
}
