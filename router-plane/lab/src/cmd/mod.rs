//! The subcommands, one file each, and the dispatch `main` calls.
//!
//!   switchback-lab import routellm-mmlu --root ../shared/data/routing --out mmlu.jsonl
//!   switchback-lab label mmlu --root ../shared/data/routing --tier small --tier large --out own.jsonl
//!   switchback-lab train --data mmlu.jsonl --tier small=MODEL --tier large=MODEL --out p.json
//!   switchback-lab eval --data mmlu.jsonl --predictor p.json [--json] [--predictions F.csv] [--plot F.svg]

pub mod args;
pub mod distill;
pub mod eval;
pub mod fit_cascade;
pub mod import;
pub mod label;
pub mod learning_curve;
pub mod simulate;
pub mod train;

use clap::Subcommand;

use crate::Error;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a public routing dataset into labelled JSONL.
    Import(import::Args),
    /// Label a dataset with the cluster's own tiers: ask each tier through a running
    /// router, score the answers against the gold ones, write labelled JSONL for `train`.
    ///
    /// One row per question with each tier's score, answer text, confidence signals (mean
    /// and minimum token log-probability, the first step's margin, entropy and
    /// alternatives, length) and seconds taken. Appends as it goes and resumes: questions
    /// already in `--out` are not asked again. Shows progress with the rate, the ETA and
    /// each tier's running accuracy (a line every 10 questions when stderr is not a
    /// terminal).
    Label(Box<label::Args>),
    /// Fit the predictor on the train split and its quality knob on the calibration split.
    Train(Box<train::Args>),
    /// Replay labelled items through the predictor: APGR, CPT and AIQ for every pair of
    /// tiers against random, the oracle, prompt length, the per-source prior and kNN; with
    /// `--price` for every tier, cost-quality curves over all tiers for routing alone,
    /// cascade alone and cascade routing (AIQ, top-tier calls saved, the knob's promise).
    Eval(Box<eval::Args>),
    /// How APGR grows with labelled data: k-fold over all items (an analysis that ignores
    /// the split rule), heads fitted on growing subsets of the other folds.
    LearningCurve(Box<learning_curve::Args>),
    /// Fit the cascade's floor per tier from labels with confidences (`label` records
    /// each answer's mean log-probability): the fewest escalations that keep the quality
    /// target on train + calibration, reported on test. Prints the policy fragment.
    FitCascade(fit_cascade::Args),
    /// Drive the placement core and the cascade with simulated tiers and workers and a
    /// trace from labelled data; compare round-robin, least-queue, difficulty-only,
    /// cascade-only and the joint policy (docs/ROUTING.md).
    Simulate(Box<simulate::Args>),
    /// Distill MiniLM into a static token table (once; the router's fast features).
    Distill(distill::Args),
}

pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Import(a) => import::run(a),
        Command::Label(a) => label::run(*a),
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(*a),
        Command::LearningCurve(a) => learning_curve::run(*a),
        Command::FitCascade(a) => fit_cascade::run(a),
        Command::Simulate(a) => simulate::run(*a),
        Command::Distill(a) => distill::run(a),
    }
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
            Cli::try_parse_from(std::iter::once("switchback-lab").chain(args.iter().copied()))
                .map_err(|e| Error::usage(e.to_string()))?;
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
