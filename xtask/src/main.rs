//! Project automation, in Rust: `cargo xtask <command>`.
//!
//! - `services`: start Redis, RabbitMQ and moto (SQS) if they are not running.
//! - `test`: install what is missing (Debian packages, moto, cargo-nextest),
//!   `services`, then the whole test suite (the README's test command).
//! - `examples`: `services`, then `examples/events.rs` on every backend
//!   (`test` runs it too).
//! - `package`: a verified `cargo package` of every publishable crate.
//! - `ci`: `cargo fmt --check`, clippy with `-D warnings`, the docs with
//!   `-D warnings`, a verified `cargo package`, then `test` (what `.ci/run` runs).
//! - `bench --backend memory|redis|amqp|sqs|all [--jobs N] [--json | --markdown]`: the benchmark;
//!   with `--events`, the events bench instead (`bench/events.rs`).
//! - `soak --backend memory|redis|amqp|sqs --jobs N [--workers W] [--kill-every S]
//!   [--restart-every S] [--restart-broker-every S] [--failure-rate F] [--seed S] [--events]`:
//!   kill and restart workers under load, then check job by job that nothing
//!   was lost, charged unrun or started late (docs/reliability.md); with
//!   `--events`, N events to three handlers instead of N jobs.
#![allow(clippy::print_stdout)]

mod bench;
mod examples;
mod services;
mod setup;
mod soak;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("services") => services::ensure_all(),
        Some("test") => setup::ensure_tools()
            .and_then(|()| services::ensure_all())
            .and_then(|()| test()),
        Some("ci") => ci(),
        Some("package") => package(),
        Some("examples") => services::ensure_all().and_then(|()| examples::events()),
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

const USAGE: &str = "usage: cargo xtask <services | test | examples | package | ci | bench --backend memory|redis|amqp|sqs|all [--jobs N] [--json | --markdown | --events] | soak --backend memory|redis|amqp|sqs --jobs N [--workers W] [--kill-every S] [--restart-every S] [--restart-broker-every S] [--failure-rate F] [--seed S] [--settings K=V&..] [--events]>";

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

/// Every crate meant for crates.io packaged, and built from its package
/// alone: a library that reads a file outside its package (`#[path]`,
/// `include_str!`) fails here.
fn package() -> Result<(), String> {
    forget_unpacked_packages()?;
    run(cargo().args([
        "package",
        "--workspace",
        "--allow-dirty",
        "--exclude",
        "jobsmith-examples",
        "--exclude",
        "jobsmith-tests",
        "--exclude",
        "xtask",
    ]))
}

