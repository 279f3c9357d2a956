//! `label`: the cluster's own tiers answer questions with gold answers; the scored answers
//! become labelled JSONL for `train`, `fit-cascade` and `eval`. A long run shows its
//! progress (rate, ETA, each tier's running accuracy), appends every finished question at
//! once and resumes where it stopped.

use std::{collections::HashSet, io::Write as _, path::PathBuf};

use crate::{
    Error,
    data::{self, Item, Split},
    datasets::{llmrouter, mmlu, routellm},
    label::{self, LabelError, Question, Retry, Scoring, client::Options},
};

/// The question sets `label` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuestionSet {
    /// MMLU's test questions, zero-shot multiple choice.
    Mmlu,
    /// GSM8K's test questions; an answer's last number is graded.
    Gsm8k,
    /// LLMRouter's CommonsenseQA, OpenBookQA and ARC-Challenge questions, multiple choice.
    LlmrouterChoice,
    /// LLMRouter's CommonsenseQA questions.
    #[value(name = "commonsense_qa")]
    CommonsenseQa,
    /// LLMRouter's OpenBookQA questions.
    #[value(name = "openbook_qa")]
    OpenbookQa,
    /// LLMRouter's ARC-Challenge questions.
    #[value(name = "arc_challenge")]
    ArcChallenge,
    /// LLMRouter's MBPP and HumanEval problems, graded by running each answer against the
    /// problem's tests with `--python`: that runs model-written code, so do it in a
    /// throwaway container or VM.
    LlmrouterCode,
    /// LLMRouter's MBPP problems (code, as llmrouter-code).
    Mbpp,
    /// LLMRouter's HumanEval problems (code, as llmrouter-code).
    #[value(name = "human_eval")]
    HumanEval,
}

