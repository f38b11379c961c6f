//! The contract every broker implements: the [`Backend`] trait.
//!
//! Its semantics are specified, once, by the conformance suite in
//! [`testkit`](crate::testkit) (feature `testkit`); `docs/backends.md` says
//! how each backend builds them from its broker's parts.

use crate::envelope::{Envelope, JobId};
use crate::error::Result;
use crate::time::Timestamp;
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

/// One entry in a dead-letter queue.
#[derive(Clone, Debug)]
pub struct DeadJob {
    /// The job's id, or the id the backend gave a payload that did not parse.
    pub id: JobId,
    /// The queue it died on.
    pub queue: String,
    /// Why it died: the last error, or why the payload could not be read.
    pub reason: String,
    /// When it was moved to the dead-letter queue.
    pub died_at: Timestamp,
    /// The payload, exactly as it was stored.
    pub raw: Vec<u8>,
}

impl DeadJob {
    /// The payload as an envelope, if it is one.
    pub fn envelope(&self) -> Option<Envelope> {
        Envelope::from_bytes(&self.raw).ok()
    }
}

/// Counts for one queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Jobs ready to run now.
    pub ready: u64,
    /// Jobs waiting for a later time (delays, schedules, retries in backoff).
    pub scheduled: u64,
    /// Jobs reserved by a worker.
    pub in_flight: u64,
    /// Jobs in the dead-letter queue.
    pub dead: u64,
    /// Jobs dropped unrun because their TTL passed, since the queue was created.
    pub expired: u64,
    /// How long the oldest ready job has been ready.
    pub oldest_ready_age: Option<Duration>,
    /// Jobs completed (acked) since the queue was created, by every process
    /// using it.
    ///
    /// Memory and Redis count on the server as they settle. RabbitMQ and SQS
    /// count in each process and add the counts to a shared counter about
    /// once a second (RabbitMQ: a counter queue; SQS: a DynamoDB item), and
    /// before `stats` answers, so a process sees its own counts at once and
    /// another's within about a second. A process that dies loses what it had
    /// not added yet (at most its last second); a write whose answer is lost
    /// may be counted twice. `None` only when the shared counter could not be
    /// read (see `docs/backends.md`), never a guess.
    pub processed: Option<u64>,
    /// Failed attempts (retried or dead-lettered) since the queue was
    /// created, by every process using it; counted and shared as
    /// [`QueueStats::processed`] is.
    pub failed: Option<u64>,
}

/// Settings every backend honours; each can be set in the URL's query string
/// (`?dead_max=10000&dead_max_age=180d&unique_for=24h&max_payload=1048576`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// At most this many dead jobs per queue are kept; the oldest go first. Default 10,000.
    pub dead_max: usize,
    /// Dead jobs older than this are dropped. Default 180 days.
    pub dead_max_age: Duration,
    /// How long a completed job's idempotency key keeps equal jobs out. Default 24 h.
    pub unique_for: Duration,
    /// The largest envelope, in bytes, an enqueue accepts; `None` for the backend's own limit.
    pub max_payload: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dead_max: 10_000,
            dead_max_age: Duration::from_secs(180 * 86_400),
            unique_for: Duration::from_secs(86_400),
            max_payload: None,
        }
    }
}

impl Settings {
    /// Reads the settings from `key=value` pairs, ignoring keys it does not know.
    pub fn from_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut s = Settings::default();
        let bad = |k: &str, v: &str, why: String| {
            crate::Error::Config(format!("bad URL setting `{k}={v}`: {why}"))
        };
        for (k, v) in pairs {
            match k {
                "dead_max" => s.dead_max = v.parse().map_err(|e| bad(k, v, format!("{e}")))?,
                "dead_max_age" => {
                    s.dead_max_age = crate::parse_duration(v).map_err(|e| bad(k, v, e))?
                }
                "unique_for" => {
                    s.unique_for = crate::parse_duration(v).map_err(|e| bad(k, v, e))?
                }
                "max_payload" => {
                    s.max_payload = Some(v.parse().map_err(|e| bad(k, v, format!("{e}")))?)
                }
                _ => {}
            }
        }
        Ok(s)
    }
}

