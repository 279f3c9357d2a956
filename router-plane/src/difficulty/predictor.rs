//! The difficulty predictor's artifact on disk. Inference (the artifact's format, the
//! heads, the quality knob) is the routing core's
//! ([`switchback_routing::difficulty::predictor`], re-exported here); this module reads
//! the file the router serves with. `switchback-lab train` writes it.

use std::path::Path;

pub use switchback_routing::difficulty::predictor::*;

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        source: PredictorError,
    },
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The feature layout the artifact at `path` needs (to pick the encoder before loading).
pub fn feature_version_of(path: &Path) -> Result<String, LoadError> {
    Predictor::feature_version_of(&read(path)?).map_err(|source| LoadError::Invalid {
        path: path.display().to_string(),
        source,
    })
}

/// Loads the artifact at `path` with `encoder`, which must compute its feature layout.
pub fn load(path: &Path, encoder: Encoder) -> Result<Predictor, LoadError> {
    Predictor::from_json(&read(path)?, encoder).map_err(|source| LoadError::Invalid {
        path: path.display().to_string(),
        source,
    })
}
