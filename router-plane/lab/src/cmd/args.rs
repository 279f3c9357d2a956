//! Arguments several commands share: the encoder's files, `TIER=MODEL` pairs.

use std::{path::PathBuf, sync::Arc};

use switchback_routing::difficulty::predictor::Encoder;

use crate::{Error, artifact, minilm::MiniLm};

/// Which features a predictor is trained or run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncoderKind {
    /// Hashed n-grams and lexical signals only.
    Lexical,
    /// Plus MiniLM's embedding from the distilled static table (what the router runs).
    Static,
    /// Plus the full MiniLM encoder's embedding (offline comparison).
    Minilm,
}

/// Where the encoder's files are, for commands that need one.
#[derive(Debug, clap::Args)]
pub struct EncoderArgs {
    /// Features: lexical, static (MiniLM distilled table) or minilm (the full encoder).
    #[arg(long, value_enum, default_value = "static")]
    pub encoder: EncoderKind,
    /// The all-MiniLM-L6-v2 directory (fetch-models.sh minilm).
    #[arg(long, env = switchback_common::env::MINILM_DIR)]
    pub minilm_dir: Option<PathBuf>,
    /// The static table (`distill` writes it); default: static-table.bin in --minilm-dir.
    #[arg(long)]
    pub table: Option<PathBuf>,
}

impl EncoderArgs {
    pub fn encoder(&self) -> Result<Encoder, Error> {
        let dir = || {
            self.minilm_dir.clone().ok_or_else(|| {
                Error::usage(
                    "--minilm-dir (or SWITCHBACK_MINILM_DIR) is needed for MiniLM features",
                )
            })
        };
        Ok(match self.encoder {
            EncoderKind::Lexical => Encoder::Lexical,
            EncoderKind::Static => {
                let dir = dir()?;
                let table = self
                    .table
                    .clone()
                    .unwrap_or_else(|| dir.join("static-table.bin"));
                Encoder::Embedded(Arc::new(artifact::load_table(&table, &dir)?))
            }
            EncoderKind::Minilm => Encoder::Embedded(Arc::new(MiniLm::load(&dir()?)?)),
        })
    }
}

/// A `--tier` argument that is not `TIER=MODEL`.
#[derive(Debug, thiserror::Error)]
#[error("expected TIER=MODEL, got {0:?}")]
pub struct TierModelError(String);

/// `TIER=MODEL`: a tier of the predictor and the model (a key of the labels' `scores`) that
/// stands for it.
pub fn tier_model(arg: &str) -> Result<(String, String), TierModelError> {
    arg.split_once('=')
        .map(|(tier, model)| (tier.to_owned(), model.to_owned()))
        .ok_or_else(|| TierModelError(arg.to_owned()))
}
