//! Idempotency keys, held by this process.
//!
//! SQS has no store with a conditional write, so it cannot say whether a key
//! is queued, running or completed: its FIFO deduplication forgets a key
//! after five minutes, and standard queues have none. This backend keeps
//! keys in the process that enqueued the job (and, in FIFO mode, also gives
//! SQS the key as deduplication id, which stops duplicates from any process
//! for five minutes). Across processes and restarts keys are not kept:
//! `docs/backends-sqs.md` says so, and how a shared store would close the gap.

use jobsmith_core::{JobId, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug)]
struct Hold {
    id: JobId,
    /// `None` while queued or running; when it completed, until when the key is held.
    completed_until: Option<Timestamp>,
}

/// Keys by (queue, key).
#[derive(Debug, Default)]
pub(crate) struct Keys {
    holds: Mutex<HashMap<(String, String), Hold>>,
}

impl Keys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Hold>> {
        self.holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds `key` for job `id`; or, when it is already held, the holder's id.
    pub(crate) fn claim(&self, queue: &str, key: &str, id: &JobId) -> Option<JobId> {
        let now = Timestamp::now();
        let mut holds = self.lock();
        let k = (queue.to_owned(), key.to_owned());
        if let Some(h) = holds.get(&k) {
            if h.completed_until.is_none_or(|until| until > now) {
                return Some(h.id.clone());
            }
        }
        holds.insert(
            k,
            Hold {
                id: id.clone(),
                completed_until: None,
            },
        );
        None
    }

    /// Frees `key` if job `id` holds it (it died, expired, or its enqueue failed).
    pub(crate) fn free(&self, queue: &str, key: &str, id: &JobId) {
        let mut holds = self.lock();
        let k = (queue.to_owned(), key.to_owned());
        if holds.get(&k).is_some_and(|h| h.id == *id) {
            holds.remove(&k);
        }
    }

    /// Marks `key` completed by `id`: held for `unique_for` more.
    pub(crate) fn complete(&self, queue: &str, key: &str, id: &JobId, unique_for: Duration) {
        let now = Timestamp::now();
        let mut holds = self.lock();
        if holds.len() % 4096 == 0 {
            holds.retain(|_, h| h.completed_until.is_none_or(|until| until > now));
        }
        let k = (queue.to_owned(), key.to_owned());
        let hold = holds.entry(k).or_insert_with(|| Hold {
            id: id.clone(),
            completed_until: None,
        });
        if hold.id == *id {
            hold.completed_until = Some(now.plus(unique_for));
        }
    }
}
