//! `eval`: how a predictor routes labelled items it never saw. For every pair of tiers
//! (adjacent ones and cheapest-vs-top), APGR, CPT and AIQ against random, the oracle,
//! prompt length, the per-source prior and kNN; with prices for every tier, cost and
//! quality over all tiers for routing alone, cascade alone and cascade routing
//! ([`crate::eval`]).

use std::{collections::HashMap, fmt::Write as _, path::PathBuf};

use super::args::{EncoderArgs, tier_model};
use crate::{
    Error, artifact,
    data::{self, Split},
    error::write as write_file,
    eval::{
        Signal,
        costs::{LadderArgs, ladder_report},
        pair::pair,
    },
};
use serde_json::json;

/// Which items `eval` judges on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Items {
    Test,
    Calibration,
    Train,
    /// Every item (evaluation-only sets).
    All,
}

impl Items {
    fn split(self) -> Option<Split> {
        match self {
            Self::Test => Some(Split::Test),
            Self::Calibration => Some(Split::Calibration),
            Self::Train => Some(Split::Train),
            Self::All => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Calibration => "calibration",
            Self::Train => "train",
            Self::All => "all",
        }
    }
}

/// `eval`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Labelled JSONL (from `import` or `label`; several are concatenated).
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// The predictor artifact (`train` writes it).
    #[arg(long)]
    pub predictor: PathBuf,
    /// Which items: test (default), calibration, train, or all (evaluation-only sets).
    /// Besides random and the oracle, two trivial routers are reported: `length`
    /// (longer prompts to the strong model) and `source-prior` (each source's mean
    /// gain on the train + calibration items, e.g. per MMLU subject); with MiniLM
    /// features also `knn-32` (the mean gain of the 32 nearest train + calibration
    /// prompts by embedding).
    #[arg(long, value_enum, default_value = "test")]
    pub split: Items,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write every item's id, prompt hash and per-tier probability as CSV.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Write the cheapest-vs-top pair's quality-vs-strong-calls curves as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// TIER=MODEL: judge the predictor's tier against the items' scores of MODEL
    /// instead of the model it was trained on (a predictor trained on other models'
    /// outcomes, judged on your tiers' labels).
    #[arg(long = "tier", value_parser = tier_model)]
    pub tiers: Vec<(String, String)>,
    /// The encoder files (its kind must match the predictor's features).
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// TIER=IN/OUT: the tier's price per million prompt / completion tokens (the
    /// workers' `cost`), for every tier: turns on the cost-quality report over all tiers,
    /// priced by each answer's real token counts (labels from `label`).
    #[arg(long = "price")]
    pub prices: Vec<String>,
    /// The confidence a cascade escalates on: confidence (the labels' `confidence`: mean
    /// token log-probability, or the chosen letter's with letter scoring), min (the
    /// answer's least likely token), margin or entropy (the first decoding step's: the
    /// prefill alone gives them). The report shows every signal; this one is plotted.
    #[arg(long, value_enum, default_value = "confidence")]
    pub signal: Signal,
    /// Write the cost-quality curves over all tiers as SVG.
    #[arg(long)]
    pub ladder_plot: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> Result<(), Error> {
    let (want, split) = (a.split.split(), a.split.name());
    let p = artifact::load_predictor(&a.predictor, a.encoder.encoder()?)?;
    let judged_as: HashMap<String, String> = a.tiers.iter().cloned().collect();
    if let Some(unknown) = judged_as
        .keys()
        .find(|t| !p.heads.iter().any(|h| &h.tier == *t))
    {
        return Err(Error::usage(format!(
            "--tier {unknown}=...: the predictor's tiers are {:?}",
            p.heads.iter().map(|h| &h.tier).collect::<Vec<_>>()
        )));
    }
    let tiers: Vec<String> = p.heads.iter().map(|h| h.tier.clone()).collect();
    let models: Vec<String> = p
        .heads
        .iter()
        .map(|h| judged_as.get(&h.tier).unwrap_or(&h.model).clone())
        .collect();
    let k = tiers.len();
    let all = data::read_all(&a.data)?;
    // Cheapest against top first (the report of a two-tier predictor), then every
    // adjacent pair of a longer ladder.
    let mut pairs = vec![(0, k - 1)];
    if k > 2 {
        pairs.extend((1..k).map(|j| (j - 1, j)));
    }
    let mut evaluated = Vec::new();
    for &(lo, hi) in &pairs {
        evaluated.push(pair(&p, &all, want, split, &models, (lo, hi))?);
    }
    let main = &evaluated[0];
    if let Some(path) = &a.predictions {
        let mut csv = String::from("id,prompt_sha256");
        for h in &p.heads {
            let _ = write!(csv, ",p_{}", h.tier);
        }
        csv.push('\n');
        for (i, pr) in main.items.iter().copied().zip(&main.probs) {
            let _ = write!(csv, "{},{}", csv_field(&i.id), data::prompt_hash(&i.prompt));
            for v in pr {
                let _ = write!(csv, ",{v:.6}");
            }
            csv.push('\n');
        }
        write_file(path, csv)?;
    }
    if let Some(path) = &a.plot {
        write_file(path, main.plot().svg())?;
    }
    let ladder = if a.prices.is_empty() {
        None
    } else {
        let view = LadderArgs {
            prices: &a.prices,
            signal: a.signal,
            split,
            plot: a.ladder_plot.as_deref(),
        };
        Some(ladder_report(&view, &p, &all, want, &tiers, &models)?)
    };
    let mut summary = main.json(&tiers[0], &tiers[k - 1]);
    summary["split"] = json!(split);
    summary["predictor"] = json!(p.trained_on);
    summary["pairs"] = evaluated
        .iter()
        .zip(&pairs)
        .map(|(e, &(lo, hi))| e.json(&tiers[lo], &tiers[hi]))
        .collect();
    if let Some((json, _)) = &ladder {
        summary["ladder"] = json.clone();
    }
    if a.json {
        println!("{summary}");
    } else {
        for (e, &(lo, hi)) in evaluated.iter().zip(&pairs) {
            e.print(split, &tiers[lo], &tiers[hi]);
        }
        if let Some((_, text)) = &ladder {
            print!("{text}");
        }
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