/// A broker, seen through the one contract every backend implements.
///
/// Operations that settle reserved jobs take the [`Lease`] from the
/// [`Delivery`] and report, per lease, whether it was still held.
/// Every method is safe to call from many tasks at once.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// The backend's name, such as `"memory"` or `"redis"`.
    fn name(&self) -> &'static str;

    /// The largest envelope, in bytes, that an enqueue accepts.
    fn max_payload(&self) -> usize;

    /// Enqueues a batch, returning each job's id in order.
    ///
    /// A job whose idempotency key is queued, running or completed (within
    /// [`Settings::unique_for`]) is not enqueued: its entry is the existing
    /// job's id. A job over [`Backend::max_payload`] fails the whole batch
    /// with [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) before
    /// anything is written. A job whose `run_at` is in the future is scheduled.
    async fn enqueue(&self, jobs: Vec<Envelope>) -> Result<Vec<JobId>>;

    /// Reserves up to `max` ready jobs from `queues`, leasing each for `lease`.
    ///
    /// Queues are taken in the order given; within a queue, the highest
    /// priority first and first-in first-out within a priority. Jobs whose TTL
    /// has passed are dropped and counted, never returned. When nothing is
    /// ready, waits up to `wait` for a job to become ready, woken by the
    /// broker rather than by polling, and returns an empty batch if none did.
    async fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Completes jobs: they leave the backend, and their idempotency keys are
    /// remembered for [`Settings::unique_for`].
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;

    /// Puts a failed job back to run at `envelope.run_at`, storing `envelope`
    /// (with its `last_error`) in place of the old one. Its attempt stays counted.
    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus>;

    /// Returns jobs to the ready state without counting the attempt (graceful shutdown).
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;

    /// Moves a job to its queue's dead-letter queue with `reason`, and frees its idempotency key.
    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus>;

    /// Drops a reserved job whose TTL has passed, counting it as expired.
    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus>;

    /// Extends leases to `lease` from now (heartbeat).
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>>;

    /// Dead jobs of `queue`, newest first, skipping `offset`, at most `limit`.
    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>>;

    /// One dead job.
    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>>;

    /// Puts dead jobs back in their queue, ready now, with their attempts
    /// reset; returns how many were requeued. Payloads that are not
    /// envelopes stay where they are.
    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize>;

    /// Deletes dead jobs of `queue`: all, or those that died longer ago than `older_than`.
    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize>;

    /// Counts for each of `queues`.
    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>>;

    /// Writes out what the backend keeps in this process on its way to the
    /// broker: outcome counts not yet added to the shared counters (RabbitMQ,
    /// SQS; see [`QueueStats::processed`]). The worker calls it when it
    /// stops; backends that keep nothing back use this default, which does
    /// nothing.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The queues the backend knows of.
    async fn queues(&self) -> Result<Vec<String>>;

    // --- Metadata store: small values shared by every process on the backend
    // (schedule states). Last writer wins; values are a few hundred bytes.

    /// Stores `value` under `key`, replacing any value there.
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()>;

    /// The value under `key`, if any.
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Every key that starts with `prefix`, with its value, sorted by key.
    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    // ---- Moving jobs between backends (`jobsmith migrate`) ----
    //
    // A migration takes a page of jobs out of the source under a hold,
    // imports them into the destination (at most once per job id), then
    // removes them from the source. A run killed at any point leaves every
    // job in the source (its hold runs out), or in the destination, or both;
    // in the last case the next run's import skips it and removes it from
    // the source, so no job is lost or duplicated.

    /// Takes up to `max` waiting jobs of `queue`, ready or scheduled whatever
    /// their `run_at`, out of the workers' reach under a hold of `hold`.
    ///
    /// Envelopes come as stored: the attempt is not counted. A taken job is
    /// deleted with [`Backend::remove`]; if the hold runs out first, the job
    /// goes back to its queue, ready or scheduled as before. Jobs reserved by
    /// workers are not taken. Where a backend cannot see a scheduled job
    /// before it is due (SQS within a delay), it takes only what it can see.
    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>>;

    /// Deletes jobs held by [`Backend::take`], freeing their idempotency keys.
    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;

    /// Writes jobs taken from another backend, keeping their id, attempt,
    /// `run_at`, priority, expiry and idempotency key.
    ///
    /// Each job id is written at most once, however often it is imported
    /// (the backend keeps a marker per imported id, even after the job has
    /// run); returns, per job, whether it was written now. A job over
    /// [`Backend::max_payload`] fails the whole batch before anything is written.
    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>>;

    /// Writes dead jobs from another backend into their queues' dead-letter
    /// queues, keeping reason, time of death and payload; at most once per
    /// job id, as [`Backend::import`]. Returns, per job, whether it was written now.
    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>>;

    /// Deletes the dead jobs of `queue` with these ids; returns how many were deleted.
    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize>;
}
