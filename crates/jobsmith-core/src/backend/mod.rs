//! The contract every broker implements: the [`Backend`] trait.
//!
//! Its semantics are specified, once, by the conformance suite in the
//! `jobsmith-conformance` crate; `docs/backends/` says
//! how each backend builds them from its broker's parts.

use crate::envelope::{Envelope, JobId};

mod dead;
mod events;
mod inspect;
mod meta;
mod migrate;
mod settings;
mod settle;

use crate::error::{Error, Result};
use crate::time::Timestamp;
pub use dead::{DeadJob, DeadLetters};
pub use events::Events;
pub use events::MetaEvents;
pub use inspect::{Inspect, QueueStats};
pub use meta::MetaStore;
pub use migrate::Migrate;
pub use settings::Settings;
pub use settle::{settle_by_kind, Outcome, SettleByKind, SettleExt};
use std::fmt;
use std::time::Duration;

/// A reserved job's lease: the right to ack, retry, release or bury it.
///
/// A lease travels beside the envelope, never inside it. Once a lease has
/// expired and the job was reserved again, the old lease is refused
/// ([`LeaseStatus::Lost`]): a slow worker cannot complete or bury a job that
/// another worker now owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job's id (for a payload that did not parse, an id the backend gave it).
    pub id: JobId,
    /// The queue the job came from.
    pub queue: String,
    /// Backend-specific, unique per reservation: a lease token, a delivery tag,
    /// or a receipt handle.
    pub token: String,
    /// When the lease runs out unless extended.
    pub expires_at: Timestamp,
}

/// A payload in a queue that is not a valid envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The bytes as found.
    pub raw: Vec<u8>,
    /// Why they could not be read.
    pub reason: String,
}

/// One reserved job.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The lease to settle it with.
    pub lease: Lease,
    /// The envelope, its `attempt` already counting this delivery, or the
    /// payload that did not parse (the worker dead-letters it).
    pub envelope: std::result::Result<Envelope, Malformed>,
}

/// Whether a lease was still held when an operation used it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// The lease was held; the operation took effect.
    Held,
    /// The lease had expired or been superseded; nothing changed.
    Lost,
}

