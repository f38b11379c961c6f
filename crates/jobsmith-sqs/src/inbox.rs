//! Messages received but not yet handed out, and the long polls that fill it.
//!
//! A reserve that finds nothing starts one long poll per level queue of the
//! queues it was asked for (one at a time per queue), and sleeps until a
//! poll brings something, the earliest message held here comes due, or its
//! wait is over. Polls outlive the reserve that started them: what they
//! receive waits here for the next reserve, so a reserve that is given up
//! (a worker stopping) loses nothing. A message here is held by this
//! process: if the process ends before handing it out, SQS delivers it again
//! when its visibility timeout runs out, counting one attempt.

use jobsmith_core::{Envelope, Error, JobId, Malformed, Timestamp};
use std::collections::HashSet;
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

/// The held messages, the polls running, and the last poll error.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    items: Mutex<Vec<Received>>,
    pub(crate) notify: Notify,
    polling: Mutex<HashSet<String>>,
    error: Mutex<Option<Error>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inbox {
    pub(crate) fn put(&self, items: Vec<Received>) {
        if items.is_empty() {
            return;
        }
        lock(&self.items).extend(items);
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
        let mut items = lock(&self.items);
        items.retain(|r| {
            let keep = r.deadline > soon;
            if !keep {
                tracing::warn!(id = %r.id, queue = %r.queue, "a received job waited too long to be handed out; SQS will deliver it again");
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
        let items = lock(&self.items);
        let mine = items.iter().filter(|r| r.queue == queue);
        let due = mine.clone().filter(|r| r.due <= now).count() as u64;
        let early = mine.filter(|r| r.due > now).count() as u64;
        (due, early)
    }

    /// How many messages of `queues` are due now.
    pub(crate) fn due_count(&self, queues: &[String], now: Timestamp) -> usize {
        lock(&self.items)
            .iter()
            .filter(|r| r.due <= now && queues.contains(&r.queue))
            .count()
    }

    /// When the earliest held message of `queues` comes due.
    pub(crate) fn next_due(&self, queues: &[String]) -> Option<Timestamp> {
        lock(&self.items)
            .iter()
            .filter(|r| queues.contains(&r.queue))
            .map(|r| r.due)
            .min()
    }

    /// Marks a poll of `url` as running; false if one already is.
    pub(crate) fn start_poll(&self, url: &str) -> bool {
        lock(&self.polling).insert(url.to_owned())
    }

    pub(crate) fn end_poll(&self, url: &str, error: Option<Error>) {
        lock(&self.polling).remove(url);
        if let Some(e) = error {
            *lock(&self.error) = Some(e);
        }
        self.notify.notify_waiters();
    }

    /// The error a poll met since the last call, if any.
    pub(crate) fn take_error(&self) -> Option<Error> {
        lock(&self.error).take()
    }
}
