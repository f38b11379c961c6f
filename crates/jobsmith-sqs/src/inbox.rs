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
//!
//! So what is held here is bounded by what the workers can run. Every
//! receive, a sweep's or a poll's, first [`Inbox::claim`]s room for what it
//! asks SQS for; what it brings takes that room over ([`Inbox::fill`]). A
//! queue's room is what the workers reserving from it run at once, and all
//! queues together have what all of them run (`start_reserving`), less what
//! is held here and what the receives on their way may bring: however many
//! queues and priority levels are polled, a process that dies is charged an
//! attempt for no more jobs that never started than its workers' concurrency.

use jobsmith_core::lock::LockExt;
use jobsmith_core::{Envelope, Error, JobId, Malformed, Timestamp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    held: Arc<Mutex<Holdings>>,
    pub(crate) notify: Notify,
    /// The level queues being polled, with the queue each belongs to.
    polling: Mutex<HashMap<String, String>>,
    /// Per jobsmith queue, the last error its polls met since a reserve looked.
    errors: Mutex<Vec<(String, Error)>>,
    /// The workers reserving through this process (`start_reserving`): the
    /// queues of each, and how many jobs it runs at once.
    reserving: Mutex<Vec<(Vec<String>, usize)>>,
}

/// What this process holds of the workers' jobs, not handed out.
#[derive(Debug, Default)]
struct Holdings {
    items: Vec<Received>,
    /// Per jobsmith queue, how many messages the receives on their way may bring.
    asked: HashMap<String, usize>,
}

impl Holdings {
    /// What is held of `queue`, and asked for.
    fn of(&self, queue: &str) -> usize {
        self.items.iter().filter(|r| r.queue == queue).count()
            + self.asked.get(queue).copied().unwrap_or(0)
    }
}

/// Room claimed for one receive ([`Inbox::claim`]): given back when
/// dropped, unless [`Inbox::fill`] hands it to what the receive brought.
#[derive(Debug)]
pub(crate) struct Claim {
    held: Arc<Mutex<Holdings>>,
    queue: String,
    n: usize,
}

impl Claim {
    /// How many messages the receive may ask for.
    pub(crate) fn n(&self) -> usize {
        self.n
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.n == 0 {
            return;
        }
        let mut held = self.held.lock_unpoisoned();
        if let Some(asked) = held.asked.get_mut(&self.queue) {
            *asked = asked.saturating_sub(self.n);
            if *asked == 0 {
                held.asked.remove(&self.queue);
            }
        }
    }
}

impl Inbox {
    /// A worker running at most `capacity` jobs at once reserves from `queues`.
    pub(crate) fn start_reserving(&self, queues: &[String], capacity: usize) {
        self.reserving
            .lock_unpoisoned()
            .push((queues.to_vec(), capacity.max(1)));
    }

    /// The worker that reserved from `queues` stopped.
    pub(crate) fn stop_reserving(&self, queues: &[String]) {
        let mut reserving = self.reserving.lock_unpoisoned();
        if let Some(i) = reserving.iter().position(|(q, _)| q == queues) {
            reserving.remove(i);
        }
    }

    /// How many more messages of `queue` this process may take in: what the
    /// workers reserving from `queue` run at once, and what all workers
    /// run, each less what is held and asked for; no bound when no worker
    /// reserves from `queue`.
    pub(crate) fn room(&self, queue: &str) -> usize {
        let reserving = self.reserving.lock_unpoisoned();
        let held = self.held.lock_unpoisoned();
        room(&reserving, &held, queue)
    }

    /// Claims room for a receive from `queue` of up to `want` messages: as
    /// much as is left, perhaps none.
    pub(crate) fn claim(&self, queue: &str, want: usize) -> Claim {
        let reserving = self.reserving.lock_unpoisoned();
        let mut held = self.held.lock_unpoisoned();
        let n = want.min(room(&reserving, &held, queue));
        if n > 0 {
            *held.asked.entry(queue.to_owned()).or_default() += n;
        }
        Claim {
            held: Arc::clone(&self.held),
            queue: queue.to_owned(),
            n,
        }
    }

    /// What a receive brought takes over the room it claimed.
    pub(crate) fn fill(&self, mut claim: Claim, items: Vec<Received>) {
        {
            let mut held = self.held.lock_unpoisoned();
            held.items.extend(items);
            if let Some(asked) = held.asked.get_mut(&claim.queue) {
                *asked = asked.saturating_sub(claim.n);
                if *asked == 0 {
                    held.asked.remove(&claim.queue);
                }
            }
            claim.n = 0;
        }
        self.notify.notify_waiters();
    }

