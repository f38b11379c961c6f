//! What `#[job]` generates against: job definitions, their options, and the
//! bound on their result.

use crate::context::JobContext;
use crate::failure::{Failure, IntoFailure};
use crate::shape::Shape;
use serde_json::value::RawValue;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future, as job runners return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decodes a job's arguments and starts it: the runner `#[job]` generates.
///
/// An `Err` means the arguments do not match the job's signature; the worker
/// dead-letters such a job without running it.
pub type RunFn =
    fn(&RawValue, JobContext) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error>;

/// A registered job: only constant data, so that it can be registered at link time.
#[derive(Debug)]
pub struct JobDef {
    /// The job's name, as it travels in envelopes.
    pub name: &'static str,
    /// Where the job is defined (`module::path`, `file:line`), for error messages.
    pub location: &'static str,
    /// The job's options from its attribute.
    pub options: JobOptions,
    /// Decodes the arguments and runs the job.
    pub run: RunFn,
    /// The serialized parameters, in order: what its published
    /// [`JobRecord`](crate::JobRecord) names.
    pub params: &'static [Param],
    /// The JSON [`Shape`] of each serialized parameter, in order, as its
    /// type's `Deserialize` reads it (see [`shape_of`](crate::shape_of)).
    pub shapes: fn() -> Vec<Shape>,
}

/// A serialized parameter of a job, as `#[job]` registers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name: the key of its value in the envelope's `args` object.
    pub name: &'static str,
    /// Its Rust type, as written in the signature (`Vec<String>`).
    pub rust_type: &'static str,
}

/// A job's options, from `#[job(...)]`; per-call overrides go on the [`Enqueue`](crate::Enqueue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobOptions {
    /// The queue the job goes on. Default `"default"`.
    pub queue: &'static str,
    /// Priority: higher runs first. Default 0.
    pub priority: i32,
    /// How many times a failed job is tried again. Default 3.
    pub retries: u32,
    /// The delay between attempts.
    pub backoff: Backoff,
    /// After this long from enqueue, the job is never run. Default none.
    pub ttl: Option<Duration>,
    /// One attempt fails after this long. Default none.
    pub timeout: Option<Duration>,
    /// Whether a job with equal arguments that is queued or completed is not enqueued again.
    pub unique: bool,
    /// A periodic schedule, from `#[job(cron = "...")]`: every worker enqueues
    /// the job once per tick. Default none.
    pub cron: Option<CronOptions>,
}

/// A job's periodic schedule, as `#[job(cron = "...", tz = "...", missed = "...")]` writes it.
///
/// The macro checks the expression and the zone at compile time with the same
/// parser the worker uses, so a registered schedule always parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CronOptions {
    /// The cron expression, with seconds: `"0 */5 * * * *"`.
    pub expr: &'static str,
    /// The IANA zone the expression is read in, such as `"Europe/Paris"`. Default `"UTC"`.
    pub tz: &'static str,
    /// What happens to ticks when no worker was running.
    pub missed: crate::Missed,
}

impl JobOptions {
    /// The defaults: queue `"default"`, priority 0, 3 retries, exponential backoff
    /// from 1 s doubling to at most 1 h with full jitter, no TTL, no timeout, not unique,
    /// no schedule.
    pub const DEFAULT: JobOptions = JobOptions {
        queue: "default",
        priority: 0,
        retries: 3,
        backoff: Backoff::DEFAULT,
        ttl: None,
        timeout: None,
        unique: false,
        cron: None,
    };
}

impl Default for JobOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How to randomise a backoff delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// "Full jitter": a uniformly random delay between zero and the computed delay.
    Full,
    /// Exactly the computed delay.
    None,
}

/// The delay before a failed job is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// `base * 2^(attempt - 1)`, at most `max`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The largest delay.
        max: Duration,
        /// Randomisation.
        jitter: Jitter,
    },
    /// The same delay every time.
    Fixed(Duration),
    /// Retry at once.
    None,
}

impl Backoff {
    /// Exponential from 1 s, doubling, at most 1 h, with full jitter.
    pub const DEFAULT: Backoff = Backoff::Exponential {
        base: Duration::from_secs(1),
        max: Duration::from_secs(3600),
        jitter: Jitter::Full,
    };

    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        match *self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, max, jitter } => {
                let shift = attempt.saturating_sub(1).min(62);
                let factor = 1u64 << shift;
                let ms = u64::try_from(base.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(factor);
                let capped = ms.min(u64::try_from(max.as_millis()).unwrap_or(u64::MAX));
                match jitter {
                    Jitter::None => Duration::from_millis(capped),
                    Jitter::Full => Duration::from_millis(fastrand::u64(0..=capped)),
                }
            }
        }
    }
}

/// What a job function may return: `()`, or a `Result` whose error is `Display`.
#[diagnostic::on_unimplemented(
    message = "a job must return `()` or `Result<T, E>` where `E: Display`",
    label = "this return type cannot report a job's outcome"
)]
pub trait IntoJobResult {
    /// The outcome of the attempt.
    fn into_job_result(self) -> Result<(), Failure>;
}

impl IntoJobResult for () {
    fn into_job_result(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl<T, E: IntoFailure> IntoJobResult for Result<T, E> {
    fn into_job_result(self) -> Result<(), Failure> {
        self.map(|_| ()).map_err(IntoFailure::into_failure)
    }
}

/// A serialized job argument: owned, serializable and sendable.
///
/// `#[job]` checks every argument that is not injected against this trait, at
/// the argument's own type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a job argument",
    label = "not `Serialize + DeserializeOwned + Send + 'static`",
    note = "job arguments are serialized to JSON: derive both traits on your type with `#[derive(serde::Serialize, serde::Deserialize)]` (and make it `Send` and owned), use an owned type (`String` for `&str`, `Vec<T>` for `&[T]`), or pass it as `State<T>` if the worker should provide it"
)]
pub trait JobArg: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

// `do_not_recommend`: a type that misses several of the bounds gets one
// error, this trait's, rather than one per missing bound.
#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> JobArg for T {}

/// A `#[job]` function: the type that `#[job]` generates implements this.
pub trait Job: Send + Sync + 'static {
    /// The job's registered definition.
    const DEF: &'static JobDef;
}
