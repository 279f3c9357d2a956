//! all-MiniLM-L6-v2 (a 6-layer BERT, hidden size 384) run with candle on CPU: the text
//! encoder behind the predictor's embedding features. It runs here, offline, only: once to
//! distill the static token table the router looks up per request
//! ([`StaticTable`], `distill`), and in `eval --encoder minilm` to compare the full
//! encoder with its distillation.

use std::{collections::HashMap, path::Path};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};
use switchback_routing::difficulty::embed::{
    EMBEDDING_DIM as HIDDEN, Embed, StaticTable, normalise,
};
use tokenizers::Tokenizer;

use crate::artifact::{ArtifactError, tokenizer};

const HEADS: usize = 12;
const LAYERS: usize = 6;
const INTERMEDIATE: usize = 1536;
const EPS: f64 = 1e-12;
const MAX_TOKENS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum MiniLmError {
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Files(#[from] ArtifactError),
    #[error("{}: {message}", path.display())]
    Weights {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// The encoder: tokenizer plus BERT weights.
pub struct MiniLm {
    tokenizer: Tokenizer,
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm").finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Loads `model.safetensors` and `tokenizer.json` from `dir` (see fetch-models.sh).
    pub fn load(dir: &Path) -> Result<Self, MiniLmError> {
        let device = Device::Cpu;
        let weights_path = dir.join("model.safetensors");
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(&weights_path, &device).map_err(|e| {
                MiniLmError::Weights {
                    path: weights_path.clone(),
                    message: e.to_string(),
                }
            })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let e = vb.pp("embeddings");
        let layers = (0..LAYERS)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    q: linear(HIDDEN, HIDDEN, a.pp("self.query"))?,
                    k: linear(HIDDEN, HIDDEN, a.pp("self.key"))?,
                    v: linear(HIDDEN, HIDDEN, a.pp("self.value"))?,
                    attn_out: linear(HIDDEN, HIDDEN, a.pp("output.dense"))?,
                    attn_norm: layer_norm(HIDDEN, EPS, a.pp("output.LayerNorm"))?,
                    up: linear(HIDDEN, INTERMEDIATE, l.pp("intermediate.dense"))?,
                    down: linear(INTERMEDIATE, HIDDEN, l.pp("output.dense"))?,
                    out_norm: layer_norm(HIDDEN, EPS, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>, candle_core::Error>>()?;
        Ok(Self {
            tokenizer: tokenizer(dir)?,
            words: embedding(30522, HIDDEN, e.pp("word_embeddings"))?,
            positions: embedding(MAX_TOKENS, HIDDEN, e.pp("position_embeddings"))?,
            types: embedding(2, HIDDEN, e.pp("token_type_embeddings"))?,
            norm: layer_norm(HIDDEN, EPS, e.pp("LayerNorm"))?,
            layers,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Hidden states of a batch of equal-length id sequences: (batch, len, HIDDEN).
    fn forward(&self, ids: &Tensor) -> Result<Tensor, candle_core::Error> {
        let (batch, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?
            .unsqueeze(0)?
            .broadcast_as((batch, len))?;
        let types = ids.zeros_like()?;
        let mut x = self.norm.forward(
            &(self.words.forward(ids)?
                + self.positions.forward(&positions)?
                + self.types.forward(&types)?)?,
        )?;
        let head = HIDDEN / HEADS;
        let scale = 1.0 / (head as f64).sqrt();
        for l in &self.layers {
            let split = |t: Tensor| -> Result<Tensor, candle_core::Error> {
                t.reshape((batch, len, HEADS, head))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(l.q.forward(&x)?)?;
            let k = split(l.k.forward(&x)?)?;
            let v = split(l.v.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let attn = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = attn
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, len, HIDDEN))?;
            x = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let h = l.down.forward(&l.up.forward(&x)?.gelu_erf()?)?;
            x = l.out_norm.forward(&(h + &x)?)?;
        }
        Ok(x)
    }

    /// The sentence embedding of `text` (mean pooling, L2-normalised), as the model card
    /// defines it. Texts past 512 tokens are cut.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, MiniLmError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| MiniLmError::Tokenizer(e.to_string()))?;
        let mut ids: Vec<u32> = enc.get_ids().to_vec();
        if ids.len() > MAX_TOKENS {
            let sep = ids[ids.len() - 1];
            ids.truncate(MAX_TOKENS - 1);
            ids.push(sep);
        }
        let t = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let pooled = self.forward(&t)?.mean(1)?.squeeze(0)?;
        Ok(normalise(pooled.to_vec1::<f32>()?))
    }

    /// Distills a static table: each vocabulary token's embedding as a one-token sentence
    /// (`[CLS] token [SEP]`, mean-pooled, L2-normalised), like Model2Vec. Run once.
    pub fn distill(&self, batch: usize) -> Result<StaticTable, MiniLmError> {
        let vocab = self.vocab_size();
        let mut rows = Vec::with_capacity(vocab * HIDDEN);
        let (cls, sep) = (101u32, 102u32);
        for start in (0..vocab).step_by(batch) {
            let end = (start + batch).min(vocab);
            let ids: Vec<u32> = (start..end).flat_map(|t| [cls, t as u32, sep]).collect();
            let t = Tensor::from_vec(ids, (end - start, 3), &Device::Cpu)?;
            let pooled = self.forward(&t)?.mean(1)?;
            for row in pooled.to_vec2::<f32>()? {
                rows.extend(normalise(row));
            }
        }
        Ok(StaticTable::new(HIDDEN, rows, self.tokenizer.clone()))
    }
}

impl Embed for MiniLm {
    fn version(&self) -> &'static str {
        "lexical-hash-2+minilm-1"
    }

    fn embed(&self, text: &str) -> Vec<f32> {
        MiniLm::embed(self, text).unwrap_or_else(|err| {
            tracing::warn!(%err, "MiniLM failed on a prompt; using a zero embedding");
            vec![0.0; HIDDEN]
        })
    }
}
