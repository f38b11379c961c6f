//! Project automation, in Rust: `cargo xtask <command>`.
//!
//! - `services`: start Redis, RabbitMQ and moto (SQS) if they are not running.
//! - `test`: `services`, then the whole test suite (the README's test command).
//! - `ci`: `cargo fmt --check`, clippy with `-D warnings`, then `test`.
//! - `bench --backend memory|redis|amqp|sqs|all [--jobs N] [--json | --markdown]`: the benchmark.
//! - `soak --backend memory|redis|amqp|sqs --jobs N [--workers W] [--kill-every S]
//!   [--restart-broker-every S] [--failure-rate F] [--seed S]`: kill workers
//!   under load, then check job by job that nothing was lost (docs/reliability.md).
#![allow(clippy::print_stdout)]

mod bench;
mod services;
mod soak;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("services") => services::ensure_all(),
        Some("test") => services::ensure_all().and_then(|()| test()),
        Some("ci") => ci(),
        Some("bench") => bench::main(&args[1..]),
        Some("soak") => soak::main(&args[1..]),
        // A soak's worker process, started by `soak`.
        Some("soak-worker") => soak::worker_main(&args[1..]),
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

const USAGE: &str = "usage: cargo xtask <services | test | ci | bench --backend memory|redis|amqp|sqs|all [--jobs N] [--json | --markdown] | soak --backend memory|redis|amqp|sqs --jobs N [--workers W] [--kill-every S] [--restart-broker-every S] [--failure-rate F] [--seed S] [--settings K=V&..]>";

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
    ]))?;
    ci_soaks()
}

/// A short soak per backend, with workers killed as they run (docs/reliability.md):
/// 20,000 jobs each on memory, Redis, RabbitMQ and SQS (moto). Every backend
/// runs even when one fails.
fn ci_soaks() -> Result<(), String> {
    let mut failed = Vec::new();
    for (backend, jobs, kill_every) in [
        ("memory", "20000", "4"),
        ("redis", "20000", "4"),
        ("amqp", "20000", "4"),
        // moto runs the soak at about 65 jobs/s (Redis: over 1,000), so 20,000
        // jobs take about 6 minutes. A kill every 20 s is still one per ~1,300
        // jobs, about 4 times as often per job as Redis and memory get, and
        // about 15 kills a run. A kill every 4 s would kill each worker within
        // ~12 s of its start, less than one 16 s lease: the run halves its
        // rate, and a job whose deliveries all land on workers killed before
        // their ack reaches moto runs out of attempts and is dead-lettered.
        ("sqs", "20000", "20"),
    ] {
        let result = run(cargo()
            .args(["run", "--quiet", "--release", "--package", "xtask", "--"])
            .args([
                "soak",
                "--backend",
                backend,
                "--jobs",
                jobs,
                "--workers",
                "3",
                "--kill-every",
                kill_every,
            ]));
        if let Err(e) = result {
            eprintln!("xtask: soak on {backend} failed: {e}");
            failed.push(backend);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("the soak failed on {}", failed.join(", ")))
    }
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
