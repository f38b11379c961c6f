//! Messages received but not yet handed out, and the long polls that fill it.
//!
//! A reserve that finds nothing starts one long poll per level queue of the
//! queues it was asked for (one at a time per queue), and sleeps until a
//! poll brings something, the earliest message held here comes due, or its
//! wait is over. Polls outlive the reserve that started them: what they
//! receive waits here for the next reserve. A message here is held by this
//! process: if the process ends before handing it out, SQS delivers it again
//! when its visibility timeout runs out, counting one attempt; so a worker
//! that stops waits for its polls to end and hands back what they brought
//! (`stop_reserving`).

use jobsmith_core::lock::LockExt;
use jobsmith_core::{Envelope, Error, JobId, Malformed, Timestamp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::Notify;

/// One received message.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) queue: String,
    pub(crate) level: i8,
    pub(crate) url: String,
    pub(crate) receipt: String,
    pub(crate) id: JobId,
    /// The payload, `attempt` counting this delivery.
    pub(crate) payload: Result<Envelope, Malformed>,
    /// When it may run (up to a second after SQS showed it: delays count whole seconds).
    pub(crate) due: Timestamp,
    /// When SQS may deliver it again, at the earliest.
    pub(crate) deadline: Instant,
    seq: u64,
}

impl Received {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        queue: String,
        level: i8,
        url: String,
        receipt: String,
        id: JobId,
        payload: Result<Envelope, Malformed>,
        due: Timestamp,
        deadline: Instant,
    ) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        Self {
            queue,
            level,
            url,
            receipt,
            id,
            payload,
            due,
            deadline,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// The held messages, the polls running, and the errors polls met.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    items: Mutex<Vec<Received>>,
    pub(crate) notify: Notify,
    /// The level queues being polled, with the queue each belongs to.
    polling: Mutex<HashMap<String, String>>,
    /// Per jobsmith queue, the last error its polls met since a reserve looked.
    errors: Mutex<Vec<(String, Error)>>,
}

impl Inbox {
    pub(crate) fn put(&self, items: Vec<Received>) {
        if items.is_empty() {
            return;
        }
        self.items.lock_unpoisoned().extend(items);
        self.notify.notify_waiters();
    }

    /// Takes up to `max` due messages of `queues`: queues in the order given,
    /// then the highest level first, then in the order received. Drops
    /// messages whose visibility runs out within `margin`.
    pub(crate) fn take(
        &self,
        queues: &[String],
        max: usize,
        now: Timestamp,
        margin: std::time::Duration,
    ) -> Vec<Received> {
        let soon = Instant::now() + margin;
        let mut items = self.items.lock_unpoisoned();
        items.retain(|r| {
            let keep = r.deadline > soon;
            if !keep {
                tracing::warn!(id = %jobsmith_core::printable(r.id.as_str()), queue = %r.queue, "a received job waited too long to be handed out; SQS will deliver it again");
            }
            keep
        });
        let all = std::mem::take(&mut *items);
        let (mut due, rest): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|r| r.due <= now && queues.contains(&r.queue));
        due.sort_by_key(|r| {
            let p = queues.iter().position(|q| *q == r.queue);
            (p, -r.level, r.seq)
        });
        let extra = due.split_off(max.min(due.len()));
        *items = rest;
        items.extend(extra);
        due
    }

    /// Messages of `queue` held here: (due now, not yet due).
    pub(crate) fn held(&self, queue: &str, now: Timestamp) -> (u64, u64) {
        let items = self.items.lock_unpoisoned();
        let mine = items.iter().filter(|r| r.queue == queue);
        let due = mine.clone().filter(|r| r.due <= now).count() as u64;
        let early = mine.filter(|r| r.due > now).count() as u64;
        (due, early)
    }

    /// How many messages of `queues` are due now.
    pub(crate) fn due_count(&self, queues: &[String], now: Timestamp) -> usize {
        self.items
            .lock_unpoisoned()
            .iter()
            .filter(|r| r.due <= now && queues.contains(&r.queue))
            .count()
    }

    /// When the earliest held message of `queues` comes due.
    pub(crate) fn next_due(&self, queues: &[String]) -> Option<Timestamp> {
        self.items
            .lock_unpoisoned()
            .iter()
            .filter(|r| queues.contains(&r.queue))
            .map(|r| r.due)
            .min()
    }

    /// Marks a poll of `url`, a level queue of `queue`, as running; false
    /// if one already is.
    pub(crate) fn start_poll(&self, url: &str, queue: &str) -> bool {
        let mut polling = self.polling.lock_unpoisoned();
        if polling.contains_key(url) {
            return false;
        }
        polling.insert(url.to_owned(), queue.to_owned());
        true
    }

    /// Whether a poll of a level queue of `queues` is running.
    pub(crate) fn polling_any(&self, queues: &[String]) -> bool {
        self.polling
            .lock_unpoisoned()
            .values()
            .any(|q| queues.contains(q))
    }

    /// Takes every message of `queues` held here, due or not.
    pub(crate) fn take_all(&self, queues: &[String]) -> Vec<Received> {
        let mut items = self.items.lock_unpoisoned();
        let (mine, rest) = std::mem::take(&mut *items)
            .into_iter()
            .partition(|r| queues.contains(&r.queue));
        *items = rest;
        mine
    }

    /// Marks the poll of `url` as over, with the error it met on its queue, if any.
    pub(crate) fn end_poll(&self, url: &str, error: Option<(String, Error)>) {
        self.polling.lock_unpoisoned().remove(url);
        if let Some((queue, e)) = error {
            let mut errors = self.errors.lock_unpoisoned();
            errors.retain(|(q, _)| *q != queue);
            errors.push((queue, e));
        }
        self.notify.notify_waiters();
    }

    /// The errors polls met since the last call, by queue.
    pub(crate) fn take_errors(&self) -> Vec<(String, Error)> {
        std::mem::take(&mut *self.errors.lock_unpoisoned())
    }
}
