//! RouterArena (`routerarena/`): many models' cached results on one question set, joined
//! on the question, with each model's price.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

use super::{files_with_extension, read};
use crate::data::{DataError, Item};

/// RouterArena: `routerarena/cached_results/<model>.jsonl` joined on `global_index`, each
/// model's score from `evaluation_result.score` and price from `model_cost/cost.json`.
pub fn outcomes(root: &Path) -> Result<Vec<Item>, DataError> {
    let dir = root.join("routerarena/cached_results");
    let cost_path = root.join("routerarena/model_cost/cost.json");
    let prices: Value = serde_json::from_str(&read(&cost_path)?)
        .map_err(|e| DataError::parse(&cost_path, 0, e.to_string()))?;
    let files = files_with_extension(&dir, "jsonl")?;
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
