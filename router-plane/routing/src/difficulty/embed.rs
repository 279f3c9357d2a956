//! Text embeddings behind the predictor's embedding features. The predictor names only
//! the [`Embed`] trait; the serving router plugs in the [`StaticTable`] (a per-token table
//! distilled from all-MiniLM-L6-v2, microseconds per prompt), the lab also the full
//! encoder for offline comparison (`switchback-lab eval --encoder minilm`).

use tokenizers::Tokenizer;

/// Width of an embedding (all-MiniLM-L6-v2's hidden size).
pub const EMBEDDING_DIM: usize = 384;

/// Turns a prompt into a unit-length embedding of [`EMBEDDING_DIM`] values.
pub trait Embed: std::fmt::Debug + Send + Sync {
    /// Names the feature layout (lexical features plus this embedding): an artifact trained
    /// with another is refused.
    fn version(&self) -> &'static str;
    /// The prompt's embedding; zeros where the text gives nothing to embed.
    fn embed(&self, text: &str) -> Vec<f32>;
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("not a static embedding table (write one with `switchback-lab distill`)")]
    NotATable,
    #[error("truncated table: {tokens} × {dim} floats expected")]
    Truncated { tokens: usize, dim: usize },
}

/// A tokenizer from its `tokenizer.json`, without padding or truncation (the shipped
/// tokenizer.json pads every input to a fixed length).
pub fn tokenizer_from_json(json: &[u8]) -> Result<Tokenizer, EmbedError> {
    let mut t = Tokenizer::from_bytes(json).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
    t.with_padding(None);
    t.with_truncation(None)
        .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
    Ok(t)
}

/// Scales `v` to unit length (a zero vector stays zero).
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
    /// A table of `rows` (one row of `dim` values per token id of `tokenizer`).
    pub fn new(dim: usize, rows: Vec<f32>, tokenizer: Tokenizer) -> Self {
        Self {
            dim,
            rows,
            tokenizer,
        }
    }

    /// The table's file format: a header (magic, tokens, dim), then little-endian f32 rows.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.rows.len() * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.rows.len() as u32 / self.dim.max(1) as u32).to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        for v in &self.rows {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads what [`StaticTable::to_bytes`] wrote, with the model's tokenizer.
    pub fn from_bytes(bytes: &[u8], tokenizer: Tokenizer) -> Result<Self, EmbedError> {
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(EmbedError::NotATable);
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        };
        let (tokens, dim) = (word(8), word(12));
        if tokens.checked_mul(dim).and_then(|n| n.checked_mul(4)) != Some(bytes.len() - 16) {
            return Err(EmbedError::Truncated { tokens, dim });
        }
        let rows = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            dim,
            rows,
            tokenizer,
        })
    }
}

impl Embed for StaticTable {
    fn version(&self) -> &'static str {
        "lexical-hash-2+minilm-static-1"
    }

    /// The normalised mean of the prompt's token rows (zeros for an empty prompt).
    fn embed(&self, text: &str) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer over three words, as a tokenizer.json would describe it.
    fn tokenizer() -> Tokenizer {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
            "decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},
            "unk_token":"[UNK]"}}"#;
        tokenizer_from_json(json.as_bytes()).expect("a tokenizer")
    }

    #[test]
    fn a_table_round_trips_and_embeds_the_normalised_mean_of_its_rows() {
        let rows = vec![0.0, 0.0, 3.0, 0.0, 0.0, 4.0];
        let table = StaticTable::new(2, rows, tokenizer());
        let again = StaticTable::from_bytes(&table.to_bytes(), tokenizer()).expect("round trip");
        let e = again.embed("hello world");
        assert!(
            (e[0] - 0.6).abs() < 1e-6 && (e[1] - 0.8).abs() < 1e-6,
            "{e:?}"
        );
        assert_eq!(again.embed(""), vec![0.0, 0.0]);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused() {
        let bytes = StaticTable::new(2, vec![1.0; 6], tokenizer()).to_bytes();
        assert!(matches!(
            StaticTable::from_bytes(&bytes[..bytes.len() - 4], tokenizer()),
            Err(EmbedError::Truncated { tokens: 3, dim: 2 })
        ));
        assert!(matches!(
            StaticTable::from_bytes(b"PK\x03\x04 not a table at all", tokenizer()),
            Err(EmbedError::NotATable)
        ));
    }
}
