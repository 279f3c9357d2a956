//! `switchback-router import | train | eval`: the offline side of difficulty routing.
//!
//!   switchback-router import routellm-mmlu --root ../shared/data/routing --out mmlu.jsonl
//!   switchback-router train --data mmlu.jsonl --tier small=MODEL --tier large=MODEL --out p.json
//!   switchback-router eval --data mmlu.jsonl --predictor p.json [--json] [--predictions F.csv] [--plot F.svg]

use std::path::PathBuf;

use clap::Subcommand;

use crate::difficulty::{
    data::{self, Item, Split},
    import,
    minilm::{self, MiniLm},
    predictor::{self, Encoder, TrainOptions},
};

/// Where the encoder's files are, for commands that need one.
#[derive(Debug, clap::Args)]
pub struct EncoderArgs {
    /// Features: lexical, static (MiniLM distilled table) or minilm (the full encoder).
    #[arg(long, default_value = "static")]
    pub encoder: String,
    /// The all-MiniLM-L6-v2 directory (fetch-models.sh minilm).
    #[arg(long, env = switchback_common::env::MINILM_DIR)]
    pub minilm_dir: Option<PathBuf>,
    /// The static table (`distill` writes it); default: static-table.bin in --minilm-dir.
    #[arg(long)]
    pub table: Option<PathBuf>,
}

