//! The learning curve: how a predictor's APGR grows with labelled data.

use serde::Serialize;
use switchback_routing::difficulty::{
    features::{Idf, Sparse},
    predictor::{self, Encoder},
};

use super::{TrainError, TrainOptions, fit_heads};
use crate::{
    data::{Item, salted_key},
    metrics::Curve,
};

/// One point of a learning curve: heads fitted on `train_items` labelled items, scored on
/// held-out ones.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub train_items: usize,
    /// APGR on the held-out fold of each repetition.
    pub apgr: Vec<f64>,
}

/// How APGR grows with labelled data, using the predictor's own features and heads: the
/// items (ignoring the split rule: an analysis, not a shipped number) are cut into `folds`
/// folds by a salted prompt hash; for each of the first `repeats` folds, heads are fitted on
/// the first `n` items of the other folds (in a second salted hash order) for every `n` in
/// `sizes`, and APGR is measured on the held-out fold.
pub fn learning_curve(
    items: &[Item],
    sizes: &[usize],
    folds: usize,
    repeats: usize,
    opts: &TrainOptions,
    encoder: &Encoder,
) -> Result<Vec<CurvePoint>, TrainError> {
    if opts.tiers.len() != 2 || folds < 2 {
        return Err(TrainError("two tiers and at least two folds".into()));
    }
    let (weak_m, strong_m) = (&opts.tiers[0].1, &opts.tiers[1].1);
    let usable: Vec<&Item> = items
        .iter()
        .filter(|i| i.scores.contains_key(weak_m) && i.scores.contains_key(strong_m))
        .collect();
    if usable.len() < folds {
        return Err(TrainError(format!(
            "{} items carry scores for both {weak_m} and {strong_m}: fewer than the {folds} folds",
            usable.len()
        )));
    }
    let fold_of =
        |i: &Item| (salted_key("switchback-curve-fold", &i.prompt) % folds as u64) as usize;
    let mut out: Vec<CurvePoint> = sizes
        .iter()
        .map(|&n| CurvePoint {
            train_items: n,
            apgr: Vec::new(),
        })
        .collect();
    // Each item's fold once (a SHA-256 each), and every size checked before any fitting.
    let assigned: Vec<(usize, &Item)> = usable.iter().map(|i| (fold_of(i), *i)).collect();
    let splits: Vec<(Vec<&Item>, Vec<&Item>)> = (0..repeats.min(folds))
        .map(|fold| {
            let (held, mut pool): (Vec<_>, Vec<_>) = assigned.iter().partition(|(f, _)| *f == fold);
            pool.sort_by_cached_key(|(_, i)| salted_key("switchback-curve-order", &i.prompt));
            (
                held.into_iter().map(|(_, i)| i).collect(),
                pool.into_iter().map(|(_, i)| i).collect(),
            )
        })
        .collect();
    let smallest = splits.iter().map(|(_, pool)| pool.len()).min().unwrap_or(0);
    if let Some(&n) = sizes.iter().find(|&&n| n > smallest) {
        return Err(TrainError(format!(
            "{n} training items asked for, but only {smallest} are outside a fold"
        )));
    }
    for (held, pool) in &splits {
        for point in &mut out {
            let on = &pool[..point.train_items];
            let idf = Idf::fit(on.iter().map(|i| i.prompt.as_str()));
            let xs: Vec<Sparse> = on
                .iter()
                .map(|i| encoder.extract(&i.prompt, &idf))
                .collect();
            let fitted = fit_heads(on, &xs, opts);
            let scores: Vec<f64> = held
                .iter()
                .map(|i| {
                    let x = encoder.extract(&i.prompt, &idf);
                    let p: Vec<f32> = fitted.heads.iter().map(|h| h.probability(&x)).collect();
                    f64::from(predictor::gaps(fitted.gap.as_ref(), &x, &p)[0])
                })
                .collect();
            let weak: Vec<f64> = held.iter().map(|i| i.scores[weak_m]).collect();
            let strong: Vec<f64> = held.iter().map(|i| i.scores[strong_m]).collect();
            point.apgr.push(Curve::of(&scores, &weak, &strong).apgr());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::{items, opts};

    #[test]
    fn the_learning_curve_rises_with_labelled_items() {
        let opts = opts(100, 1e-4);
        // With two items the heads cannot know which prompts are hard; with 300 they
        // route the hard third first, as the oracle does. (The oracle's APGR here is
        // 1 - 1/6 = 0.83: PGR climbs to 1 over the first third of strong calls.)
        let curve =
            learning_curve(&items(600), &[2, 300], 4, 2, &opts, &Encoder::Lexical).expect("curve");
        assert_eq!(curve.len(), 2);
        assert!(curve.iter().all(|p| p.apgr.len() == 2));
        let mean = |p: &CurvePoint| p.apgr.iter().sum::<f64>() / p.apgr.len() as f64;
        assert!(mean(&curve[1]) > 0.8, "{curve:?}");
        assert!(mean(&curve[1]) > mean(&curve[0]) + 0.2, "{curve:?}");
        assert!(
            learning_curve(&items(40), &[100], 4, 1, &opts, &Encoder::Lexical).is_err(),
            "more training items than exist outside a fold"
        );
    }
}
