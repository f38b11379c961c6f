//! What the worker's tasks share: the running, waiting and settling jobs'
//! leases, the report's counters, and the mean run time that sizes taking ahead.

use super::outcome::Settle;
use super::WorkerReport;
use crate::backend::{Backend, Lease, LeaseStatus};
use crate::context::StateMap;
use crate::lock::LockExt;
use crate::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// A counter in the worker's report.
#[derive(Debug, Default)]
pub(super) struct Counter(AtomicU64);

impl Counter {
    pub(super) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) started: Counter,
    pub(super) succeeded: Counter,
    pub(super) retried: Counter,
    pub(super) dead: Counter,
    pub(super) expired: Counter,
    pub(super) released: Counter,
    pub(super) lost: Counter,
    pub(super) reserves: Counter,
}

/// The `queue` label of a job from a queue the worker does not reserve from.
const UNKNOWN_QUEUE: &str = "unknown";

/// A running job's lease, the sender that asks it to stop, and when it started.
pub(super) type Running = (Arc<Lease>, watch::Sender<bool>, std::time::Instant);

/// What the worker's tasks share.
pub(super) struct Shared {
    pub(super) backend: Arc<dyn Backend>,
    pub(super) registry: Registry,
    /// The queues this worker reserves from: the only `queue` label values it records.
    pub(super) queues: Vec<String>,
    pub(super) state: Arc<StateMap>,
    pub(super) lease: Duration,
    pub(super) counters: Counters,
    /// Running jobs by slot number, with the sender that cancels each.
    pub(super) running: Mutex<HashMap<u64, Running>>,
    pub(super) next_slot: AtomicU64,
    pub(super) settle_tx: mpsc::UnboundedSender<Settle>,
    pub(super) unsettled: AtomicUsize,
    /// Finished jobs' leases by slot, until the settler has reported them: the
    /// heartbeat keeps extending them, so a slow settlement (a broker slow to
    /// confirm) does not let a finished job's lease run out and run it again.
    pub(super) settling: Mutex<HashMap<u64, Lease>>,
    /// Set when the grace period ran out and running jobs were cancelled:
    /// what they return then is not an outcome, and they go back uncounted.
    pub(super) past_grace: AtomicBool,
    /// Jobs taken ahead of a free slot, by slot number, until they start:
    /// whoever takes one out (its task, to run it; the stop, to hand it
    /// back) owns it.
    pub(super) waiting: Mutex<HashMap<u64, Lease>>,
    /// Jobs taken and not finished: running, waiting for a slot, or about to.
    pub(super) in_hand: AtomicUsize,
    /// Told each time a job leaves `in_hand`.
    pub(super) freed: Notify,
    /// Told when the reserve loop's wait for just-handed-out jobs to start
    /// can end: `waiting` has emptied, or a job took the last free slot.
    pub(super) started: Notify,
    /// A moving mean of how long a job runs, in microseconds; `u64::MAX`
    /// until the first one has run.
    pub(super) mean_run_us: AtomicU64,
}

/// How long a job taken ahead may expect to wait for a slot: the worker takes
/// ahead only as many jobs as its slots run in this time.
pub(super) const AHEAD_WAIT: Duration = Duration::from_millis(10);

impl Shared {
    /// Records a running job; returns its slot for [`Shared::untrack`].
    pub(super) fn track(&self, lease: Arc<Lease>, cancel: watch::Sender<bool>) -> u64 {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        self.running
            .lock_unpoisoned()
            .insert(slot, (lease, cancel, std::time::Instant::now()));
        slot
    }

    pub(super) fn untrack(&self, slot: u64) {
        self.running.lock_unpoisoned().remove(&slot);
    }