impl QuestionSet {
    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// The questions, the default tokens per answer, and the scoring (`asked`, or the
    /// set's own).
    fn questions(
        self,
        root: &std::path::Path,
        asked: Option<Scoring>,
    ) -> Result<(Vec<Question>, u32, Scoring), Error> {
        let choice = |tasks: &[&str]| llmrouter::choice_questions(root, tasks);
        let code = |tasks: &[&str]| -> Result<_, Error> {
            if asked == Some(Scoring::Letter) {
                return Err(Error::usage(format!(
                    "{} answers are code, graded by running it: --scoring letter is for multiple choice",
                    self.name()
                )));
            }
            Ok((llmrouter::code_questions(root, tasks)?, 320, Scoring::Text))
        };
        let letter = asked.unwrap_or(Scoring::Letter);
        Ok(match self {
            Self::Mmlu => (mmlu::questions(root)?, 8, letter),
            Self::LlmrouterChoice => (choice(&llmrouter::CHOICE_TASKS)?, 8, letter),
            Self::CommonsenseQa => (choice(&["commonsense_qa"])?, 8, letter),
            Self::OpenbookQa => (choice(&["openbook_qa"])?, 8, letter),
            Self::ArcChallenge => (choice(&["arc_challenge"])?, 8, letter),
            Self::Gsm8k if asked == Some(Scoring::Letter) => {
                return Err(Error::usage(
                    "gsm8k answers are numbers: --scoring letter is for mmlu",
                ));
            }
            Self::Gsm8k => (routellm::gsm8k_questions(root)?, 256, Scoring::Text),
            Self::LlmrouterCode => code(&llmrouter::CODE_TASKS)?,
            Self::Mbpp => code(&["mbpp"])?,
            Self::HumanEval => code(&["human_eval"])?,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The questions to ask.
    #[arg(value_enum)]
    pub dataset: QuestionSet,
    /// The datasets' root (../shared/data/routing).
    #[arg(long)]
    pub root: PathBuf,
    /// The router's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub router: String,
    /// Tiers to ask (each becomes a key of `scores`).
    #[arg(long = "tier", required = true)]
    pub tiers: Vec<String>,
    /// How many questions (spread over the whole set by prompt hash).
    #[arg(long, default_value_t = 300)]
    pub limit: usize,
    /// How answers are scored. Default: letter for multiple choice (the most probable
    /// choice letter among one step's top alternatives), text for gsm8k and code.
    #[arg(long, value_enum)]
    pub scoring: Option<Scoring>,
    /// Tokens per answer with text scoring. Default: 8 for multiple choice, 256 for gsm8k,
    /// 320 for code.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Skip questions whose prompt is longer (CPU tiers take minutes on long ones).
    #[arg(long)]
    pub max_prompt_chars: Option<usize>,
    /// Only questions the split rule puts in these splits (train, calibration, test;
    /// repeatable): on slow tiers, label what `train` learns from first.
    #[arg(long = "split", value_enum)]
    pub splits: Vec<Split>,
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Tries per request the cluster turns away for now (429, 502, 503, 504, no
    /// connection), waiting its Retry-After or 2 s doubling; then the run stops.
    #[arg(long, default_value_t = 5)]
    pub tries: u32,
    /// The Python that runs code answers (with resource limits, in a fresh directory).
    #[arg(long, env = switchback_common::env::PYTHON, default_value = "python3")]
    pub python: PathBuf,
    /// The labelled JSONL to append to (created if missing): one line per question with
    /// each tier's score, answer, confidence signals and seconds.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<(), Error> {
    let (questions, default_tokens, scoring) = a.dataset.questions(&a.root, a.scoring)?;
    // Resume: questions already in `out` (from a run that stopped) are not asked again,
    // and every finished question is appended and flushed at once.
    let mut items = if a.out.exists() {
        data::read_jsonl(&a.out)?
    } else {
        Vec::new()
    };
    let have: HashSet<String> = items.iter().map(|i| i.id.clone()).collect();
    let questions: Vec<Question> = label::sample(
        questions
            .into_iter()
            .filter(|q| {
                a.max_prompt_chars
                    .is_none_or(|m| q.prompt.chars().count() <= m)
            })
            .filter(|q| a.splits.is_empty() || a.splits.contains(&data::split_of(&q.prompt)))
            .collect(),
        a.limit,
    )
    .into_iter()
    .filter(|q| !have.contains(&q.id))
    .collect();
    if !items.is_empty() {
        eprintln!(
            "{}: {} questions already labelled, {} to ask",
            a.out.display(),
            items.len(),
            questions.len()
        );
    }
    let write_error = |source| LabelError::Write {
        path: a.out.clone(),
        source,
    };
    let mut file = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&a.out)
            .map_err(write_error)?,
    );
    let started = std::time::Instant::now();
    let total = questions.len();
    let progress = Progress::new(total, &a.tiers);
    let runtime = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    let opts = Options {
        router: &a.router,
        tiers: &a.tiers,
        scoring,
        max_tokens: a.max_tokens.unwrap_or(default_tokens),
        concurrency: a.concurrency,
        retry: Retry {
            attempts: a.tries,
            ..Retry::default()
        },
        python: &a.python,
    };
    runtime.block_on(label::run(&opts, &questions, |item| {
        let line = serde_json::to_string(&item).map_err(|e| write_error(e.into()))?;
        writeln!(file, "{line}")
            .and_then(|()| file.flush())
            .map_err(write_error)?;
        items.push(item);
        progress.done(&items, started);
        Ok(())
    }))?;
    progress.bar.finish();
    eprintln!(
        "{} questions × {} tiers ({total} asked now, in {:.0} s); accuracy {}; wrote {}",
        items.len(),
        a.tiers.len(),
        started.elapsed().as_secs_f64(),
        accuracy(&items, &a.tiers, 1),
        a.out.display()
    );
    Ok(())
}

/// Each tier's share of right answers over `items`, as `tier N %`, with `decimals`.
fn accuracy(items: &[Item], tiers: &[String], decimals: usize) -> String {
    tiers
        .iter()
        .map(|t| {
            let ok: f64 = items.iter().filter_map(|i| i.scores.get(t)).sum();
            format!(
                "{t} {:.decimals$} %",
                100.0 * ok / items.len().max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The run's progress: a bar with the rate, the ETA and each tier's running accuracy on
/// a terminal; a line every 10 questions where stderr is not one (a background run logging
/// to a file), where indicatif draws nothing.
struct Progress<'a> {
    bar: indicatif::ProgressBar,
    total: usize,
    tiers: &'a [String],
}

impl<'a> Progress<'a> {
    fn new(total: usize, tiers: &'a [String]) -> Self {
        let bar = indicatif::ProgressBar::new(total as u64);
        // A constant template: it parses.
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} questions, {per_sec}, ETA {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        Self { bar, total, tiers }
    }

    /// One more question finished; `items` are all the labelled ones, the file's included.
    fn done(&self, items: &[Item], started: std::time::Instant) {
        self.bar.inc(1);
        let accuracy = accuracy(items, self.tiers, 0);
        self.bar.set_message(accuracy.clone());
        let (done, total) = (self.bar.position(), self.total as u64);
        if self.bar.is_hidden() && (done.is_multiple_of(10) || done == total) {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "{done}/{total} questions, {:.1}/min, ETA {:.0} min; {accuracy}",
                60.0 * rate,
                (total - done) as f64 / rate.max(1e-9) / 60.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A router stand-in on its own runtime that answers every question "B", with the
    /// letter's log-probability; its base URL, and the runtime that serves it.
    fn stand_in() -> (String, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|| async {
                axum::Json(json!({"choices": [{"message": {"content": "B"}, "logprobs": {"content": [
                    {"token": "B", "logprob": -0.1, "top_logprobs": [{"token": "B", "logprob": -0.1}]}]}}],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 1}}))
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        (url, runtime)
    }

    fn args(root: &std::path::Path, router: &str, limit: usize, out: &std::path::Path) -> Args {
        Args {
            dataset: QuestionSet::Mmlu,
            root: root.to_owned(),
            router: router.to_owned(),
            tiers: vec!["small".into(), "large".into()],
            limit,
            scoring: None,
            max_tokens: None,
            max_prompt_chars: None,
            splits: Vec::new(),
            concurrency: 2,
            tries: 1,
            python: "python3".into(),
            out: out.to_owned(),
        }
    }

    #[test]
    fn a_second_run_appends_only_the_questions_not_yet_labelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mmlu = dir.path().join("mmlu/test");
        std::fs::create_dir_all(&mmlu).expect("dirs");
        let mut csv = String::from("question,choice0,choice1,choice2,choice3,answer\n");
        for k in 0..6 {
            csv.push_str(&format!(
                "\"What is {k} + {k}?\",{},{},{k},0,1\n",
                2 * k,
                2 * k + 1
            ));
        }
        std::fs::write(mmlu.join("arithmetic_test.csv"), csv).expect("write");
        let out = dir.path().join("labels.jsonl");
        let (router, _serving) = stand_in();

        run(args(dir.path(), &router, 4, &out)).expect("first run");
        let first = std::fs::read_to_string(&out).expect("labels");
        assert_eq!(first.lines().count(), 4);
        run(args(dir.path(), &router, 6, &out)).expect("second run");
        let second = std::fs::read_to_string(&out).expect("labels");
        assert!(
            second.starts_with(&first),
            "the first run's lines stay as they were"
        );
        let items = data::read_jsonl(&out).expect("labelled JSONL");
        let ids: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!((items.len(), ids.len()), (6, 6), "no question asked twice");
        for i in &items {
            // Letter scoring reads the letter off the first step: B is right (answer 1).
            assert_eq!(i.scores["small"], 1.0, "{i:?}");
            assert_eq!(i.answers["large"].text, "B");
            assert_eq!(i.confidence["small"], -0.1);
        }
    }

    #[test]
    fn letter_scoring_is_refused_where_answers_are_not_letters() {
        let root = std::path::Path::new("/nonexistent");
        for set in [QuestionSet::Gsm8k, QuestionSet::Mbpp] {
            let err = set
                .questions(root, Some(Scoring::Letter))
                .expect_err("letter scoring")
                .to_string();
            assert!(err.contains("--scoring letter"), "{err}");
        }
    }
}
