//! Each lower tier's confidence in its own answer, where the labels carry none: modelled
//! with a chosen AUROC between right and wrong answers; and the cascade floors fitted on
//! the trace's calibration items.

use switchback_routing::{cascade, rng::Rng};

use super::TraceItem;

/// The modelled confidence: N(0, 1) for a wrong small-tier answer, N(d', 1) for a right
/// one, with d' = √2 Φ⁻¹(auroc) so that right answers outrank wrong ones with
/// probability `auroc`.
pub fn modelled_confidence(correct: bool, auroc: f64, rng: &mut Rng) -> f32 {
    let d = std::f64::consts::SQRT_2 * inverse_normal_cdf(auroc.clamp(0.5, 0.999));
    (rng.normal() + if correct { d } else { 0.0 }) as f32
}

/// Acklam's rational approximation (relative error < 1.2e-9).
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549671010229528,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The cascade floor of each tier below the top on calibration items: the lowest floor
/// (fewest escalations) whose quality reaches `quality` × the next tier's (the same fit as
/// `fit-cascade`).
pub fn fit_cascade_floors(items: &[TraceItem], quality: f64) -> Vec<f32> {
    let tiers = items.first().map_or(0, |i| i.score.len());
    (0..tiers.saturating_sub(1))
        .map(|k| {
            let points: Vec<cascade::Labelled> = items
                .iter()
                .filter(|i| i.calibration)
                .map(|i| cascade::Labelled {
                    confidence: i.confidence[k],
                    lower: i.score[k],
                    upper: i.score[k + 1],
                })
                .collect();
            cascade::fit_floor(&points, quality).unwrap_or(f32::NEG_INFINITY)
        })
        .collect()
}
