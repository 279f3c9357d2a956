//! Token selection and log-probabilities for the mistralrs engine, done by us.
//!
//! mistral.rs 0.8 reports log-probabilities as log10 of unnormalised logits on its greedy
//! path, and on its sampling path reports the top candidate's value rather than the sampled
//! token's. The router judges answers by their log-probabilities, so the worker picks each
//! token itself in a logits processor: it computes the exact natural-log softmax, chooses the
//! token (argmax, or temperature / top-k / top-p sampling from a seeded generator), records
//! it, and hands mistral.rs logits where only that token is possible, so mistral.rs's own
//! argmax agrees.
//!
//! Under a grammar (tool calls, JSON output) the choice is made among the tokens the
//! [`Constraint`] allows, while the reported log-probabilities and alternatives stay the
//! model's own, unconstrained: a token the grammar forced against the model's belief shows
//! up as a low log-probability, which is what a cascade judging the answer needs to see.

use std::{collections::VecDeque, sync::Mutex};

use mistralrs::{CustomLogitsProcessor, Tensor};

use super::constrain::Constraint;

/// How to choose tokens. `temperature: None` is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choose {
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub seed: u64,
}

/// One decoding step: the chosen token, its natural-log probability, and the most likely
/// alternatives with theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// The per-request processor; steps queue up until the engine turns them into tokens.
#[derive(Debug)]
pub struct Decoder {
    choose: Choose,
    top_n: usize,
    rng: Mutex<u64>,
    steps: Mutex<VecDeque<Step>>,
    constraint: Option<Mutex<Constraint>>,
}

impl Decoder {
    pub fn new(choose: Choose, top_n: usize) -> Self {
        Self {
            choose,
            top_n,
            rng: Mutex::new(choose.seed | 1),
            steps: Mutex::new(VecDeque::new()),
            constraint: None,
        }
    }

    /// Chooses only tokens `constraint` allows.
    pub fn constrained(mut self, constraint: Option<Constraint>) -> Self {
        self.constraint = constraint.map(Mutex::new);
        self
    }

    /// Every step decided so far, oldest first, leaving none queued.
    pub fn drain(&self) -> Vec<Step> {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    fn next_unit(&self) -> f64 {
        // splitmix64: small, seedable, good enough to sample tokens.
        let mut state = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decides one step from raw logits.
    ///
    /// This runs for every generated token over the whole vocabulary (151,936 entries for
    /// Qwen), so the greedy path makes one pass for the maximum, one for the normaliser
    /// (f32 exponentials, f64 sum) and one bounded pass for the alternatives, and allocates
    /// nothing of vocabulary size; sampling needs the whole distribution.
    ///
    /// `allowed`, when given, holds which tokens a grammar permits: the token is chosen among
    /// them, and its log-probability and the alternatives are still the model's own.
    pub fn step(&self, logits: &[f32], allowed: Option<&[bool]>) -> Step {
        let masked: Option<Vec<f32>> = allowed.map(|allowed| {
            logits
                .iter()
                .zip(allowed.iter().chain(std::iter::repeat(&false)))
                .map(|(&x, &ok)| if ok { x } else { f32::NEG_INFINITY })
                .collect()
        });
        let choice = masked.as_deref().unwrap_or(logits);
        match self.choose.temperature {
            None => {
                let id = argmax(choice);
                let max = match masked {
                    None => logits.get(id as usize).copied().unwrap_or(0.0),
                    Some(_) => logits.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                };
                let lse = log_sum_exp(logits, max);
                Step {
                    id,
                    logprob: logits
                        .get(id as usize)
                        .map_or(f32::NEG_INFINITY, |x| x - lse),
                    top: top_n(logits, self.top_n)
                        .into_iter()
                        .map(|(i, x)| (i, x - lse))
                        .collect(),
                }
            }
            Some(t) => {
                let logprobs = log_softmax(logits);
                let id = match &masked {
                    None => self.sample(&logprobs, t),
                    Some(m) => self.sample(&log_softmax(m), t),
                };
                Step {
                    id,
                    logprob: logprobs[id as usize],
                    top: top_n(&logprobs, self.top_n),
                }
            }
        }
    }

    fn sample(&self, logprobs: &[f32], temperature: f32) -> u32 {
        let mut candidates: Vec<(u32, f64)> = logprobs
            .iter()
            .enumerate()
            .map(|(i, &lp)| (i as u32, f64::from(lp) / f64::from(temperature)))
            .collect();
        let top_k = self.choose.top_k.filter(|&k| k > 0).map(|k| k as usize);
        let top_p = self.choose.top_p.filter(|&p| p > 0.0 && p < 1.0);
        // Ordering is only needed to cut the tail: plain temperature sampling skips the
        // sort of the whole vocabulary (150k entries for Qwen) on every token.
        if top_k.is_some() || top_p.is_some() {
            candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        }
        if let Some(k) = top_k {
            candidates.truncate(k);
        }
        let max = candidates
            .iter()
            .map(|c| c.1)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut weights: Vec<f64> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
        if let Some(p) = top_p {
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let mut keep = weights.len();
            for (i, w) in weights.iter().enumerate() {
                acc += w / total;
                if acc >= f64::from(p) {
                    keep = i + 1;
                    break;
                }
            }
            weights.truncate(keep);
        }
        let total: f64 = weights.iter().sum();
        let mut target = self.next_unit() * total;
        for (i, w) in weights.iter().enumerate() {
            target -= w;
            if target <= 0.0 {
                return candidates[i].0;
            }
        }
        candidates[weights.len() - 1].0
    }
}

/// log Σ exp(x): exponentials in f32 (each term is at most 1), summed in f64.
fn log_sum_exp(logits: &[f32], max: f32) -> f32 {
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&x| f64::from((x - max).exp())).sum();
    max + sum.ln() as f32
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = log_sum_exp(logits, max);
    logits.iter().map(|&x| x - lse).collect()
}

/// The index of the largest value; the first one among equals.
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, x) in v.iter().enumerate() {
        if x.total_cmp(&v[best]).is_gt() {
            best = i;
        }
    }
    best as u32
}

