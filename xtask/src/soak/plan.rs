//! What each soak job does, chosen from the run's seed and the job's number,
//! so that the workers and the checker agree without talking to each other.

use super::ledger::{Ledger, Outcome, Row};
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

/// The queue of the lateness probes ([`Kind::Delayed`] and [`Kind::Retried`]),
/// run by a worker of their own in each worker process. On the main queue a
/// probe that comes due waits behind the backlog (first-in, first-out) and
/// for a free slot among workers that the backlog keeps busy: that would
/// measure the backlog. On a queue of their own, beside the main queue's
/// load on the same broker and in the same processes, they measure how soon
/// a job that comes due is started.
pub(crate) const PROBE_QUEUE: &str = "probes";

/// The shortest and longest delay of a [`Kind::Delayed`] job, in milliseconds.
pub(crate) const PROBE_DELAY_MS: std::ops::RangeInclusive<u32> = 200..=2_000;

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
    /// A job with `retries = 0` ([`soak_once`]) that succeeds: it has one
    /// attempt, so a delivery charged without a run dead-letters it unrun.
    Once,
    /// Enqueued on [`PROBE_QUEUE`] this many milliseconds in the future,
    /// then succeeds: its first start measures how late a delay starts.
    Delayed(u32),
    /// On [`PROBE_QUEUE`], fails its first attempt and succeeds on the
    /// next: the retry's start measures how late a backoff starts.
    Retried,
}

impl Kind {
    /// Whether the job must end with a success.
    pub(crate) fn succeeds(self) -> bool {
        !matches!(self, Kind::Permanent | Kind::Expire)
    }

    /// The fewest attempts a success can come at.
    pub(crate) fn first_success(self) -> u32 {
        match self {
            Kind::Ok | Kind::Once | Kind::Delayed(_) => 1,
            Kind::Flaky(n) => n + 1,
            Kind::Panic | Kind::Timeout | Kind::Retried => 2,
            Kind::Permanent | Kind::Expire => u32::MAX,
        }
    }

    /// The attempts its job's retry policy allows in all.
    pub(crate) fn max_attempts(self) -> u32 {
        match self {
            Kind::Once => 1,
            _ => MAX_ATTEMPTS,
        }
    }

    /// The attempt whose start is compared with its due time, for the probes.
    pub(crate) fn measured_attempt(self) -> Option<u32> {
        match self {
            Kind::Delayed(_) => Some(1),
            Kind::Retried => Some(2),
            _ => None,
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

/// The plan of job `n` in a run with `seed`. A fixed share of every run
/// (20%) are the jobs that measure delivery: [`Kind::Once`] (10%),
/// [`Kind::Delayed`] (5%) and [`Kind::Retried`] (5%). Of the rest,
/// `failure_rate` is the share that does anything but succeed at once.
pub(crate) fn plan(seed: u64, failure_rate: f64, n: u64) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let kind = match rng.u32(0..20) {
        0 | 1 => Kind::Once,
        2 => Kind::Delayed(rng.u32(PROBE_DELAY_MS)),
        3 => Kind::Retried,
        _ if rng.f64() >= failure_rate => Kind::Ok,
        _ => match rng.u32(0..20) {
            0..=6 => Kind::Flaky(rng.u32(1..=2)),
            7..=9 => Kind::Permanent,
            10..=12 => Kind::Panic,
            13..=15 => Kind::Timeout,
            _ => Kind::Expire,
        },
    };
    let idempotent = kind.succeeds() && rng.f64() < 0.3;
    Plan { kind, idempotent }
}

/// The most lateness probes held back for the idle phase (see [`idle_probes`]).
pub(crate) const IDLE_PROBES: usize = 60;

/// The probes ([`Kind::Delayed`], [`Kind::Retried`]) that the enqueuer holds
/// back from its waves and sends one at a time once the queue has drained,
/// while the workers wait with nothing to do: every tenth job number's, up to
/// [`IDLE_PROBES`]. A delay or retry stored while a reserve waits takes a
/// path that a busy worker never does.
pub(crate) fn idle_probes(seed: u64, failure_rate: f64, jobs: u64) -> Vec<u64> {
    (0..jobs)
        .step_by(10)
        .filter(|&n| {
            plan(seed, failure_rate, n)
                .kind
                .measured_attempt()
                .is_some()
        })
        .take(IDLE_PROBES)
        .collect()
}

/// The enqueue of job `n` with plan `p`: which job, when, on which queue.
pub(crate) fn enqueue(n: u64, p: Plan) -> jobsmith::Enqueue {
    match p.kind {
        Kind::Expire => soak_job.delay(n).after(EXPIRE_DELAY).ttl(EXPIRE_TTL),
        Kind::Once => soak_once.delay(n),
        Kind::Delayed(ms) => soak_job
            .delay(n)
            .after(Duration::from_millis(ms.into()))
            .queue(PROBE_QUEUE),
        Kind::Retried => soak_job.delay(n).queue(PROBE_QUEUE),
        Kind::Ok | Kind::Flaky(_) | Kind::Permanent | Kind::Panic | Kind::Timeout => {
            soak_job.delay(n)
        }
    }
}

/// What a soak worker's jobs share: the run's parameters and its ledger.
#[derive(Debug)]
pub(crate) struct SoakState {
    pub(crate) seed: u64,
    pub(crate) failure_rate: f64,
    pub(crate) ledger: Ledger,
    /// The event handlers' ledger, in an events soak (`events.rs`).
    pub(crate) events: Option<super::events::EventLedger>,
}

/// The soak's job with retries: records every attempt in the ledger, then
/// behaves as its plan says.
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
    run_planned(n, &ctx, &soak).await
}

/// The soak's job without retries ([`Kind::Once`]): one attempt, like a
/// job that must not run twice on its own.
#[job(queue = "soak", retries = 0, timeout = "1s")]
pub(crate) async fn soak_once(
    n: u64,
    ctx: JobContext,
    soak: State<SoakState>,
) -> Result<(), Failure> {
    run_planned(n, &ctx, &soak).await
}

/// One attempt of job `n`: its row in the ledger, then its planned outcome.
async fn run_planned(n: u64, ctx: &JobContext, soak: &SoakState) -> Result<(), Failure> {
    // Taken first: the ledger's write is not part of the start's lateness.
    let started_ms = super::now_ms();
    let plan = plan(soak.seed, soak.failure_rate, n);
    let attempt = ctx.attempt();
    let outcome = match plan.kind {
        Kind::Ok | Kind::Once | Kind::Delayed(_) => Outcome::Ok,
        Kind::Flaky(k) if attempt <= k => Outcome::Fail,
        Kind::Retried if attempt == 1 => Outcome::Fail,
        Kind::Flaky(_) | Kind::Retried => Outcome::Ok,
        Kind::Permanent => Outcome::Permanent,
        Kind::Panic if attempt == 1 => Outcome::Panic,
        Kind::Timeout if attempt == 1 => Outcome::Sleep,
        Kind::Panic | Kind::Timeout => Outcome::Ok,
        Kind::Expire => Outcome::RanExpired,
    };
    let row = Row {
        n,
        attempt,
        outcome,
        idempotent: plan.idempotent,
        due_ms: ctx.scheduled_for().as_millis(),
        started_ms,
    };
    // The ledger has the row before the attempt's outcome takes effect.
    soak.ledger.record(row).await.map_err(Failure::retryable)?;
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