/// A broker, seen through the one contract every backend implements: the
/// hot path of enqueue, reserve, settle and extend.
///
/// Operations that settle reserved jobs take the [`Lease`] from the
/// [`Delivery`] and report, per lease, whether it was still held.
/// Every method is safe to call from many tasks at once.
///
/// What else a backend can do comes as capability traits, each asked for
/// through an accessor that returns `None` by default:
/// [`DeadLetters`], [`Inspect`], [`MetaStore`] and [`Migrate`]. A caller
/// holding a `dyn Backend` asks with [`dead_letters`](#method.dead_letters),
/// [`inspect`](#method.inspect), [`meta`](#method.meta) or
/// [`migration`](#method.migration), which name the missing capability in
/// their error. `docs/writing-a-backend.md` walks through an implementation.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// The backend's name, such as `"memory"` or `"redis"`.
    fn name(&self) -> &'static str;

    /// The largest envelope, in bytes, that an enqueue accepts.
    fn max_payload(&self) -> usize;

    /// Where this backend connects, for logs: the server's host and port,
    /// and its database or virtual host where it has one; never a
    /// credential. The backend's [`name`](Backend::name) by default.
    fn server(&self) -> String {
        self.name().to_owned()
    }

    /// Enqueues a batch, returning each job's id in order.
    ///
    /// A job whose idempotency key is queued, running or completed (within
    /// [`Settings::unique_for`]) is not enqueued: its entry is the existing
    /// job's id. A job over [`Backend::max_payload`] fails the whole batch
    /// with [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) before
    /// anything is written. A job whose `run_at` is in the future is scheduled.
    async fn enqueue(&self, jobs: Vec<Envelope>) -> Result<Vec<JobId>>;

    /// The job holding idempotency key `key` of `queue`: queued, running, or
    /// completed within [`Settings::unique_for`]; `None` when the key is free
    /// (never taken, or freed by a dead letter or an expiry). Reads only.
    ///
    /// [`App::enqueue`](crate::App::enqueue) asks it for the key an earlier
    /// version derived for a `unique` job, which enqueues no longer write
    /// but honour while such keys live (`docs/decisions/unique-keys-sha256.md`).
    async fn key_holder(&self, queue: &str, key: &str) -> Result<Option<JobId>>;

    /// Reserves up to `max` ready jobs from `queues`, leasing each for `lease`.
    ///
    /// Queues are taken in the order given; within a queue, the highest
    /// priority first and first-in first-out within a priority. Jobs whose TTL
    /// has passed are dropped and counted, never returned. When nothing is
    /// ready, waits up to `wait` for a job to become ready, woken by the
    /// broker rather than by polling, and returns an empty batch if none did.
    ///
    /// A queue that fails on its own does not fail the others: its error is
    /// logged with its name (see [`QueueErrors`](crate::QueueErrors)) and
    /// the call goes on with the rest; a job leased from one queue is handed
    /// out whatever another queue does. `Err` only when nothing was reserved
    /// and every queue failed (a broker that is down), so a worker backs off.
    async fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Settles reserved jobs, one [`Outcome`] per lease, and answers per
    /// outcome, in order: whether its lease was still held, or why it could
    /// not be settled.
    ///
    /// Outcomes of different leases are independent: one that fails does
    /// not undo or hold back the others, and the caller tries again only
    /// those that failed with a transient error. A backend that settles
    /// each kind of outcome on its own implements [`SettleByKind`] and
    /// forwards here to [`settle_by_kind`].
    async fn settle(&self, outcomes: &[Outcome]) -> Vec<Result<LeaseStatus>>;

    /// Extends leases to `lease` from now (heartbeat).
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>>;

    /// Tells the backend that a worker running at most `capacity` jobs at
    /// once is about to reserve from `queues`.
    ///
    /// A backend that takes jobs in ahead of [`Backend::reserve`] (a
    /// consumer's prefetch, background receives) then holds no more than
    /// `capacity` of them that a reserve has not handed out, however many
    /// queues and priority levels it watches for them (RabbitMQ's prefetch
    /// holds no more than `capacity` in all, running or not; SQS's receives
    /// share `capacity` between them): where the broker counts an attempt
    /// for every job a process held when it died, a crash is charged for at
    /// most `capacity` jobs that never started. The default does nothing: a
    /// backend that takes in only what a reserve hands out (memory, Redis)
    /// holds nothing more.
    async fn start_reserving(&self, queues: &[String], capacity: usize) -> Result<()> {
        let _ = (queues, capacity);
        Ok(())
    }

    /// Stops taking jobs in from `queues` ahead of [`Backend::reserve`], and
    /// hands back every job taken in but not reserved, ready at once and
    /// without counting an attempt; returns when they are back with the
    /// broker.
    ///
    /// A reserve of this backend that is waiting when this is called returns
    /// at once with what it holds (see [`Interrupt`](crate::Interrupt)); a
    /// reserve that starts later takes jobs in again. The worker calls this
    /// as it stops, before the grace period, so that nothing enqueued or
    /// released during the stop is taken in by a process on its way out.
    async fn stop_reserving(&self, queues: &[String]) -> Result<()>;

    /// Whether this backend takes jobs in ahead of [`Backend::reserve`] by
    /// itself (a consumer's prefetch, background receives), sized by
    /// [`Backend::start_reserving`]. The worker then takes none ahead of its
    /// free slots itself (`Worker::prefetch`): on SQS its extra receives
    /// made 1 ms jobs 0.8× as fast. The default, `false`, is for backends
    /// that hand out only what a reserve asks for (memory, Redis).
    fn prefetches(&self) -> bool {
        false
    }

    /// How the worker should batch outcomes for [`Backend::settle`]: when
    /// it has fewer than `n` finished jobs to settle, it waits up to the
    /// duration for more before it settles them. For a broker that charges
    /// per request and settles at most `n` in one (SQS: ten per
    /// `DeleteMessageBatch`). The default, `None`, settles what has finished
    /// at once.
    fn settle_batching(&self) -> Option<(usize, Duration)> {
        None
    }

    /// How often a worker samples queue depth into its gauges when the
    /// application does not say (`Worker::sample_every`). The default, 5 s,
    /// is for brokers whose counts cost nothing but a round trip; a broker
    /// that bills each request may ask for less (SQS: 15 s).
    fn depth_sample_every(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// Writes out what the backend keeps in this process on its way to the
    /// broker: outcome counts not yet added to the shared counters (RabbitMQ,
    /// SQS; see [`QueueStats::processed`]). The worker calls it when it
    /// stops; backends that keep nothing back use this default, which does
    /// nothing.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The dead-letter queues, if this backend keeps them.
    fn as_dead_letters(&self) -> Option<&dyn DeadLetters> {
        None
    }

    /// The queues and their counts, if this backend can tell them.
    fn as_inspect(&self) -> Option<&dyn Inspect> {
        None
    }

    /// The metadata store, if this backend has one.
    fn as_meta_store(&self) -> Option<&dyn MetaStore> {
        None
    }

    /// Moving jobs in and out (`jobsmith migrate`), if this backend can.
    fn as_migrate(&self) -> Option<&dyn Migrate> {
        None
    }

    /// Its own keeping of event subscriptions, if it has one. Without one,
    /// [`events`](#method.events) keeps them in the [`MetaStore`].
    fn as_events(&self) -> Option<&dyn Events> {
        None
    }
}

