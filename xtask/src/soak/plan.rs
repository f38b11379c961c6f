//! What each soak job does, chosen from the run's seed and the job's number,
//! so that the workers and the checker agree without talking to each other.

use super::ledger::{Ledger, Outcome};
use jobsmith::prelude::*;
use std::time::Duration;

/// The queue the soak's jobs and injected payloads go on.
pub(crate) const QUEUE: &str = "soak";

/// Attempts a soak job gets in all (`retries = 5` below, plus one).
pub(crate) const MAX_ATTEMPTS: u32 = 6;

/// A `Timeout` job's first attempt sleeps this long, well past the job's `timeout`.
const OVERSLEEP: Duration = Duration::from_secs(4);

/// An `Expire` job is due this long after its enqueue...
pub(crate) const EXPIRE_DELAY: Duration = Duration::from_secs(3);
/// ...and its TTL runs out before that.
pub(crate) const EXPIRE_TTL: Duration = Duration::from_secs(1);

/// The behaviour of one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Succeeds at once.
    Ok,
    /// Fails (retryably) on its first `n` attempts, then succeeds.
    Flaky(u32),
    /// Fails permanently: must end in the dead-letter queue, after one attempt.
    Permanent,
    /// Panics on its first attempt, then succeeds.
    Panic,
    /// Outlives its timeout on its first attempt, then succeeds.
    Timeout,
    /// Enqueued with a delay beyond its TTL: must never run.
    Expire,
}

impl Kind {
    /// Whether the job must end with a success.
    pub(crate) fn succeeds(self) -> bool {
        !matches!(self, Kind::Permanent | Kind::Expire)
    }

    /// The fewest attempts a success can come at.
    pub(crate) fn first_success(self) -> u32 {
        match self {
            Kind::Ok => 1,
            Kind::Flaky(n) => n + 1,
            Kind::Panic | Kind::Timeout => 2,
            Kind::Permanent | Kind::Expire => u32::MAX,
        }
    }
}

/// One job's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    /// Its effect is recorded once per job, however often it is delivered.
    pub(crate) idempotent: bool,
}

/// The plan of job `n` in a run with `seed`; `failure_rate` is the share of
/// jobs that do anything but succeed at once.
pub(crate) fn plan(seed: u64, failure_rate: f64, n: u64) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let kind = if rng.f64() >= failure_rate {
        Kind::Ok
    } else {
        match rng.u32(0..20) {
            0..=6 => Kind::Flaky(rng.u32(1..=2)),
            7..=9 => Kind::Permanent,
            10..=12 => Kind::Panic,
            13..=15 => Kind::Timeout,
            _ => Kind::Expire,
        }
    };
    let idempotent = kind.succeeds() && rng.f64() < 0.3;
    Plan { kind, idempotent }
}

/// What a soak worker's jobs share: the run's parameters and its ledger.
#[derive(Debug)]
pub(crate) struct SoakState {
    pub(crate) seed: u64,
    pub(crate) failure_rate: f64,
    pub(crate) ledger: Ledger,
}

/// The soak's one job: records every attempt in the ledger, then behaves as its plan says.
#[job(
    queue = "soak",
    retries = 5,
    backoff = "exponential(100ms, max = 2s)",
    timeout = "1s"
)]
pub(crate) async fn soak_job(
    n: u64,
    ctx: JobContext,
    soak: State<SoakState>,
) -> Result<(), Failure> {
    let plan = plan(soak.seed, soak.failure_rate, n);
    let attempt = ctx.attempt();
    let outcome = match plan.kind {
        Kind::Ok => Outcome::Ok,
        Kind::Flaky(k) if attempt <= k => Outcome::Fail,
        Kind::Flaky(_) => Outcome::Ok,
        Kind::Permanent => Outcome::Permanent,
        Kind::Panic if attempt == 1 => Outcome::Panic,
        Kind::Timeout if attempt == 1 => Outcome::Sleep,
        Kind::Panic | Kind::Timeout => Outcome::Ok,
        Kind::Expire => Outcome::RanExpired,
    };
    // The ledger has the row before the attempt's outcome takes effect.
    soak.ledger
        .record(n, attempt, outcome, plan.idempotent)
        .await
        .map_err(Failure::retryable)?;
    match outcome {
        Outcome::Ok | Outcome::RanExpired => Ok(()),
        Outcome::Fail => Err(Failure::retryable("soak: planned failure")),
        Outcome::Permanent => Err(Failure::permanent("soak: planned permanent failure")),
        Outcome::Panic => panic!("soak: planned panic"),
        Outcome::Sleep => {
            tokio::time::sleep(OVERSLEEP).await;
            Err(Failure::retryable(
                "soak: overslept its timeout but was not stopped",
            ))
        }
    }
}
