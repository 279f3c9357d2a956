//! The cost–quality report over all tiers: each answer priced by its real token counts,
//! routing alone, cascade alone and cascade routing against single tiers and the oracle,
//! and the quality knob's promise.

use std::{collections::HashMap, fmt::Write as _};

use serde_json::{Value, json};
use switchback_routing::difficulty::predictor::{Predictor, choose};

use super::{
    Signal,
    ladder::{self, Case, Outcome, Rung},
    pair::knn_gain,
};
use crate::{
    Error,
    data::{self, Item, Split},
    plot::{Plot, Series, Style},
};

/// `TIER=IN/OUT` prices, one per tier in the predictor's order.
pub fn prices(given: &[String], tiers: &[String]) -> Result<Vec<(f64, f64)>, Error> {
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
            return Err(Error::usage(format!(
                "--price {g:?}: expected TIER=IN/OUT, e.g. small=0.02/0.04"
            )));
        };
        by_tier.insert(t.to_owned(), (i, o));
    }
    tiers
        .iter()
        .map(|t| {
            by_tier.get(t).copied().ok_or_else(|| {
                Error::usage(format!("--price: none for tier {t} (give one per tier)"))
            })
        })
        .collect()
}

/// What the cost-quality report takes from the command line.
#[derive(Debug, Clone, Copy)]
pub struct LadderArgs<'a> {
    /// `TIER=IN/OUT`, one per tier.
    pub prices: &'a [String],
    /// The signal plotted.
    pub signal: Signal,
    /// The items' split, by name.
    pub split: &'a str,
    /// Where to write the curves as SVG.
    pub plot: Option<&'a std::path::Path>,
}

/// The cost-quality report over all tiers: its JSON and its text.
pub fn ladder_report(
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
        return Err(Error::usage(format!(
            "--price: no {} items carry every tier's score and answer (labels from `label`)",
            a.split
        )));
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
    // The knob's promise: at each target, the quality routing keeps on these items, with
    // the cascade behind it when the knob was fitted for one (the artifact's floors, judged
    // as the router judges them).
    let pairs: Vec<(String, String)> = tiers.iter().cloned().zip(models.iter().cloned()).collect();
    let knob: Vec<Value> = [0.8f32, 0.9, 0.95, 0.99, 1.0]
        .iter()
        .map(|&q| {
            let t = p.threshold(q);
            let o = match &p.cascade_floors {
                None => ladder::route(&cases, t),
                Some(floors) => ladder::mean(
                    items.len(),
                    items.iter().zip(&predicted).map(|(i, g)| {
                        let start = choose(g, t);
                        let kept = i.climb(&pairs, start, floors);
                        let spent = (start..=kept).map(|r| cost(i, r)).sum::<f64>();
                        (spent, i.scores[&models[kept]], kept + 1 == k)
                    }),
                ),
            };
            json!({
                "target": q,
                "quality_of_top": o.quality / top_quality.max(1e-12),
                "top_share": o.top_share,
                "cost_of_top": o.cost / hi.max(1e-300),
            })
        })
        .collect();
    if let Some(path) = a.plot {
        let relative = |c: &[(f64, f64)]| c.iter().map(|&(x, y)| (x / hi, y)).collect();
        let series = curves
            .iter()
            .map(|(n, c)| Series::new(n.as_str(), relative(c), Style::LinePoints))
            .chain(std::iter::once(Series::new(
                "oracle",
                relative(&ladder::frontier(&points(&oracle_curve))),
                Style::LinePoints,
            )))
            .collect();
        let plot = Plot {
            title: format!(
                "{} {} items: quality against cost over {} tiers",
                items.len(),
                a.split,
                k
            ),
            x_label: "mean cost per item / always-top's".into(),
            y_label: "mean quality".into(),
            series,
            marks: Vec::new(),
        };
        crate::error::write(path, plot.svg())?;
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
        "knob_with_cascade": p.cascade_floors.is_some(),
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
    let knob_name = if p.cascade_floors.is_some() {
        "knob (cascade routing, the artifact's floors)"
    } else {
        "knob"
    };
    for kn in &knob {
        let _ = writeln!(
            text,
            "{knob_name} target {:.2}: {:.3} of always-{} quality, {:.1}% on it, cost {:.3} of it",
            kn["target"].as_f64().unwrap_or_default(),
            kn["quality_of_top"].as_f64().unwrap_or_default(),
            tiers[k - 1],
            100.0 * kn["top_share"].as_f64().unwrap_or_default(),
            kn["cost_of_top"].as_f64().unwrap_or_default(),
        );
    }
    Ok((json, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        data::Answer,
        train::{TrainOptions, train},
    };
    use std::collections::BTreeMap;
    use switchback_routing::difficulty::predictor::Encoder;

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
            knob_on_train: false,
            gap_head: false,
            knob_z: 0.0,
            cascade_floors: None,
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
