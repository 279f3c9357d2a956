//! Labels from the cluster's own tiers: send questions with gold answers through each tier
//! of a running cluster (its router's HTTP API), score every answer against the gold one,
//! and write the labelled JSONL that `train` takes. So an operator trains the router for
//! the models they actually run.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use super::{
    code::{self, CodeCheck},
    data::{Answer, DataError, Item, salted_key},
};

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

/// A zero-shot multiple-choice prompt: the question, its choices lettered A, B, C, ... one
/// per line, and the instruction to answer with the letter only. `about` names the topic
/// (MMLU's subject).
fn choice_prompt(about: Option<&str>, question: &str, choices: &[&str]) -> String {
    let topic = about.map(|a| format!(" about {a}")).unwrap_or_default();
    let options: String = ('A'..='Z')
        .zip(choices)
        .map(|(l, t)| format!("{l}. {t}\n"))
        .collect();
    format!(
        "The following is a multiple choice question{topic}.\n\n{question}\n{options}\nAnswer with the letter of the correct choice only."
    )
}

/// MMLU test questions (`mmlu/test/<subject>_test.csv`), asked zero-shot.
pub fn mmlu(root: &Path) -> Result<Vec<Question>, DataError> {
    let dir = root.join("mmlu/test");
    let files = super::data::files_with_extension(&dir, "csv")?;
    let mut out = Vec::new();
    for f in files {
        let subject = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .trim_end_matches("_test")
            .to_owned();
        let mut reader =
            csv::Reader::from_path(&f).map_err(|e| DataError::parse(&f, 0, e.to_string()))?;
        for (n, record) in reader.records().enumerate() {
            let r = record.map_err(|e| DataError::parse(&f, n + 2, e.to_string()))?;
            let field = |k: usize| r.get(k).unwrap_or_default();
            let answer: usize = field(5)
                .trim()
                .parse()
                .map_err(|_| DataError::parse(&f, n + 2, "answer is not 0..3"))?;
            let letter = ['A', 'B', 'C', 'D']
                .get(answer)
                .copied()
                .ok_or_else(|| DataError::parse(&f, n + 2, "answer is not 0..3"))?;
            let prompt = choice_prompt(
                Some(&subject.replace('_', " ")),
                field(0),
                &[field(1), field(2), field(3), field(4)],
            );
            out.push(Question {
                id: format!("mmlu/{subject}/{n}"),
                source: format!("label/mmlu/{subject}"),
                prompt,
                gold: Gold::Letter {
                    answer: letter,
                    last: 'D',
                },
            });
        }
    }
    Ok(out)
}

/// GSM8K test questions (`routellm/gsm8k/test.jsonl`; the gold number follows `####`).
pub fn gsm8k(root: &Path) -> Result<Vec<Question>, DataError> {
    let path = root.join("routellm/gsm8k/test.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| DataError::parse(&path, n + 1, e.to_string()))?;
        let gold = v["answer"]
            .as_str()
            .and_then(|a| a.rsplit("####").next())
            .and_then(|g| g.trim().replace(',', "").parse::<f64>().ok())
            .ok_or_else(|| DataError::parse(&path, n + 1, "no number after ####"))?;
        out.push(Question {
            id: format!("gsm8k/{n}"),
            source: "label/gsm8k".into(),
            prompt: format!(
                "{}\nSolve it step by step, then give the final number on its own line.",
                v["question"].as_str().unwrap_or_default()
            ),
            gold: Gold::Number(gold),
        });
    }
    Ok(out)
}

/// LLMRouter's multiple-choice tasks with their letter choices in a dict (its query data:
/// `llmrouter/data/example_data/query_data/default_query_{train,test}.jsonl`).
pub const LLMROUTER_CHOICE_TASKS: [&str; 3] = ["commonsense_qa", "openbook_qa", "arc_challenge"];

