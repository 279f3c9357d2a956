//! The distilled MiniLM table the router's predictor embeds prompts with, read from disk:
//! the table itself ([`StaticTable`], the routing core's) with all-MiniLM-L6-v2's
//! tokenizer. `switchback-lab distill` writes it; the model itself runs only there.

use std::path::Path;

pub use switchback_routing::difficulty::embed::StaticTable;
use switchback_routing::difficulty::embed::{EmbedError, tokenizer_from_json};
use tokenizers::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: {source}")]
    Table { path: String, source: EmbedError },
}

/// The tokenizer of the model in `dir`, without padding or truncation.
pub fn tokenizer(dir: &Path) -> Result<Tokenizer, EncoderError> {
    let path = dir.join("tokenizer.json");
    let json = std::fs::read(&path).map_err(|e| EncoderError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    tokenizer_from_json(&json).map_err(|e| EncoderError::Tokenizer(e.to_string()))
}

/// Loads the table at `path`, with the tokenizer from `model_dir`.
pub fn load_table(path: &Path, model_dir: &Path) -> Result<StaticTable, EncoderError> {
    let bytes = std::fs::read(path).map_err(|e| EncoderError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    StaticTable::from_bytes(&bytes, tokenizer(model_dir)?).map_err(|source| EncoderError::Table {
        path: path.display().to_string(),
        source,
    })
}