/// The `n` largest values with their indexes, largest first (ties: lower index first), in
/// one pass that keeps the best `n` seen so far.
fn top_n(values: &[f32], n: usize) -> Vec<(u32, f32)> {
    let n = n.min(values.len());
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return best;
    }
    for (i, &x) in values.iter().enumerate() {
        if best.len() == n && x.total_cmp(&best[n - 1].1).is_le() {
            continue;
        }
        let at = best.partition_point(|&(_, y)| y.total_cmp(&x).is_ge());
        best.insert(at, (i as u32, x));
        best.truncate(n);
    }
    best
}

impl CustomLogitsProcessor for Decoder {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> mistralrs::Result<Tensor> {
        let values: Vec<f32> = logits
            .to_dtype(mistralrs::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let step = match &self.constraint {
            None => self.step(&values, None),
            Some(constraint) => {
                let mut constraint = constraint.lock().unwrap_or_else(|e| e.into_inner());
                let allowed = constraint
                    .allowed(values.len())
                    .map_err(|e| candle_core::Error::Msg(format!("grammar: {e}")))?;
                let step = self.step(&values, Some(&allowed));
                constraint
                    .commit(step.id)
                    .map_err(|e| candle_core::Error::Msg(format!("grammar: {e}")))?;
                step
            }
        };
        let mut forced = vec![f32::NEG_INFINITY; values.len()];
        forced[step.id as usize] = 0.0;
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(step);
        Tensor::from_vec(forced, logits.shape(), logits.device())?.to_dtype(logits.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy() -> Choose {
        Choose {
            temperature: None,
            top_k: None,
            top_p: None,
            seed: 1,
        }
    }

    #[test]
    fn greedy_picks_argmax_with_natural_log_probabilities() {
        let d = Decoder::new(greedy(), 2);
        let step = d.step(&[1.0, 3.0, 2.0], None);
        assert_eq!(step.id, 1);
        let lse = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert!((f64::from(step.logprob) - (3.0 - lse)).abs() < 1e-5);
        assert_eq!(step.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        let total: f64 = [1.0f64, 3.0, 2.0].iter().map(|x| (x - lse).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn greedy_step_agrees_with_the_whole_distribution() {
        // Pseudo-random logits over a Qwen-sized vocabulary, with a tie at the top.
        let mut state = 7u64;
        let mut logits: Vec<f32> = (0..151_936)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 30.0 - 15.0
            })
            .collect();
        logits[1234] = 40.0;
        logits[99] = 40.0;
        let d = Decoder::new(greedy(), 20);
        let step = d.step(&logits, None);
        // The distribution computed independently, in f64 throughout.
        let lse = 40.0
            + logits
                .iter()
                .map(|&x| (f64::from(x) - 40.0).exp())
                .sum::<f64>()
                .ln();
        let full: Vec<f32> = logits
            .iter()
            .map(|&x| (f64::from(x) - lse) as f32)
            .collect();
        assert_eq!(step.id, 99, "the first of equal maxima");
        assert!((step.logprob - full[99]).abs() < 1e-5);
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| {
            full[b as usize]
                .total_cmp(&full[a as usize])
                .then(a.cmp(&b))
        });
        let want: Vec<(u32, f32)> = order[..20].iter().map(|&i| (i, full[i as usize])).collect();
        assert_eq!(
            step.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            want.iter().map(|t| t.0).collect::<Vec<_>>()
        );
        for (got, want) in step.top.iter().zip(&want) {
            assert!((got.1 - want.1).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        let total: f64 = full.iter().map(|&lp| f64::from(lp).exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
    }

    #[test]
    fn a_mask_limits_the_choice_but_not_the_reported_probabilities() {
        let logits = [1.0, 3.0, 2.0, 0.5];
        let lse = logits
            .iter()
            .map(|&x: &f32| f64::from(x).exp())
            .sum::<f64>()
            .ln();
        let allowed = [true, false, true, false];
        let greedy = Decoder::new(greedy(), 2).step(&logits, Some(&allowed));
        assert_eq!(greedy.id, 2, "the best allowed token");
        assert!((f64::from(greedy.logprob) - (2.0 - lse)).abs() < 1e-5);
        assert_eq!(
            greedy.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let sampler = Decoder::new(
            Choose {
                temperature: Some(1.0),
                top_k: None,
                top_p: None,
                seed: 3,
            },
            0,
        );
        let ids: Vec<u32> = (0..200)
            .map(|_| sampler.step(&logits, Some(&allowed)).id)
            .collect();
        assert!(ids.iter().all(|&id| id == 0 || id == 2), "{ids:?}");
        assert!(ids.contains(&0) && ids.contains(&2), "{ids:?}");
    }

    #[test]
    fn top_n_keeps_the_largest_in_order() {
        assert_eq!(
            top_n(&[1.0, 5.0, 3.0, 5.0, -1.0], 3),
            vec![(1, 5.0), (3, 5.0), (2, 3.0)]
        );
        assert_eq!(top_n(&[1.0, 2.0], 5), vec![(1, 2.0), (0, 1.0)]);
        assert!(top_n(&[1.0], 0).is_empty());
        assert_eq!(argmax(&[f32::NEG_INFINITY, -3.0, -3.0]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let choose = Choose {
            temperature: Some(1.0),
            top_k: Some(2),
            top_p: None,
            seed: 42,
        };
        let logits = [0.0, 5.0, 4.9, -3.0];
        let a: Vec<u32> = {
            let d = Decoder::new(choose, 0);
            (0..50).map(|_| d.step(&logits, None).id).collect()
        };
        let b: Vec<u32> = {
            let d = Decoder::new(choose, 0);
            (0..50).map(|_| d.step(&logits, None).id).collect()
        };
        assert_eq!(a, b, "same seed, same tokens");
        assert!(
            a.iter().all(|&id| id == 1 || id == 2),
            "top_k = 2 keeps the two best: {a:?}"
        );
        assert!(a.contains(&1) && a.contains(&2), "both are sampled: {a:?}");
    }

    #[test]
    fn plain_temperature_sampling_follows_the_distribution() {
        let choose = Choose {
            temperature: Some(1.0),
            top_k: None,
            top_p: None,
            seed: 7,
        };
        let d = Decoder::new(choose, 0);
        // Token 1 holds all but ~e-20 of the mass.
        assert!((0..50).all(|_| d.step(&[0.0, 20.0, -20.0], None).id == 1));
    }
}
