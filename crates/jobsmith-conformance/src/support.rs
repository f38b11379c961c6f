//! A job the suite's worker cases run, defined by hand (no `#[job]` here:
//! the macro's crate depends on this one).

use jobsmith_core::lock::LockExt;
use jobsmith_core::JobContext;
use jobsmith_core::Registry;
use jobsmith_core::{Backoff, BoxFuture, Failure, JobDef, JobOptions};
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counts the suite job's runs; give a clone to the worker with `.state(..)`.
#[derive(Clone, Debug, Default)]
pub struct NoopCounter(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    succeeded: AtomicU64,
    /// The `n` of every job that started, whatever became of it.
    started: Mutex<BTreeSet<u64>>,
}

impl NoopCounter {
    /// Successful runs so far.
    pub fn get(&self) -> u64 {
        self.0.succeeded.load(Ordering::SeqCst)
    }

    /// The `n` argument of every job that has started at least once.
    pub fn started(&self) -> BTreeSet<u64> {
        self.0.started.lock_unpoisoned().clone()
    }

    fn record_success(&self) {
        self.0.succeeded.fetch_add(1, Ordering::SeqCst);
    }

    fn record_start(&self, n: u64) {
        self.0.started.lock_unpoisoned().insert(n);
    }
}

/// The suite's job, `conformance_noop`: arguments `{"fail_times": f,
/// "sleep_ms": s, "n": n}` (`sleep_ms` and `n` optional); it records its
/// start, sleeps `s` ms, fails its first `f` attempts, then succeeds and
/// counts. Two retries, 50 ms apart.
pub static NOOP_JOB: JobDef = JobDef {
    name: "conformance_noop",
    location: "jobsmith_conformance::support",
    options: JobOptions {
        retries: 2,
        backoff: Backoff::Fixed(Duration::from_millis(50)),
        ..JobOptions::DEFAULT
    },
    run: run_noop,
    params: &[],
    shapes: Vec::new,
};

fn run_noop(
    args: &RawValue,
    ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Args {
        fail_times: u32,
        #[serde(default)]
        sleep_ms: u64,
        n: Option<u64>,
    }
    let args: Args = serde_json::from_str(args.get())?;
    Ok(Box::pin(async move {
        if let (Some(counter), Some(n)) = (ctx.state::<NoopCounter>(), args.n) {
            counter.record_start(n);
        }
        if args.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.sleep_ms)).await;
        }
        if ctx.attempt() <= args.fail_times {
            return Err(Failure::retryable(format!(
                "planned failure on attempt {}",
                ctx.attempt()
            )));
        }
        if let Some(counter) = ctx.state::<NoopCounter>() {
            counter.record_success();
        }
        Ok(())
    }))
}

/// [`NOOP_JOB`] as a `unique` job: its idempotency key derives from its
/// arguments. The same name, so that the worker cases' registry runs it.
pub static UNIQUE_NOOP_JOB: JobDef = JobDef {
    name: "conformance_noop",
    location: "jobsmith_conformance::support",
    options: JobOptions {
        retries: 2,
        backoff: Backoff::Fixed(Duration::from_millis(50)),
        unique: true,
        ..JobOptions::DEFAULT
    },
    run: run_noop,
    params: &[],
    shapes: Vec::new,
};

/// A registry holding only [`NOOP_JOB`].
pub fn noop_registry() -> Registry {
    Registry::from_defs([&NOOP_JOB]).expect("one job cannot clash")
}
