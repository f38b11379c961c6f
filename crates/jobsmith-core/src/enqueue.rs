//! Typed enqueue calls: what `job.delay(..)` and `job.schedule(..)` return,
//! and the envelope each writes. Sending one (`.on(&app)`, `.await`) is the
//! app's part, in `app.rs`.

use crate::envelope::Envelope;
use crate::error::Result;
use crate::job::JobDef;
use crate::time::Timestamp;
use serde_json::value::RawValue;
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
    /// An enqueue of `def` with `args`, as `#[job]` generates. Arguments that
    /// JSON cannot carry (a NaN or an infinite float) make the enqueue fail
    /// with [`Error::NonFiniteArgument`](crate::Error::NonFiniteArgument).
    pub fn new<A: serde::Serialize + ?Sized>(def: &'static JobDef, args: &A) -> Self {
        Self {
            def,
            args: crate::args::to_json(args),
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
        self.prepare().map(|(env, _)| env)
    }

    /// The envelope this enqueue writes and, when its key is derived from
    /// the arguments (`unique`), the key the versions before SHA-256 derived
    /// for them, which [`App::enqueue`](crate::App::enqueue) looks up before writing.
    pub(crate) fn prepare(self) -> Result<(Envelope, Option<String>)> {
        let opts = &self.def.options;
        let args = self.args?;
        let (key, legacy) = match (self.key, opts.unique) {
            (Some(k), _) => (Some(k), None),
            (None, true) => (
                Some(unique_key(self.def.name, &args)),
                Some(legacy_unique_key(self.def.name, &args)),
            ),
            (None, false) => (None, None),
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
        env.check_bounds()?;
        Ok((env, legacy))
    }
}

/// The idempotency key of a `unique` job: `<job>:sha256:<64 hex digits>`, the
/// SHA-256 of its serialized arguments.
///
/// A cryptographic hash, because arguments may come from users: two
/// argument sets that share a key make the second job a no-op, and a hash
/// built for speed (FNV-1a, which earlier versions used) can be made to
/// collide on purpose. `docs/decisions/unique-keys-sha256.md` says how keys
/// of the earlier form are still honoured.
pub fn unique_key(job: &str, args: &RawValue) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let digest = Sha256::digest(args.get().as_bytes());
    let mut key = String::with_capacity(job.len() + 8 + 2 * digest.len());
    key.push_str(job);
    key.push_str(":sha256:");
    for b in digest.iter() {
        // Writing into a String cannot fail.
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// The key versions before SHA-256 derived for a `unique` job,
/// `<job>:<FNV-1a 64 of the arguments, 16 hex digits>`: looked up, never
/// written, until every key of that form has run its course.
pub fn legacy_unique_key(job: &str, args: &RawValue) -> String {
    let hash = crate::hash::fnv1a_64(crate::hash::FNV1A_64_BASIS, args.get().as_bytes());
    format!("{job}:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobDef;
    use crate::options::JobOptions;

    static CHARGE: JobDef = JobDef {
        name: "charge",
        location: "jobsmith_core::enqueue::tests",
        options: JobOptions {
            unique: true,
            ..JobOptions::DEFAULT
        },
        run: |_, _| unreachable!("never run"),
        params: &[],
        shapes: Vec::new,
    };

    #[test]
    fn a_unique_key_is_the_sha256_of_the_arguments() {
        let env = Enqueue::new(&CHARGE, &serde_json::json!({"order": 1}))
            .into_envelope()
            .unwrap();
        assert_eq!(
            env.idempotency_key.as_deref(),
            Some("charge:sha256:a781679e01308cfef90983a4c1350319a7e3993c3a3f5a8c8439781a326d7c8d"),
            "SHA-256 of `{{\"order\":1}}`: arguments cannot be crafted to take another job's key"
        );
    }

    #[test]
    fn the_legacy_key_is_the_one_earlier_versions_wrote() {
        let (env, legacy) = Enqueue::new(&CHARGE, &serde_json::json!({"order": 1}))
            .prepare()
            .unwrap();
        assert_eq!(legacy.as_deref(), Some("charge:36932efc229cf226"));
        assert_ne!(env.idempotency_key, legacy, "never written");
        let (_, none) = Enqueue::new(&CHARGE, &serde_json::json!({"order": 1}))
            .key("mine")
            .prepare()
            .unwrap();
        assert_eq!(none, None, "a key of the caller's own has no earlier form");
    }
}
