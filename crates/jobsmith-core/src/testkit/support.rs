//! A job the suite's worker cases run, defined by hand (no `#[job]` here:
//! the macro's crate depends on this one).

use crate::context::JobContext;
use crate::job::{Backoff, BoxFuture, Failure, JobDef, JobOptions};
use crate::registry::Registry;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts the suite job's successful runs; give a clone to the worker with `.state(..)`.
#[derive(Clone, Debug, Default)]
pub struct NoopCounter(Arc<AtomicU64>);

impl NoopCounter {
    /// Successful runs so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The suite's job, `conformance_noop`: arguments `{"fail_times": n, ...}`;
/// it fails its first `n` attempts, then succeeds and counts. Two retries,
/// 50 ms apart.
pub static NOOP_JOB: JobDef = JobDef {
    name: "conformance_noop",
    location: "jobsmith_core::testkit::support",
    options: JobOptions {
        retries: 2,
        backoff: Backoff::Fixed(Duration::from_millis(50)),
        ..JobOptions::DEFAULT
    },
    run: run_noop,
};

fn run_noop(
    args: &RawValue,
    ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Args {
        fail_times: u32,
    }
    let args: Args = serde_json::from_str(args.get())?;
    Ok(Box::pin(async move {
        if ctx.attempt() <= args.fail_times {
            return Err(Failure::retryable(format!(
                "planned failure on attempt {}",
                ctx.attempt()
            )));
        }
        if let Some(counter) = ctx.state::<NoopCounter>() {
            counter.0 .0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }))
}

/// A registry holding only [`NOOP_JOB`].
pub fn noop_registry() -> Registry {
    Registry::from_defs([&NOOP_JOB]).expect("one job cannot clash")
}
