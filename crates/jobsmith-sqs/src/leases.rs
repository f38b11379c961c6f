//! Leases this process holds, and fencing.
//!
//! SQS does not fence: it accepts a delete or a visibility change made with
//! the receipt handle of an earlier receive, even after the message was
//! received again (moto 5.2 does; AWS documents no guarantee either way). So
//! the holder fences itself. Every receive records, on this process's
//! monotonic clock, an instant no later than the one at which SQS makes the
//! message visible again: the time the request was sent plus its visibility
//! timeout. SQS cannot deliver a message again before that instant. A
//! settlement (ack, retry, release, dead-letter, expire, extend) goes ahead
//! only while at least [`SETTLE_MARGIN`] of the lease is left, and is
//! refused (`Lost`) otherwise; so a request that goes ahead reaches SQS
//! before the message can have gone to anyone else, as long as it takes less
//! than the margin to get there. Each lease settles once: a second use is `Lost`.

use jobsmith_core::lock::LockExt;
use jobsmith_core::{Envelope, Lease, Malformed};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much of a lease must be left for a settlement to go ahead.
pub(crate) const SETTLE_MARGIN: Duration = Duration::from_millis(500);

/// One reserved message.
#[derive(Debug)]
pub(crate) struct Held {
    /// The level queue it came from.
    pub(crate) url: String,
    /// The receipt handle of this reservation.
    pub(crate) receipt: String,
    /// What was delivered, `attempt` counting this delivery.
    pub(crate) payload: Result<Envelope, Malformed>,
    /// When SQS may deliver it again, at the earliest.
    pub(crate) deadline: Instant,
}

/// The leases this process holds, by token (the receipt handle).
#[derive(Debug, Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<String, Held>>,
}

impl Leases {
    pub(crate) fn insert(&self, held: Held) {
        self.held
            .lock_unpoisoned()
            .insert(held.receipt.clone(), held);
    }

    /// Takes a lease's message for settling, if the lease still holds.
    pub(crate) fn take(&self, lease: &Lease) -> Option<Held> {
        let held = self.held.lock_unpoisoned().remove(&lease.token)?;
        (Instant::now() + SETTLE_MARGIN < held.deadline).then_some(held)
    }

    /// Puts back a message taken for a settlement that failed to reach SQS,
    /// so the settlement can be tried again.
    pub(crate) fn restore(&self, held: Held) {
        self.insert(held);
    }

    /// Whether a lease still holds; drops it when it does not.
    pub(crate) fn check(&self, lease: &Lease) -> Option<(String, String)> {
        let mut map = self.held.lock_unpoisoned();
        match map.get(&lease.token) {
            Some(h) if Instant::now() + SETTLE_MARGIN < h.deadline => {
                Some((h.url.clone(), h.receipt.clone()))
            }
            _ => {
                map.remove(&lease.token);
                None
            }
        }
    }

    /// Moves a lease's deadline after its visibility timeout was changed.
    pub(crate) fn extended(&self, lease: &Lease, deadline: Instant) {
        if let Some(h) = self.held.lock_unpoisoned().get_mut(&lease.token) {
            h.deadline = deadline;
        }
    }

    /// Forgets a lease (SQS refused to extend it).
    pub(crate) fn forget(&self, lease: &Lease) {
        self.held.lock_unpoisoned().remove(&lease.token);
    }
}
