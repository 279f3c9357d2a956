//! Training the difficulty predictor: one logistic head per tier on the train split (and,
//! optionally, a head on the top tier's gain), then the quality knob, the table that turns
//! a request's quality target into a threshold on the predicted gaps, on the calibration
//! split. The artifact it returns is what the router loads ([`Predictor`]).

mod curve;
mod logistic;

pub use curve::{CurvePoint, learning_curve};

use switchback_routing::difficulty::{
    features::{Idf, Sparse},
    predictor::{self, ALL_TOP, Calibration, Encoder, Head, Predictor, choose},
};

use crate::data::{Item, Split, TierFloors, split_of};
use logistic::{fit, log_loss};

/// Data or options training cannot work with.
#[derive(Debug, thiserror::Error)]
#[error("training: {0}")]
pub struct TrainError(pub String);

/// Heads fitted on some items, with their training losses (for the artifact's record).
struct Fitted {
    heads: Vec<Head>,
    gap: Option<Head>,
    losses: Vec<String>,
}

/// One head per tier on `on` (features `xs`), and the gain head when `opts` asks for it.
fn fit_heads(on: &[&Item], xs: &[Sparse], opts: &TrainOptions) -> Fitted {
    let mut heads = Vec::new();
    let mut losses = Vec::new();
    for (tier, model) in &opts.tiers {
        let ys: Vec<f32> = on.iter().map(|i| i.scores[model] as f32).collect();
        let (bias, w) = fit(xs, &ys, opts.epochs, opts.l2);
        losses.push(format!("{tier} {:.3}", log_loss(xs, &ys, bias, &w)));
        heads.push(Head::fitted(tier, model, bias, &w));
    }
    let (weak_m, strong_m) = (&opts.tiers[0].1, &opts.tiers[opts.tiers.len() - 1].1);
    let gap = opts.gap_head.then(|| {
        let ys: Vec<f32> = on
            .iter()
            .map(|i| ((i.scores[strong_m] - i.scores[weak_m] + 1.0) / 2.0) as f32)
            .collect();
        let (bias, w) = fit(xs, &ys, opts.epochs, opts.l2);
        losses.push(format!("gap {:.3}", log_loss(xs, &ys, bias, &w)));
        Head::fitted("gap", &format!("{strong_m} - {weak_m}"), bias, &w)
    });
    Fitted { heads, gap, losses }
}

/// Folds of the calibration items when the heads are fitted on them too (cross-fitting).
const CALIBRATION_FOLDS: usize = 5;

/// Training options.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// (tier, model) in rising cost.
    pub tiers: Vec<(String, String)>,
    pub epochs: usize,
    pub l2: f32,
    pub default_quality: f32,
    /// Fit the heads on train + calibration; the calibration table is then fitted on
    /// cross-fitted (out-of-fold) gains of the calibration items, so it stays honest.
    pub heads_on_calibration: bool,
    /// Also fit a head on the gain itself and decide on it.
    pub gap_head: bool,
    /// How conservative the knob is: a threshold serves target q only if the quality it
    /// keeps on the calibration items, less this many standard errors, reaches q of the
    /// top tier's. 0 takes the calibration items at face value; 1.645 is a one-sided 95 %
    /// bound, which matters when they are few.
    pub knob_z: f64,
    /// Fit the knob for cascade routing with these floors (tier → floors): on each
    /// calibration item, the routed tier's answer escalates while it is below its floors,
    /// and the kept answer's score counts. `None`: routing alone.
    pub cascade_floors: Option<TierFloors>,
}

