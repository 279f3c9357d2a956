//! The files the lab reads and writes around the routing core, which works on bytes and
//! strings only: predictor artifacts (JSON) and the distilled MiniLM table with the
//! model's tokenizer.

use std::path::{Path, PathBuf};

use switchback_routing::difficulty::{
    embed::{EmbedError, StaticTable, tokenizer_from_json},
    predictor::{Encoder, Predictor, PredictorError},
};
use tokenizers::Tokenizer;

/// Why an artifact, a table or a tokenizer could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Predictor {
        path: PathBuf,
        source: PredictorError,
    },
    #[error("{}: {source}", path.display())]
    Table { path: PathBuf, source: EmbedError },
    #[error("{}: {source}", path.display())]
    Tokenizer { path: PathBuf, source: EmbedError },
}

fn read(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    std::fs::read(path).map_err(|source| ArtifactError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    std::fs::write(path, bytes).map_err(|source| ArtifactError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Loads the predictor artifact at `path` with `encoder`, which must compute its feature
/// layout.
pub fn load_predictor(path: &Path, encoder: Encoder) -> Result<Predictor, ArtifactError> {
    let bad = |source| ArtifactError::Predictor {
        path: path.to_owned(),
        source,
    };
    let json =
        String::from_utf8(read(path)?).map_err(|e| bad(PredictorError::Invalid(e.to_string())))?;
    Predictor::from_json(&json, encoder).map_err(bad)
}

/// Writes `p` to `path` as the artifact the router loads.
pub fn save_predictor(p: &Predictor, path: &Path) -> Result<(), ArtifactError> {
    // Weights, names and numbers: the artifact always serialises.
    let json = p.to_json().unwrap_or_default();
    write(path, json.as_bytes())
}

/// The tokenizer of the model in `dir` (its `tokenizer.json`), without padding or
/// truncation.
pub fn tokenizer(dir: &Path) -> Result<Tokenizer, ArtifactError> {
    let path = dir.join("tokenizer.json");
    tokenizer_from_json(&read(&path)?).map_err(|source| ArtifactError::Tokenizer { path, source })
}

/// Loads the table at `path`, with the tokenizer of the model in `model_dir`.
pub fn load_table(path: &Path, model_dir: &Path) -> Result<StaticTable, ArtifactError> {
    StaticTable::from_bytes(&read(path)?, tokenizer(model_dir)?).map_err(|source| {
        ArtifactError::Table {
            path: path.to_owned(),
            source,
        }
    })
}

/// Writes `table` to `path`.
pub fn save_table(table: &StaticTable, path: &Path) -> Result<(), ArtifactError> {
    write(path, &table.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_predictor_that_does_not_load_names_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.json");
        let err = load_predictor(&path, Encoder::Lexical)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("p.json"), "{err}");
        std::fs::write(&path, "{\"format\": \"something else\"}").expect("write");
        let err = load_predictor(&path, Encoder::Lexical)
            .expect_err("not an artifact")
            .to_string();
        assert!(err.contains("p.json"), "{err}");
    }
}
