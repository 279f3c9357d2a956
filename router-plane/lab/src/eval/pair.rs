//! A predictor's tiers `lo` and `hi` as a two-model router, judged with RouteLLM's metrics
//! beside the trivial routers.

use std::collections::HashMap;

use serde_json::{Value, json};
use switchback_routing::difficulty::{embed::EMBEDDING_DIM, features, predictor::Predictor};

use crate::{
    Error,
    data::{self, Item, Split},
    metrics::{Curve, Report},
    plot::{Mark, Plot, Series, Style},
};

/// One pair's evaluation: the report rows and the per-item data the files need.
pub struct Pair<'a> {
    pub weak_m: String,
    pub strong_m: String,
    pub items: Vec<&'a Item>,
    pub probs: Vec<Vec<f32>>,
    pub reports: Vec<Report>,
    pub r_weak: f64,
    pub r_strong: f64,
}

impl Pair<'_> {
    /// Quality against the share of calls to the strong model, one line per router, with
    /// always-weak and always-strong marked.
    pub fn plot(&self) -> Plot {
        Plot {
            title: format!(
                "{} items: quality against calls to {}",
                self.items.len(),
                self.strong_m
            ),
            x_label: format!("share of calls to {}", self.strong_m),
            y_label: "mean quality".into(),
            series: self
                .reports
                .iter()
                .map(|r| {
                    let style = if r.router == "random" {
                        Style::Dashed
                    } else {
                        Style::Line
                    };
                    Series::new(
                        format!("{} (APGR {:.3})", r.router, r.apgr),
                        r.curve.clone(),
                        style,
                    )
                })
                .collect(),
            marks: vec![
                Mark {
                    at: (0.0, self.r_weak),
                    label: format!("always {}", self.weak_m),
                },
                Mark {
                    at: (1.0, self.r_strong),
                    label: format!("always {}", self.strong_m),
                },
            ],
        }
    }

    pub fn json(&self, lower: &str, upper: &str) -> Value {
        json!({
            "lower_tier": lower,
            "upper_tier": upper,
            "items": self.items.len(),
            "weak_model": self.weak_m,
            "strong_model": self.strong_m,
            "always_weak_quality": self.r_weak,
            "always_strong_quality": self.r_strong,
            "routers": self.reports.iter().map(|r| json!({
                "router": r.router,
                "apgr": r.apgr,
                "cpt50": r.cpt50,
                "cpt80": r.cpt80,
                "strong_share_no_drop": r.strong_share_no_drop,
                "strong_share_1pct_drop": r.strong_share_1pct_drop,
                "aiq": r.aiq,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn print(&self, split: &str, lower: &str, upper: &str) {
        println!(
            "== {lower} vs {upper}: {} {split} items; always-{}: {:.3}, always-{}: {:.3}",
            self.items.len(),
            self.weak_m,
            self.r_weak,
            self.strong_m,
            self.r_strong
        );
        println!(
            "{:<12} {:>6} {:>7} {:>7} {:>12} {:>12} {:>6}",
            "router", "APGR", "CPT50", "CPT80", "strong@0%", "strong@1%", "AIQ"
        );
        for r in &self.reports {
            println!(
                "{:<12} {:>6.3} {:>6.1}% {:>6.1}% {:>11.1}% {:>11.1}% {:>6.3}",
                r.router,
                r.apgr,
                r.cpt50 * 100.0,
                r.cpt80 * 100.0,
                r.strong_share_no_drop * 100.0,
                r.strong_share_1pct_drop * 100.0,
                r.aiq
            );
        }
    }
}

/// Tiers `lo` (cheaper) and `hi` of the predictor as a two-model router: the score that
/// sends an item to `hi` is the predicted gain `p_hi - p_lo` (the gain head's, for a
/// two-tier predictor that has one), beside the baselines.
pub fn pair<'a>(
    p: &Predictor,
    all: &'a [Item],
    want: Option<Split>,
    split: &str,
    models: &[String],
    (lo, hi): (usize, usize),
) -> Result<Pair<'a>, Error> {
    let (weak_m, strong_m) = (models[lo].clone(), models[hi].clone());
    let scored: Vec<&Item> = all
        .iter()
        .filter(|i| i.scores.contains_key(&weak_m) && i.scores.contains_key(&strong_m))
        .collect();
    // The per-source prior baseline: each source's mean gain from the strong model
    // on the train + calibration items (what a trivial router could learn).
    let mut prior: HashMap<&str, (f64, usize)> = HashMap::new();
    for i in scored
        .iter()
        .filter(|i| data::split_of(&i.prompt) != Split::Test)
    {
        let e = prior.entry(i.source.as_str()).or_default();
        e.0 += i.scores[&strong_m] - i.scores[&weak_m];
        e.1 += 1;
    }
    let items: Vec<&Item> = scored
        .iter()
        .copied()
        .filter(|i| want.is_none_or(|s| data::split_of(&i.prompt) == s))
        .collect();
    if items.is_empty() {
        return Err(Error::usage(format!(
            "no {split} items carry scores for {weak_m} and {strong_m}"
        )));
    }
    let whole = lo == 0 && hi + 1 == models.len();
    let (probs, gains): (Vec<Vec<f32>>, Vec<f64>) = items
        .iter()
        .map(|i| {
            let x = p.features(&i.prompt);
            let pr = p.probabilities(&x);
            let g = if whole {
                f64::from(p.gain(&x, &pr))
            } else {
                f64::from(pr[hi] - pr[lo])
            };
            (pr, g)
        })
        .unzip();
    let weak: Vec<f64> = items.iter().map(|i| i.scores[&weak_m]).collect();
    let strong: Vec<f64> = items.iter().map(|i| i.scores[&strong_m]).collect();
    let length: Vec<f64> = items
        .iter()
        .map(|i| i.prompt.chars().count() as f64)
        .collect();
    let source_prior: Vec<f64> = items
        .iter()
        .map(|i| {
            prior
                .get(i.source.as_str())
                .map_or(0.0, |(sum, n)| sum / *n as f64)
        })
        .collect();
    let mut reports = vec![
        Report::of("switchback", Curve::of(&gains, &weak, &strong)),
        Report::of("random", Curve::random(&weak, &strong)),
        Report::of("oracle", Curve::oracle(&weak, &strong)),
        Report::of("length", Curve::of(&length, &weak, &strong)),
        Report::of("source-prior", Curve::of(&source_prior, &weak, &strong)),
    ];
    let reference: Vec<&Item> = scored.clone();
    if let Some(knn) = knn_gain(p, &reference, &items, &weak_m, &strong_m, 32) {
        reports.push(Report::of("knn-32", Curve::of(&knn, &weak, &strong)));
    }
    let n = items.len() as f64;
    Ok(Pair {
        r_weak: weak.iter().sum::<f64>() / n,
        r_strong: strong.iter().sum::<f64>() / n,
        weak_m,
        strong_m,
        items,
        probs,
        reports,
    })
}

/// The `k`-nearest-neighbour baseline (like RouteLLM's similarity-weighted ranking): each
/// item's score is the mean gain of the `k` train + calibration items whose embeddings are
/// closest. Only when the predictor's features include an embedding.
pub fn knn_gain(
    p: &Predictor,
    all: &[&Item],
    items: &[&Item],
    weak: &str,
    strong: &str,
    k: usize,
) -> Option<Vec<f64>> {
    let embed = |prompt: &str| -> Vec<f32> {
        let mut e = vec![0.0f32; EMBEDDING_DIM];
        for (i, v) in p.features(prompt) {
            if let Some(slot) = (i as usize)
                .checked_sub(features::DIM)
                .and_then(|j| e.get_mut(j))
            {
                *slot = v;
            }
        }
        e
    };
    let reference: Vec<(Vec<f32>, f64)> = all
        .iter()
        .filter(|i| data::split_of(&i.prompt) != Split::Test)
        .map(|i| (embed(&i.prompt), i.scores[strong] - i.scores[weak]))
        .collect();
    if reference.is_empty() || reference[0].0.iter().all(|v| *v == 0.0) {
        return None;
    }
    Some(
        items
            .iter()
            .map(|i| {
                let q = embed(&i.prompt);
                let mut sims: Vec<(f32, f64)> = reference
                    .iter()
                    .map(|(e, g)| (e.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), *g))
                    .collect();
                let k = k.min(sims.len());
                sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
                sims[..k].iter().map(|(_, g)| g).sum::<f64>() / k as f64
            })
            .collect(),
    )
}
