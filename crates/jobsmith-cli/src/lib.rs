//! The `jobsmith` command: queue stats, dead-letter review, enqueue by name,
//! periodic schedules, event subscriptions and publishing, and moving jobs
//! between backends.
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
mod subscriptions;
mod table;
mod terminal;
mod when;

pub use args::{
    Cli, Command, DeadCommand, DeadFilter, EnqueueArgs, MigrateArgs, PublishArgs, StatsArgs,
    SubscriptionsCommand,
};
pub use error::{Error, Result};
pub use migrate::{migrate, MigrateOptions, MigrateReport, QueueMoves};
pub use stats::{sample_rates, StatsRow};
pub use when::{parse_age, parse_at};

use jobsmith::App;
use std::io::Write;

/// Runs one parsed command line, writing its output to `out`.
///
/// Progress bars and notes go to stderr; what a script would read (tables,
/// JSON, ids) goes to `out`, with control characters escaped: names and
/// reasons come from whoever can write to the broker.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    let out = &mut terminal::Terminal::new(out);
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
                Command::Subscriptions { command } => {
                    subscriptions::command(&app, command, cli.json, out).await
                }
                Command::Publish(args) => subscriptions::publish(&app, args, cli.json, out).await,
                Command::Migrate(_) => unreachable!("handled above"),
            }
        }
    }
}

/// The queues a command acts on: `asked`, each of which must be among
/// `known` (a typo would otherwise act on nothing and report 0), or all of
/// `known` when none is asked for. `place` names where they were looked for.
pub(crate) fn chosen_queues(
    asked: Vec<String>,
    known: Vec<String>,
    place: &str,
) -> Result<Vec<String>> {
    if asked.is_empty() {
        return Ok(known);
    }
    match asked.iter().find(|q| !known.contains(q)) {
        None => Ok(asked),
        Some(q) => Err(Error::Usage(format!(
            "{place} has no queue `{}`; its queues are: {}",
            q.escape_default(),
            if known.is_empty() {
                "(none)".to_owned()
            } else {
                known.join(", ")
            }
        ))),
    }
}

/// Connects to the backend `url` names, saying which URL failed.
pub async fn connect(url: &str) -> Result<App> {
    jobsmith::connect(url)
        .await
        .map_err(|source| Error::Connect {
            url: jobsmith_core::redact_url(url),
            source,
        })
}
