//! `switchback-router keygen --id NAME`: a new API key. The offline tools of difficulty
//! routing (import, label, train, eval, ...) are `switchback-lab`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make an API key: prints a fresh random token (give it to the client) on stdout and
    /// the keys-file entry with its SHA-256 (add it under `keys:`) on stderr.
    Keygen {
        /// The key's id: the name logs and metrics show for it.
        #[arg(long)]
        id: String,
    },
}

pub fn run(command: Command) -> Result<(), crate::auth::keys::KeysError> {
    match command {
        Command::Keygen { id } => {
            let (token, entry) = crate::auth::keys::generate(&id)?;
            println!("{token}");
            eprintln!(
                "# The token above is shown once; the router keeps only its hash. Add under `keys:`:\n{entry}"
            );
        }
    }
    Ok(())
}