    /// Hands a finished job's outcome to the settler; its lease stays extended until then.
    pub(super) fn send(&self, settle: Settle) {
        self.unsettled.fetch_add(1, Ordering::SeqCst);
        self.settling
            .lock_unpoisoned()
            .insert(settle.slot, settle.lease.clone());
        if let Err(unsent) = self.settle_tx.send(settle) {
            self.settling.lock_unpoisoned().remove(&unsent.0.slot);
            self.unsettled.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The settler has reported the outcomes of `slots`.
    pub(super) fn settled(&self, slots: &[u64]) {
        let mut settling = self.settling.lock_unpoisoned();
        for slot in slots {
            settling.remove(slot);
        }
        drop(settling);
        self.unsettled.fetch_sub(slots.len(), Ordering::SeqCst);
    }

    /// Records how long a job ran, for [`Shared::ahead`].
    pub(super) fn ran_for(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1);
        let _ = self
            .mean_run_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                Some(if mean == u64::MAX {
                    us
                } else {
                    // An eighth of the way to the new figure: a few slow jobs
                    // stop the taking ahead within a few dozen.
                    (mean - mean / 8).saturating_add(us / 8)
                })
            });
    }

    /// How many jobs to take ahead of the free slots: as many as the slots
    /// run in [`AHEAD_WAIT`] at the jobs' mean run time, at most `most`, and
    /// none before a job has run. A slot whose job has run longer than that
    /// counts for nothing. Short jobs then arrive in big batches, and long
    /// ones never wait in one process while another has free slots.
    pub(super) fn ahead(&self, concurrency: usize, most: usize) -> usize {
        let mean = self.mean_run_us.load(Ordering::Relaxed);
        if mean == u64::MAX || most == 0 {
            return 0;
        }
        let stuck = self
            .running
            .lock_unpoisoned()
            .values()
            .filter(|(.., started)| started.elapsed() > AHEAD_WAIT)
            .count();
        let runs = u128::from(u64::try_from(AHEAD_WAIT.as_micros()).unwrap_or(u64::MAX))
            * concurrency.saturating_sub(stuck) as u128
            / u128::from(mean.max(1));
        usize::try_from(runs).unwrap_or(usize::MAX).min(most)
    }

    /// Takes the lease of a job waiting for a slot: to start it, to hand it
    /// back at the stop, or to forget it once lost (it runs elsewhere).
    /// `None` when one of those took it first.
    ///
    /// `last_slot`: the caller holds the last free slot. The reserve loop
    /// waits while jobs wait and slots are free, so it is woken only when
    /// that ends, not once per job.
    pub(super) fn take_waiting(&self, slot: u64, last_slot: bool) -> Option<Lease> {
        let (lease, emptied) = {
            let mut waiting = self.waiting.lock_unpoisoned();
            let lease = waiting.remove(&slot);
            (lease, waiting.is_empty())
        };
        if lease.is_some() && (emptied || last_slot) {
            self.started.notify_one();
        }
        lease
    }

    /// A job has left the worker's hands.
    pub(super) fn done_with(&self) {
        self.in_hand.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_one();
    }

    /// The running jobs' slots and leases.
    pub(super) fn running_leases(&self) -> (Vec<u64>, Vec<Lease>) {
        self.running
            .lock_unpoisoned()
            .iter()
            .map(|(slot, (lease, ..))| (*slot, Lease::clone(lease)))
            .unzip()
    }

    /// The leases to keep alive, by slot: running jobs', jobs' waiting for
    /// a slot, and finished jobs' whose outcomes are not reported yet.
    pub(super) fn live_leases(&self) -> (Vec<u64>, Vec<Lease>) {
        let mut out = self.running_leases();
        for map in [&self.waiting, &self.settling] {
            for (slot, lease) in map.lock_unpoisoned().iter() {
                out.0.push(*slot);
                out.1.push(lease.clone());
            }
        }
        out
    }

    /// Asks the job in `slot`, if it still runs, to stop; false when it does not run.
    pub(super) fn cancel(&self, slot: u64) -> bool {
        match self.running.lock_unpoisoned().get(&slot) {
            Some((_, tx, _)) => {
                tx.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Counts a settlement of `lease`'s job; true when it took effect.
    pub(super) fn count(&self, status: LeaseStatus, what: &str, lease: &Lease) -> bool {
        if status == LeaseStatus::Lost {
            tracing::warn!(
                job.id = %crate::printable::printable(lease.id.as_str()),
                queue = %crate::printable::printable(&lease.queue),
                "{what} refused: the lease was lost and the job may run elsewhere"
            );
            metrics::counter!("jobsmith_leases_lost_total").increment(1);
            self.counters.lost.inc();
            return false;
        }
        true
    }

    /// The `queue` label of a job taken from `queue`: the name when this
    /// worker reserves from it, else `unknown`, so that a backend cannot grow
    /// the series with names it makes up.
    pub(super) fn queue_label(&self, queue: &str) -> String {
        if self.queues.iter().any(|q| q == queue) {
            queue.to_owned()
        } else {
            UNKNOWN_QUEUE.to_owned()
        }
    }

    pub(super) fn report(&self) -> WorkerReport {
        let c = &self.counters;
        WorkerReport {
            started: c.started.get(),
            succeeded: c.succeeded.get(),
            retried: c.retried.get(),
            dead: c.dead.get(),
            expired: c.expired.get(),
            released: c.released.get(),
            lost_leases: c.lost.get(),
            reserves: c.reserves.get(),
        }
    }
}