/// Questions of LLMRouter's query data for `tasks` (of [`LLMROUTER_CHOICE_TASKS`]), both
/// of its files, asked zero-shot as multiple choice with their own letters (CommonsenseQA
/// has five). Short prompts with one-letter answers: cheap to label on CPU, and easy
/// enough that a 0.5B model is well above chance where a 135M one is not.
pub fn llmrouter_choice(root: &Path, tasks: &[&str]) -> Result<Vec<Question>, DataError> {
    let mut out = Vec::new();
    llmrouter_rows(root, tasks, |row| {
        let (v, task, bad) = (&row.value, row.task(), |what: &str| row.bad(what));
        let choices = v["choices"]
            .as_str()
            .and_then(python_literal_to_json)
            .ok_or_else(|| bad("choices is not a {'label': [...], 'text': [...]} dict"))?;
        // A few ARC questions number their choices 1, 2, 3, ... (the gold answer too):
        // they are asked with letters like the rest, so every answer is one letter.
        let letter = |l: &str| match l.trim().parse::<u32>() {
            Ok(k @ 1..=26) => char::from_u32(u32::from('A') + k - 1),
            _ => l.trim().chars().next(),
        };
        let labels: Vec<char> = choices["label"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| letter(l.as_str()?))
            .collect();
        let texts: Vec<&str> = choices["text"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let expected: Vec<char> = ('A'..='Z').take(labels.len()).collect();
        if labels.len() < 2 || labels != expected || texts.len() != labels.len() {
            return Err(bad(
                "choices are not labelled A, B, C, ... with a text each",
            ));
        }
        let answer = v["ground_truth"]
            .as_str()
            .and_then(letter)
            .filter(|g| labels.contains(g))
            .ok_or_else(|| bad("ground_truth is not one of the choice letters"))?;
        out.push(Question {
            id: row.id(),
            source: format!("label/{task}"),
            prompt: choice_prompt(None, v["query"].as_str().unwrap_or_default().trim(), &texts),
            gold: Gold::Letter {
                answer,
                last: labels[labels.len() - 1],
            },
        });
        Ok(())
    })?;
    Ok(out)
}

/// One row of LLMRouter's query data (`default_query_{train,test}.jsonl`).
struct LlmrouterRow<'a> {
    path: &'a Path,
    split: &'static str,
    /// 0-based line index in its file.
    line: usize,
    value: Value,
}

impl LlmrouterRow<'_> {
    fn task(&self) -> &str {
        self.value["task_name"].as_str().unwrap_or_default()
    }

    /// `llmrouter/TASK/SPLIT/LINE`: stable across runs, so `label` can resume by it.
    fn id(&self) -> String {
        format!("llmrouter/{}/{}/{}", self.task(), self.split, self.line)
    }

    fn bad(&self, what: &str) -> DataError {
        DataError::parse(self.path, self.line + 1, what)
    }
}

