//! `import`: a public routing dataset's outcomes as labelled JSONL.

use std::path::PathBuf;

use crate::{
    Error,
    data::{self, split_of},
    datasets::Outcomes,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub dataset: Outcomes,
    /// The datasets' root (the folder with routellm/, llmrouter/, routerarena/).
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<(), Error> {
    let items = a.dataset.read(&a.root)?;
    data::write_jsonl(&a.out, &items)?;
    let mut counts = std::collections::BTreeMap::new();
    for i in &items {
        *counts.entry(split_of(&i.prompt)).or_insert(0usize) += 1;
    }
    eprintln!("{} items to {} ({counts:?})", items.len(), a.out.display());
    Ok(())
}
