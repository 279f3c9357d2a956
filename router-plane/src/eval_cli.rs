//! `eval`: how a predictor routes labelled items it never saw. For every pair of tiers
//! (adjacent ones and cheapest-vs-top), APGR, CPT and AIQ against random, the oracle,
//! prompt length, the per-source prior and kNN; with prices for every tier, cost and
//! quality over all tiers for routing alone, cascade alone and cascade routing
//! ([`crate::difficulty::ladder`]).

use std::{collections::HashMap, fmt::Write as _, path::PathBuf};

use serde_json::{Value, json};

use crate::{
    cli::{EncoderArgs, Error, load, parse_split, parse_tiers},
    difficulty::{
        data::{self, Item, Split},
        ladder::{self, Case, Outcome, Rung},
        metrics::{Curve, Report},
        predictor::Predictor,
    },
};

/// What a cascade escalates on (higher is more confident for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    Confidence,
    Min,
    Margin,
    Entropy,
}

impl Signal {
    const ALL: [Signal; 4] = [Self::Confidence, Self::Min, Self::Margin, Self::Entropy];

    fn name(self) -> &'static str {
        match self {
            Self::Confidence => "confidence",
            Self::Min => "min",
            Self::Margin => "margin",
            Self::Entropy => "entropy",
        }
    }

    /// The signal of `tier`'s answer to `item`; `-inf` when it has none.
    pub fn of(self, item: &Item, tier: &str) -> f64 {
        let answer = item.answers.get(tier);
        match self {
            Self::Confidence => item.confidence.get(tier).copied(),
            Self::Min => answer.and_then(|a| a.min_logprob),
            Self::Margin => answer.and_then(|a| a.first_margin),
            Self::Entropy => answer.and_then(|a| a.first_entropy).map(|h| -h),
        }
        .filter(|v| v.is_finite())
        .unwrap_or(f64::NEG_INFINITY)
    }
}

/// `eval`'s arguments.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
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
    #[arg(long, default_value = "test")]
    pub split: String,
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
    #[arg(long = "tier")]
    pub tiers: Vec<String>,
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

/// One pair's evaluation: the report rows and the per-item data the files need.
struct Pair<'a> {
    weak_m: String,
    strong_m: String,
    items: Vec<&'a Item>,
    probs: Vec<Vec<f32>>,
    reports: Vec<Report>,
    r_weak: f64,
    r_strong: f64,
}

impl Pair<'_> {
    fn json(&self, lower: &str, upper: &str) -> Value {
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

    fn print(&self, split: &str, lower: &str, upper: &str) {
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
fn pair<'a>(
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
        return Err(format!("no {split} items carry scores for {weak_m} and {strong_m}").into());
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

pub fn run(a: EvalArgs) -> Result<(), Error> {
    let want = match a.split.as_str() {
        "all" => None,
        other => Some(parse_split(other).map_err(|e| format!("--split: {e}, or all"))?),
    };
    let p = crate::difficulty::predictor::load(&a.predictor, a.encoder.encoder()?)?;
    let judged_as: HashMap<String, String> = parse_tiers(&a.tiers)?.into_iter().collect();
    if let Some(unknown) = judged_as
        .keys()
        .find(|t| !p.heads.iter().any(|h| &h.tier == *t))
    {
        return Err(format!(
            "--tier {unknown}=...: the predictor's tiers are {:?}",
            p.heads.iter().map(|h| &h.tier).collect::<Vec<_>>()
        )
        .into());
    }
    let tiers: Vec<String> = p.heads.iter().map(|h| h.tier.clone()).collect();
    let models: Vec<String> = p
        .heads
        .iter()
        .map(|h| judged_as.get(&h.tier).unwrap_or(&h.model).clone())
        .collect();
    let k = tiers.len();
    let all = load(&a.data)?;
    // Cheapest against top first (the report of a two-tier predictor), then every
    // adjacent pair of a longer ladder.
    let mut pairs = vec![(0, k - 1)];
    if k > 2 {
        pairs.extend((1..k).map(|j| (j - 1, j)));
    }
    let mut evaluated = Vec::new();
    for &(lo, hi) in &pairs {
        evaluated.push(pair(&p, &all, want, &a.split, &models, (lo, hi))?);
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
        std::fs::write(path, csv)?;
    }
    if let Some(path) = &a.plot {
        std::fs::write(
            path,
            svg(
                &main.reports,
                main.r_weak,
                main.r_strong,
                &main.weak_m,
                &main.strong_m,
            ),
        )?;
    }
    let ladder = if a.prices.is_empty() {
        None
    } else {
        let view = LadderArgs {
            prices: &a.prices,
            signal: a.signal,
            split: &a.split,
            plot: a.ladder_plot.as_deref(),
        };
        Some(ladder_report(&view, &p, &all, want, &tiers, &models)?)
    };
    let mut summary = main.json(&tiers[0], &tiers[k - 1]);
    summary["split"] = json!(a.split);
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
            e.print(&a.split, &tiers[lo], &tiers[hi]);
        }
        if let Some((_, text)) = &ladder {
            print!("{text}");
        }
    }
    Ok(())
}