/// Hands `each` every row of LLMRouter's query data, train file then test file, whose
/// task is one of `tasks`.
fn llmrouter_rows(
    root: &Path,
    tasks: &[&str],
    mut each: impl FnMut(LlmrouterRow<'_>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let dir = root.join("llmrouter/data/example_data/query_data");
    for split in ["train", "test"] {
        let path = dir.join(format!("default_query_{split}.jsonl"));
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
        for (line, json) in text.lines().enumerate() {
            if json.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(json)
                .map_err(|e| DataError::parse(&path, line + 1, e.to_string()))?;
            let row = LlmrouterRow {
                path: &path,
                split,
                line,
                value,
            };
            if tasks.contains(&row.task()) {
                each(row)?;
            }
        }
    }
    Ok(())
}

/// LLMRouter's code tasks (its query data): MBPP (a task and its `assert` lines) and
/// HumanEval (a signature and docstring, and a `check(candidate)` of tests).
pub const LLMROUTER_CODE_TASKS: [&str; 2] = ["mbpp", "human_eval"];

/// Problems of LLMRouter's query data for `tasks` (of [`LLMROUTER_CODE_TASKS`]), both of
/// its files, once each (HumanEval's test file repeats train problems). An answer is
/// right when its code passes the problem's tests. The models this labels on CPU are
/// small code models: where a 0.5B coder solves half of them and a 135M model almost none,
/// the labels carry the signal that multiple choice at chance level does not.
pub fn llmrouter_code(root: &Path, tasks: &[&str]) -> Result<Vec<Question>, DataError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    llmrouter_rows(root, tasks, |row| {
        let (v, task, bad) = (&row.value, row.task(), |what: &str| row.bad(what));
        let query = v["query"].as_str().unwrap_or_default();
        let truth = v["ground_truth"].as_str().unwrap_or_default();
        let (prompt, check) = match task {
            "mbpp" => {
                let asserts: Vec<String> = python_literal_to_json(truth)
                    .and_then(|j| serde_json::from_value(j).ok())
                    .filter(|a: &Vec<String>| !a.is_empty())
                    .ok_or_else(|| bad("ground_truth is not a list of assert lines"))?;
                let prompt = format!(
                    "{}\nYour code should pass these tests:\n{}\n\nReply with only \
                         the Python function, in a ```python code block.",
                    query.trim(),
                    asserts.join("\n")
                );
                (prompt, CodeCheck::Asserts(asserts))
            }
            _ => {
                let entry =
                    code::last_function(query).ok_or_else(|| bad("query defines no function"))?;
                if !truth.contains("def check(") {
                    return Err(bad("ground_truth has no check(candidate)"));
                }
                let prompt = format!(
                    "Complete this Python function. Reply with only the whole function, \
                         in a ```python code block.\n\n```python\n{query}```"
                );
                let check = CodeCheck::Check {
                    prompt: query.to_owned(),
                    test: truth.to_owned(),
                    entry,
                };
                (prompt, check)
            }
        };
        if seen.insert(prompt.clone()) {
            out.push(Question {
                id: row.id(),
                source: format!("label/{task}"),
                prompt,
                gold: Gold::Code(check),
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// A Python literal of strings, lists and dicts (LLMRouter stores its choices as the
/// `repr` of a dict) as JSON: quotes of either kind, and Python's escapes inside them.
fn python_literal_to_json(text: &str) -> Option<Value> {
    let mut json = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\'' && c != '"' {
            json.push(c);
            continue;
        }
        let quote = c;
        let mut s = String::new();
        loop {
            match chars.next()? {
                ch if ch == quote => break,
                '\\' => match chars.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => s.push(other),
                },
                ch => s.push(ch),
            }
        }
        json.push_str(&serde_json::to_string(&s).ok()?);
    }
    serde_json::from_str(&json).ok()
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

/// How an answer is graded: a score read off its text, or a program that passes when the
/// answer is right.
#[derive(Debug, PartialEq)]
enum Verdict {
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
fn judge(q: &Question, scoring: Scoring, v: &Value) -> (Verdict, Option<f64>, Answer) {
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

/// `limit` questions spread over the whole set, independent of file order. The order is
/// a hash of the prompt with a salt: sorting by the plain prompt hash would pick prompts
/// whose hash starts low, which the split rule (first byte mod 10) does not spread evenly.
pub fn sample(mut questions: Vec<Question>, limit: usize) -> Vec<Question> {
    questions.sort_by_cached_key(|q| salted_key("switchback-label-sample", &q.prompt));
    questions.truncate(limit);
    questions
}

/// How `run` retries a request the cluster turned away for now: a 429, 502, 503 or 504
/// (a full queue, a worker that lost its stream, no first token in time on a busy CPU
/// worker) or a connection error. Waits `base`, doubling each time, or the router's
/// `Retry-After` when that is longer; after `attempts` tries the run stops with the last
/// error.
/// A batch job of hundreds of questions must not die on one such answer, nor must it
/// score the question as wrong (that would be a label the tier never earned).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub base: std::time::Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: std::time::Duration::from_secs(2),
        }
    }
}

impl Retry {
    /// The wait before try `attempt + 1` (after `attempt` failed ones), capped at a minute.
    /// The server's `Retry-After` is a floor, not the wait: a router says "1" to anyone it
    /// turns away, while a worker it took out of its routing set after a first-token
    /// timeout comes back only when the controller next reports it, tens of seconds later.
    fn wait(&self, attempt: u32, retry_after: Option<u64>) -> std::time::Duration {
        let own = self.base.saturating_mul(1 << (attempt - 1).min(16));
        let server = std::time::Duration::from_secs(retry_after.unwrap_or(0));
        own.max(server).min(std::time::Duration::from_secs(60))
    }
}

/// Whether an answer with this status is worth asking again (the cluster is busy or lost
/// the request), rather than a request it will never accept (400, 404, 413, ...).
fn retryable(status: reqwest::StatusCode) -> bool {
    use reqwest::StatusCode as S;
    matches!(
        status,
        S::TOO_MANY_REQUESTS | S::BAD_GATEWAY | S::SERVICE_UNAVAILABLE | S::GATEWAY_TIMEOUT
    )
}

/// POSTs `body` to `url`, retrying as `retry` says; the JSON answer of the first success,
/// or the last failure.
async fn ask(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    retry: Retry,
    what: &str,
) -> Result<Value, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (error, retry_after) = match http.post(url).json(body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
                let text = resp.text().await.map_err(|e| format!("{what}: {e}"))?;
                if status.is_success() {
                    return serde_json::from_str(&text).map_err(|e| format!("{what}: {e}: {text}"));
                }
                let error = format!("{what}: HTTP {status}: {text}");
                if !retryable(status) {
                    return Err(error);
                }
                (error, retry_after)
            }
            // A connection refused or reset: the router restarting, say. A timeout of the
            // client's own is not retried: the request may still be running there.
            Err(e) if e.is_connect() || (e.is_request() && !e.is_timeout()) => {
                (format!("{what}: {e}"), None)
            }
            Err(e) => return Err(format!("{what}: {e}")),
        };
        if attempt >= retry.attempts.max(1) {
            return Err(format!("{error} (after {attempt} tries)"));
        }
        let wait = retry.wait(attempt, retry_after);
        eprintln!(
            "{error}; try {} in {:.0} s",
            attempt + 1,
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}

/// How long a tier's program may run before it counts as wrong (HumanEval's harness
/// allows 3 s; a shared CPU busy with inference gets more).
const CODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Asks `router` (base URL) each question on each tier and scores the answers (code by
/// running it with `python`). Requests
/// are greedy. Hands each question's [`Item`] to `finished` as soon as all its tiers have
/// answered (so a long run that fails loses only the questions in flight). A request the
/// cluster turns away for now is retried as `retry` says; one that still fails stops the
/// run (a label must not be silently missing).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    router: &str,
    questions: &[Question],
    tiers: &[String],
    scoring: Scoring,
    max_tokens: u32,
    concurrency: usize,
    retry: Retry,
    python: &Path,
    mut finished: impl FnMut(Item) -> Result<(), String>,
) -> Result<(), String> {
    use futures::StreamExt;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/v1/chat/completions", router.trim_end_matches('/'));
    // Letter scoring asks for as many alternatives as a router allows by default.
    let alternatives = crate::api::openai::RequestLimits::default().max_top_logprobs;
    let jobs = questions
        .iter()
        .enumerate()
        .flat_map(|(qi, q)| tiers.iter().map(move |t| (qi, q, t.clone())));
    let mut answers = futures::stream::iter(jobs)
        .map(|(qi, q, tier)| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                // Log-probabilities too: the answer's confidence is what `fit-cascade`
                // fits the cascade floors on.
                // Five alternatives per step give the first step's margin and entropy (the
                // signal a cascade can read after the prefill alone).
                let mut body = json!({"model": tier, "max_tokens": max_tokens, "logprobs": true,
                                      "top_logprobs": 5,
                                      "messages": [{"role": "user", "content": q.prompt}]});
                if scoring == Scoring::Letter {
                    body["max_tokens"] = json!(1);
                    body["top_logprobs"] = json!(alternatives);
                }
                let asked = std::time::Instant::now();
                let v = ask(&http, &url, &body, retry, &format!("{} on {tier}", q.id)).await?;
                let seconds = asked.elapsed().as_secs_f64();
                let (verdict, confidence, mut answer) = judge(q, scoring, &v);
                answer.seconds = seconds;
                let score = match verdict {
                    Verdict::Score(s) => s,
                    Verdict::Run(program) => f64::from(u8::from(
                        code::passes(python, &program, CODE_TIMEOUT)
                            .await
                            .map_err(|e| format!("{} on {tier}: {e}", q.id))?,
                    )),
                };
                Ok::<_, String>((qi, tier, score, confidence, answer))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut scores: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); questions.len()];
    let mut confidence: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); questions.len()];
    let mut recorded: Vec<BTreeMap<String, Answer>> = vec![BTreeMap::new(); questions.len()];
    while let Some(answer) = answers.next().await {
        let (qi, tier, score, conf, answer) = answer?;
        if let Some(c) = conf {
            confidence[qi].insert(tier.clone(), c);
        }
        recorded[qi].insert(tier.clone(), answer);
        scores[qi].insert(tier, score);
        if scores[qi].len() == tiers.len() {
            let q = &questions[qi];
            finished(Item {
                id: q.id.clone(),
                prompt: q.prompt.clone(),
                source: q.source.clone(),
                scores: std::mem::take(&mut scores[qi]),
                costs: BTreeMap::new(),
                confidence: std::mem::take(&mut confidence[qi]),
                answers: std::mem::take(&mut recorded[qi]),
            })?;
        }
    }
    Ok(())
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

    #[test]
    fn choice_prompts_letter_the_choices_and_ask_for_the_letter() {
        assert_eq!(
            choice_prompt(Some("anatomy"), "Which bone?", &["a", "b", "c", "d"]),
            "The following is a multiple choice question about anatomy.\n\nWhich bone?\n\
             A. a\nB. b\nC. c\nD. d\n\nAnswer with the letter of the correct choice only."
        );
        assert_eq!(
            choice_prompt(None, "Where?", &["x", "y", "z", "v", "w"]),
            "The following is a multiple choice question.\n\nWhere?\n\
             A. x\nB. y\nC. z\nD. v\nE. w\n\nAnswer with the letter of the correct choice only."
        );
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
    fn python_reprs_of_choices_read_as_json() {
        let v = python_literal_to_json(
            r#"{'label': ['A', 'B'], 'text': ["driver's seat", 'a \'quote\' and \\ and \xe9 and "x"']}"#,
        )
        .expect("parses");
        assert_eq!(v["label"], json!(["A", "B"]));
        assert_eq!(
            v["text"],
            json!(["driver's seat", "a 'quote' and \\ and \u{e9} and \"x\""])
        );
        assert!(
            python_literal_to_json("{'label': ['A'").is_none(),
            "unterminated"
        );
    }

    #[test]
    fn llmrouter_questions_keep_their_letters_and_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = dir.path().join("llmrouter/data/example_data/query_data");
        std::fs::create_dir_all(&q).expect("dirs");
        let row = |task: &str, labels: &str, gold: &str| {
            json!({"task_name": task, "query": "If a bum wanted to ride for free, where?",
                   "ground_truth": gold, "metric": "em_mc",
                   "choices": format!("{{'label': [{labels}], 'text': ['bus depot', 'train station', 'beach', 'bridge', 'taxi']}}")})
            .to_string()
        };
        let five = "'A', 'B', 'C', 'D', 'E'";
        std::fs::write(
            q.join("default_query_train.jsonl"),
            [row("commonsense_qa", five, "B"), row("math", five, "B")].join("\n"),
        )
        .expect("write");
        std::fs::write(
            q.join("default_query_test.jsonl"),
            row("openbook_qa", five, "E"),
        )
        .expect("write");
        let qs = llmrouter_choice(dir.path(), &LLMROUTER_CHOICE_TASKS).expect("load");
        assert_eq!(qs.len(), 2, "math is not a choice task");
        assert_eq!(qs[0].id, "llmrouter/commonsense_qa/train/0");
        assert_eq!(
            qs[0].gold,
            Gold::Letter {
                answer: 'B',
                last: 'E'
            }
        );
        assert!(qs[0].prompt.contains("\nE. taxi\n"), "{}", qs[0].prompt);
        assert_eq!(qs[1].id, "llmrouter/openbook_qa/test/0");

        // Choices numbered 1..4 (some ARC questions) are asked as A..D.
        std::fs::write(
            q.join("default_query_test.jsonl"),
            row("arc_challenge", "'1', '2', '3', '4', '5'", "3"),
        )
        .expect("write");
        let qs = llmrouter_choice(dir.path(), &LLMROUTER_CHOICE_TASKS).expect("load");
        assert_eq!(
            qs[1].gold,
            Gold::Letter {
                answer: 'C',
                last: 'E'
            }
        );
        assert!(qs[1].prompt.contains("\nC. beach\n"), "{}", qs[1].prompt);

        // A gold answer that is not among the choices is an error, not a silent label.
        std::fs::write(
            q.join("default_query_test.jsonl"),
            row("openbook_qa", five, "F"),
        )
        .expect("write");
        let err = llmrouter_choice(dir.path(), &LLMROUTER_CHOICE_TASKS).expect_err("bad gold");
        assert!(err.to_string().contains("ground_truth"), "{err}");
    }

    #[test]
    fn llmrouter_code_problems_carry_their_tests_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = dir.path().join("llmrouter/data/example_data/query_data");
        std::fs::create_dir_all(&q).expect("dirs");
        let mbpp = json!({"task_name": "mbpp", "query": "Write a function to add two numbers.",
            "ground_truth": "['assert add(1, 2) == 3', \"assert add(0, 0) == 0\"]", "metric": "code_eval"});
        let he_prompt = "def helper():\n    pass\n\n\ndef total(xs):\n    \"\"\"Sum.\"\"\"\n";
        let he = json!({"task_name": "human_eval", "query": he_prompt,
            "ground_truth": "\n\ndef check(candidate):\n    assert candidate([1]) == 1\n", "metric": "code_eval"});
        let other = json!({"task_name": "gsm8k", "query": "1+1?", "ground_truth": "2"});
        std::fs::write(
            q.join("default_query_train.jsonl"),
            [mbpp.to_string(), he.to_string(), other.to_string()].join("\n"),
        )
        .expect("write");
        // HumanEval's test file repeats train problems: asked once.
        std::fs::write(q.join("default_query_test.jsonl"), he.to_string()).expect("write");
        let qs = llmrouter_code(dir.path(), &LLMROUTER_CODE_TASKS).expect("load");
        assert_eq!(qs.len(), 2, "{qs:?}");
        assert_eq!(qs[0].id, "llmrouter/mbpp/train/0");
        assert!(
            qs[0].prompt.contains("assert add(0, 0) == 0"),
            "MBPP shows its tests: {}",
            qs[0].prompt
        );
        assert_eq!(
            qs[0].gold,
            Gold::Code(CodeCheck::Asserts(vec![
                "assert add(1, 2) == 3".into(),
                "assert add(0, 0) == 0".into()
            ]))
        );
        let Gold::Code(CodeCheck::Check { entry, .. }) = &qs[1].gold else {
            panic!("{:?}", qs[1].gold)
        };
        assert_eq!(entry, "total", "the last function is the entry point");
        assert_eq!(qs[0].gold.score("def add(a, b): return a + b"), None);

        let bad = json!({"task_name": "mbpp", "query": "x", "ground_truth": "not a list"});
        std::fs::write(q.join("default_query_test.jsonl"), bad.to_string()).expect("write");
        let err = llmrouter_code(dir.path(), &["mbpp"]).expect_err("bad tests");
        assert!(err.to_string().contains("assert"), "{err}");
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
        use crate::difficulty::data::{Split, split_of};
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

    /// A router stand-in that answers the scripted statuses in turn (then 200 with the
    /// answer "B"), counting the requests it gets; its base URL and the count.
    async fn scripted(
        script: Vec<(u16, Option<&'static str>)>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use axum::{http::StatusCode, response::IntoResponse};
        use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = hits.clone();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let step = script.get(n).copied();
                async move {
                    match step {
                        Some((code, retry_after)) => {
                            let mut r = (
                                StatusCode::from_u16(code).expect("status"),
                                axum::Json(json!({"error": {"message": "scripted"}})),
                            )
                                .into_response();
                            if let Some(secs) = retry_after {
                                r.headers_mut()
                                    .insert("retry-after", secs.parse().expect("header"));
                            }
                            r
                        }
                        None => axum::Json(json!({"choices": [
                            {"message": {"role": "assistant", "content": "B"}}]}))
                        .into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (url, hits)
    }

    async fn label_one(url: &str, attempts: u32) -> Result<Vec<Item>, String> {
        let q = Question {
            id: "q1".into(),
            source: "s".into(),
            prompt: "Which letter?".into(),
            gold: Gold::Letter {
                answer: 'B',
                last: 'D',
            },
        };
        let retry = Retry {
            attempts,
            base: std::time::Duration::from_millis(1),
        };
        let mut items = Vec::new();
        run(
            url,
            &[q],
            &["small".into()],
            Scoring::Text,
            8,
            1,
            retry,
            Path::new("python3"),
            |i| {
                items.push(i);
                Ok(())
            },
        )
        .await
        .map(|()| items)
    }

    #[tokio::test]
    async fn a_busy_cluster_is_asked_again_and_the_label_is_the_answers() {
        use std::sync::atomic::Ordering;
        let (url, hits) = scripted(vec![
            (504, None),
            (503, Some("0")),
            (429, Some("0")),
            (502, None),
        ])
        .await;
        let items = label_one(&url, 5).await.expect("labelled");
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].scores["small"], 1.0);
        assert_eq!(items[0].answers["small"].text, "B", "the answer is kept");
    }

    #[tokio::test]
    async fn a_request_the_cluster_refuses_is_not_retried_and_stops_the_run() {
        use std::sync::atomic::Ordering;
        let (url, hits) = scripted(vec![(400, None)]).await;
        let err = label_one(&url, 5).await.expect_err("the run stops");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(err.contains("q1 on small: HTTP 400"), "{err}");
    }

    #[tokio::test]
    async fn the_run_stops_when_the_tries_are_spent() {
        use std::sync::atomic::Ordering;
        let (url, hits) = scripted(vec![(504, None); 10]).await;
        let err = label_one(&url, 3).await.expect_err("the run stops");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert!(
            err.contains("504") && err.ends_with("(after 3 tries)"),
            "{err}"
        );
    }

    #[test]
    fn retries_double_and_wait_at_least_the_servers_retry_after() {
        use std::time::Duration;
        let r = Retry {
            attempts: 9,
            base: Duration::from_secs(2),
        };
        let waits: Vec<u64> = (1..=4).map(|a| r.wait(a, None).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16]);
        assert_eq!(r.wait(1, Some(7)), Duration::from_secs(7));
        assert_eq!(r.wait(3, Some(1)), Duration::from_secs(8));
        assert_eq!(r.wait(8, None), Duration::from_secs(60));
        assert_eq!(r.wait(1, Some(3600)), Duration::from_secs(60));
    }
}
