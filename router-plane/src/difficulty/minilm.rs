//! The predictor's embedding features from all-MiniLM-L6-v2 (a 6-layer BERT, hidden size
//! 384) without running it: a static token table distilled from the model once
//! (`switchback-lab distill`), which the router looks up per request in microseconds. The
//! model itself runs offline only, in `switchback-lab`.

use std::path::Path;

use tokenizers::Tokenizer;

pub const HIDDEN: usize = 384;

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// The tokenizer of the model in `dir`, without padding or truncation (the shipped
/// tokenizer.json pads every input to a fixed length).
pub fn tokenizer(dir: &Path) -> Result<Tokenizer, EncoderError> {
    let path = dir.join("tokenizer.json");
    let mut t = Tokenizer::from_file(&path).map_err(|e| EncoderError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    t.with_padding(None);
    t.with_truncation(None)
        .map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
    Ok(t)
}

/// `v` scaled to unit length (left as it is when it is all zeros).
pub fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A per-token embedding table distilled from MiniLM, with its tokenizer: a prompt's
/// embedding is the normalised mean of its tokens' rows. Microseconds instead of the
/// encoder's milliseconds.
pub struct StaticTable {
    pub dim: usize,
    rows: Vec<f32>,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for StaticTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTable")
            .field("dim", &self.dim)
            .field("tokens", &(self.rows.len() / self.dim.max(1)))
            .finish()
    }
}

const MAGIC: &[u8; 8] = b"SBSTAT01";

impl StaticTable {
    /// A table of `rows.len() / dim` rows of width `dim`, one per token id of `tokenizer`.
    pub fn new(dim: usize, rows: Vec<f32>, tokenizer: Tokenizer) -> Self {
        Self {
            dim,
            rows,
            tokenizer,
        }
    }

    /// Writes the table (header, then little-endian f32 rows).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(16 + self.rows.len() * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.rows.len() as u32 / self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        for v in &self.rows {
            out.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(path, out)
    }

    /// Loads a table written by [`StaticTable::save`], with the tokenizer from `model_dir`.
    pub fn load(path: &Path, model_dir: &Path) -> Result<Self, EncoderError> {
        let err = |message: String| EncoderError::File {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(err(
                "not a static embedding table (run `switchback-lab distill`)".into(),
            ));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        };
        let (tokens, dim) = (word(8), word(12));
        if bytes.len() != 16 + tokens * dim * 4 {
            return Err(err(format!("truncated: {tokens} × {dim} floats expected")));
        }
        let rows = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            dim,
            rows,
            tokenizer: tokenizer(model_dir)?,
        })
    }

    /// The normalised mean of the prompt's token rows (zeros for an empty prompt).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut sum = vec![0.0f32; self.dim];
        let Ok(enc) = self.tokenizer.encode(text, false) else {
            return sum;
        };
        for &id in enc.get_ids() {
            let at = id as usize * self.dim;
            if let Some(row) = self.rows.get(at..at + self.dim) {
                sum.iter_mut().zip(row).for_each(|(s, r)| *s += r);
            }
        }
        normalise(sum)
    }
}
