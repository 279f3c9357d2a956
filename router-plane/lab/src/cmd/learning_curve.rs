//! `learning-curve`: how APGR grows with labelled data, as a Markdown table.

use std::path::PathBuf;

use super::args::{EncoderArgs, tier_model};
use crate::{
    Error, data,
    train::{self, TrainOptions},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// TIER=MODEL, cheaper tier first.
    #[arg(long = "tier", required = true, value_parser = tier_model)]
    pub tiers: Vec<(String, String)>,
    /// Training-set sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000,8000")]
    pub sizes: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// How many folds to hold out in turn (each one a repetition).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub l2: f32,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

pub fn run(a: Args) -> Result<(), Error> {
    let items = data::read_all(&a.data)?;
    let curve = train::learning_curve(
        &items,
        &a.sizes,
        a.folds,
        a.repeats,
        &TrainOptions {
            tiers: a.tiers,
            epochs: a.epochs,
            l2: a.l2,
            default_quality: 0.95,
            heads_on_calibration: false,
            knob_on_train: false,
            gap_head: false,
            knob_z: 0.0,
            cascade_floors: None,
        },
        &a.encoder.encoder()?,
    )?;
    println!("| labelled items | mean APGR on held-out folds | per fold |");
    println!("|---|---|---|");
    for p in &curve {
        let mean = p.apgr.iter().sum::<f64>() / p.apgr.len().max(1) as f64;
        let each: Vec<String> = p.apgr.iter().map(|a| format!("{a:.3}")).collect();
        println!("| {} | {mean:.3} | {} |", p.train_items, each.join(", "));
    }
    Ok(())
}
