//! `fit-cascade`: the cascade's floor per tier from labels with confidences, printed as
//! the routing policy's `cascade` fragment.

use std::path::PathBuf;

use switchback_routing::cascade::{self, Labelled};

use crate::{
    Error,
    data::{self, Item, Split},
    eval::Signal,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Tiers in rising cost, as named in the labels (`label --tier ...`).
    #[arg(long = "tier", required = true)]
    pub tiers: Vec<String>,
    /// Quality target, as a fraction of the next tier's quality.
    #[arg(long, default_value_t = 0.95)]
    pub quality: f64,
    /// The signal the floors are on: confidence (the labels' mean log-probability, or
    /// the chosen letter's: `min_mean_logprob`), min (the least likely token:
    /// `min_token_logprob`) or margin (the first step's best minus runner-up, what
    /// the prefill alone gives: `min_first_margin`).
    #[arg(long, value_enum, default_value = "confidence")]
    pub signal: Signal,
}

pub fn run(a: Args) -> Result<(), Error> {
    let (key, range) = match a.signal {
        Signal::Confidence => ("min_mean_logprob", -100.0..=0.0),
        Signal::Min => ("min_token_logprob", -100.0..=0.0),
        Signal::Margin => ("min_first_margin", 0.0..=100.0),
        Signal::Entropy => {
            return Err(Error::usage(
                "--signal entropy: the router's cascade has no entropy floor; \
                 use confidence, min or margin",
            ));
        }
    };
    if a.tiers.len() < 2 || !(0.0..=1.0).contains(&a.quality) {
        return Err(Error::usage(
            "give at least two --tier (cheapest first) and --quality in [0, 1]",
        ));
    }
    let items = data::read_all(&a.data)?;
    let mut yaml = String::from("cascade:\n  per_tier:\n");
    for pair in a.tiers.windows(2) {
        let (lower, upper) = (&pair[0], &pair[1]);
        let (fit, test) = (
            points(&items, a.signal, lower, upper, false),
            points(&items, a.signal, lower, upper, true),
        );
        let floor = cascade::fit_floor(&fit, a.quality).ok_or_else(|| {
            Error::usage(format!(
                "no train/calibration item has {lower}'s confidence and both scores: label with `label` first"
            ))
        })?;
        // The policy's range for the floor.
        let floor = floor.clamp(*range.start(), *range.end());
        let upper_quality =
            |ps: &[Labelled]| ps.iter().map(|p| p.upper).sum::<f64>() / ps.len().max(1) as f64;
        let (q_fit, e_fit) = cascade::outcome_at(&fit, floor);
        let on_test = if test.is_empty() {
            "no test items".to_owned()
        } else {
            let (q_test, e_test) = cascade::outcome_at(&test, floor);
            format!(
                "test ({} items): {:.1} %, {:.1} % escalated",
                test.len(),
                100.0 * q_test / upper_quality(&test).max(1e-12),
                100.0 * e_test
            )
        };
        eprintln!(
            "{lower} -> {upper}: floor {floor:.4} on {} items: quality {:.1} % of {upper}, {:.1} % escalated; {on_test}",
            fit.len(),
            100.0 * q_fit / upper_quality(&fit).max(1e-12),
            100.0 * e_fit,
        );
        // Every measure spelled out: one left out would take the policy's default floor
        // (a mean log-probability of -1) and judge what was never fitted.
        let measures = ["min_mean_logprob", "min_token_logprob", "min_first_margin"]
            .map(|m| {
                if m == key {
                    format!("{m}: {floor:.4}")
                } else {
                    format!("{m}: null")
                }
            })
            .join(", ");
        yaml.push_str(&format!("    {lower}: {{{measures}}}\n"));
    }
    print!("{yaml}");
    Ok(())
}

/// The `lower` tier's labelled answers with its `signal` and both tiers' scores: of the
/// test split, or of train + calibration.
fn points(items: &[Item], signal: Signal, lower: &str, upper: &str, test: bool) -> Vec<Labelled> {
    items
        .iter()
        .filter(|i| (data::split_of(&i.prompt) == Split::Test) == test)
        .filter_map(|i| {
            let confidence = signal.of(i, lower);
            Some(Labelled {
                confidence: confidence.is_finite().then_some(confidence)? as f32,
                lower: *i.scores.get(lower)?,
                upper: *i.scores.get(upper)?,
            })
        })
        .collect()
}
