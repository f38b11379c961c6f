//! Typed enqueue calls: what `job.delay(..)` and `job.schedule(..)` return.

use crate::app::App;
use crate::envelope::{Envelope, JobId};
use crate::error::{Error, Result};
use crate::job::{BoxFuture, JobDef};
use crate::time::Timestamp;
use serde_json::value::RawValue;
use std::future::IntoFuture;
use std::time::{Duration, SystemTime};

/// When a scheduled job runs: an instant, or a delay from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// At this instant.
    At(Timestamp),
    /// This long from the enqueue.
    In(Duration),
}

impl When {
    fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            When::At(t) => t,
            When::In(d) => now.plus(d),
        }
    }
}

impl From<Duration> for When {
    fn from(d: Duration) -> Self {
        When::In(d)
    }
}

impl From<SystemTime> for When {
    fn from(t: SystemTime) -> Self {
        When::At(t.into())
    }
}

impl From<Timestamp> for When {
    fn from(t: Timestamp) -> Self {
        When::At(t)
    }
}

/// `n` seconds from now, for `.schedule(in_seconds(30), ..)`.
pub fn in_seconds(n: u64) -> When {
    When::In(Duration::from_secs(n))
}

/// `n` minutes from now, for `.schedule(in_minutes(10), ..)`.
pub fn in_minutes(n: u64) -> When {
    When::In(Duration::from_secs(n * 60))
}

/// `n` hours from now, for `.schedule(in_hours(2), ..)`.
pub fn in_hours(n: u64) -> When {
    When::In(Duration::from_secs(n * 3600))
}

/// A job about to be enqueued, with per-call overrides. Await it (on the
/// default app) or call [`Enqueue::on`] to get the job's id.
#[derive(Debug)]
#[must_use = "an enqueue does nothing until it is awaited"]
pub struct Enqueue {
    def: &'static JobDef,
    args: Result<Box<RawValue>>,
    when: Option<When>,
    priority: Option<i32>,
    queue: Option<String>,
    key: Option<String>,
    ttl: Option<Duration>,
}

impl Enqueue {
    /// An enqueue of `def` with `args`, as `#[job]` generates.
    pub fn new<A: serde::Serialize + ?Sized>(def: &'static JobDef, args: &A) -> Self {
        Self {
            def,
            args: serde_json::value::to_raw_value(args).map_err(Error::Serialize),
            when: None,
            priority: None,
            queue: None,
            key: None,
            ttl: None,
        }
    }

    /// An enqueue of `def` with arguments that are already JSON (the CLI's enqueue by name).
    pub fn raw(def: &'static JobDef, args: Box<RawValue>) -> Self {
        Self {
            def,
            args: Ok(args),
            when: None,
            priority: None,
            queue: None,
            key: None,
            ttl: None,
        }
    }

    /// Runs the job at `when` instead of now.
    pub fn at(mut self, when: impl Into<When>) -> Self {
        self.when = Some(when.into());
        self
    }

    /// Runs the job `delay` from now.
    pub fn after(self, delay: Duration) -> Self {
        self.at(When::In(delay))
    }

    /// Overrides the job's priority (higher runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Overrides the job's queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets an idempotency key: while a job with this key is queued, running
    /// or recently completed, enqueueing another is a no-op returning its id.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Overrides the job's TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The envelope this enqueue writes.
    pub fn into_envelope(self) -> Result<Envelope> {
        let opts = &self.def.options;
        let args = self.args?;
        let key = match (self.key, opts.unique) {
            (Some(k), _) => Some(k),
            (None, true) => Some(format!(
                "{}:{:016x}",
                self.def.name,
                fnv1a(args.get().as_bytes())
            )),
            (None, false) => None,
        };
        let mut env = Envelope::new(
            self.def.name,
            self.queue.unwrap_or_else(|| opts.queue.to_owned()),
            args,
        );
        let now = env.enqueued_at;
        env.priority = self.priority.unwrap_or(opts.priority);
        env.max_attempts = opts.retries.saturating_add(1);
        env.run_at = self.when.map_or(now, |w| w.resolve(now));
        env.expires_at = self.ttl.or(opts.ttl).map(|ttl| now.plus(ttl));
        env.idempotency_key = key;
        env.trace = crate::trace::current_traceparent();
        Ok(env)
    }

    /// Enqueues on `app`, returning the job's id (the existing job's id when
    /// its idempotency key was already taken).
    pub async fn on(self, app: &App) -> Result<JobId> {
        app.enqueue(self).await
    }
}

impl IntoFuture for Enqueue {
    type Output = Result<JobId>;
    type IntoFuture = BoxFuture<'static, Result<JobId>>;

    /// Enqueues on the default app (see [`App::set_default`]).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let app = App::default_app().ok_or(Error::NoDefaultApp)?;
            app.enqueue(self).await
        })
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms, for derived idempotency keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
