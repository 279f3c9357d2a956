//! One chat completion, judged: the verdict on its answer (a score, or a program to run),
//! the confidence `fit-cascade` fits on, and the signals recorded with the label.

use serde_json::Value;

use super::{Gold, Question, Scoring, pick_letter};
use crate::data::Answer;

/// How an answer is graded: a score read off its text, or a program that passes when the
/// answer is right.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Score(f64),
    Run(String),
}

/// A token and its log-probability from an OpenAI `logprobs` entry.
fn token(t: &Value) -> Option<(&str, f64)> {
    Some((t["token"].as_str()?, t["logprob"].as_f64()?))
}

/// The confidence signals of one chat completion (its text left empty): mean and minimum
/// token log-probability, and the first step's margin, entropy and alternatives.
pub fn signals(v: &Value) -> Answer {
    let choice = &v["choices"][0];
    let content = choice["logprobs"]["content"].as_array();
    let logprobs: Vec<f64> = content
        .into_iter()
        .flatten()
        .filter_map(|t| t["logprob"].as_f64())
        .collect();
    let mut first_top: Vec<(String, f64)> = content
        .and_then(|c| c.first())
        .and_then(|f| f["top_logprobs"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| token(t).map(|(text, lp)| (text.to_owned(), lp)))
        .filter(|(_, lp)| lp.is_finite())
        .collect();
    first_top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let first_margin = match first_top.as_slice() {
        [a, b, ..] => Some(a.1 - b.1),
        _ => None,
    };
    let first_entropy = (!first_top.is_empty()).then(|| {
        let probs: Vec<f64> = first_top.iter().map(|(_, lp)| lp.exp()).collect();
        let rest = (1.0 - probs.iter().sum::<f64>()).max(0.0);
        probs
            .iter()
            .chain(std::iter::once(&rest))
            .filter(|p| **p > 0.0)
            .map(|p| -p * p.ln())
            .sum()
    });
    let usage = |k: &str| {
        v["usage"][k]
            .as_u64()
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Answer {
        text: String::new(),
        tokens: match usage("completion_tokens") {
            0 => u32::try_from(logprobs.len()).unwrap_or(u32::MAX),
            n => n,
        },
        prompt_tokens: usage("prompt_tokens"),
        mean_logprob: (!logprobs.is_empty())
            .then(|| logprobs.iter().sum::<f64>() / logprobs.len() as f64),
        min_logprob: logprobs.iter().copied().reduce(f64::min),
        first_margin,
        first_entropy,
        first_top,
        seconds: 0.0,
    }
}

/// The verdict, the confidence `fit-cascade` reads, and the recorded answer of one chat
/// completion under `scoring`.
pub fn judge(q: &Question, scoring: Scoring, v: &Value) -> (Verdict, Option<f64>, Answer) {
    let choice = &v["choices"][0];
    let mut answer = signals(v);
    match scoring {
        Scoring::Text => {
            let text = choice["message"]["content"].as_str().unwrap_or_default();
            answer.text = text.to_owned();
            let verdict = match (&q.gold, q.gold.score(text)) {
                (_, Some(score)) => Verdict::Score(score),
                (Gold::Code(check), None) => Verdict::Run(check.program(text)),
                (_, None) => Verdict::Score(0.0),
            };
            (verdict, answer.mean_logprob, answer)
        }
        Scoring::Letter => {
            let first = &choice["logprobs"]["content"][0];
            // Letter scoring of a question without choices (the CLI refuses it) scores 0.
            let Gold::Letter { answer: gold, last } = q.gold else {
                return (Verdict::Score(0.0), None, answer);
            };
            let alternatives = first["top_logprobs"].as_array().into_iter().flatten();
            match pick_letter(
                token(first)
                    .into_iter()
                    .chain(alternatives.filter_map(token)),
                last,
            ) {
                Some((letter, lp)) => {
                    answer.text = letter.to_string();
                    (
                        Verdict::Score(f64::from(u8::from(letter == gold))),
                        Some(lp),
                        answer,
                    )
                }
                // No letter among the alternatives: wrong, and no confidence to fit on.
                None => (Verdict::Score(0.0), None, answer),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_most_probable_letter_among_the_alternatives_is_the_answer() {
        // The chosen token is not a letter; the best letter among the rest is the answer,
        // whatever its spelling (leading space) and wherever it sits in the list.
        let top = [
            ("The", -0.2),
            (" C", -2.5),
            ("B", -1.9),
            ("A.", -0.5),
            ("D", f64::NEG_INFINITY),
        ];
        assert_eq!(pick_letter(top, 'D'), Some(('B', -1.9)));
        assert_eq!(pick_letter([("**", -0.1), ("Answer", -0.3)], 'D'), None);
        assert_eq!(
            pick_letter([("a", -0.1), (" d", -0.2)], 'D'),
            None,
            "lower case is not a choice"
        );

        let q = Question {
            id: "q".into(),
            source: "s".into(),
            prompt: "p".into(),
            gold: Gold::Letter {
                answer: 'B',
                last: 'D',
            },
        };
        let answer = json!({"choices": [{"message": {"content": "The"}, "logprobs": {"content": [
            {"token": "The", "logprob": -0.2, "top_logprobs": [
                {"token": "The", "logprob": -0.2}, {"token": " C", "logprob": -2.5},
                {"token": "B", "logprob": -1.9}]}]}}]});
        let (verdict, confidence, recorded) = judge(&q, Scoring::Letter, &answer);
        assert_eq!((verdict, confidence), (Verdict::Score(1.0), Some(-1.9)));
        assert_eq!(recorded.text, "B", "the letter read off the first step");
        let none = json!({"choices": [{"logprobs": {"content": [
            {"token": "The", "logprob": -0.2, "top_logprobs": []}]}}]});
        let (verdict, confidence, recorded) = judge(&q, Scoring::Letter, &none);
        assert_eq!((verdict, confidence), (Verdict::Score(0.0), None));
        assert_eq!(recorded.text, "");
        // Text scoring of the same answer grades the text "The": no letter, wrong.
        let (verdict, confidence, recorded) = judge(&q, Scoring::Text, &answer);
        assert_eq!((verdict, confidence), (Verdict::Score(0.0), Some(-0.2)));
        assert_eq!(recorded.text, "The");
    }

    #[test]
    fn an_answer_keeps_its_confidence_signals() {
        let v = json!({"choices": [{"message": {"content": "Yes no"}, "logprobs": {"content": [
            {"token": "Yes", "logprob": -0.5, "top_logprobs": [
                {"token": " Maybe", "logprob": -2.0}, {"token": "Yes", "logprob": -0.5},
                {"token": "No", "logprob": -1.5}]},
            {"token": " no", "logprob": -3.0, "top_logprobs": []}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2}});
        let a = signals(&v);
        assert_eq!((a.tokens, a.prompt_tokens), (2, 11));
        assert_eq!(a.mean_logprob, Some(-1.75));
        assert_eq!(a.min_logprob, Some(-3.0));
        assert_eq!(
            a.first_margin,
            Some(1.0),
            "best minus runner-up, whatever the order"
        );
        assert_eq!(
            a.first_top
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>(),
            ["Yes", "No", " Maybe"]
        );
        // The three listed outcomes plus the probability they leave out.
        let ps = [(-0.5f64).exp(), (-1.5f64).exp(), (-2.0f64).exp()];
        let rest = 1.0 - ps.iter().sum::<f64>();
        let h: f64 = ps.iter().chain([rest].iter()).map(|p| -p * p.ln()).sum();
        assert!((a.first_entropy.expect("entropy") - h).abs() < 1e-12);
        // No logprobs: nothing to be confident about, and the length from the logprobs.
        let bare = signals(&json!({"choices": [{"message": {"content": "x"}}]}));
        assert_eq!(
            (
                bare.tokens,
                bare.mean_logprob,
                bare.first_margin,
                bare.first_entropy
            ),
            (0, None, None, None)
        );
    }
}