    /// Puts back messages taken out and not handed out after all.
    pub(crate) fn put(&self, items: Vec<Received>) {
        if items.is_empty() {
            return;
        }
        self.held.lock_unpoisoned().items.extend(items);
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
        let mut held = self.held.lock_unpoisoned();
        let items = &mut held.items;
        items.retain(|r| {
            let keep = r.deadline > soon;
            if !keep {
                tracing::warn!(id = %jobsmith_core::printable(r.id.as_str()), queue = %r.queue, "a received job waited too long to be handed out; SQS will deliver it again");
            }
            keep
        });
        let all = std::mem::take(items);
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
        let held = self.held.lock_unpoisoned();
        let mine = held.items.iter().filter(|r| r.queue == queue);
        let due = mine.clone().filter(|r| r.due <= now).count() as u64;
        let early = mine.filter(|r| r.due > now).count() as u64;
        (due, early)
    }

    /// How many messages of `queues` are due now.
    pub(crate) fn due_count(&self, queues: &[String], now: Timestamp) -> usize {
        self.held
            .lock_unpoisoned()
            .items
            .iter()
            .filter(|r| r.due <= now && queues.contains(&r.queue))
            .count()
    }

    /// When the earliest held message of `queues` comes due.
    pub(crate) fn next_due(&self, queues: &[String]) -> Option<Timestamp> {
        self.held
            .lock_unpoisoned()
            .items
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

    /// Whether a poll of `url` is running.
    pub(crate) fn is_polling(&self, url: &str) -> bool {
        self.polling.lock_unpoisoned().contains_key(url)
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
        let mut held = self.held.lock_unpoisoned();
        let (mine, rest) = std::mem::take(&mut held.items)
            .into_iter()
            .partition(|r| queues.contains(&r.queue));
        held.items = rest;
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

/// [`Inbox::room`], with both locks held.
fn room(reserving: &[(Vec<String>, usize)], held: &Holdings, queue: &str) -> usize {
    let runs = |q: &str| reserving.iter().any(|(qs, _)| qs.iter().any(|x| x == q));
    let mine: usize = reserving
        .iter()
        .filter(|(qs, _)| qs.iter().any(|q| q == queue))
        .map(|(_, n)| *n)
        .sum();
    if mine == 0 {
        return usize::MAX;
    }
    let all: usize = reserving.iter().map(|(_, n)| *n).sum();
    let held_all = held.items.iter().filter(|r| runs(&r.queue)).count()
        + held
            .asked
            .iter()
            .filter(|(q, _)| runs(q))
            .map(|(_, n)| *n)
            .sum::<usize>();
    mine.saturating_sub(held.of(queue))
        .min(all.saturating_sub(held_all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobsmith_core::Malformed;
    use std::time::Duration;

    fn received(queue: &str) -> Received {
        Received::new(
            queue.into(),
            0,
            "url".into(),
            "receipt".into(),
            JobId::new(),
            Err(Malformed {
                raw: Vec::new(),
                reason: String::new(),
            }),
            Timestamp::now(),
            Instant::now() + Duration::from_secs(30),
        )
    }

    fn queues(names: &[&str]) -> Vec<String> {
        names.iter().map(|q| (*q).to_owned()).collect()
    }

    #[test]
    fn no_bound_where_no_worker_reserves() {
        let inbox = Inbox::default();
        assert_eq!(inbox.claim("q", 10).n(), 10);
        inbox.start_reserving(&queues(&["other"]), 1);
        assert_eq!(inbox.claim("q", 10).n(), 10);
    }

    #[test]
    fn what_is_held_and_asked_for_leaves_what_the_worker_runs() {
        let inbox = Inbox::default();
        inbox.start_reserving(&queues(&["a", "b"]), 4);
        let first = inbox.claim("a", 3);
        assert_eq!(first.n(), 3);
        // The worker's two queues share what it runs.
        assert_eq!(inbox.room("b"), 1);
        inbox.fill(first, vec![received("a")]);
        assert_eq!(inbox.room("b"), 3, "the room the poll did not fill is free");
        let second = inbox.claim("b", 10);
        assert_eq!(second.n(), 3);
        assert_eq!(inbox.claim("a", 1).n(), 0, "nothing is left");
        drop(second);
        assert_eq!(
            inbox.room("a"),
            3,
            "a receive that failed gives its room back"
        );
        inbox.take_all(&queues(&["a"]));
        assert_eq!(inbox.room("a"), 4);
        inbox.stop_reserving(&queues(&["a", "b"]));
        assert_eq!(inbox.room("a"), usize::MAX);
    }

    #[test]
    fn one_worker_s_backlog_leaves_another_worker_its_room() {
        let inbox = Inbox::default();
        inbox.start_reserving(&queues(&["busy"]), 2);
        inbox.start_reserving(&queues(&["other"]), 2);
        let busy = inbox.claim("busy", 10);
        assert_eq!(busy.n(), 2, "a queue holds what its workers run");
        inbox.fill(busy, vec![received("busy"), received("busy")]);
        assert_eq!(inbox.claim("other", 10).n(), 2);
    }
}
