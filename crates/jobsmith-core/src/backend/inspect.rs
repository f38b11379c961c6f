//! Inspection: the [`Inspect`] capability (the queues a backend knows and their counts).

use crate::backend::Backend;
use crate::error::Result;
use std::time::Duration;

/// Counts for one queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// read (see `docs/backends/contract.md`), never a guess.
    pub processed: Option<u64>,
    /// Failed attempts (retried or dead-lettered) since the queue was
    /// created, by every process using it; counted and shared as
    /// [`QueueStats::processed`] is.
    pub failed: Option<u64>,
    /// Why this queue's counts could not be read, when it failed on its own
    /// (a key of the wrong type, a queue deleted or declared otherwise
    /// behind the backend's back); its counts are then zero and mean
    /// nothing. `None` for a queue read as it is. [`Inspect::stats`] over
    /// several queues answers for the others beside a broken one.
    pub error: Option<String>,
}

impl QueueStats {
    /// The row of `queue` with every count zero, to fill in.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            ..Self::default()
        }
    }

    /// The row of a queue whose counts could not be read: zero counts, and
    /// `error` saying why (the error and its causes).
    pub fn failed(queue: &str, error: &crate::Error) -> Self {
        Self {
            queue: queue.to_owned(),
            error: Some(crate::error::with_causes(error)),
            ..Self::default()
        }
    }
}

/// Inspection: the queues a backend knows and their counts.
#[async_trait::async_trait]
pub trait Inspect: Backend {
    /// The queues the backend knows of.
    async fn queues(&self) -> Result<Vec<String>>;

    /// Counts for each of `queues`, in order.
    ///
    /// A queue whose counts cannot be read while others can is a row with
    /// [`QueueStats::error`] set, and the others are answered as they are;
    /// `Err` only when no queue could be read for a reason they share (the
    /// broker is unreachable: every queue failed with a transient error).
    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>>;
}
