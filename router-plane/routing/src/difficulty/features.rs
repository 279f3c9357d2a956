//! Cheap features of a prompt, computed on every request: hashed word unigrams and
//! bigrams, weighted TF-IDF style, plus a few lexical signals (length, digits, code and
//! math markers). A few microseconds for a short prompt.

/// Names the feature layout; an artifact trained on another layout is refused.
pub const VERSION: &str = "lexical-hash-2";
/// Hash buckets for word n-grams. 2^18 rather than 2^14: at 2^14 the bigrams of a few
/// thousand training prompts collide so often that MMLU's APGR lost about 0.01 (measured
/// with 5-fold cross-validation on train + calibration, docs/ROUTING.md).
pub const BUCKETS: usize = 1 << 18;
/// A bucket seen in fewer training prompts than this weighs nothing: an n-gram seen once
/// is noise to a head fitted on a few thousand prompts, and dropping those was worth as
/// much as the idf weighting itself.
pub const MIN_DF: u32 = 2;
/// Dense lexical features after the buckets.
pub const DENSE: usize = 10;
pub const DIM: usize = BUCKETS + DENSE;

/// A sparse feature vector: (index, value), indices unique.
pub type Sparse = Vec<(u32, f32)>;

fn fnv1a(bytes: impl IntoIterator<Item = u8>, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Per-bucket weights, fitted on the training prompts and stored in the predictor
/// artifact: the smoothed inverse document frequency `ln((1 + n) / (1 + df)) + 1`, or 0
/// for a bucket seen in fewer than [`MIN_DF`] prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct Idf(Vec<f32>);

impl Idf {
    /// Every bucket weighs 1 (for tests and tools that have no training prompts).
    pub fn uniform() -> Self {
        Self(vec![1.0; BUCKETS])
    }

    /// Fitted on `prompts`.
    pub fn fit<'a>(prompts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut df = vec![0u32; BUCKETS];
        let mut n = 0u32;
        for prompt in prompts {
            n += 1;
            for (bucket, _) in counts(prompt).0 {
                df[bucket as usize] += 1;
            }
        }
        let n = n as f32;
        Self(
            df.into_iter()
                .map(|d| {
                    if d < MIN_DF {
                        0.0
                    } else {
                        ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0
                    }
                })
                .collect(),
        )
    }

    /// The non-zero weights as (bucket, weight), for the artifact.
    pub fn to_sparse(&self) -> Vec<(u32, f32)> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 0.0)
            .map(|(i, w)| (i as u32, *w))
            .collect()
    }

    /// From the artifact's (bucket, weight) pairs; buckets out of range or weights that
    /// are negative or not finite are refused.
    pub fn from_sparse(pairs: &[(u32, f32)]) -> Result<Self, String> {
        let mut w = vec![0.0; BUCKETS];
        for &(i, v) in pairs {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "idf weight {v} of bucket {i} is not a finite weight >= 0"
                ));
            }
            *w.get_mut(i as usize)
                .ok_or_else(|| format!("idf bucket {i} is out of range (< {BUCKETS})"))? = v;
        }
        Ok(Self(w))
    }
}

/// Word n-gram counts by bucket, and the number of words.
fn counts(prompt: &str) -> (std::collections::HashMap<u32, f32>, usize) {
    let mut counts: std::collections::HashMap<u32, f32> = std::collections::HashMap::new();
    let mut words = 0usize;
    let mut prev: Option<u64> = None;
    for word in prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        words += 1;
        let h = fnv1a(word.bytes().map(|b| b.to_ascii_lowercase()), 0);
        *counts.entry((h % BUCKETS as u64) as u32).or_default() += 1.0;
        if let Some(p) = prev {
            let bigram = fnv1a(p.to_le_bytes().into_iter().chain(h.to_le_bytes()), 1);
            *counts.entry((bigram % BUCKETS as u64) as u32).or_default() += 1.0;
        }
        prev = Some(h);
    }
    (counts, words)
}

