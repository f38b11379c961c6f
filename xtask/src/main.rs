//! Project automation, in Rust: `cargo xtask <command>`.
//!
//! - `services`: start Redis, RabbitMQ and moto (SQS) if they are not running.
//! - `test`: `services`, then the whole test suite (the README's test command).
//! - `ci`: `cargo fmt --check`, clippy with `-D warnings`, then `test`.
//! - `bench --backend memory|redis|amqp|sqs|all [--jobs N] [--json]`: the benchmark.
#![allow(clippy::print_stdout)]

mod bench;
mod services;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("services") => services::ensure_all(),
        Some("test") => services::ensure_all().and_then(|()| test()),
        Some("ci") => ci(),
        Some("bench") => bench::main(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <services | test | ci | bench --backend memory|redis|amqp|sqs|all [--jobs N] [--json]>";

/// Runs a command, failing with its name when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The whole suite: doctests, then every other test with nextest, all features on.
fn test() -> Result<(), String> {
    run(cargo().args(["test", "--doc", "--workspace", "--all-features"]))?;
    // The facade without backend features: the errors that name a missing
    // feature, and the macro's UI snapshots (trybuild rebuilds what it links).
    run(cargo().args(["nextest", "run", "--package", "jobsmith"]))?;
    run(cargo().args([
        "nextest",
        "run",
        "--workspace",
        "--all-features",
        "--no-fail-fast",
    ]))
}

fn ci() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    services::ensure_all()?;
    test()
}