/// `TIER=IN/OUT` prices, one per tier in the predictor's order.
fn prices(given: &[String], tiers: &[String]) -> Result<Vec<(f64, f64)>, Error> {
    let mut by_tier = HashMap::new();
    for g in given {
        let parsed = g.split_once('=').and_then(|(t, io)| {
            let (i, o) = io.split_once('/')?;
            Some((
                t,
                i.trim().parse::<f64>().ok()?,
                o.trim().parse::<f64>().ok()?,
            ))
        });
        let Some((t, i, o)) = parsed.filter(|(_, i, o)| *i >= 0.0 && *o >= 0.0) else {
            return Err(
                format!("--price {g:?}: expected TIER=IN/OUT, e.g. small=0.02/0.04").into(),
            );
        };
        by_tier.insert(t.to_owned(), (i, o));
    }
    tiers
        .iter()
        .map(|t| {
            by_tier
                .get(t)
                .copied()
                .ok_or_else(|| format!("--price: none for tier {t} (give one per tier)").into())
        })
        .collect()
}

/// What the cost-quality report takes from the command line.
#[derive(Debug, Clone, Copy)]
struct LadderArgs<'a> {
    prices: &'a [String],
    signal: Signal,
    split: &'a str,
    plot: Option<&'a std::path::Path>,
}

