//! [`QueueErrors`]: one queue's failures, reported while a backend goes on
//! with the others.
//!
//! A backend call over several queues (reserve, stats) must not let one
//! broken queue (a key of the wrong type, a queue deleted behind its back)
//! stop the rest: it reports the queue here and carries on. A queue that
//! stays broken is logged once per [`QueueErrors::REPORT_EVERY`], not once
//! per call, and once more when it works again.

use crate::error::{with_causes, Error};
use crate::lock::LockExt;
use crate::QueueStats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The queues of one backend that are failing, and when each was last logged.
#[derive(Debug, Default)]
pub struct QueueErrors {
    failing: Mutex<HashMap<String, Instant>>,
    /// Whether `failing` holds any queue: lets [`QueueErrors::worked`] skip
    /// the lock on the hot path, where every queue works.
    any: AtomicBool,
}

impl QueueErrors {
    /// How often a queue that keeps failing is logged again.
    pub const REPORT_EVERY: Duration = Duration::from_secs(10);

    /// No queue failing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports that `op` failed on `queue` alone: a warning naming the queue
    /// and the error, unless this queue was logged less than
    /// [`QueueErrors::REPORT_EVERY`] ago.
    pub fn failed(&self, queue: &str, op: &str, error: &Error) {
        let now = Instant::now();
        let mut failing = self.failing.lock_unpoisoned();
        let due = failing
            .get(queue)
            .is_none_or(|last| now.duration_since(*last) >= Self::REPORT_EVERY);
        if due {
            failing.insert(queue.to_owned(), now);
            self.any.store(true, Ordering::Release);
            tracing::warn!(
                queue,
                op,
                error = %with_causes(error),
                "a queue failed on its own; the other queues go on (logged again every {}s while it fails)",
                Self::REPORT_EVERY.as_secs()
            );
        }
    }

    /// Notes that `queue` worked: if it had been reported failing, logs that it is back.
    pub fn worked(&self, queue: &str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut failing = self.failing.lock_unpoisoned();
        if failing.remove(queue).is_some() {
            tracing::info!(queue, "a queue that had failed works again");
        }
        if failing.is_empty() {
            self.any.store(false, Ordering::Release);
        }
    }

    /// The answer of [`Inspect::stats`](crate::Inspect::stats) from each
    /// queue's result, in order: a queue that failed is a row marked with its
    /// error (and reported); `Err` only when every queue failed with a
    /// transient error, which is the broker, not a queue.
    pub fn stats_rows(
        &self,
        results: impl IntoIterator<Item = (String, crate::Result<QueueStats>)>,
    ) -> crate::Result<Vec<QueueStats>> {
        let mut rows = Vec::new();
        let mut unreachable = None;
        let mut all_transient = true;
        for (queue, result) in results {
            match result {
                Ok(row) => {
                    self.worked(&queue);
                    all_transient = false;
                    rows.push(row);
                }
                Err(e) => {
                    self.failed(&queue, "stats", &e);
                    rows.push(QueueStats::failed(&queue, &e));
                    if e.is_transient() {
                        unreachable.get_or_insert(e);
                    } else {
                        all_transient = false;
                    }
                }
            }
        }
        match unreachable {
            Some(e) if all_transient => Err(e),
            _ => Ok(rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(queue: &str) -> QueueStats {
        QueueStats {
            queue: queue.to_owned(),
            ready: 3,
            ..QueueStats::default()
        }
    }

    fn refused() -> Error {
        Error::backend("WRONGTYPE")
    }

    fn down() -> Error {
        Error::connection(std::io::Error::other("refused"))
    }

    #[test]
    fn a_broken_queue_is_a_marked_row_beside_the_others() {
        let errors = QueueErrors::new();
        let rows = errors
            .stats_rows([
                ("a".to_owned(), Err(refused())),
                ("b".to_owned(), Ok(row("b"))),
            ])
            .expect("one queue read");
        assert_eq!(rows[0].queue, "a");
        assert_eq!(rows[0].error.as_deref(), Some("backend error: WRONGTYPE"));
        assert_eq!(rows[1], row("b"));
    }

    #[test]
    fn every_queue_broken_on_its_own_is_still_rows() {
        let rows = QueueErrors::new()
            .stats_rows([("a".to_owned(), Err(refused()))])
            .expect("a refusal is the queue's, not the broker's");
        assert!(rows[0].error.is_some());
    }

    #[test]
    fn an_unreachable_broker_is_an_error() {
        let got = QueueErrors::new()
            .stats_rows([("a".to_owned(), Err(down())), ("b".to_owned(), Err(down()))]);
        assert!(matches!(got, Err(e) if e.is_transient()));
        let rows = QueueErrors::new()
            .stats_rows([
                ("a".to_owned(), Err(down())),
                ("b".to_owned(), Ok(row("b"))),
            ])
            .expect("one queue read: the broker is there");
        assert!(rows[0]
            .error
            .as_deref()
            .is_some_and(|e| e.ends_with(": refused")));
    }
}
