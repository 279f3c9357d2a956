//! Cheap features of a prompt, computed on every request: hashed word unigrams and
//! bigrams plus a few lexical signals (length, digits, code and math markers). No
//! allocation beyond the output vector; a few microseconds for a short prompt.

/// Names the feature layout; an artifact trained on another layout is refused.
pub const VERSION: &str = "lexical-hash-1";
/// Hash buckets for word n-grams.
pub const BUCKETS: usize = 1 << 14;
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

/// The features of `prompt`.
pub fn extract(prompt: &str) -> Sparse {
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
    let norm = counts.values().map(|v| v * v).sum::<f32>().sqrt().max(1.0);
    let mut out: Sparse = counts.into_iter().map(|(i, v)| (i, v / norm)).collect();
    out.sort_unstable_by_key(|(i, _)| *i);

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
        let a = extract("What is 2 + 2? Show the steps.");
        assert_eq!(a, extract("What is 2 + 2? Show the steps."));
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(a.iter().all(|(i, v)| (*i as usize) < DIM && v.is_finite()));
        assert_ne!(a, extract("Write a sonnet about the sea."));
        // Case does not matter to the words.
        assert_eq!(extract("HELLO world")[..2], extract("hello WORLD")[..2]);
        assert_eq!(extract("").len(), DENSE);
    }
}