/// The cost-quality report over all tiers: its JSON and its text.
fn ladder_report(
    a: &LadderArgs<'_>,
    p: &Predictor,
    all: &[Item],
    want: Option<Split>,
    tiers: &[String],
    models: &[String],
) -> Result<(Value, String), Error> {
    let price = prices(a.prices, tiers)?;
    let k = tiers.len();
    // Items every tier answered, with the answers' token counts.
    let complete: Vec<&Item> = all
        .iter()
        .filter(|i| {
            models
                .iter()
                .all(|m| i.scores.contains_key(m) && i.answers.contains_key(m))
        })
        .collect();
    let fit: Vec<&Item> = complete
        .iter()
        .copied()
        .filter(|i| data::split_of(&i.prompt) != Split::Test)
        .collect();
    let items: Vec<&Item> = complete
        .iter()
        .copied()
        .filter(|i| want.is_none_or(|s| data::split_of(&i.prompt) == s))
        .collect();
    if items.is_empty() {
        return Err(format!(
            "--price: no {} items carry every tier's score and answer (labels from `label`)",
            a.split
        )
        .into());
    }
    let cost = |i: &Item, t: usize| {
        let answer = &i.answers[&models[t]];
        (f64::from(answer.prompt_tokens) * price[t].0 + f64::from(answer.tokens) * price[t].1) / 1e6
    };
    let predicted: Vec<Vec<f32>> = items
        .iter()
        .map(|i| {
            let x = p.features(&i.prompt);
            p.gaps(&x, &p.probabilities(&x))
        })
        .collect();
    let cases_for = |signal: Signal, gaps: &dyn Fn(usize) -> Vec<f32>| -> Vec<Case> {
        items
            .iter()
            .enumerate()
            .map(|(n, i)| Case {
                rungs: (0..k)
                    .map(|t| Rung {
                        score: i.scores[&models[t]],
                        cost: cost(i, t),
                        signal: signal.of(i, &models[t]),
                    })
                    .collect(),
                gaps: gaps(n),
            })
            .collect()
    };
    let ours = |n: usize| predicted[n].clone();
    let cases = cases_for(a.signal, &ours);
    let singles: Vec<Outcome> = (0..k).map(|t| ladder::always(&cases, t)).collect();
    let (lo, hi) = (singles[0].cost, singles[k - 1].cost);
    let top_quality = singles[k - 1].quality;
    let points = |o: &[Outcome]| o.iter().map(|o| (o.cost, o.quality)).collect::<Vec<_>>();
    let row = |name: &str, outcomes: &[Outcome]| {
        let saved = |drop: f64| {
            ladder::least_top_share(outcomes, top_quality * (1.0 - drop))
                .map(|s| 1.0 - s / singles[k - 1].top_share.max(1e-12))
        };
        json!({
            "strategy": name,
            "aiq": ladder::aiq(&points(outcomes), lo, hi),
            "top_calls_saved_no_drop": saved(0.0),
            "top_calls_saved_1pct_drop": saved(0.01),
        })
    };
    let mut rows = Vec::new();
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    // Routing alone: ours and the baselines over every tier.
    let thresholds = ladder::thresholds(&cases, 400);
    let routing: Vec<Outcome> = thresholds
        .iter()
        .map(|&t| ladder::route(&cases, t))
        .collect();
    rows.push(row("routing: switchback", &routing));
    curves.push(("routing".into(), ladder::frontier(&points(&routing))));
    // The per-source prior and kNN give each tier a gap to the top tier, as ours does.
    let mut prior: HashMap<&str, (Vec<f64>, usize)> = HashMap::new();
    for i in &fit {
        let e = prior
            .entry(i.source.as_str())
            .or_insert_with(|| (vec![0.0; k], 0));
        for t in 0..k {
            e.0[t] += i.scores[&models[k - 1]] - i.scores[&models[t]];
        }
        e.1 += 1;
    }
    let prior_gaps: Vec<Vec<f32>> = items
        .iter()
        .map(|i| {
            prior.get(i.source.as_str()).map_or(vec![0.0; k], |(g, n)| {
                g.iter().map(|v| (v / *n as f64) as f32).collect()
            })
        })
        .collect();
    let baseline = |gaps: &[Vec<f32>]| -> Vec<Outcome> {
        let cases = cases_for(a.signal, &|n| gaps[n].clone());
        ladder::thresholds(&cases, 400)
            .iter()
            .map(|&t| ladder::route(&cases, t))
            .collect()
    };
    rows.push(row("routing: source-prior", &baseline(&prior_gaps)));
    let knn: Option<Vec<Vec<f64>>> = (0..k)
        .map(|t| knn_gain(p, &fit, &items, &models[t], &models[k - 1], 32))
        .collect();
    if let Some(knn) = knn {
        let gaps: Vec<Vec<f32>> = (0..items.len())
            .map(|n| knn.iter().map(|g| g[n] as f32).collect())
            .collect();
        rows.push(row("routing: knn-32", &baseline(&gaps)));
    }
    let length: Vec<f64> = items
        .iter()
        .map(|i| i.prompt.chars().count() as f64)
        .collect();
    rows.push(row("routing: length", &ladder::bands(&cases, &length, 20)));
    // Random: any mix of the single tiers (their frontier).
    rows.push(row("random (mix of single tiers)", &singles));
    curves.push(("single tiers".into(), ladder::frontier(&points(&singles))));
    let oracle = ladder::oracle(&cases);
    let oracle_curve = ladder::oracle_curve(&cases);
    rows.push(row("oracle", &oracle_curve));
    // Cascades: per tier, floors at the same quantile of its signal on the train +
    // calibration answers (a share `alpha` of them escalate), for each signal.
    let alphas: Vec<f64> = (0..=40).map(|s| f64::from(s) / 40.0).collect();
    // Every routing threshold (alpha 0 is routing alone) and every start.
    let starts = &thresholds;
    for signal in Signal::ALL {
        let fit_signals: Vec<Vec<f64>> = (0..k)
            .map(|t| {
                fit.iter()
                    .map(|i| signal.of(i, &models[t]))
                    .filter(|v| v.is_finite())
                    .collect()
            })
            .collect();
        let cases = cases_for(signal, &ours);
        let alone: Vec<Outcome> = alphas
            .iter()
            .map(|&al| ladder::cascade_route(&cases, 1.0, &ladder::floors_at(&fit_signals, al)))
            .collect();
        let both: Vec<Outcome> = alphas
            .iter()
            .flat_map(|&al| {
                let floors = ladder::floors_at(&fit_signals, al);
                let cases = &cases;
                starts
                    .iter()
                    .map(move |&t| ladder::cascade_route(cases, t, &floors))
            })
            .collect();
        rows.push(row(&format!("cascade alone: {}", signal.name()), &alone));
        rows.push(row(&format!("cascade routing: {}", signal.name()), &both));
        if signal == a.signal {
            curves.push((
                format!("cascade ({})", signal.name()),
                ladder::frontier(&points(&alone)),
            ));
            curves.push((
                format!("cascade routing ({})", signal.name()),
                ladder::frontier(&points(&both)),
            ));
        }
    }
    // The knob's promise: at each target, the quality routing keeps on these items.
    let knob: Vec<Value> = [0.8f32, 0.9, 0.95, 0.99, 1.0]
        .iter()
        .map(|&q| {
            let o = ladder::route(&cases, p.threshold(q));
            json!({
                "target": q,
                "quality_of_top": o.quality / top_quality.max(1e-12),
                "top_share": o.top_share,
                "cost_of_top": o.cost / hi.max(1e-300),
            })
        })
        .collect();
    if let Some(path) = a.plot {
        let series: Vec<(&str, Vec<(f64, f64)>)> = curves
            .iter()
            .map(|(n, c)| (n.as_str(), c.iter().map(|&(x, y)| (x / hi, y)).collect()))
            .chain(std::iter::once((
                "oracle",
                ladder::frontier(&points(&oracle_curve))
                    .iter()
                    .map(|&(x, y)| (x / hi, y))
                    .collect(),
            )))
            .collect();
        std::fs::write(
            path,
            crate::simulate_cli::plot(
                &format!(
                    "{} {} items: quality against cost over {} tiers",
                    items.len(),
                    a.split,
                    k
                ),
                "mean cost per item / always-top's",
                "mean quality",
                &series,
                true,
            ),
        )?;
    }
    let json = json!({
        "items": items.len(),
        "tiers": tiers,
        "prices_per_mtok": price,
        "single_tiers": singles.iter().enumerate().map(|(t, o)| json!({
            "tier": tiers[t], "quality": o.quality, "cost": o.cost,
            "seconds_mean": items.iter().map(|i| i.answers[&models[t]].seconds).sum::<f64>()
                / items.len() as f64,
        })).collect::<Vec<_>>(),
        "oracle": {"quality": oracle.quality, "cost": oracle.cost},
        "strategies": rows,
        "knob": knob,
    });
    let mut text = String::new();
    let _ = writeln!(
        text,
        "== all {k} tiers: {} {} items, cost = tokens × price ($/Mtok {})",
        items.len(),
        a.split,
        tiers
            .iter()
            .zip(&price)
            .map(|(t, (i, o))| format!("{t} {i}/{o}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (t, o) in singles.iter().enumerate() {
        let seconds = items
            .iter()
            .map(|i| i.answers[&models[t]].seconds)
            .sum::<f64>()
            / items.len() as f64;
        let _ = writeln!(
            text,
            "always-{}: quality {:.3}, cost {:.3} of always-{}, {seconds:.2} s per answer",
            tiers[t],
            o.quality,
            o.cost / hi,
            tiers[k - 1]
        );
    }
    let _ = writeln!(
        text,
        "oracle: quality {:.3}, cost {:.3}",
        oracle.quality,
        oracle.cost / hi
    );
    let _ = writeln!(
        text,
        "{:<34} {:>6} {:>16} {:>16}",
        "strategy", "AIQ", "top saved @0%", "top saved @1%"
    );
    let pct = |v: &Value| {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", 100.0 * s))
    };
    for r in &rows {
        let _ = writeln!(
            text,
            "{:<34} {:>6.3} {:>16} {:>16}",
            r["strategy"].as_str().unwrap_or_default(),
            r["aiq"].as_f64().unwrap_or_default(),
            pct(&r["top_calls_saved_no_drop"]),
            pct(&r["top_calls_saved_1pct_drop"]),
        );
    }
    for kn in &knob {
        let _ = writeln!(
            text,
            "knob target {:.2}: {:.3} of always-{} quality, {:.1}% on it, cost {:.3} of it",
            kn["target"].as_f64().unwrap_or_default(),
            kn["quality_of_top"].as_f64().unwrap_or_default(),
            tiers[k - 1],
            100.0 * kn["top_share"].as_f64().unwrap_or_default(),
            kn["cost_of_top"].as_f64().unwrap_or_default(),
        );
    }
    Ok((json, text))
}

/// The `k`-nearest-neighbour baseline (like RouteLLM's similarity-weighted ranking): each
/// item's score is the mean gain of the `k` train + calibration items whose embeddings are
/// closest. Only when the predictor's features include an embedding.
fn knn_gain(
    p: &Predictor,
    all: &[&Item],
    items: &[&Item],
    weak: &str,
    strong: &str,
    k: usize,
) -> Option<Vec<f64>> {
    use crate::difficulty::features;
    let embed = |prompt: &str| -> Vec<f32> {
        let mut e = vec![0.0f32; crate::difficulty::minilm::HIDDEN];
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Quality against the share of calls to the strong model, one line per router.
fn svg(reports: &[Report], r_weak: f64, r_strong: f64, weak: &str, strong: &str) -> String {
    let (w, h, m) = (640.0, 420.0, 50.0);
    let lo = reports
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min);
    let hi = reports
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.1))
        .fold(f64::MIN, f64::max);
    let span = (hi - lo).max(1e-9);
    let x = |c: f64| m + c * (w - 2.0 * m);
    let y = |q: f64| h - m - (q - lo) / span * (h - 2.0 * m);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{b}" stroke="black"/>
<text x="{cx}" y="{ty}" text-anchor="middle">share of calls to {strong}</text>
<text x="12" y="{cy}" transform="rotate(-90 12 {cy})" text-anchor="middle">mean quality</text>
<text x="{m}" y="{ty2}">0</text><text x="{r}" y="{ty2}" text-anchor="end">1</text>
<text x="{lx}" y="{by}" text-anchor="end">{lo:.3}</text><text x="{lx}" y="{ty3}" text-anchor="end">{hi:.3}</text>
"#,
        b = h - m,
        r = w - m,
        cx = w / 2.0,
        ty = h - 12.0,
        cy = h / 2.0,
        ty2 = h - m + 15.0,
        lx = m - 4.0,
        by = h - m,
        ty3 = m + 4.0,
    );
    let colours = ["#1f6feb", "#8b949e", "#2da44e"];
    for (k, r) in reports.iter().enumerate() {
        let pts: Vec<String> = r
            .curve
            .iter()
            .map(|&(c, q)| format!("{:.1},{:.1}", x(c), y(q)))
            .collect();
        let dash = if r.router == "random" {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/><text x="{}" y="{}" fill="{}">{} (APGR {:.3})</text>"#,
            colours[k % colours.len()],
            pts.join(" "),
            w - m - 170.0,
            m + 16.0 * (k as f64 + 1.0),
            colours[k % colours.len()],
            r.router,
            r.apgr
        );
    }
    let _ = writeln!(
        out,
        r#"<circle cx="{}" cy="{}" r="4" fill="black"/><text x="{}" y="{}">always {weak}</text><circle cx="{}" cy="{}" r="4" fill="black"/><text x="{}" y="{}" text-anchor="end">always {strong}</text></svg>"#,
        x(0.0),
        y(r_weak),
        x(0.0) + 6.0,
        y(r_weak) - 6.0,
        x(1.0),
        y(r_strong),
        x(1.0) - 6.0,
        y(r_strong) + 16.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difficulty::{
        data::Answer,
        predictor::{Encoder, TrainOptions, train},
    };
    use std::collections::BTreeMap;

    /// Three tiers on three kinds of prompt: easy ones every tier answers (and the small
    /// tier is sure of), middling ones from the medium tier up, hard ones only the large
    /// tier; a lower tier that is wrong is unsure. Answers of 10 tokens after 100.
    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|k| {
                let (prompt, scores) = match k % 3 {
                    0 => (format!("say hello to friend {k}"), [1.0, 1.0, 1.0]),
                    1 => (format!("sort the list of numbers {k}"), [0.0, 1.0, 1.0]),
                    _ => (format!("prove the theorem number {k}"), [0.0, 0.0, 1.0]),
                };
                let models = ["s", "m", "l"];
                let answers = models
                    .iter()
                    .zip(scores)
                    .map(|(m, score)| {
                        let lp = if score > 0.5 { -0.1 } else { -2.0 };
                        (
                            (*m).to_owned(),
                            Answer {
                                text: "x".into(),
                                tokens: 10,
                                prompt_tokens: 100,
                                mean_logprob: Some(lp),
                                min_logprob: Some(lp * 2.0),
                                first_margin: Some(-lp),
                                first_entropy: Some(-lp),
                                first_top: Vec::new(),
                                seconds: 0.5,
                            },
                        )
                    })
                    .collect();
                Item {
                    id: k.to_string(),
                    prompt,
                    source: "toy".into(),
                    scores: models.iter().map(|m| (*m).to_owned()).zip(scores).collect(),
                    costs: BTreeMap::new(),
                    confidence: models
                        .iter()
                        .zip(scores)
                        .map(|(m, s)| ((*m).to_owned(), if s > 0.5 { -0.1 } else { -2.0 }))
                        .collect(),
                    answers,
                }
            })
            .collect()
    }

    #[test]
    fn the_ladder_report_prices_every_answer_and_compares_the_three_strategies() {
        let all = items(900);
        let opts = TrainOptions {
            tiers: vec![
                ("small".into(), "s".into()),
                ("medium".into(), "m".into()),
                ("large".into(), "l".into()),
            ],
            epochs: 200,
            l2: 1e-4,
            default_quality: 0.95,
            heads_on_calibration: true,
            gap_head: false,
            knob_z: 0.0,
        };
        let p = train(&all, &opts, Encoder::Lexical).expect("trains");
        let prices = [
            "small=1/2".to_owned(),
            "medium=3/6".into(),
            "large=9/18".into(),
        ];
        let args = LadderArgs {
            prices: &prices,
            signal: Signal::Confidence,
            split: "test",
            plot: None,
        };
        let tiers: Vec<String> = ["small", "medium", "large"].map(String::from).to_vec();
        let models: Vec<String> = ["s", "m", "l"].map(String::from).to_vec();
        let (json, text) =
            ladder_report(&args, &p, &all, Some(Split::Test), &tiers, &models).expect("report");
        // Cost: 100 prompt and 10 completion tokens at each tier's price.
        let large_cost = (100.0 * 9.0 + 10.0 * 18.0) / 1e6;
        assert!(
            (json["single_tiers"][2]["cost"].as_f64().expect("cost") - large_cost).abs() < 1e-15
        );
        let strategy = |name: &str| {
            json["strategies"]
                .as_array()
                .expect("strategies")
                .iter()
                .find(|r| r["strategy"] == name)
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .clone()
        };
        let aiq = |name: &str| strategy(name)["aiq"].as_f64().expect("aiq");
        // The items are separable by their words and by the confidences: routing and the
        // cascade both beat a mix of single tiers, and cascade routing is at least as good
        // as the better of the two (it contains both).
        let (route, cascade, both, random) = (
            aiq("routing: switchback"),
            aiq("cascade alone: confidence"),
            aiq("cascade routing: confidence"),
            aiq("random (mix of single tiers)"),
        );
        assert!(route > random + 0.05, "{text}");
        assert!(cascade > random, "{text}");
        assert!(both >= route.max(cascade) - 1e-12, "{text}");
        // Nothing beats perfect knowledge.
        let oracle = aiq("oracle");
        assert!(route <= oracle + 1e-12 && both <= oracle + 1e-12, "{text}");
        // Routing knows the hard third needs the top tier and nothing else does: it
        // saves two thirds of the top-tier calls at no drop in quality.
        let saved = strategy("routing: switchback")["top_calls_saved_no_drop"]
            .as_f64()
            .expect("saved");
        assert!((saved - 2.0 / 3.0).abs() < 0.05, "{text}");
        // The knob at 1 is always-top.
        let knob = json["knob"].as_array().expect("knob");
        let at_one = knob.iter().find(|k| k["target"] == 1.0).expect("target 1");
        assert_eq!(at_one["top_share"], 1.0);
        // A tier without a price is refused, naming it.
        let err = ladder_report(
            &LadderArgs {
                prices: &prices[..2],
                ..args
            },
            &p,
            &all,
            Some(Split::Test),
            &tiers,
            &models,
        )
        .expect_err("no price for large");
        assert!(err.to_string().contains("large"), "{err}");
    }

    #[test]
    fn prices_are_read_per_tier_and_bad_ones_refused() {
        let tiers = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            prices(&["b=3/4".into(), "a=0.5/1".into()], &tiers).expect("prices"),
            [(0.5, 1.0), (3.0, 4.0)]
        );
        for bad in ["a=1", "a=x/2", "a=-1/2", "a"] {
            assert!(
                prices(&[bad.into(), "b=1/1".into()], &tiers).is_err(),
                "{bad}"
            );
        }
    }
}
