//! The `jobsmith` command: queue stats, dead-letter review, enqueue by name,
//! periodic schedules, and moving jobs between backends.
//!
//! The binary is a thin `main` over [`run`]; every command is also callable
//! in-process, so tests (and programs that embed the memory backend) can use
//! them directly. [`migrate()`] is the one most worth calling that way:
//!
//! ```
//! use jobsmith::{App, Backend, Envelope};
//! use jobsmith_cli::{migrate, MigrateOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> jobsmith_cli::Result<()> {
//! let (from, to) = (App::memory(), App::memory());
//! let env = Envelope::with_args("resize", "images", &serde_json::json!({"id": 7}))?;
//! from.backend().enqueue(vec![env]).await?;
//! let report = migrate(&**from.backend(), &**to.backend(), &MigrateOptions::default(), |_| {}).await?;
//! assert_eq!(report.total().moved(), 1);
//! assert_eq!(to.stats().await?[0].ready, 1);
//! # Ok(()) }
//! ```
//!
//! `docs/cli.md` describes every command with real output.

mod args;
mod dead;
mod enqueue;
mod error;
mod migrate;
mod schedules;
mod stats;
mod table;
mod when;

pub use args::{Cli, Command, DeadCommand, DeadFilter, EnqueueArgs, MigrateArgs, StatsArgs};
pub use error::{Error, Result};
pub use migrate::{migrate, MigrateOptions, MigrateReport, QueueMoves};
pub use stats::{sample_rates, StatsRow};
pub use when::{parse_age, parse_at};

use jobsmith::App;
use std::io::Write;

/// Runs one parsed command line, writing its output to `out`.
///
/// Progress bars and notes go to stderr; what a script would read (tables,
/// JSON, ids) goes to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    match cli.command {
        Command::Migrate(args) => migrate::command(args, cli.json, out).await,
        command => {
            let url = cli.url.ok_or(Error::NoUrl)?;
            let app = connect(&url).await?;
            match command {
                Command::Stats(args) => stats::command(&app, args, cli.json, out).await,
                Command::Dead(cmd) => dead::command(&app, cmd, cli.json, out).await,
                Command::Enqueue(args) => enqueue::command(&app, args, cli.json, out).await,
                Command::Schedules => schedules::command(&app, cli.json, out).await,
                Command::Migrate(_) => unreachable!("handled above"),
            }
        }
    }
}

/// Connects to the backend `url` names, saying which URL failed.
pub async fn connect(url: &str) -> Result<App> {
    jobsmith::connect(url)
        .await
        .map_err(|source| Error::Connect {
            url: redact(url),
            source,
        })
}

/// `url` with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, tail) = match rest.find('@') {
        Some(at) if !rest[..at].contains('/') => (&rest[..at], &rest[at..]),
        _ => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{tail}"),
        None => url.to_owned(),
    }
}
