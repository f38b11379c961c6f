//! The [`Migrate`] capability: moving jobs between backends (`jobsmith migrate`).

use crate::backend::{Backend, DeadJob, Delivery, Lease, LeaseStatus};
use crate::envelope::Envelope;
use crate::error::Result;
use std::time::Duration;

/// Moving jobs between backends (`jobsmith migrate`).
///
/// A migration takes a page of jobs out of the source under a hold,
/// imports them into the destination (at most once per job id), then
/// removes them from the source. A run killed at any point leaves every
/// job in the source (its hold runs out), or in the destination, or both;
/// in the last case the next run's import skips it and removes it from
/// the source, so no job is lost or duplicated.
#[async_trait::async_trait]
pub trait Migrate: Backend {
    /// Takes up to `max` waiting jobs of `queue`, ready or scheduled whatever
    /// their `run_at`, out of the workers' reach under a hold of `hold`.
    ///
    /// Envelopes come as stored: the attempt is not counted. A taken job is
    /// deleted with [`Migrate::remove`]; if the hold runs out first, the job
    /// goes back to its queue, ready or scheduled as before. Jobs reserved by
    /// workers are not taken. Where a backend cannot see a scheduled job
    /// before it is due (SQS within a delay), it takes only what it can see.
    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>>;

    /// Deletes jobs held by [`Migrate::take`], freeing their idempotency keys.
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
    /// job id, as [`Migrate::import`]. Returns, per job, whether it was written now.
    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>>;
}
