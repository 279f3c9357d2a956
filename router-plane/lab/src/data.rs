//! Labelled routing data: for each prompt, how well each model answered it. One JSONL
//! format for every source (`{"id", "prompt", "source", "scores": {model: 0..1}, "costs":
//! {model: $/Mtok}}`), and the split rule every number in docs/ROUTING.md uses.

use std::{
    collections::BTreeMap,
    io::{BufRead, Write},
    path::Path,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One prompt with its per-model outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub prompt: String,
    /// Where it comes from, e.g. `routellm/mmlu/anatomy`.
    #[serde(default)]
    pub source: String,
    /// Quality of each model's answer, in [0, 1] (correctness, or a judge score / 10).
    pub scores: BTreeMap<String, f64>,
    /// Cost per million tokens of each model, when the source says.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub costs: BTreeMap<String, f64>,
    /// Each model's confidence in its own answer (mean token log-probability), when the
    /// labels come from `label` (what `fit-cascade` fits the cascade floors on).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub confidence: BTreeMap<String, f64>,
    /// Each model's answer with its confidence signals and time, when the labels come from
    /// `label`: enough to regrade the answer and to refit any cascade signal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, Answer>,
}

/// One tier's answer to one labelled prompt, as `label` recorded it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The answer's text (with letter scoring, the letter read off the first step, or
    /// empty when no alternative was a choice letter).
    pub text: String,
    /// Completion tokens the tier generated.
    pub tokens: u32,
    /// Prompt tokens, as the tier counted them.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Mean and minimum log-probability of the generated tokens.
    pub mean_logprob: Option<f64>,
    pub min_logprob: Option<f64>,
    /// First decoding step (what the prefill alone gives): the best minus the runner-up
    /// log-probability among its alternatives, and the entropy in nats of its
    /// alternatives with the probability they leave out counted as one more outcome (a
    /// lower bound on the full distribution's entropy).
    pub first_margin: Option<f64>,
    pub first_entropy: Option<f64>,
    /// The first step's alternatives (token, log-probability), most probable first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_top: Vec<(String, f64)>,
    /// Wall-clock seconds of the request, queueing in the cluster included.
    pub seconds: f64,
}

impl Answer {
    /// The answer's confidence as the router's cascade judges it
    /// ([`switchback_routing::cascade::judge`]); `None` for an empty answer. A measure the
    /// labels lack reads as no confidence at all.
    pub fn confidence(&self) -> Option<switchback_routing::cascade::Confidence> {
        if self.tokens == 0 {
            return None;
        }
        let lowest = |v: Option<f64>| v.map_or(f32::NEG_INFINITY, |v| v as f32);
        Some(switchback_routing::cascade::Confidence {
            tokens: self.tokens as usize,
            mean_logprob: lowest(self.mean_logprob),
            min_logprob: lowest(self.min_logprob),
            first_margin: self.first_margin.map(|m| m as f32),
        })
    }
}

impl Item {
    /// Cascade routing on this item: starting on tier `start` of `tiers` ((tier, model) in
    /// rising cost), each answer below its tier's `floors` escalates one tier up, as the
    /// router's cascade does (a tier without floors keeps its answer). Returns the tier
    /// whose answer is kept.
    pub fn climb(
        &self,
        tiers: &[(String, String)],
        start: usize,
        floors: &switchback_routing::policy::TierFloors,
    ) -> usize {
        let top = tiers.len() - 1;
        let mut k = start.min(top);
        while k < top {
            let Some(f) = floors.get(&tiers[k].0) else {
                break;
            };
            let confidence = self.answers.get(&tiers[k].1).and_then(Answer::confidence);
            match switchback_routing::cascade::judge(confidence.as_ref(), f, 0.0) {
                switchback_routing::cascade::Verdict::Keep => break,
                switchback_routing::cascade::Verdict::Escalate(_) => k += 1,
            }
        }
        k
    }
}

