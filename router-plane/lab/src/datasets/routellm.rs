//! RouteLLM (`routellm/`): GPT-4's and Mixtral's outcomes on MMLU, GSM8K and MT-Bench, for
//! `import` (without the prompts RouteLLM lists as contaminated), and GSM8K's test
//! questions with their gold numbers, for `label`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
};

use serde_json::Value;

use super::{files_with_extension, read};
use crate::{
    data::{DataError, Item},
    label::{Gold, Question},
};

/// RouteLLM's model names in its MMLU, GSM8K and MT-Bench files.
pub const ROUTELLM_WEAK: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
pub const ROUTELLM_STRONG: &str = "gpt-4-1106-preview";

/// `eval_prompt`s of a RouteLLM `contaminated_prompts.jsonl` (missing file: none).
fn contaminated(path: &Path) -> Result<HashSet<String>, DataError> {
    if !path.exists() {
        return Ok(HashSet::new());
    }
    let mut out = HashSet::new();
    for (n, line) in read(path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| DataError::parse(path, n + 1, e.to_string()))?;
        if let Some(p) = v["eval_prompt"].as_str() {
            out.insert(p.to_owned());
        }
    }
    Ok(out)
}

fn truth(path: &Path, line: usize, v: &str) -> Result<f64, DataError> {
    match v.trim() {
        "True" | "true" | "1" | "1.0" => Ok(1.0),
        "False" | "false" | "0" | "0.0" => Ok(0.0),
        other => Err(DataError::parse(
            path,
            line,
            format!("expected True/False, got {other:?}"),
        )),
    }
}

/// A RouteLLM responses CSV: `prompt, <weak>, <strong>[, responses…]` with True/False.
fn routellm_csv(
    path: &Path,
    source: &str,
    skip: &HashSet<String>,
    out: &mut Vec<Item>,
) -> Result<(), DataError> {
    let (headers, rows) = super::csv_rows(path)?;
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::parse(path, 1, format!("no column {name:?}")))
    };
    let (p, w, s) = (col("prompt")?, col(ROUTELLM_WEAK)?, col(ROUTELLM_STRONG)?);
    for (n, (line, record)) in rows.into_iter().enumerate() {
        let prompt = record.get(p).unwrap_or_default().to_owned();
        if skip.contains(&prompt) {
            continue;
        }
        let scores = BTreeMap::from([
            (
                ROUTELLM_WEAK.to_owned(),
                truth(path, line, record.get(w).unwrap_or_default())?,
            ),
            (
                ROUTELLM_STRONG.to_owned(),
                truth(path, line, record.get(s).unwrap_or_default())?,
            ),
        ]);
        out.push(Item {
            id: format!("{source}/{n}"),
            prompt,
            source: source.to_owned(),
            scores,
            costs: BTreeMap::new(),
            confidence: BTreeMap::new(),
            answers: BTreeMap::new(),
        });
    }
    Ok(())
}

/// RouteLLM MMLU: `routellm/mmlu/responses/mmlu_<subject>.csv`, 57 subjects.
pub fn mmlu(root: &Path) -> Result<Vec<Item>, DataError> {
    let dir = root.join("routellm/mmlu/responses");
    let skip = contaminated(&root.join("routellm/mmlu/contaminated_prompts.jsonl"))?;
    let files = files_with_extension(&dir, "csv")?;
    let mut out = Vec::new();
    for f in files {
        let subject = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .trim_start_matches("mmlu_")
            .to_owned();
        routellm_csv(&f, &format!("routellm/mmlu/{subject}"), &skip, &mut out)?;
    }
    Ok(out)
}

/// RouteLLM GSM8K: `routellm/gsm8k/gsm8k_responses.csv`.
pub fn gsm8k(root: &Path) -> Result<Vec<Item>, DataError> {
    let skip = contaminated(&root.join("routellm/gsm8k/contaminated_prompts.jsonl"))?;
    let mut out = Vec::new();
    routellm_csv(
        &root.join("routellm/gsm8k/gsm8k_responses.csv"),
        "routellm/gsm8k",
        &skip,
        &mut out,
    )?;
    Ok(out)
}

/// RouteLLM MT-Bench: one item per question (its first turn is the prompt), each model's
/// score the mean GPT-4 judge score over both turns, divided by 10. Evaluation only.
pub fn mt_bench(root: &Path) -> Result<Vec<Item>, DataError> {
    let qpath = root.join("routellm/mt_bench/question.jsonl");
    let jpath = root.join("routellm/mt_bench/judgements.jsonl");
    let skip = contaminated(&root.join("routellm/mt_bench/contaminated_prompts.jsonl"))?;
    let mut questions = BTreeMap::new();
    for (n, line) in read(&qpath)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| DataError::parse(&qpath, n + 1, e.to_string()))?;
        let id = v["question_id"].as_i64().unwrap_or(-1);
        let first = v["turns"][0].as_str().unwrap_or_default().to_owned();
        questions.insert(
            id,
            (first, v["category"].as_str().unwrap_or_default().to_owned()),
        );
    }
    let mut judged: HashMap<(i64, String), Vec<f64>> = HashMap::new();
    for (n, line) in read(&jpath)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| DataError::parse(&jpath, n + 1, e.to_string()))?;
        let score = v["score"]
            .as_f64()
            .ok_or_else(|| DataError::parse(&jpath, n + 1, "no numeric score"))?;
        let model = v["model"].as_str().unwrap_or_default().to_owned();
        let id = v["question_id"].as_i64().unwrap_or(-1);
        judged.entry((id, model)).or_default().push(score / 10.0);
    }
    let mut out = Vec::new();
    for (id, (prompt, category)) in questions {
        if skip.contains(&prompt) {
            continue;
        }
        let mut scores = BTreeMap::new();
        for model in [ROUTELLM_WEAK, ROUTELLM_STRONG] {
            if let Some(s) = judged.get(&(id, model.to_owned())) {
                scores.insert(model.to_owned(), s.iter().sum::<f64>() / s.len() as f64);
            }
        }
        if scores.len() == 2 {
            out.push(Item {
                id: format!("routellm/mt_bench/{id}"),
                prompt,
                source: format!("routellm/mt_bench/{category}"),
                scores,
                costs: BTreeMap::new(),
                confidence: BTreeMap::new(),
                answers: BTreeMap::new(),
            });
        }
    }
    Ok(out)
}

/// GSM8K test questions (`routellm/gsm8k/test.jsonl`; the gold number follows `####`).
pub fn gsm8k_questions(root: &Path) -> Result<Vec<Question>, DataError> {
    let path = root.join("routellm/gsm8k/test.jsonl");
    let text = read(&path)?;
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