impl dyn Backend {
    /// The [`DeadLetters`] capability, or [`Error::Unsupported`] naming it.
    pub fn dead_letters(&self) -> Result<&dyn DeadLetters> {
        self.as_dead_letters()
            .ok_or_else(|| self.unsupported("dead-letter queues"))
    }

    /// The [`Inspect`] capability, or [`Error::Unsupported`] naming it.
    pub fn inspect(&self) -> Result<&dyn Inspect> {
        self.as_inspect()
            .ok_or_else(|| self.unsupported("queue inspection (queues and stats)"))
    }

    /// The [`MetaStore`] capability, or [`Error::Unsupported`] naming it.
    pub fn meta(&self) -> Result<&dyn MetaStore> {
        self.as_meta_store()
            .ok_or_else(|| self.unsupported("metadata store (cron schedules and job records)"))
    }

    /// The [`Events`] capability: the backend's own, or else subscriptions
    /// kept in its [`MetaStore`]; [`Error::Unsupported`] when it has neither.
    pub fn events(&self) -> Result<Box<dyn Events + '_>> {
        if let Some(events) = self.as_events() {
            return Ok(Box::new(Native(events)));
        }
        match self.as_meta_store() {
            Some(meta) => Ok(Box::new(MetaEvents(meta))),
            None => Err(self.unsupported("events (a place to keep subscriptions)")),
        }
    }

    /// The [`Migrate`] capability, or [`Error::Unsupported`] naming it.
    pub fn migration(&self) -> Result<&dyn Migrate> {
        self.as_migrate()
            .ok_or_else(|| self.unsupported("migration (take, remove and import)"))
    }

    fn unsupported(&self, capability: &'static str) -> Error {
        Error::Unsupported {
            backend: self.name(),
            capability,
        }
    }
}

/// A backend's own [`Events`], behind the same box as [`MetaEvents`].
#[derive(Debug)]
struct Native<'a>(&'a dyn Events);

#[async_trait::async_trait]
impl Events for Native<'_> {
    async fn put_subscription(&self, sub: &crate::event::Subscription) -> Result<()> {
        self.0.put_subscription(sub).await
    }

    async fn remove_subscription(&self, job: &str) -> Result<bool> {
        self.0.remove_subscription(job).await
    }

    async fn subscriptions(&self) -> Result<Vec<crate::event::Subscription>> {
        self.0.subscriptions().await
    }

    fn keys_jobs(&self) -> bool {
        self.0.keys_jobs()
    }
}