/// Which part of the data an item belongs to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Calibration,
    Test,
}

/// SHA-256 of the prompt's UTF-8 bytes, as lower-case hex.
pub fn prompt_hash(prompt: &str) -> String {
    Sha256::digest(prompt.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stable pseudo-random key of `prompt` under `salt`: the first 8 bytes of the SHA-256 of
/// `salt`, a newline and the prompt, big-endian. Sorting by it samples (or assigns folds)
/// independently of the split rule, which looks at the unsalted hash.
pub fn salted_key(salt: &str, prompt: &str) -> u64 {
    let digest = Sha256::digest(format!("{salt}\n{prompt}").as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// The shared split rule (`../shared/data/routing/README.md`): the first byte `b` of the
/// prompt's SHA-256; `b % 10` in {0, 1} is train, 2 is calibration, 3..=9 is test.
pub fn split_of(prompt: &str) -> Split {
    match Sha256::digest(prompt.as_bytes())[0] % 10 {
        0 | 1 => Split::Train,
        2 => Split::Calibration,
        _ => Split::Test,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
}

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub fn parse(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self::Parse {
            path: path.display().to_string(),
            line,
            message: message.into(),
        }
    }
}

/// Reads a labelled JSONL file; a bad line is an error naming the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Item>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut items = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Item = serde_json::from_str(&line)
            .map_err(|e| DataError::parse(path, n + 1, e.to_string()))?;
        if let Some((model, s)) = item.scores.iter().find(|(_, s)| !(0.0..=1.0).contains(*s)) {
            return Err(DataError::parse(
                path,
                n + 1,
                format!("score {s} of {model} is outside [0, 1]"),
            ));
        }
        items.push(item);
    }
    Ok(items)
}

/// Reads labelled JSONL files, concatenated in the order given.
pub fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<Item>, DataError> {
    let mut items = Vec::new();
    for path in paths {
        items.extend(read_jsonl(path)?);
    }
    Ok(items)
}

pub fn write_jsonl(path: &Path, items: &[Item]) -> Result<(), DataError> {
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    for item in items {
        // Items are strings and numbers: they always serialise.
        let line = serde_json::to_string(item).unwrap_or_default();
        writeln!(out, "{line}").map_err(|e| DataError::io(path, e))?;
    }
    out.flush().map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_the_shared_rule() {
        // sha256("") starts with 0xe3 = 227; 227 % 10 = 7: test.
        assert_eq!(split_of(""), Split::Test);
        assert!(prompt_hash("").starts_with("e3b0c442"));
        // Roughly 20 / 10 / 70 over many prompts.
        let mut counts = BTreeMap::new();
        for i in 0..10_000 {
            *counts.entry(split_of(&format!("prompt {i}"))).or_insert(0) += 1;
        }
        let share = |s| f64::from(counts[&s]) / 10_000.0;
        assert!((share(Split::Train) - 0.2).abs() < 0.02);
        assert!((share(Split::Calibration) - 0.1).abs() < 0.02);
        assert!((share(Split::Test) - 0.7).abs() < 0.02);
    }

    #[test]
    fn jsonl_round_trip_and_bad_scores_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        let item = Item {
            id: "a".into(),
            prompt: "2+2?".into(),
            source: "t".into(),
            scores: [("weak".to_owned(), 0.0), ("strong".to_owned(), 1.0)].into(),
            costs: BTreeMap::new(),
            confidence: BTreeMap::new(),
            answers: BTreeMap::new(),
        };
        write_jsonl(&path, std::slice::from_ref(&item)).expect("write");
        assert_eq!(read_jsonl(&path).expect("read"), vec![item]);
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"prompt\":\"p\",\"scores\":{\"m\":2}}\n",
        )
        .expect("write");
        let err = read_jsonl(&path).expect_err("score 2").to_string();
        assert!(err.contains(":1:") && err.contains("outside"), "{err}");
    }
}
