//! The public routing datasets (`../shared/data/routing`, see its README), one reader
//! each: the outcomes `import` turns into labelled JSONL, and the questions with gold
//! answers `label` asks a cluster's own tiers. Every reader keeps the source's prompts byte
//! for byte (the split rule hashes them).
//!
//! - [`routellm`]: RouteLLM's MMLU, GSM8K and MT-Bench outcomes, GSM8K's test questions;
//! - [`mmlu`]: MMLU's test questions;
//! - [`llmrouter`]: LLMRouter's outcomes over 9 open models, and its multiple-choice and
//!   code queries;
//! - [`routerarena`]: RouterArena's cached results.

pub mod llmrouter;
pub mod mmlu;
pub mod routellm;
pub mod routerarena;

use std::path::{Path, PathBuf};

use crate::data::{DataError, Item};

/// The datasets `import` reads, by the name it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Outcomes {
    RoutellmMmlu,
    RoutellmGsm8k,
    RoutellmMtBench,
    Llmrouter,
    Routerarena,
}

impl Outcomes {
    /// The dataset's labelled items, from the datasets' `root`.
    pub fn read(self, root: &Path) -> Result<Vec<Item>, DataError> {
        match self {
            Self::RoutellmMmlu => routellm::mmlu(root),
            Self::RoutellmGsm8k => routellm::gsm8k(root),
            Self::RoutellmMtBench => routellm::mt_bench(root),
            Self::Llmrouter => llmrouter::outcomes(root),
            Self::Routerarena => routerarena::outcomes(root),
        }
    }
}

/// The whole file, or an error naming it.
fn read(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// The files in `dir` ending in `.<ext>`, sorted (so readers do not depend on directory
/// order).
/// A CSV file's header row and its records, each with its line number (the header is
/// line 1), every error naming the file and the line.
fn csv_rows(
    path: &Path,
) -> Result<(csv::StringRecord, Vec<(usize, csv::StringRecord)>), DataError> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| DataError::parse(path, 0, e.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|e| DataError::parse(path, 1, e.to_string()))?
        .clone();
    let rows = reader
        .records()
        .enumerate()
        .map(|(n, r)| {
            r.map(|r| (n + 2, r))
                .map_err(|e| DataError::parse(path, n + 2, e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok((headers, rows))
}

fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, DataError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    Ok(files)
}

/// A zero-shot multiple-choice prompt: the question, its choices lettered A, B, C, ... one
/// per line, and the instruction to answer with the letter only. `about` names the topic
/// (MMLU's subject).
pub(crate) fn choice_prompt(about: Option<&str>, question: &str, choices: &[&str]) -> String {
    let topic = about.map(|a| format!(" about {a}")).unwrap_or_default();
    let options: String = ('A'..='Z')
        .zip(choices)
        .map(|(l, t)| format!("{l}. {t}\n"))
        .collect();
    format!(
        "The following is a multiple choice question{topic}.\n\n{question}\n{options}\nAnswer with the letter of the correct choice only."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn import_names_every_dataset() {
        use clap::ValueEnum;
        let names: Vec<String> = Outcomes::value_variants()
            .iter()
            .filter_map(|d| Some(d.to_possible_value()?.get_name().to_owned()))
            .collect();
        assert_eq!(
            names,
            [
                "routellm-mmlu",
                "routellm-gsm8k",
                "routellm-mt-bench",
                "llmrouter",
                "routerarena"
            ]
        );
    }
}
