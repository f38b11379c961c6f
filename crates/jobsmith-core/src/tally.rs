//! [`Tally`]: outcome counts kept in the process until a backend adds them to
//! counters every process shares.
//!
//! For backends whose broker has no cheap atomic counter on the settle path
//! (RabbitMQ, SQS): settling a job adds to the tally under one short lock, and
//! the backend adds the tally to the shared counters in the background, about
//! once a second, and before it answers [`Backend::stats`](crate::Backend::stats).

use crate::lock::LockExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often [`flush_periodically`] adds a tally to the shared totals.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Calls `flush` on the value behind `weak` every [`FLUSH_EVERY`] while the
/// tally `tally` gives holds counts, until the value is dropped. A failed
/// flush keeps its counts (the backend restores them) and is logged once per
/// run of failures, not once a second.
pub async fn flush_periodically<T, F, Fut>(weak: Weak<T>, tally: fn(&T) -> &Tally, flush: F)
where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = crate::Result<()>>,
{
    let mut failing = false;
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let Some(inner) = weak.upgrade() else { return };
        if tally(&inner).is_empty() {
            continue;
        }
        match flush(inner).await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e.describe(), "could not add outcome counts to the shared totals; they are kept and tried again");
                }
                failing = true;
            }
        }
    }
}

/// Jobs completed and failed attempts of one queue: a total, or a delta to add to one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Jobs acked.
    pub processed: u64,
    /// Attempts retried or dead-lettered.
    pub failed: u64,
}

impl Outcomes {
    /// Whether both counts are zero.
    pub fn is_zero(&self) -> bool {
        self.processed == 0 && self.failed == 0
    }

    /// The sum of both, count by count (saturating).
    #[must_use]
    pub fn plus(self, other: Outcomes) -> Outcomes {
        Outcomes {
            processed: self.processed.saturating_add(other.processed),
            failed: self.failed.saturating_add(other.failed),
        }
    }
}

/// Per-queue [`Outcomes`] settled in this process and not yet added to the
/// shared counters.
///
/// Counting takes one lock and, once a queue has been seen, allocates
/// nothing: [`Tally::take`] zeroes the entries it hands out instead of
/// removing them.
#[derive(Debug, Default)]
pub struct Tally {
    pending: Mutex<HashMap<String, Outcomes>>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one completed job per queue name given (a name once per job).
    pub fn processed<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        const ONE: Outcomes = Outcomes {
            processed: 1,
            failed: 0,
        };
        let mut pending = self.pending.lock_unpoisoned();
        for q in queues {
            add(&mut pending, q, ONE);
        }
    }

    /// Counts one failed attempt (a retry or a dead letter) of `queue`.
    pub fn failed(&self, queue: &str) {
        const ONE: Outcomes = Outcomes {
            processed: 0,
            failed: 1,
        };
        add(&mut self.pending.lock_unpoisoned(), queue, ONE);
    }

    /// Takes every non-zero count, leaving zeroes: what a flush writes.
    pub fn take(&self) -> Vec<(String, Outcomes)> {
        let mut pending = self.pending.lock_unpoisoned();
        let mut out = Vec::new();
        for (q, o) in pending.iter_mut() {
            if !o.is_zero() {
                out.push((q.clone(), std::mem::take(o)));
            }
        }
        out
    }

    /// Puts back counts that [`Tally::take`] took and a flush could not write.
    pub fn restore(&self, queue: &str, o: Outcomes) {
        add(&mut self.pending.lock_unpoisoned(), queue, o);
    }

    /// The counts of `queue` not written yet.
    pub fn pending(&self, queue: &str) -> Outcomes {
        self.pending
            .lock_unpoisoned()
            .get(queue)
            .copied()
            .unwrap_or_default()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.pending
            .lock_unpoisoned()
            .values()
            .all(Outcomes::is_zero)
    }
}

/// Adds `o` to the counts of `q`; allocates only for a queue not seen before.
fn add(pending: &mut HashMap<String, Outcomes>, q: &str, o: Outcomes) {
    if let Some(e) = pending.get_mut(q) {
        *e = e.plus(o);
    } else {
        pending.insert(q.to_owned(), o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_hands_out_what_was_counted_once() {
        let t = Tally::new();
        assert!(t.is_empty());
        t.processed(["a", "a", "b"]);
        t.failed("b");
        let mut got = t.take();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![
                (
                    "a".to_owned(),
                    Outcomes {
                        processed: 2,
                        failed: 0
                    }
                ),
                (
                    "b".to_owned(),
                    Outcomes {
                        processed: 1,
                        failed: 1
                    }
                ),
            ]
        );
        assert!(t.is_empty(), "taken counts are not handed out again");
        assert!(t.take().is_empty());
    }

    #[test]
    fn restored_counts_add_to_new_ones() {
        let t = Tally::new();
        t.processed(["a"]);
        let taken = t.take();
        t.failed("a");
        for (q, o) in taken {
            t.restore(&q, o);
        }
        assert_eq!(
            t.pending("a"),
            Outcomes {
                processed: 1,
                failed: 1
            }
        );
    }
}