impl EncoderArgs {
    pub fn encoder(&self) -> Result<Encoder, Error> {
        let dir = || {
            self.minilm_dir
                .clone()
                .ok_or("--minilm-dir (or SWITCHBACK_MINILM_DIR) is needed for MiniLM features")
        };
        Ok(match self.encoder.as_str() {
            "lexical" => Encoder::Lexical,
            "static" => {
                let dir = dir()?;
                let table = self
                    .table
                    .clone()
                    .unwrap_or_else(|| dir.join("static-table.bin"));
                Encoder::Embedded(std::sync::Arc::new(minilm::load_table(&table, &dir)?))
            }
            "minilm" => Encoder::Embedded(std::sync::Arc::new(MiniLm::load(&dir()?)?)),
            other => return Err(format!("--encoder {other:?}: lexical, static or minilm").into()),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Distill MiniLM into a static token table (once; the router's fast features).
    Distill {
        /// The all-MiniLM-L6-v2 directory.
        #[arg(long, env = switchback_common::env::MINILM_DIR)]
        minilm_dir: PathBuf,
        /// Default: static-table.bin in --minilm-dir.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Convert a public routing dataset into labelled JSONL.
    Import {
        /// One of: routellm-mmlu, routellm-gsm8k, routellm-mt-bench, llmrouter, routerarena.
        dataset: String,
        /// The datasets' root (the folder with routellm/, llmrouter/, routerarena/).
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Label a dataset with the cluster's own tiers: ask each tier through a running
    /// router, score the answers against the gold ones, write labelled JSONL for `train`:
    /// one row per question with each tier's score, answer text, confidence signals (mean
    /// and minimum token log-probability, the first step's margin, entropy and
    /// alternatives, length) and seconds taken. Appends as it goes and resumes: questions
    /// already in `--out` are not asked again.
    Label {
        /// mmlu (zero-shot multiple choice), gsm8k, llmrouter-choice: LLMRouter's
        /// CommonsenseQA, OpenBookQA and ARC-Challenge questions (or one of those tasks by
        /// name: commonsense_qa, openbook_qa, arc_challenge), multiple choice too; or
        /// llmrouter-code: its MBPP and HumanEval problems (or mbpp, human_eval), graded
        /// by running each answer against the problem's tests with `--python`. That runs
        /// model-written code: do it in a throwaway container or VM.
        dataset: String,
        /// The datasets' root (../shared/data/routing).
        #[arg(long)]
        root: PathBuf,
        /// The router's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        router: String,
        /// Tiers to ask (each becomes a key of `scores`).
        #[arg(long = "tier", required = true)]
        tiers: Vec<String>,
        /// How many questions (spread over the whole set by prompt hash).
        #[arg(long, default_value_t = 300)]
        limit: usize,
        /// How answers are scored. Default: letter for multiple choice (the most probable
        /// choice letter among one step's top alternatives), text for gsm8k.
        #[arg(long, value_enum)]
        scoring: Option<crate::difficulty::label::Scoring>,
        /// Tokens per answer with text scoring. Default: 8 for mmlu, 256 for gsm8k, 320
        /// for code.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Skip questions whose prompt is longer (CPU tiers take minutes on long ones).
        #[arg(long)]
        max_prompt_chars: Option<usize>,
        /// Only questions the split rule puts in these splits (train, calibration, test;
        /// repeatable): on slow tiers, label what `train` learns from first.
        #[arg(long = "split", value_parser = parse_split)]
        splits: Vec<Split>,
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Tries per request the cluster turns away for now (429, 502, 503, 504, no
        /// connection), waiting its Retry-After or 2 s doubling; then the run stops.
        #[arg(long, default_value_t = 5)]
        tries: u32,
        /// The Python that runs code answers (with resource limits, in a fresh directory).
        #[arg(long, env = switchback_common::env::PYTHON, default_value = "python3")]
        python: PathBuf,
        /// The labelled JSONL to append to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fit the predictor on the train split and its quality knob on the calibration split.
    Train {
        /// Labelled JSONL files (several are concatenated).
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// TIER=MODEL, cheaper tier first; MODEL is a key of the items' `scores`.
        #[arg(long = "tier", required = true)]
        tiers: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 300)]
        epochs: usize,
        /// L2 penalty of the heads. 3e-4 scored best on the RouteLLM calibration split of
        /// MMLU and GSM8K among 3e-5..3e-3 (docs/ROUTING.md).
        #[arg(long, default_value_t = 3e-4)]
        l2: f32,
        /// The quality target of requests that set none.
        #[arg(long, default_value_t = 0.95)]
        default_quality: f32,
        /// Fit the heads on train + calibration (the knob is fitted on calibration with
        /// cross-fitted gains: each fold scored by heads that did not see it).
        #[arg(long)]
        heads_on_calibration: bool,
        /// Also fit a head on the top tier's gain itself, and decide on it.
        #[arg(long)]
        gap_head: bool,
        /// How conservative the quality knob is: a threshold serves target q only if the
        /// quality it keeps on the calibration items, less this many standard errors,
        /// reaches q of the top tier's. 0 takes them at face value; 1.645 (a one-sided 95 %
        /// bound) keeps the promise on new prompts when the calibration items are few.
        #[arg(long, default_value_t = 0.0)]
        knob_z: f64,
        #[command(flatten)]
        encoder: EncoderArgs,
    },
    /// Make an API key: prints a fresh random token (give it to the client) on stdout and
    /// the keys-file entry with its SHA-256 (add it under `keys:`) on stderr.
    Keygen {
        /// The key's id: the name logs and metrics show for it.
        #[arg(long)]
        id: String,
    },
    /// Drive the placement core and the cascade with simulated tiers and workers and a
    /// trace from labelled data; compare round-robin, least-queue, difficulty-only,
    /// cascade-only and the joint policy (docs/ROUTING.md).
    Simulate(Box<crate::simulate_cli::SimulateArgs>),
    /// Fit the cascade's floor per tier from labels with confidences (`label` records
    /// each answer's mean log-probability): the fewest escalations that keep the quality
    /// target on train + calibration, reported on test. Prints the policy fragment.
    FitCascade {
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// Tiers in rising cost, as named in the labels (`label --tier ...`).
        #[arg(long = "tier", required = true)]
        tiers: Vec<String>,
        /// Quality target, as a fraction of the next tier's quality.
        #[arg(long, default_value_t = 0.95)]
        quality: f64,
        /// The signal the floors are on: confidence (the labels' mean log-probability, or
        /// the chosen letter's: `min_mean_logprob`), min (the least likely token:
        /// `min_token_logprob`) or margin (the first step's best minus runner-up, what
        /// the prefill alone gives: `min_first_margin`).
        #[arg(long, value_enum, default_value = "confidence")]
        signal: crate::eval_cli::Signal,
    },
    /// How APGR grows with labelled data: k-fold over all items (an analysis that ignores
    /// the split rule), heads fitted on growing subsets of the other folds.
    LearningCurve {
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// TIER=MODEL, cheaper tier first.
        #[arg(long = "tier", required = true)]
        tiers: Vec<String>,
        /// Training-set sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000,8000")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// How many folds to hold out in turn (each one a repetition).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long, default_value_t = 300)]
        epochs: usize,
        #[arg(long, default_value_t = 3e-4)]
        l2: f32,
        #[command(flatten)]
        encoder: EncoderArgs,
    },
    /// Replay labelled items through the predictor: APGR, CPT and AIQ for every pair of
    /// tiers against random, the oracle, prompt length, the per-source prior and kNN; with
    /// `--price` for every tier, cost-quality curves over all tiers for routing alone,
    /// cascade alone and cascade routing (AIQ, top-tier calls saved, the knob's promise).
    Eval(Box<crate::eval_cli::EvalArgs>),
}

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn load(paths: &[PathBuf]) -> Result<Vec<Item>, Error> {
    let mut items = Vec::new();
    for p in paths {
        items.extend(data::read_jsonl(p)?);
    }
    Ok(items)
}

/// A split's name as `--split` takes it.
pub(crate) fn parse_split(name: &str) -> Result<Split, String> {
    match name {
        "train" => Ok(Split::Train),
        "calibration" => Ok(Split::Calibration),
        "test" => Ok(Split::Test),
        other => Err(format!(
            "unknown split {other:?}: train, calibration or test"
        )),
    }
}

/// `TIER=MODEL` arguments.
pub(crate) fn parse_tiers(tiers: &[String]) -> Result<Vec<(String, String)>, Error> {
    Ok(tiers
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| format!("--tier {t:?}: expected TIER=MODEL"))
        })
        .collect::<Result<Vec<_>, _>>()?)
}

pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Keygen { id } => {
            let (token, entry) = crate::auth::keys::generate(&id)?;
            println!("{token}");
            eprintln!(
                "# The token above is shown once; the router keeps only its hash. Add under `keys:`:\n{entry}"
            );
        }
        Command::Simulate(args) => crate::simulate_cli::run(*args)?,
        Command::FitCascade {
            data,
            tiers,
            quality,
            signal,
        } => {
            use crate::eval_cli::Signal;
            let (key, range) = match signal {
                Signal::Confidence => ("min_mean_logprob", -100.0..=0.0),
                Signal::Min => ("min_token_logprob", -100.0..=0.0),
                Signal::Margin => ("min_first_margin", 0.0..=100.0),
                Signal::Entropy => {
                    return Err(
                        "--signal entropy: the router's cascade has no entropy floor; \
                                use confidence, min or margin"
                            .into(),
                    );
                }
            };
            if tiers.len() < 2 || !(0.0..=1.0).contains(&quality) {
                return Err(
                    "give at least two --tier (cheapest first) and --quality in [0, 1]".into(),
                );
            }
            let items = load(&data)?;
            let mut yaml = String::from("cascade:\n  per_tier:\n");
            for pair in tiers.windows(2) {
                let (lower, upper) = (&pair[0], &pair[1]);
                let points = |test: bool| -> Vec<crate::cascade::Labelled> {
                    items
                        .iter()
                        .filter(|i| (data::split_of(&i.prompt) == Split::Test) == test)
                        .filter_map(|i| {
                            let confidence = signal.of(i, lower);
                            Some(crate::cascade::Labelled {
                                confidence: confidence.is_finite().then_some(confidence)? as f32,
                                lower: *i.scores.get(lower)?,
                                upper: *i.scores.get(upper)?,
                            })
                        })
                        .collect()
                };
                let (fit, test) = (points(false), points(true));
                let floor = crate::cascade::fit_floor(&fit, quality).ok_or_else(|| {
                    format!("no train/calibration item has {lower}'s confidence and both scores: label with `label` first")
                })?;
                // The policy's range for the floor.
                let floor = floor.clamp(*range.start(), *range.end());
                let upper_quality = |ps: &[crate::cascade::Labelled]| {
                    ps.iter().map(|p| p.upper).sum::<f64>() / ps.len().max(1) as f64
                };
                let (q_fit, e_fit) = crate::cascade::outcome_at(&fit, floor);
                let on_test = if test.is_empty() {
                    "no test items".to_owned()
                } else {
                    let (q_test, e_test) = crate::cascade::outcome_at(&test, floor);
                    format!(
                        "test ({} items): {:.1} %, {:.1} % escalated",
                        test.len(),
                        100.0 * q_test / upper_quality(&test).max(1e-12),
                        100.0 * e_test
                    )
                };
                eprintln!(
                    "{lower} -> {upper}: floor {floor:.4} on {} items: quality {:.1} % of {upper}, {:.1} % escalated; {on_test}",
                    fit.len(),
                    100.0 * q_fit / upper_quality(&fit).max(1e-12),
                    100.0 * e_fit,
                );
                yaml.push_str(&format!("    {lower}: {{{key}: {floor:.4}}}\n"));
            }
            print!("{yaml}");
        }
        Command::Distill { minilm_dir, out } => {
            let started = std::time::Instant::now();
            let table = MiniLm::load(&minilm_dir)?.distill(256)?;
            let out = out.unwrap_or_else(|| minilm_dir.join("static-table.bin"));
            minilm::save_table(&table, &out)?;
            eprintln!(
                "wrote {} ({table:?}) in {:.1} s",
                out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Label {
            dataset,
            root,
            router,
            tiers,
            limit,
            scoring,
            max_tokens,
            max_prompt_chars,
            splits,
            concurrency,
            tries,
            python,
            out,
        } => {
            use crate::difficulty::label::{self, Retry, Scoring};
            let choice = |tasks: &[&str]| label::llmrouter_choice(&root, tasks);
            let (questions, default_tokens, scoring) = match (dataset.as_str(), scoring) {
                ("mmlu", s) => (label::mmlu(&root)?, 8, s.unwrap_or(Scoring::Letter)),
                ("llmrouter-choice", s) => (
                    choice(&label::LLMROUTER_CHOICE_TASKS)?,
                    8,
                    s.unwrap_or(Scoring::Letter),
                ),
                (task, s) if label::LLMROUTER_CHOICE_TASKS.contains(&task) => {
                    (choice(&[task])?, 8, s.unwrap_or(Scoring::Letter))
                }
                ("gsm8k", None | Some(Scoring::Text)) => (label::gsm8k(&root)?, 256, Scoring::Text),
                ("gsm8k", Some(Scoring::Letter)) => {
                    return Err("gsm8k answers are numbers: --scoring letter is for mmlu".into());
                }
                (task, s)
                    if task == "llmrouter-code" || label::LLMROUTER_CODE_TASKS.contains(&task) =>
                {
                    if s == Some(Scoring::Letter) {
                        return Err(format!(
                            "{task} answers are code, graded by running it: --scoring letter \
                             is for multiple choice"
                        )
                        .into());
                    }
                    let tasks: &[&str] = if task == "llmrouter-code" {
                        &label::LLMROUTER_CODE_TASKS
                    } else {
                        &[task]
                    };
                    (label::llmrouter_code(&root, tasks)?, 320, Scoring::Text)
                }
                (other, _) => {
                    return Err(format!(
                        "unknown dataset {other:?}: mmlu, gsm8k, llmrouter-choice or one of \
                         its tasks {:?}, llmrouter-code or one of its tasks {:?}",
                        label::LLMROUTER_CHOICE_TASKS,
                        label::LLMROUTER_CODE_TASKS
                    )
                    .into());
                }
            };
            // Resume: questions already in `out` (from a run that stopped) are not asked
            // again, and every finished question is appended and flushed at once.
            let mut items = if out.exists() {
                data::read_jsonl(&out)?
            } else {
                Vec::new()
            };
            let have: std::collections::HashSet<String> =
                items.iter().map(|i| i.id.clone()).collect();
            let questions: Vec<_> = label::sample(
                questions
                    .into_iter()
                    .filter(|q| max_prompt_chars.is_none_or(|m| q.prompt.chars().count() <= m))
                    .filter(|q| splits.is_empty() || splits.contains(&data::split_of(&q.prompt)))
                    .collect(),
                limit,
            )
            .into_iter()
            .filter(|q| !have.contains(&q.id))
            .collect();
            if !items.is_empty() {
                eprintln!(
                    "{}: {} questions already labelled, {} to ask",
                    out.display(),
                    items.len(),
                    questions.len()
                );
            }
            let mut file = std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&out)
                    .map_err(|e| format!("{}: {e}", out.display()))?,
            );
            let started = std::time::Instant::now();
            let total = questions.len();
            let progress = indicatif::ProgressBar::new(total as u64);
            progress.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} questions, {per_sec}, ETA {eta} {msg}",
                )
                .map_err(|e| e.to_string())?,
            );
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(label::run(
                &router,
                &questions,
                &tiers,
                scoring,
                max_tokens.unwrap_or(default_tokens),
                concurrency,
                Retry {
                    attempts: tries,
                    ..Retry::default()
                },
                &python,
                |item| {
                    use std::io::Write;
                    let line = serde_json::to_string(&item).map_err(|e| e.to_string())?;
                    writeln!(file, "{line}")
                        .and_then(|()| file.flush())
                        .map_err(|e| format!("{}: {e}", out.display()))?;
                    items.push(item);
                    progress.inc(1);
                    // Running accuracy per tier over every labelled question in the file.
                    let accuracy: Vec<String> = tiers
                        .iter()
                        .map(|t| {
                            let ok: f64 = items.iter().filter_map(|i| i.scores.get(t)).sum();
                            format!("{t} {:.0} %", 100.0 * ok / items.len() as f64)
                        })
                        .collect();
                    progress.set_message(accuracy.join(", "));
                    // indicatif draws nothing when stderr is not a terminal (a background
                    // run logging to a file): a line every 10 questions there instead.
                    let done = progress.position();
                    if progress.is_hidden() && (done.is_multiple_of(10) || done == total as u64) {
                        let secs = started.elapsed().as_secs_f64();
                        let rate = done as f64 / secs.max(1e-9);
                        eprintln!(
                            "{done}/{total} questions, {:.1}/min, ETA {:.0} min; {}",
                            60.0 * rate,
                            (total as u64 - done) as f64 / rate.max(1e-9) / 60.0,
                            accuracy.join(", ")
                        );
                    }
                    Ok(())
                },
            ))?;
            progress.finish();
            let accuracy: Vec<String> = tiers
                .iter()
                .map(|t| {
                    let ok: f64 = items
                        .iter()
                        .map(|i| i.scores.get(t).copied().unwrap_or(0.0))
                        .sum();
                    format!("{t} {:.1} %", 100.0 * ok / items.len().max(1) as f64)
                })
                .collect();
            eprintln!(
                "{} questions × {} tiers ({total} asked now, in {:.0} s); accuracy {}; wrote {}",
                items.len(),
                tiers.len(),
                started.elapsed().as_secs_f64(),
                accuracy.join(", "),
                out.display()
            );
        }
        Command::Import { dataset, root, out } => {
            let items = import::by_name(&dataset, &root).ok_or_else(|| {
                format!(
                    "unknown dataset {dataset:?}; one of {}",
                    import::IMPORTERS.join(", ")
                )
            })??;
            data::write_jsonl(&out, &items)?;
            let mut counts = std::collections::BTreeMap::new();
            for i in &items {
                *counts.entry(data::split_of(&i.prompt)).or_insert(0usize) += 1;
            }
            eprintln!("{} items to {} ({counts:?})", items.len(), out.display());
        }
        Command::Train {
            data,
            tiers,
            out,
            epochs,
            l2,
            default_quality,
            heads_on_calibration,
            gap_head,
            knob_z,
            encoder,
        } => {
            if !(0.0..=10.0).contains(&knob_z) {
                return Err("--knob-z must be in [0, 10]".into());
            }
            let tiers = parse_tiers(&tiers)?;
            let items = load(&data)?;
            let p = predictor::train(
                &items,
                &TrainOptions {
                    tiers,
                    epochs,
                    l2,
                    default_quality,
                    heads_on_calibration,
                    gap_head,
                    knob_z,
                },
                encoder.encoder()?,
            )?;
            predictor::save(&p, &out)?;
            eprintln!("wrote {} ({})", out.display(), p.trained_on);
        }
        Command::LearningCurve {
            data,
            tiers,
            sizes,
            folds,
            repeats,
            epochs,
            l2,
            encoder,
        } => {
            let tiers = parse_tiers(&tiers)?;
            let items = load(&data)?;
            let curve = predictor::learning_curve(
                &items,
                &sizes,
                folds,
                repeats,
                &TrainOptions {
                    tiers,
                    epochs,
                    l2,
                    default_quality: 0.95,
                    heads_on_calibration: false,
                    gap_head: false,
                    knob_z: 0.0,
                },
                &encoder.encoder()?,
            )?;
            println!("| labelled items | mean APGR on held-out folds | per fold |");
            println!("|---|---|---|");
            for p in &curve {
                let mean = p.apgr.iter().sum::<f64>() / p.apgr.len().max(1) as f64;
                let each: Vec<String> = p.apgr.iter().map(|a| format!("{a:.3}")).collect();
                println!("| {} | {mean:.3} | {} |", p.train_items, each.join(", "));
            }
        }
        Command::Eval(args) => crate::eval_cli::run(*args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn cli(args: &[&str]) -> Result<(), Error> {
        let parsed =
            Cli::try_parse_from(std::iter::once("switchback-router").chain(args.iter().copied()))?;
        run(parsed.command)
    }

    /// Labelled items where the strong model helps on "hard" prompts only, under the given
    /// model names.
    fn write_items(path: &std::path::Path, weak: &str, strong: &str) {
        let lines: Vec<String> = (0..300)
            .map(|k| {
                let hard = k % 2 == 0;
                let prompt = if hard {
                    format!("prove the theorem number {k} rigorously")
                } else {
                    format!("say hello to friend {k}")
                };
                json!({"id": k.to_string(), "prompt": prompt, "source": "toy",
                       "scores": {weak: f64::from(u8::from(!hard)), strong: 1.0}})
                .to_string()
            })
            .collect();
        std::fs::write(path, lines.join("\n")).expect("write items");
    }

    #[test]
    fn eval_judges_a_predictors_tiers_against_other_models_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (trained, ours, artifact) = (
            dir.path().join("trained.jsonl"),
            dir.path().join("ours.jsonl"),
            dir.path().join("predictor.json"),
        );
        write_items(&trained, "proxy-weak", "proxy-strong");
        write_items(&ours, "small", "large");
        let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
        cli(&[
            "train",
            "--data",
            &path(&trained),
            "--tier",
            "small=proxy-weak",
            "--tier",
            "large=proxy-strong",
            "--encoder",
            "lexical",
            "--out",
            &path(&artifact),
        ])
        .expect("train");
        let eval = |extra: &[&str]| {
            let mut args = vec!["eval", "--json", "--encoder", "lexical", "--predictor"];
            let (artifact, ours) = (path(&artifact), path(&ours));
            args.extend([artifact.as_str(), "--data", ours.as_str()]);
            args.extend(extra);
            cli(&args)
        };
        // Our labels carry no scores for the models the predictor learned from...
        let err = eval(&[]).expect_err("no proxy scores");
        assert!(err.to_string().contains("proxy-weak"), "{err}");
        // ...so its tiers are judged against our tiers' own scores.
        eval(&["--tier", "small=small", "--tier", "large=large"]).expect("judged on ours");
        let err = eval(&["--tier", "medium=small"]).expect_err("no such tier");
        assert!(err.to_string().contains("medium"), "{err}");
    }
}
