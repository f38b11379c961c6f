//! Typed background jobs for Rust.
//!
//! An async function marked [`#[job]`](macro@job) becomes a job type that is
//! registered at link time. Application code enqueues it with typed
//! `.delay(..)` and `.schedule(..)` calls, and one call starts a worker that
//! runs every registered job with retries, exponential backoff,
//! dead-lettering, expiry, timeouts and idempotency. The backend is chosen by
//! URL: `memory://` is built in; Redis, RabbitMQ and SQS come with cargo
//! features.
//!
//! ```no_run
//! use jobsmith::prelude::*;
//!
//! #[job(queue = "email", retries = 5, timeout = "30s")]
//! async fn send_welcome(user_id: u64, template: String) -> Result<(), String> {
//!     println!("welcome {user_id} with {template}");
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> jobsmith::Result<()> {
//!     let app = App::connect("memory://").await?;
//!     send_welcome.delay(123, "welcome".into()).on(&app).await?;
//!     app.worker().concurrency(8).run().await?;
//!     Ok(())
//! }
//! ```
//!
//! Feature `prometheus` adds `Worker::prometheus`, a `/metrics` endpoint;
//! feature `opentelemetry` makes each job's span a child of the span that
//! enqueued it. `docs/operations.md` lists the series, alert rules and traces.
//!
//! [`#[job]`](macro@job) lists every attribute, its default and exact
//! meaning, the worker and testing; the rest of the guide is in `docs/`.

#![doc(test(attr(deny(warnings))))]

mod connect;

pub use connect::{connect, Connect};

/// `tracing` filter directives that keep dependencies' credential-bearing
/// trace output off; add them to every filter you install, after your own:
/// `EnvFilter::new(format!("{},{}", std::env::var("RUST_LOG")?, jobsmith::LOG_DIRECTIVES))`.
///
/// - `lapin=debug`: lapin's trace level prints every AMQP frame it writes,
///   and `connection.start-ok` holds the SASL response, the password.
/// - `aws_sigv4=debug`, `aws_smithy_runtime=debug`,
///   `aws_smithy_runtime_api=debug`: the AWS SDK's trace level prints the
///   requests it signs, with the `x-amz-security-token` header of temporary
///   credentials.
///
/// jobsmith's own log lines never hold a credential: URLs go through
/// [`jobsmith_core::redact_url`].
pub const LOG_DIRECTIVES: &str =
    "lapin=debug,aws_sigv4=debug,aws_smithy_runtime=debug,aws_smithy_runtime_api=debug";
#[cfg(feature = "amqp")]
pub use jobsmith_amqp as amqp;
#[cfg(feature = "prometheus")]
pub use jobsmith_core::prometheus;
pub use jobsmith_core::{
    in_hours, in_minutes, in_seconds, published_job, published_jobs, redact_url, schedules,
    shape_of, testing, trace, AnyEvent, App, ArgsMisfit, Backend, Backoff, Cron, CronOptions,
    DeadJob, DeadLetters, Enqueue, Envelope, Error, Event, EventId, EventRef, Events, Failure,
    Inspect, Jitter, Job, JobArg, JobContext, JobDef, JobId, JobOptions, JobRecord, MemoryBackend,
    MetaStore, Migrate, Missed, Outcome, Param, ParamRecord, Publish, Published, Publisher,
    QueueStats, Registry, Result, ResultExt, ScheduleInfo, Settings, SettleExt, Shape, State,
    StateMap, Subscribe, Subscription, Timestamp, When, Worker, WorkerReport, REFRESH_EVERY,
};
#[doc = include_str!("../docs/jobs.md")]
pub use jobsmith_macros::job;
/// Derives [`Event`](trait@Event) for a type, with the name given by
/// `#[event(name = "...")]`, and registers the type at link time.
///
/// ```
/// use jobsmith::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Event)]
/// #[event(name = "user.signed_up")]
/// struct UserSignedUp {
///     user_id: u64,
/// }
///
/// // Runs once for every `UserSignedUp` published.
/// #[job(on = UserSignedUp, queue = "email")]
/// async fn send_welcome(event: UserSignedUp, ctx: JobContext) {
///     println!("welcome {} (job {})", event.user_id, ctx.id());
/// }
///
/// assert_eq!(UserSignedUp::NAME, "user.signed_up");
/// ```
///
/// The type also needs `serde::Serialize` and `serde::Deserialize`, and
/// cannot be generic: one name stands for one type.
///
/// | option | meaning |
/// |---|---|
/// | `name = "..."` | Required. Words of ASCII letters, digits, `_` and `-`, separated by dots (`user.signed_up`), at most 255 bytes; checked when your crate compiles. The name travels with every job the event creates and is what topic patterns match, so renaming the Rust type changes nothing; changing the name starts a new event. |
/// | `crate = path` | Where the generated code finds jobsmith (default `::jobsmith`), for crates that re-export it. |
///
/// Two event types with one name are an error when the worker starts,
/// naming both. A job subscribes to an event with `#[job(on = ..)]`; see
/// [`#[job]`](macro@job), *Events*.
pub use jobsmith_macros::Event;
#[cfg(feature = "redis")]
pub use jobsmith_redis as redis;
#[cfg(feature = "sqs")]
pub use jobsmith_sqs as sqs;

/// Everything a job module and a `main` need: `use jobsmith::prelude::*;`.
pub mod prelude {
    pub use crate::connect::Connect as _;
    pub use crate::{
        in_hours, in_minutes, in_seconds, job, AnyEvent, App, Cron, Event, Failure, JobContext,
        Missed, ResultExt as _, State,
    };
}

/// What code generated by `#[job]` names; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use jobsmith_core::__private::*;
}