/// Fits one head per tier on the train split and the calibration table on the calibration
/// split of `items` (items without a score for every tier's model are skipped).
pub fn train(
    items: &[Item],
    opts: &TrainOptions,
    encoder: Encoder,
) -> Result<Predictor, TrainError> {
    if opts.tiers.len() < 2 {
        return Err(TrainError("at least two tiers (in rising cost)".into()));
    }
    if opts.gap_head && opts.tiers.len() != 2 {
        return Err(TrainError("a gap head is for two tiers only".into()));
    }
    let usable: Vec<&Item> = items
        .iter()
        .filter(|i| opts.tiers.iter().all(|(_, m)| i.scores.contains_key(m)))
        .collect();
    let part = |s: Split| {
        usable
            .iter()
            .copied()
            .filter(move |i| split_of(&i.prompt) == s)
    };
    let train: Vec<&Item> = part(Split::Train).collect();
    let calib: Vec<&Item> = part(Split::Calibration).collect();
    if train.len() < 200 {
        tracing::warn!(
            train = train.len(),
            calibration = calib.len(),
            "few training items: expect a weak predictor"
        );
    }
    if let Some(floors) = &opts.cascade_floors {
        if let Some(tier) = floors
            .keys()
            .find(|t| !opts.tiers.iter().any(|(n, _)| n == *t))
        {
            return Err(TrainError(format!(
                "cascade floors for tier {tier:?}, which is not one of the --tier names"
            )));
        }
        let floored = opts.tiers.iter().filter(|(t, _)| floors.contains_key(t));
        for (tier, model) in floored {
            let missing = calib
                .iter()
                .filter(|i| !i.answers.contains_key(model))
                .count();
            if missing > 0 {
                return Err(TrainError(format!(
                    "cascade floors for {tier}, but {missing} calibration items have no answer of \
                     {model} to judge (labels from `label` carry them)"
                )));
            }
        }
    }
    if train.len() < 10 || calib.len() < 5 {
        return Err(TrainError(format!(
            "too little data: {} train and {} calibration items carry scores for every tier's model",
            train.len(),
            calib.len()
        )));
    }
    // The n-gram weights come from the prompts alone (no labels), so every train and
    // calibration prompt counts, also under cross-fitting.
    let idf = Idf::fit(train.iter().chain(&calib).map(|i| i.prompt.as_str()));
    // Features once per item: the cross-fitting below refits on subsets of them.
    let train_xs: Vec<Sparse> = train
        .iter()
        .map(|i| encoder.extract(&i.prompt, &idf))
        .collect();
    let calib_xs: Vec<Sparse> = calib
        .iter()
        .map(|i| encoder.extract(&i.prompt, &idf))
        .collect();
    let (fit_on, xs): (Vec<&Item>, Vec<Sparse>) = if opts.heads_on_calibration {
        (
            train.iter().chain(&calib).copied().collect(),
            train_xs.iter().chain(&calib_xs).cloned().collect(),
        )
    } else {
        (train.clone(), train_xs.clone())
    };
    let fitted = fit_heads(&fit_on, &xs, opts);
    let (heads, gap, losses) = (fitted.heads, fitted.gap, fitted.losses);
    // Calibration: for each quality target, the highest threshold on the predicted gaps
    // (the most cheap answers) whose routing keeps that share of the top tier's quality
    // on the calibration items.
    let models: Vec<&String> = opts.tiers.iter().map(|(_, m)| m).collect();
    let strong_m = models[models.len() - 1];
    let gaps: Vec<Vec<f32>> = if opts.heads_on_calibration {
        // The heads saw the calibration items, so their gaps there are optimistic and a
        // table fitted on them over-promises on new prompts (at target 0.95 the test split
        // got 88 %). Cross-fit instead: each fold of the calibration items is scored by
        // heads fitted on train plus the other folds, and the table is fitted on those
        // out-of-fold gaps; the shipped heads still use everything.
        let mut out = vec![Vec::new(); calib.len()];
        for fold in 0..CALIBRATION_FOLDS {
            let in_fold = |k: usize| k % CALIBRATION_FOLDS == fold;
            let outside = (0..calib.len()).filter(|&k| !in_fold(k));
            let on: Vec<&Item> = train
                .iter()
                .copied()
                .chain(outside.clone().map(|k| calib[k]))
                .collect();
            let on_xs: Vec<Sparse> = train_xs
                .iter()
                .cloned()
                .chain(outside.map(|k| calib_xs[k].clone()))
                .collect();
            let fold = fit_heads(&on, &on_xs, opts);
            for (k, x) in calib_xs.iter().enumerate().filter(|(k, _)| in_fold(*k)) {
                let p: Vec<f32> = fold.heads.iter().map(|h| h.probability(x)).collect();
                out[k] = predictor::gaps(fold.gap.as_ref(), x, &p);
            }
        }
        out
    } else {
        calib_xs
            .iter()
            .map(|x| {
                let p: Vec<f32> = heads.iter().map(|h| h.probability(x)).collect();
                predictor::gaps(gap.as_ref(), x, &p)
            })
            .collect()
    };
    let mut candidates: Vec<f32> = gaps.iter().flatten().copied().collect();
    candidates.push(ALL_TOP);
    candidates.push(1.0);
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    // Per threshold, sums over the calibration items of the routed score r and the top
    // tier's score s (and their squares and product), so that the quality kept at target
    // q, mean(r - q s), has a standard error too.
    let n = calib.len() as f64;
    let no_floors = TierFloors::new();
    let floors = opts.cascade_floors.as_ref().unwrap_or(&no_floors);
    let sums_at = |t: f32| -> [f64; 5] {
        let mut m = [0.0; 5];
        for (i, g) in calib.iter().zip(&gaps) {
            let kept = i.climb(&opts.tiers, choose(g, t), floors);
            let (r, s) = (i.scores[models[kept]], i.scores[strong_m]);
            m[0] += r;
            m[1] += s;
            m[2] += r * r;
            m[3] += s * s;
            m[4] += r * s;
        }
        m
    };
    let sums: Vec<(f32, [f64; 5])> = candidates.iter().map(|&t| (t, sums_at(t))).collect();
    // Whether routing at these sums keeps q of the top tier's quality: the mean of
    // d = r - q s, less `knob_z` standard errors, is at least 0.
    let keeps = |m: &[f64; 5], q: f64| -> bool {
        let mean = (m[0] - q * m[1]) / n;
        let second = (m[2] - 2.0 * q * m[4] + q * q * m[3]) / n;
        let se = ((second - mean * mean).max(0.0) / n).sqrt();
        mean - opts.knob_z * se >= -1e-12
    };
    let mut calibration = Vec::new();
    for step in 0..=100 {
        let q = step as f32 / 100.0;
        let threshold = sums
            .iter()
            .rev()
            .find(|(_, m)| keeps(m, f64::from(q)))
            .map_or(ALL_TOP, |(t, _)| *t);
        calibration.push(Calibration {
            quality: q,
            threshold,
        });
    }
    // A target of 1 means "no quality risk": everything goes to the top tier, even where
    // the calibration data says a cheaper answer would have done as well.
    if let Some(last) = calibration.last_mut() {
        last.threshold = ALL_TOP;
    }
    // Keep the table monotone: a higher target never raises the bar for the top tier.
    for k in 1..calibration.len() {
        calibration[k].threshold = calibration[k].threshold.min(calibration[k - 1].threshold);
    }
    let trained_on = format!(
        "{} train + {} calibration items (heads fitted on {}; training loss {}); tiers {}{}",
        train.len(),
        calib.len(),
        fit_on.len(),
        losses.join(", "),
        opts.tiers
            .iter()
            .map(|(t, m)| format!("{t}={m}"))
            .collect::<Vec<_>>()
            .join(", "),
        if opts.cascade_floors.is_some() {
            "; knob fitted for cascade routing"
        } else {
            ""
        }
    );
    let mut p = Predictor::assemble(
        heads,
        gap,
        calibration,
        idf,
        opts.default_quality,
        trained_on,
        encoder,
    );
    p.cascade_floors.clone_from(&opts.cascade_floors);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Two tiers, `small` trained on `weak` and `large` on `strong`, default target 0.9.
    pub(crate) fn opts(epochs: usize, l2: f32) -> TrainOptions {
        TrainOptions {
            tiers: vec![
                ("small".into(), "weak".into()),
                ("large".into(), "strong".into()),
            ],
            epochs,
            l2,
            default_quality: 0.9,
            heads_on_calibration: false,
            gap_head: false,
            knob_z: 0.0,
            cascade_floors: None,
        }
    }

    /// Synthetic data where "hard" prompts defeat the weak model.
    pub(crate) fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|k| {
                let hard = k % 3 == 0;
                let prompt = if hard {
                    format!("prove the theorem about integrals number {k}")
                } else {
                    format!("say hello to friend {k}")
                };
                Item {
                    id: k.to_string(),
                    prompt,
                    source: "synthetic".into(),
                    scores: BTreeMap::from([
                        ("weak".to_owned(), if hard { 0.0 } else { 1.0 }),
                        ("strong".to_owned(), 1.0),
                    ]),
                    costs: BTreeMap::new(),
                    confidence: BTreeMap::new(),
                    answers: BTreeMap::new(),
                }
            })
            .collect()
    }

    #[test]
    fn learns_which_prompts_are_hard_and_the_knob_moves_them() {
        let opts = opts(200, 1e-4);
        let p = train(&items(600), &opts, Encoder::Lexical).expect("trains");
        let easy = p.decide("say hello to friend 100001", 0.99);
        let hard = p.decide("prove the theorem about integrals number 100002", 1.0);
        assert!(
            easy.probabilities[0].1 > hard.probabilities[0].1 + 0.3,
            "{easy:?} {hard:?}"
        );
        assert_eq!(easy.tier, "small");
        assert_eq!(hard.tier, "large");
        // Quality target 0: everything may go to the small tier.
        assert_eq!(
            p.decide("prove the theorem about integrals number 7", 0.0)
                .tier,
            "small"
        );
        // A higher target lowers the gap the top tier needs.
        assert!(
            p.calibration
                .windows(2)
                .all(|w| w[0].threshold >= w[1].threshold)
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.json");
        crate::artifact::save_predictor(&p, &path).expect("save");
        let loaded = crate::artifact::load_predictor(&path, Encoder::Lexical).expect("load");
        assert_eq!(
            loaded.decide("say hello to friend 5", 0.9),
            p.decide("say hello to friend 5", 0.9)
        );
    }

    #[test]
    fn calibration_ends_route_all_bottom_or_all_top_and_is_monotone() {
        let opts = opts(100, 1e-3);
        let p = train(&items(600), &opts, Encoder::Lexical).expect("trains");
        let prompts: Vec<String> = (0..50)
            .map(|k| {
                if k % 2 == 0 {
                    format!("say hello to friend {k}")
                } else {
                    format!("prove the theorem about integrals number {k}")
                }
            })
            .collect();
        let large_share = |q: f32| {
            prompts
                .iter()
                .filter(|pr| p.decide(pr, q).tier == "large")
                .count()
        };
        assert_eq!(
            large_share(0.0),
            0,
            "target 0: everything to the bottom tier"
        );
        assert_eq!(
            large_share(1.0),
            prompts.len(),
            "target 1: everything to the top tier"
        );
        let shares: Vec<usize> = (0..=10).map(|k| large_share(k as f32 / 10.0)).collect();
        assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
        assert!(
            p.calibration
                .windows(2)
                .all(|w| w[0].threshold >= w[1].threshold)
        );
    }

    /// Three tiers: easy prompts every tier answers, middling ones the medium tier too,
    /// hard ones only the large tier.
    fn three_tier_items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|k| {
                let (prompt, scores) = match k % 3 {
                    0 => (format!("say hello to friend {k}"), [1.0, 1.0, 1.0]),
                    1 => (format!("sort the list of numbers {k}"), [0.0, 1.0, 1.0]),
                    _ => (
                        format!("prove the theorem about integrals number {k}"),
                        [0.0, 0.0, 1.0],
                    ),
                };
                Item {
                    id: k.to_string(),
                    prompt,
                    source: "synthetic".into(),
                    scores: ["s", "m", "l"]
                        .iter()
                        .zip(scores)
                        .map(|(m, v)| ((*m).to_owned(), v))
                        .collect(),
                    costs: BTreeMap::new(),
                    confidence: BTreeMap::new(),
                    answers: BTreeMap::new(),
                }
            })
            .collect()
    }

    fn three_tier_opts() -> TrainOptions {
        TrainOptions {
            tiers: vec![
                ("small".into(), "s".into()),
                ("medium".into(), "m".into()),
                ("large".into(), "l".into()),
            ],
            heads_on_calibration: true,
            ..opts(200, 1e-4)
        }
    }

    #[test]
    fn three_tiers_each_get_the_prompts_only_they_answer() {
        let p =
            train(&three_tier_items(900), &three_tier_opts(), Encoder::Lexical).expect("trains");
        let easy = p.decide("say hello to friend 100001", 0.99);
        let middling = p.decide("sort the list of numbers 100002", 0.99);
        let hard = p.decide("prove the theorem about integrals number 100003", 0.99);
        assert_eq!(
            (
                easy.tier.as_str(),
                middling.tier.as_str(),
                hard.tier.as_str()
            ),
            ("small", "medium", "large"),
            "{easy:?} {middling:?} {hard:?}"
        );
        // The decision shows every tier's probability and gap, and why.
        assert_eq!(middling.probabilities.len(), 3);
        assert_eq!(
            middling
                .gaps
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>(),
            ["small", "medium", "large"]
        );
        assert_eq!(middling.gaps[2].1, 0.0);
        assert!(middling.gaps[0].1 > middling.threshold, "{middling:?}");
        assert!(middling.gaps[1].1 <= middling.threshold, "{middling:?}");
        assert!(
            middling.reason.starts_with("medium is the cheapest tier"),
            "{}",
            middling.reason
        );
        for prompt in [
            "say hello to friend 7",
            "sort the list of numbers 8",
            "prove the theorem about integrals number 9",
        ] {
            assert_eq!(p.decide(prompt, 1.0).tier, "large", "q = 1: the top tier");
            assert_eq!(p.decide(prompt, 0.0).tier, "small", "q = 0: the cheapest");
        }
    }

    /// Three-tier items whose answers carry a first-step margin: each tier is sure (2.0)
    /// where it is right and unsure (0.1) where it is wrong.
    fn three_tier_items_with_margins(n: usize) -> Vec<Item> {
        let mut items = three_tier_items(n);
        for i in &mut items {
            for m in ["s", "m", "l"] {
                let right = i.scores[m] > 0.5;
                let answer = crate::data::Answer {
                    text: "answer".into(),
                    tokens: 4,
                    first_margin: Some(if right { 2.0 } else { 0.1 }),
                    ..Default::default()
                };
                i.answers.insert(m.to_owned(), answer);
            }
        }
        items
    }

    #[test]
    fn a_knob_fitted_for_cascade_routing_starts_low_where_the_cascade_catches_mistakes() {
        let items = three_tier_items_with_margins(600);
        let floors: TierFloors = ["small", "medium"]
            .iter()
            .map(|t| {
                let f = switchback_routing::policy::Floors {
                    min_mean_logprob: None,
                    min_token_logprob: None,
                    min_first_margin: Some(1.0),
                };
                ((*t).to_owned(), f)
            })
            .collect();
        let alone = train(&items, &three_tier_opts(), Encoder::Lexical).expect("trains");
        let cascading = train(
            &items,
            &TrainOptions {
                cascade_floors: Some(floors.clone()),
                ..three_tier_opts()
            },
            Encoder::Lexical,
        )
        .expect("trains");
        let prompt = "sort the list of numbers 100002";
        // Routing alone must send it to medium to keep 99 %; with the cascade behind it,
        // small's unsure wrong answer escalates, so starting on small keeps the quality.
        assert_eq!(alone.decide(prompt, 0.99).tier, "medium");
        assert_eq!(cascading.decide(prompt, 0.99).tier, "small");
        assert_eq!(
            cascading.decide(prompt, 1.0).tier,
            "large",
            "q = 1: the top tier"
        );
        assert_eq!(cascading.cascade_floors.as_ref(), Some(&floors));
        assert_eq!(alone.cascade_floors, None);
        // The artifact keeps the floors; the router warns when its policy differs.
        let mut policy = switchback_routing::policy::CascadePolicy::default();
        assert!(cascading.knob_mismatch(&policy).is_some(), "cascade off");
        policy.enabled = true;
        policy.per_tier = floors;
        assert_eq!(cascading.knob_mismatch(&policy), None);
        assert!(
            alone.knob_mismatch(&policy).is_some(),
            "fitted for routing alone"
        );
        let back = Predictor::from_json(&cascading.to_json().expect("json"), Encoder::Lexical)
            .expect("loads");
        assert_eq!(back.cascade_floors, cascading.cascade_floors);
    }

    #[test]
    fn cascade_floors_need_answers_to_judge() {
        let err = train(
            &three_tier_items(300),
            &TrainOptions {
                cascade_floors: Some(
                    [(
                        "small".to_owned(),
                        switchback_routing::policy::Floors::default(),
                    )]
                    .into(),
                ),
                ..three_tier_opts()
            },
            Encoder::Lexical,
        )
        .expect_err("no answers to judge");
        assert!(err.to_string().contains("no answer of s"), "{err}");
    }

    #[test]
    fn the_three_tier_knob_is_monotone_in_the_quality_target() {
        let p =
            train(&three_tier_items(600), &three_tier_opts(), Encoder::Lexical).expect("trains");
        let index = |tier: &str| p.tiers().position(|t| t == tier).expect("a tier");
        let mut rng = switchback_routing::rng::Rng::new(7);
        let words = [
            "say", "hello", "sort", "list", "prove", "theorem", "numbers", "friend",
        ];
        for _ in 0..200 {
            let prompt: Vec<&str> = (0..1 + rng.next_u64() % 6)
                .map(|_| words[(rng.next_u64() % words.len() as u64) as usize])
                .collect();
            let prompt = prompt.join(" ");
            let tiers: Vec<usize> = (0..=50)
                .map(|k| index(&p.decide(&prompt, k as f32 / 50.0).tier))
                .collect();
            assert!(
                tiers.windows(2).all(|w| w[0] <= w[1]),
                "{prompt:?}: {tiers:?}"
            );
            assert_eq!((tiers[0], tiers[50]), (0, 2), "{prompt:?}");
        }
        // The rule itself: a higher threshold never picks a dearer tier, whatever the gaps.
        for _ in 0..1000 {
            let mut gaps: Vec<f32> = (0..3).map(|_| 2.0 * rng.unit() as f32 - 1.0).collect();
            gaps[2] = 0.0;
            let (a, b) = (2.0 * rng.unit() as f32 - 1.0, 2.0 * rng.unit() as f32 - 1.0);
            let (lo, hi) = (a.min(b), a.max(b));
            assert!(choose(&gaps, hi) <= choose(&gaps, lo), "{gaps:?} {lo} {hi}");
        }
    }

    #[test]
    fn a_conservative_knob_never_asks_less_of_the_top_tier() {
        // Noisy outcomes: the weak model is right on a random 60 % of easy prompts and
        // 20 % of hard ones, so the calibration items' quality has a real standard error.
        let mut rng = switchback_routing::rng::Rng::new(11);
        let noisy: Vec<Item> = items(600)
            .into_iter()
            .map(|mut i| {
                let hard = i.prompt.starts_with("prove");
                let p = if hard { 0.2 } else { 0.6 };
                i.scores
                    .insert("weak".into(), f64::from(u8::from(rng.unit() < p)));
                i
            })
            .collect();
        let plain = train(&noisy, &opts(100, 1e-3), Encoder::Lexical).expect("trains");
        let careful = train(
            &noisy,
            &TrainOptions {
                knob_z: 1.645,
                ..opts(100, 1e-3)
            },
            Encoder::Lexical,
        )
        .expect("trains");
        let pairs: Vec<(f32, f32)> = plain
            .calibration
            .iter()
            .zip(&careful.calibration)
            .map(|(a, b)| (a.threshold, b.threshold))
            .collect();
        assert!(pairs.iter().all(|(a, b)| b <= a), "{pairs:?}");
        assert!(pairs.iter().any(|(a, b)| b < a), "{pairs:?}");
    }
}
