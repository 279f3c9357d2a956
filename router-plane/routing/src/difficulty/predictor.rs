//! The difficulty predictor's inference: for a prompt, each tier's probability of
//! answering it acceptably (one logistic regression per tier over [`features`] and,
//! optionally, a text embedding), and the quality knob. As in Hybrid LLM, the decision
//! thresholds the predicted quality gap, generalised to K tiers in rising cost: a prompt
//! goes to the cheapest tier whose predicted gap to the top tier (top's probability minus
//! its own) is at most the threshold, and to the top tier when none is. A calibration table
//! turns a request's quality target into that threshold. With two tiers this is exactly
//! "the top tier answers when the gap is above the threshold".
//!
//! The artifact is JSON (weights, tiers, feature version, calibration table) that the
//! router loads at start; `switchback-lab train` writes it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    embed::{EMBEDDING_DIM, Embed},
    features::{self, Idf, Sparse},
};

/// Width of the feature space: lexical features, then a text embedding.
pub const DIM: usize = features::DIM + EMBEDDING_DIM;

/// What turns a prompt into features.
#[derive(Debug, Clone, Default)]
pub enum Encoder {
    /// Hashed n-grams and lexical signals only.
    #[default]
    Lexical,
    /// Plus a text embedding (the distilled static table when serving; the full encoder
    /// in offline comparisons).
    Embedded(Arc<dyn Embed>),
}

impl Encoder {
    pub fn version(&self) -> &'static str {
        match self {
            Self::Lexical => features::VERSION,
            Self::Embedded(e) => e.version(),
        }
    }

    /// The features of `prompt`, with the n-grams weighted by `idf` (the artifact's).
    pub fn extract(&self, prompt: &str, idf: &Idf) -> Sparse {
        let mut x = features::extract(prompt, idf);
        let Self::Embedded(e) = self else {
            return x;
        };
        x.extend(
            e.embed(prompt)
                .into_iter()
                .take(EMBEDDING_DIM)
                .enumerate()
                .map(|(k, v)| ((features::DIM + k) as u32, v)),
        );
        x
    }
}

pub const FORMAT: &str = "switchback-difficulty/1";

/// A threshold below every possible gap (gaps are in [-1, 1]): the top tier answers all.
pub const ALL_TOP: f32 = -1.0 - f32::EPSILON;

/// One tier's head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    pub tier: String,
    /// The model whose outcomes trained it.
    pub model: String,
    pub bias: f32,
    /// Non-zero weights as (index, weight).
    pub weights: Vec<(u32, f32)>,
    #[serde(skip)]
    dense: Vec<f32>,
}

impl Head {
    /// A head from trained dense weights (stored sparse).
    pub fn fitted(tier: &str, model: &str, bias: f32, w: &[f32]) -> Self {
        let mut head = Self {
            tier: tier.to_owned(),
            model: model.to_owned(),
            bias,
            weights: w
                .iter()
                .enumerate()
                .filter(|(_, x)| x.abs() > 1e-6)
                .map(|(i, &x)| (i as u32, x))
                .collect(),
            dense: Vec::new(),
        };
        head.prepare();
        head
    }

    /// Fills the dense weights from the stored sparse ones.
    fn prepare(&mut self) {
        self.dense = vec![0.0; DIM];
        for &(i, w) in &self.weights {
            if let Some(slot) = self.dense.get_mut(i as usize) {
                *slot = w;
            }
        }
    }

