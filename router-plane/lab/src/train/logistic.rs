//! Logistic regression with soft targets, the predictor heads' model: full-batch Adam with
//! an L2 penalty, deterministic (no shuffling), over sparse features of width [`DIM`].

use switchback_routing::difficulty::{features::Sparse, predictor::DIM};

/// Logistic regression with soft targets (a score in [0, 1]), L2, Adam; deterministic.
pub fn fit(xs: &[Sparse], ys: &[f32], epochs: usize, l2: f32) -> (f32, Vec<f32>) {
    let d = DIM;
    let (mut w, mut b) = (vec![0.0f32; d], 0.0f32);
    let (mut m, mut v) = (vec![0.0f32; d], vec![0.0f32; d]);
    let (mut mb, mut vb) = (0.0f32, 0.0f32);
    let (lr, b1, b2, eps) = (0.05f32, 0.9f32, 0.999f32, 1e-8f32);
    let n = xs.len() as f32;
    let mut t = 0i32;
    for _ in 0..epochs {
        // Full-batch gradient: small data, and no shuffling keeps it deterministic.
        let mut g = vec![0.0f32; d];
        let mut gb = 0.0f32;
        for (x, &y) in xs.iter().zip(ys) {
            let z = b + x.iter().map(|&(i, xv)| w[i as usize] * xv).sum::<f32>();
            let err = 1.0 / (1.0 + (-z).exp()) - y;
            for &(i, xv) in x {
                g[i as usize] += err * xv / n;
            }
            gb += err / n;
        }
        t += 1;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for k in 0..d {
            let gk = g[k] + l2 * w[k];
            m[k] = b1 * m[k] + (1.0 - b1) * gk;
            v[k] = b2 * v[k] + (1.0 - b2) * gk * gk;
            w[k] -= lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
        }
        mb = b1 * mb + (1.0 - b1) * gb;
        vb = b2 * vb + (1.0 - b2) * gb * gb;
        b -= lr * (mb / c1) / ((vb / c2).sqrt() + eps);
    }
    (b, w)
}

/// Mean cross-entropy of the model (`bias`, `w`) on soft targets `ys`.
pub fn log_loss(xs: &[Sparse], ys: &[f32], bias: f32, w: &[f32]) -> f32 {
    xs.iter()
        .zip(ys)
        .map(|(x, &y)| {
            let z = bias + x.iter().map(|&(i, v)| w[i as usize] * v).sum::<f32>();
            let p = (1.0 / (1.0 + (-z).exp())).clamp(1e-6, 1.0 - 1e-6);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum::<f32>()
        / xs.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchback_routing::difficulty::features::{self, Idf};

    #[test]
    fn training_lowers_the_loss_and_learns_a_separable_set() {
        let items = crate::train::tests::items(300);
        let u = Idf::uniform();
        let xs: Vec<Sparse> = items
            .iter()
            .map(|i| features::extract(&i.prompt, &u))
            .collect();
        let ys: Vec<f32> = items.iter().map(|i| i.scores["weak"] as f32).collect();
        let before = log_loss(&xs, &ys, 0.0, &vec![0.0; DIM]);
        let (b, w) = fit(&xs, &ys, 100, 1e-4);
        let after = log_loss(&xs, &ys, b, &w);
        assert!((before - std::f32::consts::LN_2).abs() < 1e-4, "{before}");
        assert!(after < before / 4.0, "loss {before} -> {after}");
        let correct = xs
            .iter()
            .zip(&ys)
            .filter(|(x, y)| {
                let z = b + x.iter().map(|&(i, v)| w[i as usize] * v).sum::<f32>();
                (z > 0.0) == (**y > 0.5)
            })
            .count();
        assert_eq!(correct, xs.len(), "a separable toy set is learned exactly");
    }
}