/// The features of `prompt`: sub-linear term frequency (`1 + ln count`) times `idf`,
/// L2-normalised, then the dense lexical signals.
pub fn extract(prompt: &str, idf: &Idf) -> Sparse {
    let (counts, words) = counts(prompt);
    let mut out: Sparse = counts
        .into_iter()
        .map(|(i, c)| (i, (1.0 + c.ln()) * idf.0[i as usize]))
        .filter(|(_, v)| *v != 0.0)
        .collect();
    // Sorted before summing: a HashMap's order changes from run to run, and a float sum in
    // another order differs in its last bits, which training amplifies; the shipped
    // artifact must come out of `train` byte-identical.
    out.sort_unstable_by_key(|(i, _)| *i);
    let norm = out.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for (_, v) in &mut out {
            *v /= norm;
        }
    }

    let chars = prompt.chars().count().max(1) as f32;
    let share = |f: fn(char) -> bool| prompt.chars().filter(|c| f(*c)).count() as f32 / chars;
    let dense = [
        (chars.ln_1p() / 10.0),
        ((words as f32).ln_1p() / 10.0),
        share(|c| c.is_ascii_digit()),
        share(|c| c.is_uppercase()),
        share(|c| "=+-*/^<>%".contains(c)),
        share(|c| "{}[]();`".contains(c)),
        ((prompt.matches('\n').count() as f32).ln_1p() / 5.0),
        ((prompt.matches('?').count() as f32).ln_1p()),
        f32::from(u8::from(
            prompt.contains("```") || prompt.contains("def ") || prompt.contains("fn "),
        )),
        1.0, // bias-like constant, lets the dense part shift together
    ];
    for (k, v) in dense.into_iter().enumerate() {
        out.push(((BUCKETS + k) as u32, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_deterministic_sorted_and_bounded() {
        let u = Idf::uniform();
        let a = extract("What is 2 + 2? Show the steps.", &u);
        assert_eq!(a, extract("What is 2 + 2? Show the steps.", &u));
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(a.iter().all(|(i, v)| (*i as usize) < DIM && v.is_finite()));
        assert_ne!(a, extract("Write a sonnet about the sea.", &u));
        // Case does not matter to the words.
        assert_eq!(
            extract("HELLO world", &u)[..2],
            extract("hello WORLD", &u)[..2]
        );
        assert_eq!(extract("", &u).len(), DENSE);
        // Bit for bit, also for a prompt with many n-grams (each call's HashMap iterates
        // in another order; the sum must not depend on it).
        let long: String = (0..300)
            .map(|k| format!("word{k} ").repeat(k % 7 + 1))
            .collect();
        let first = extract(&long, &u);
        assert!((0..20).all(|_| extract(&long, &u) == first));
        let norm: f32 = a
            .iter()
            .filter(|(i, _)| (*i as usize) < BUCKETS)
            .map(|(_, v)| v * v)
            .sum();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "the n-gram part is unit length: {norm}"
        );
    }

    #[test]
    fn idf_drops_rare_ngrams_and_weighs_common_ones_down() {
        let prompts = [
            "what is the capital of france",
            "what is the capital of peru",
            "what is a prime number",
        ];
        let idf = Idf::fit(prompts);
        let ngrams = |p: &str| {
            extract(p, &idf)
                .into_iter()
                .filter(|(i, _)| (*i as usize) < BUCKETS)
                .collect::<Vec<_>>()
        };
        // "france" and "peru" are each in one prompt: dropped. What is left of the first
        // prompt is also in the second, so the two have the same n-gram features.
        assert_eq!(ngrams(prompts[0]), ngrams(prompts[1]));
        assert!(
            ngrams("zebra quagga").is_empty(),
            "unseen words weigh nothing"
        );
        // "what" is in all three prompts, "capital" in two: the rarer word weighs more.
        let single = |w: &str| counts(w).0.into_keys().next().expect("one bucket") as usize;
        assert!(idf.0[single("capital")] > idf.0[single("what")]);
        assert_eq!(idf.0[single("france")], 0.0);
        // The artifact's sparse form round-trips and bad weights are refused.
        assert_eq!(Idf::from_sparse(&idf.to_sparse()).expect("round trip"), idf);
        assert!(Idf::from_sparse(&[(BUCKETS as u32, 1.0)]).is_err());
        assert!(Idf::from_sparse(&[(3, f32::NAN)]).is_err());
        assert!(Idf::from_sparse(&[(3, -1.0)]).is_err());
    }
}