    pub fn probability(&self, x: &Sparse) -> f32 {
        let z: f32 = self.bias
            + x.iter()
                .map(|&(i, v)| self.dense.get(i as usize).copied().unwrap_or(0.0) * v)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// One row of the quality knob: at target `quality` (a share of the top tier's quality on
/// the calibration data), the cheapest tier whose predicted gap to the top tier is at most
/// `threshold` answers (the top tier when none is).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub quality: f32,
    pub threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Predictor {
    pub format: String,
    pub feature_version: String,
    /// Tiers in rising cost; the last is the top tier.
    pub heads: Vec<Head>,
    /// Two tiers only: a head trained on the gain itself ((top − cheaper + 1) / 2), when
    /// present; else each tier's gap is the difference of the tier heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Head>,
    /// Rising in quality.
    pub calibration: Vec<Calibration>,
    /// The n-gram weights as (bucket, weight), fitted on the training prompts.
    pub idf: Vec<(u32, f32)>,
    /// The quality target when a request sets none.
    pub default_quality: f32,
    /// Free text: what it was trained on.
    pub trained_on: String,
    /// When set, the calibration table was fitted for cascade routing: a routed answer
    /// below its tier's floors here escalates one tier up (as the routing policy's
    /// `cascade.per_tier` does), so the knob's targets hold for routing with a cascade
    /// behind it, with these floors. Unset: fitted for routing alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade_floors: Option<crate::policy::TierFloors>,
    #[serde(skip)]
    encoder: Encoder,
    /// `idf`, one weight per bucket.
    #[serde(skip, default = "Idf::uniform")]
    idf_dense: Idf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredictorError {
    /// Not an artifact this build can use; says why.
    #[error("{0}")]
    Invalid(String),
}

/// What the predictor says about one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Each tier's probability of an acceptable answer, in the predictor's tier order.
    pub probabilities: Vec<(String, f32)>,
    pub tier: String,
    pub quality: f32,
    pub threshold: f32,
    /// The predicted gain of the top tier over the cheapest one.
    pub gain: f32,
    /// Each tier's predicted gap to the top tier (the top tier's own is 0), in tier order:
    /// the chosen tier is the first whose gap is at most `threshold`.
    pub gaps: Vec<(String, f32)>,
    /// Why this tier, in words.
    pub reason: String,
}

impl Predictor {
    /// A predictor from its parts; training builds it so (`switchback-lab train`).
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        heads: Vec<Head>,
        gap: Option<Head>,
        calibration: Vec<Calibration>,
        idf: Idf,
        default_quality: f32,
        trained_on: String,
        encoder: Encoder,
    ) -> Self {
        Self {
            format: FORMAT.to_owned(),
            feature_version: encoder.version().to_owned(),
            heads,
            gap,
            calibration,
            idf: idf.to_sparse(),
            default_quality,
            trained_on,
            cascade_floors: None,
            encoder,
            idf_dense: idf,
        }
    }

    /// The feature layout an artifact needs (to pick the encoder before loading it).
    pub fn feature_version_of(json: &str) -> Result<String, PredictorError> {
        #[derive(Deserialize)]
        struct Peek {
            feature_version: String,
        }
        serde_json::from_str::<Peek>(json)
            .map(|p| p.feature_version)
            .map_err(|e| PredictorError::Invalid(e.to_string()))
    }

    /// Reads an artifact (the JSON [`Predictor::to_json`] writes) and attaches `encoder`,
    /// which must compute the artifact's feature layout.
    pub fn from_json(json: &str, encoder: Encoder) -> Result<Self, PredictorError> {
        let err = PredictorError::Invalid;
        let mut p: Self = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
        if p.format != FORMAT {
            return Err(err(format!("format {:?}, expected {FORMAT:?}", p.format)));
        }
        if p.feature_version != encoder.version() {
            return Err(err(format!(
                "features {:?}, but the encoder given computes {:?}",
                p.feature_version,
                encoder.version()
            )));
        }
        p.encoder = encoder;
        p.idf_dense = Idf::from_sparse(&p.idf).map_err(err)?;
        if p.heads.len() < 2 || p.calibration.is_empty() {
            return Err(err(
                "needs at least two tiers and a calibration table".into()
            ));
        }
        for h in p.heads.iter_mut().chain(p.gap.as_mut()) {
            h.prepare();
        }
        Ok(p)
    }

    /// The artifact as JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Why the knob's targets do not hold under the policy's `cascade`, if they do not:
    /// a table fitted for cascade routing needs the cascade on with the same floors, and
    /// one fitted for routing alone assumes no per-tier floors escalate the routed answer.
    pub fn knob_mismatch(&self, cascade: &crate::policy::CascadePolicy) -> Option<String> {
        match &self.cascade_floors {
            Some(floors) if !cascade.enabled => Some(format!(
                "the predictor's knob was fitted for cascade routing with floors {floors:?}, \
                 but the policy's cascade is off: quality targets will keep less than they promise"
            )),
            Some(floors) if *floors != cascade.per_tier => Some(format!(
                "the predictor's knob was fitted for cascade floors {floors:?}, but the policy has \
                 {:?}: quality targets will not match what they promise",
                cascade.per_tier
            )),
            None if cascade.enabled && !cascade.per_tier.is_empty() => Some(
                "the predictor's knob was fitted for routing alone, but the policy cascades by \
                 default: answers cost more than the knob accounts for (train with `--cascade`)"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// The encoder the predictor extracts features with.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    pub fn tiers(&self) -> impl Iterator<Item = &str> {
        self.heads.iter().map(|h| h.tier.as_str())
    }

    /// The features of `prompt`, as this predictor's encoder computes them.
    pub fn features(&self, prompt: &str) -> Sparse {
        self.encoder.extract(prompt, &self.idf_dense)
    }

    /// The n-gram weights (for benchmarks that swap the encoder).
    pub fn idf(&self) -> &Idf {
        &self.idf_dense
    }

    /// Each tier's probability for already extracted features.
    pub fn probabilities(&self, x: &Sparse) -> Vec<f32> {
        self.heads.iter().map(|h| h.probability(x)).collect()
    }

    /// The predicted gain of the top tier over the cheapest one, in [-1, 1].
    pub fn gain(&self, x: &Sparse, probabilities: &[f32]) -> f32 {
        gaps(self.gap.as_ref(), x, probabilities)[0]
    }

    /// Each tier's predicted gap to the top tier, in [-1, 1] (the top tier's is 0).
    pub fn gaps(&self, x: &Sparse, probabilities: &[f32]) -> Vec<f32> {
        gaps(self.gap.as_ref(), x, probabilities)
    }

    /// The threshold for quality target `q` (linear between table rows).
    pub fn threshold(&self, q: f32) -> f32 {
        let t = &self.calibration;
        if q <= t[0].quality {
            return t[0].threshold;
        }
        for w in t.windows(2) {
            if q <= w[1].quality {
                let f = (q - w[0].quality) / (w[1].quality - w[0].quality).max(1e-9);
                return w[0].threshold + f * (w[1].threshold - w[0].threshold);
            }
        }
        t[t.len() - 1].threshold
    }

    /// The whole decision: features, probabilities, gaps, threshold, tier.
    pub fn decide(&self, prompt: &str, quality: f32) -> Prediction {
        let x = self.features(prompt);
        let p = self.probabilities(&x);
        let threshold = self.threshold(quality.clamp(0.0, 1.0));
        let gaps = self.gaps(&x, &p);
        let chosen = choose(&gaps, threshold);
        let top = &self.heads[self.heads.len() - 1].tier;
        let tier = &self.heads[chosen].tier;
        let reason = if chosen + 1 == self.heads.len() {
            format!(
                "no cheaper tier is predicted within {threshold:.3} of {top}'s success \
                 (the threshold for quality target {quality:.2})"
            )
        } else {
            format!(
                "{tier} is the cheapest tier predicted within {threshold:.3} of {top}'s \
                 success (gap {:.3}; the threshold for quality target {quality:.2})",
                gaps[chosen]
            )
        };
        Prediction {
            probabilities: self
                .heads
                .iter()
                .zip(&p)
                .map(|(h, &pi)| (h.tier.clone(), pi))
                .collect(),
            tier: tier.clone(),
            quality,
            threshold,
            gain: gaps[0],
            gaps: self
                .heads
                .iter()
                .zip(&gaps)
                .map(|(h, &g)| (h.tier.clone(), g))
                .collect(),
            reason,
        }
    }

    /// The tier a prompt with predicted `gaps` gets at quality target `quality`: what
    /// [`Predictor::decide`] would choose, without extracting the features again.
    pub fn tier_at(&self, gaps: &[f32], quality: f32) -> &str {
        &self.heads[choose(gaps, self.threshold(quality.clamp(0.0, 1.0)))].tier
    }
}

/// The tier index the knob picks at `threshold`: the cheapest whose gap to the top tier is
/// at most the threshold, else the top tier. Rising thresholds never pick a dearer tier.
pub fn choose(gaps: &[f32], threshold: f32) -> usize {
    gaps.iter()
        .position(|&g| g <= threshold)
        .unwrap_or(gaps.len().saturating_sub(1))
}

/// Each tier's predicted gap to the top tier: from the gain head when there is one (two
/// tiers), else the differences of the tier heads' probabilities.
pub fn gaps(gap: Option<&Head>, x: &Sparse, probabilities: &[f32]) -> Vec<f32> {
    let top = probabilities[probabilities.len() - 1];
    match gap {
        Some(g) => vec![2.0 * g.probability(x) - 1.0, 0.0],
        None => probabilities.iter().map(|p| top - p).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn sigmoid_inverse(p: f32) -> f32 {
        (p / (1.0 - p)).ln()
    }

    /// A predictor whose heads ignore the prompt: tier k succeeds with `p[k]`.
    fn constant(p: &[f32], calibration: Vec<Calibration>) -> Predictor {
        let heads = p
            .iter()
            .enumerate()
            .map(|(k, &pk)| Head::fitted(&format!("t{k}"), "m", sigmoid_inverse(pk), &[]))
            .collect();
        Predictor::assemble(
            heads,
            None,
            calibration,
            Idf::uniform(),
            0.9,
            String::new(),
            Encoder::Lexical,
        )
    }

    /// A calibration table as training writes it: thresholds falling as quality rises, the
    /// last row sending everything to the top tier.
    fn table(rng: &mut Rng, rows: usize) -> Vec<Calibration> {
        // Gaps are in [-1, 1]: the first row's threshold passes every one.
        let mut threshold = 1.0 + rng.unit() as f32;
        (0..rows)
            .map(|k| {
                let quality = if k + 1 == rows {
                    1.0
                } else {
                    k as f32 / rows as f32
                };
                let row = Calibration {
                    quality,
                    threshold: if k + 1 == rows { ALL_TOP } else { threshold },
                };
                threshold -= rng.unit() as f32 / rows as f32;
                row
            })
            .collect()
    }

    #[test]
    fn the_knob_is_monotone_and_its_ends_are_the_cheapest_and_the_top_tier() {
        let mut rng = Rng::new(0x6b6e6f62);
        for _ in 0..300 {
            let tiers = 2 + rng.below(3) as usize;
            let p: Vec<f32> = (0..tiers)
                .map(|_| 0.02 + 0.96 * rng.unit() as f32)
                .collect();
            let rows = 2 + rng.below(8) as usize;
            let predictor = constant(&p, table(&mut rng, rows));
            let mut last = 0;
            for step in 0..=20 {
                let q = step as f32 / 20.0;
                let d = predictor.decide("any prompt", q);
                let chosen = predictor.tiers().position(|t| t == d.tier).expect("a tier");
                assert!(chosen >= last, "q {q}: tier {chosen} after {last} ({p:?})");
                assert_eq!(d.probabilities.len(), tiers, "every tier's probability");
                last = chosen;
                if step == 0 {
                    // The first row's threshold is above every gap: the cheapest tier.
                    assert_eq!(chosen, 0, "q 0 with {p:?}");
                }
            }
            assert_eq!(last, tiers - 1, "q 1 is always the top tier");
        }
    }

    #[test]
    fn artifacts_round_trip_and_another_feature_version_is_refused() {
        let cal = vec![
            Calibration {
                quality: 0.0,
                threshold: 1.0,
            },
            Calibration {
                quality: 1.0,
                threshold: ALL_TOP,
            },
        ];
        let p = constant(&[0.3, 0.8], cal);
        let json = p.to_json().expect("serialises");
        let again = Predictor::from_json(&json, Encoder::Lexical).expect("loads");
        assert_eq!(again.decide("x", 0.5), p.decide("x", 0.5));
        assert_eq!(
            Predictor::feature_version_of(&json).expect("peek"),
            features::VERSION
        );
        let other = json.replace(features::VERSION, "minilm-9");
        let err = Predictor::from_json(&other, Encoder::Lexical)
            .expect_err("wrong version")
            .to_string();
        assert!(err.contains("minilm-9"), "{err}");
    }
}