/// What `cargo package` built from our crates' packages before, removed.
///
/// `cargo package --workspace` verifies each package against the packages of
/// the crates it depends on, through a registry of its own in the target
/// dir. Cargo treats registry packages as immutable: it unpacks them once
/// into `$CARGO_HOME/registry/src/<registry>/<name>-<version>`, and reuses
/// what it compiled from them in the target dir without looking at the
/// sources again. As our version stays 0.1.0 between commits, a second run
/// on the same machine verified against the first run's jobsmith-core (CI
/// failed so, on a signature that had changed since). So both the unpacked
/// sources and every artifact of our crates in the target dir go; a clean
/// clone rebuilds our crates anyway, so this costs CI nothing.
fn forget_unpacked_packages() -> Result<(), String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let mut dirs = Vec::new();
    for kind in ["src", "cache"] {
        if let Ok(registries) = std::fs::read_dir(home.join("registry").join(kind)) {
            dirs.extend(registries.flatten().map(|r| r.path()));
        }
    }
    for kind in [".fingerprint", "deps", "build"] {
        dirs.push(target.join("debug").join(kind));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("jobsmith") || name.starts_with("libjobsmith")) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| format!("could not remove {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// The whole suite: doctests, then every other test with nextest, all features on.
fn test() -> Result<(), String> {
    run(cargo().args(["test", "--doc", "--workspace", "--all-features"]))?;
    // The facade without backend features: the errors that name a missing
    // feature, and the macro's UI snapshots (trybuild rebuilds what it links).
    run(cargo().args(["nextest", "run", "--package", "jobsmith"]))?;
    // Redis TLS without `tls-insecure`: a `#insecure` URL is refused, naming it.
    run(cargo().args([
        "nextest",
        "run",
        "--package",
        "jobsmith-redis",
        "--features",
        "tls",
        "insecure",
    ]))?;
    run(cargo().args([
        "nextest",
        "run",
        "--workspace",
        "--all-features",
        "--no-fail-fast",
    ]))?;
    examples::events()?;
    ci_soaks()
}

/// A short soak per backend, with workers killed as they run and restarted
/// gracefully, one at a time, as a rolling deploy does (docs/reliability.md):
/// 20,000 jobs each on memory, Redis and RabbitMQ, 10,000 on SQS (moto).
/// Then a shorter one with graceful restarts only on memory, Redis and
/// RabbitMQ, where a kill cannot hide what a graceful stop charged: it must
/// charge no attempt to a job that did not start. Then an events soak per
/// backend (`--events`), with kills and graceful restarts. Every run goes
/// ahead even when one fails.
fn ci_soaks() -> Result<(), String> {
    let mut failed = Vec::new();
    for (backend, jobs, kill_every, restart_every, events) in [
        ("memory", "20000", Some("4"), "5", false),
        ("redis", "20000", Some("4"), "5", false),
        ("amqp", "20000", Some("4"), "5", false),
        // moto runs the soak at about 35 jobs/s on a loaded machine (Redis:
        // over 500), so 10,000 jobs take about 5 minutes (20,000 took 10).
        // A kill every 20 s is still one per ~700 jobs, several times as
        // often per job as Redis and memory get, and about 15 kills a run.
        // A kill every 4 s would kill each worker within
        // ~12 s of its start, less than one 16 s lease: the run halves its
        // rate, and a job whose deliveries all land on workers killed before
        // their ack reaches moto runs out of attempts and is dead-lettered.
        // A graceful restart every 15 s costs no lease, and gives each
        // worker about 45 s between restarts.
        ("sqs", "10000", Some("20"), "15", false),
        // Graceful restarts only, about six in 20 s. Not on SQS: moto at
        // times hands one message to two receivers, which charges an
        // attempt that no stop caused.
        ("memory", "5000", None, "3", false),
        ("redis", "5000", None, "3", false),
        ("amqp", "5000", None, "3", false),
        // Events, each reaching three handlers: every handler ran every
        // event, idempotent ones once, and no event made a second job for a
        // subscription (on RabbitMQ, whose event jobs carry no key: at most
        // one more for a republished event), with a tenth of them published
        // twice under their id. About 10 s on memory and Redis, 20 s on
        // RabbitMQ and 30 s on moto; SQS with kills every 6 s so that a run
        // of 300 events sees some.
        ("memory", "60000", Some("4"), "5", true),
        ("redis", "40000", Some("4"), "5", true),
        ("amqp", "20000", Some("4"), "5", true),
        ("sqs", "300", Some("6"), "8", true),
    ] {
        let mut soak = cargo();
        soak.args(["run", "--quiet", "--release", "--package", "xtask", "--"])
            .args([
                "soak",
                "--backend",
                backend,
                "--jobs",
                jobs,
                "--workers",
                "3",
            ])
            .args(["--restart-every", restart_every]);
        if let Some(every) = kill_every {
            soak.args(["--kill-every", every]);
        }
        if events {
            soak.arg("--events");
        }
        if let Err(e) = run(&mut soak) {
            let what = match (events, kill_every) {
                (true, _) => format!("{backend} (events)"),
                (false, Some(_)) => backend.to_owned(),
                (false, None) => format!("{backend} (graceful restarts only)"),
            };
            eprintln!("xtask: soak on {what} failed: {e}");
            failed.push(what);
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
    run(cargo().env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "--no-deps",
        "--all-features",
        "--workspace",
    ]))?;
    package()?;
    setup::ensure_tools()?;
    services::ensure_all()?;
    test()
}

/// The crates whose presence in the quickstart's build means a broker
/// client came in: the quickstart runs on the memory backend, and builds
/// cold in about 35 s on a 2-core machine (107 crates) because none of
/// these do; the backends are one `--features` flag away. Checked by the
/// test `the_quickstart_builds_no_broker_client`, which `cargo xtask test`
/// (and so CI) runs.
#[cfg(test)]
const NOT_IN_THE_QUICKSTART: [&str; 4] = ["aws-sdk-sqs", "lapin", "redis", "tokio-postgres"];

/// Fails when the quickstart (`cargo run --example quickstart`, the
/// README's first command) would build a broker client: features unified
/// across the workspace's default members once pulled in 244 crates.
#[cfg(test)]
fn quickstart_stays_small() -> Result<(), String> {
    let out = cargo()
        .args([
            "tree",
            "--package",
            "jobsmith-examples",
            "--edges",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let found: Vec<&str> = NOT_IN_THE_QUICKSTART
        .into_iter()
        .filter(|name| {
            tree.lines()
                .any(|l| l.split_whitespace().next() == Some(*name))
        })
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the quickstart now builds {}: keep broker clients behind the examples' features (examples/Cargo.toml) and out of the default members' dependencies",
            found.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_quickstart_builds_no_broker_client() {
        super::quickstart_stays_small().unwrap();
    }
}
