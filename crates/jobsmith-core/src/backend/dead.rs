//! Dead letters: the [`DeadLetters`] capability and its entries.

use crate::backend::Backend;
use crate::envelope::{Envelope, JobId};
use crate::error::Result;
use crate::time::Timestamp;
use std::time::Duration;

/// One entry in a dead-letter queue.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// A dead job: its id, queue, why it died, when, and its payload as stored.
    pub fn new(id: JobId, queue: String, reason: String, died_at: Timestamp, raw: Vec<u8>) -> Self {
        Self {
            id,
            queue,
            reason,
            died_at,
            raw,
        }
    }

    /// The payload as an envelope, if it is one.
    pub fn envelope(&self) -> Option<Envelope> {
        Envelope::from_bytes(&self.raw).ok()
    }
}

/// Dead-letter queues: list, read, requeue and delete the jobs that died.
#[async_trait::async_trait]
pub trait DeadLetters: Backend {
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

    /// Deletes the dead jobs of `queue` with these ids; returns how many were deleted.
    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize>;
}
