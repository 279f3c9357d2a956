//! What a `switchback-lab` command fails with: the error of the part that failed, or a
//! usage error that names the flags it cannot work with.

use std::path::{Path, PathBuf};

use crate::{
    artifact::ArtifactError, data::DataError, label::LabelError, minilm::MiniLmError,
    train::TrainError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags or arguments the command cannot work with; the message names them.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    MiniLm(#[from] MiniLmError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Label(#[from] LabelError),
    /// An output file or folder could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The async runtime of a command that talks to a cluster did not start.
    #[error("async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }
}

/// Writes `contents` to `path`, an error naming the file.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` and its parents, an error naming it.
pub fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })
}
