//! Labels from the cluster's own tiers: send questions with gold answers through each tier
//! of a running cluster (its router's HTTP API), score every answer against the gold one,
//! and write the labelled JSONL that `train` takes. So an operator trains the router for
//! the models they actually run.
//!
//! - this module: a question, its gold answer, how an answer is scored, which questions;
//! - [`judge`]: one chat completion's verdict and confidence signals;
//! - [`client`]: asking the router, with retries when the cluster is busy;
//! - [`code`]: grading code answers by running them.
//!
//! The datasets' questions come from [`crate::datasets`].

pub mod client;
pub mod code;
pub mod judge;

pub use client::{LabelError, Retry, run};

use code::CodeCheck;

use crate::data::salted_key;

/// A question with its gold answer, and how to score an answer to it.
#[derive(Debug, Clone)]
pub struct Question {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub gold: Gold,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Gold {
    /// A multiple-choice letter: the `answer` among the choices `A`..=`last` (`D` for
    /// MMLU, `E` for CommonsenseQA).
    Letter { answer: char, last: char },
    /// A number (GSM8K's final answer).
    Number(f64),
    /// Code that must pass the problem's tests (MBPP, HumanEval): graded by running it.
    Code(CodeCheck),
}

impl Gold {
    /// 1 if `answer` gives the gold answer, else 0. Multiple choice: the first standalone
    /// choice letter in the answer; numbers: the last number in the answer. None for code,
    /// which only running it grades (the program to run: [`CodeCheck::program`]).
    pub fn score(&self, answer: &str) -> Option<f64> {
        Some(match self {
            Self::Letter { answer: g, last } => {
                let chars: Vec<char> = answer.chars().collect();
                let found = (0..chars.len()).find_map(|i| {
                    let c = chars[i];
                    let alone = |j: Option<&char>| j.is_none_or(|c| !c.is_alphanumeric());
                    (('A'..=*last).contains(&c)
                        && alone(i.checked_sub(1).and_then(|k| chars.get(k)))
                        && alone(chars.get(i + 1)))
                    .then_some(c)
                });
                f64::from(u8::from(found == Some(*g)))
            }
            Self::Number(g) => {
                let last = answer
                    .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == ','))
                    .filter_map(|t| t.replace(',', "").trim_end_matches('.').parse::<f64>().ok())
                    .next_back();
                f64::from(u8::from(last.is_some_and(|v| (v - g).abs() < 1e-6)))
            }
            Self::Code(_) => return None,
        })
    }
}

/// How an answer is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scoring {
    /// Generate up to `max_tokens` tokens and grade the text (the first standalone letter
    /// or the last number); the confidence is the answer's mean log-probability.
    Text,
    /// Multiple choice only: one decoding step with the top alternatives, and the answer is
    /// the most probable of them that is a letter A–D (the standard MMLU protocol, as in
    /// lm-evaluation-harness). One prefill per question instead of a generated answer, and
    /// it grades the model's knowledge rather than its following of the answer format.
    /// The confidence is the chosen letter's log-probability.
    Letter,
}

/// The most probable of `candidates` (token text, log-probability) whose text is a single
/// choice letter `A`..=`last` once trimmed (tokenizers spell it `B` or ` B`), with its
/// log-probability. Any other token (`The`, `**`, `A.`) is not an answer.
pub fn pick_letter<'a>(
    candidates: impl IntoIterator<Item = (&'a str, f64)>,
    last: char,
) -> Option<(char, f64)> {
    candidates
        .into_iter()
        .filter(|(_, lp)| lp.is_finite())
        .filter_map(|(text, lp)| {
            let mut chars = text.trim().chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if ('A'..=last).contains(&c) => Some((c, lp)),
                _ => None,
            }
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// `limit` questions spread over the whole set, independent of file order. The order is
/// a hash of the prompt with a salt: sorting by the plain prompt hash would pick prompts
/// whose hash starts low, which the split rule (first byte mod 10) does not spread evenly.
pub fn sample(mut questions: Vec<Question>, limit: usize) -> Vec<Question> {
    questions.sort_by_cached_key(|q| salted_key("switchback-label-sample", &q.prompt));
    questions.truncate(limit);
    questions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_and_numbers_are_scored_like_a_grader() {
        let g = Gold::Letter {
            answer: 'B',
            last: 'D',
        };
        assert_eq!(g.score("B"), Some(1.0));
        assert_eq!(g.score("The answer is B."), Some(1.0));
        assert_eq!(g.score("(B) because…"), Some(1.0));
        assert_eq!(g.score("A"), Some(0.0));
        assert_eq!(
            g.score("Because of the Bible"),
            Some(0.0),
            "a B inside a word is not an answer"
        );
        assert_eq!(g.score(""), Some(0.0));
        let n = Gold::Number(1234.0);
        assert_eq!(n.score("so she earns $1,234."), Some(1.0));
        assert_eq!(n.score("12 + 3 = 15\n1234"), Some(1.0));
        assert_eq!(
            n.score("1234 is wrong, it is 18"),
            Some(0.0),
            "the last number counts"
        );
        assert_eq!(Gold::Number(-3.5).score("x = -3.5"), Some(1.0));
    }

    #[test]
    fn five_choices_have_five_letters() {
        let csqa = Gold::Letter {
            answer: 'E',
            last: 'E',
        };
        assert_eq!(csqa.score("E. taxi"), Some(1.0));
        let mmlu = Gold::Letter {
            answer: 'D',
            last: 'D',
        };
        assert_eq!(
            mmlu.score("E, then D"),
            Some(1.0),
            "E is not a choice of four"
        );
        assert_eq!(
            pick_letter([("E", -0.1), ("B", -0.9)], 'E'),
            Some(('E', -0.1))
        );
        assert_eq!(
            pick_letter([("E", -0.1), ("B", -0.9)], 'D'),
            Some(('B', -0.9))
        );
    }

    #[test]
    fn samples_are_stable_and_bounded() {
        let qs: Vec<Question> = (0..50)
            .map(|k| Question {
                id: k.to_string(),
                source: "s".into(),
                prompt: format!("q{k}"),
                gold: Gold::Letter {
                    answer: 'A',
                    last: 'D',
                },
            })
            .collect();
        let a: Vec<String> = sample(qs.clone(), 10).into_iter().map(|q| q.id).collect();
        let mut rev = qs;
        rev.reverse();
        let b: Vec<String> = sample(rev, 10).into_iter().map(|q| q.id).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 10);
    }

    #[test]
    fn samples_keep_the_split_proportions() {
        use crate::data::{Split, split_of};
        let qs: Vec<Question> = (0..20_000)
            .map(|k| Question {
                id: k.to_string(),
                source: "s".into(),
                prompt: format!("question {k}"),
                gold: Gold::Letter {
                    answer: 'A',
                    last: 'D',
                },
            })
            .collect();
        let picked = sample(qs, 2000);
        let share =
            |s: Split| picked.iter().filter(|q| split_of(&q.prompt) == s).count() as f64 / 2000.0;
        assert!(
            (share(Split::Train) - 0.2).abs() < 0.03,
            "{}",
            share(Split::Train)
        );
        assert!((share(Split::Calibration) - 0.1).abs() < 0.03);
        assert!((share(Split::Test) - 0.7).abs() < 0.03);
    }
}
