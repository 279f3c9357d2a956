//! Importers from the public routing datasets (`../shared/data/routing`, see its README)
//! into the labelled JSONL format. Each keeps the source's prompts byte for byte (the
//! split rule hashes them) and drops the prompts RouteLLM lists as contaminated.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
};

use serde_json::Value;

use super::data::{DataError, Item};

/// RouteLLM's model names in its MMLU, GSM8K and MT-Bench files.
pub const ROUTELLM_WEAK: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
pub const ROUTELLM_STRONG: &str = "gpt-4-1106-preview";

fn read(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

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
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| DataError::parse(path, 0, e.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|e| DataError::parse(path, 1, e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::parse(path, 1, format!("no column {name:?}")))
    };
    let (p, w, s) = (col("prompt")?, col(ROUTELLM_WEAK)?, col(ROUTELLM_STRONG)?);
    for (n, record) in reader.records().enumerate() {
        let line = n + 2;
        let record = record.map_err(|e| DataError::parse(path, line, e.to_string()))?;
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
pub fn routellm_mmlu(root: &Path) -> Result<Vec<Item>, DataError> {
    let dir = root.join("routellm/mmlu/responses");
    let skip = contaminated(&root.join("routellm/mmlu/contaminated_prompts.jsonl"))?;
    let files = super::data::files_with_extension(&dir, "csv")?;
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
pub fn routellm_gsm8k(root: &Path) -> Result<Vec<Item>, DataError> {
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
pub fn routellm_mt_bench(root: &Path) -> Result<Vec<Item>, DataError> {
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

/// LLMRouter: `llmrouter/data/dcrouter_preprocessed/{train,test}.json` (0/1 scores over 9
/// open models), with each model's price from `default_llm.json`.
pub fn llmrouter(root: &Path) -> Result<Vec<Item>, DataError> {
    let base = root.join("llmrouter/data");
    let prices_path = base.join("example_data/llm_candidates/default_llm.json");
    let prices: Value = serde_json::from_str(&read(&prices_path)?)
        .map_err(|e| DataError::parse(&prices_path, 0, e.to_string()))?;
    let mut out = Vec::new();
    for part in ["train", "test"] {
        let path = base.join(format!("dcrouter_preprocessed/{part}.json"));
        let v: Value = serde_json::from_str(&read(&path)?)
            .map_err(|e| DataError::parse(&path, 0, e.to_string()))?;
        for (n, q) in v.as_array().into_iter().flatten().enumerate() {
            let prompt = q["question"].as_str().unwrap_or_default().to_owned();
            let mut scores = BTreeMap::new();
            let mut costs = BTreeMap::new();
            for (model, s) in q["scores"].as_object().into_iter().flatten() {
                let Some(s) = s.as_f64() else { continue };
                scores.insert(model.clone(), s);
                if let Some(p) = prices[model]["output_price"].as_f64() {
                    let input = prices[model]["input_price"].as_f64().unwrap_or(p);
                    costs.insert(model.clone(), (input + p) / 2.0);
                }
            }
            out.push(Item {
                id: format!("llmrouter/{part}/{n}"),
                prompt,
                source: "llmrouter/dcrouter".to_owned(),
                scores,
                costs,
                confidence: BTreeMap::new(),
                answers: BTreeMap::new(),
            });
        }
    }
    Ok(out)
}

/// RouterArena: `routerarena/cached_results/<model>.jsonl` joined on `global_index`, each
/// model's score from `evaluation_result.score` and price from `model_cost/cost.json`.
pub fn routerarena(root: &Path) -> Result<Vec<Item>, DataError> {
    let dir = root.join("routerarena/cached_results");
    let cost_path = root.join("routerarena/model_cost/cost.json");
    let prices: Value = serde_json::from_str(&read(&cost_path)?)
        .map_err(|e| DataError::parse(&cost_path, 0, e.to_string()))?;
    let files = super::data::files_with_extension(&dir, "jsonl")?;
    let mut by_index: BTreeMap<String, Item> = BTreeMap::new();
    for f in files {
        let model = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let price = &prices[model.as_str()];
        let cost = match (
            price["input_token_price_per_million"].as_f64(),
            price["output_token_price_per_million"].as_f64(),
        ) {
            (Some(i), Some(o)) => Some((i + o) / 2.0),
            _ => None,
        };
        for (n, line) in read(&f)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| DataError::parse(&f, n + 1, e.to_string()))?;
            let index = v["global_index"].as_str().unwrap_or_default().to_owned();
            let Some(score) = v["evaluation_result"]["score"].as_f64() else {
                continue;
            };
            let item = by_index.entry(index.clone()).or_insert_with(|| Item {
                id: format!("routerarena/{index}"),
                prompt: v["question"].as_str().unwrap_or_default().to_owned(),
                source: format!(
                    "routerarena/{}",
                    index.rsplit_once('_').map_or(index.as_str(), |(d, _)| d)
                ),
                scores: BTreeMap::new(),
                costs: BTreeMap::new(),
                confidence: BTreeMap::new(),
                answers: BTreeMap::new(),
            });
            item.scores.insert(model.clone(), score.clamp(0.0, 1.0));
            if let Some(c) = cost {
                item.costs.insert(model.clone(), c);
            }
        }
    }
    Ok(by_index
        .into_values()
        .filter(|i| i.scores.len() >= 2)
        .collect())
}

/// Every importer by name, for the CLI.
pub fn by_name(name: &str, root: &Path) -> Option<Result<Vec<Item>, DataError>> {
    Some(match name {
        "routellm-mmlu" => routellm_mmlu(root),
        "routellm-gsm8k" => routellm_gsm8k(root),
        "routellm-mt-bench" => routellm_mt_bench(root),
        "llmrouter" => llmrouter(root),
        "routerarena" => routerarena(root),
        _ => return None,
    })
}

pub const IMPORTERS: [&str; 5] = [
    "routellm-mmlu",
    "routellm-gsm8k",
    "routellm-mt-bench",
    "llmrouter",
    "routerarena",
];
