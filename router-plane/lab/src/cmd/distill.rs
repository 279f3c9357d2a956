//! `distill`: MiniLM into the static token table the router looks up per request.

use std::path::PathBuf;

use crate::{Error, artifact, minilm::MiniLm};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The all-MiniLM-L6-v2 directory.
    #[arg(long, env = switchback_common::env::MINILM_DIR)]
    pub minilm_dir: PathBuf,
    /// Default: static-table.bin in --minilm-dir.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let table = MiniLm::load(&a.minilm_dir)?.distill(256)?;
    let out = a
        .out
        .unwrap_or_else(|| a.minilm_dir.join("static-table.bin"));
    artifact::save_table(&table, &out)?;
    eprintln!(
        "wrote {} ({table:?}) in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
