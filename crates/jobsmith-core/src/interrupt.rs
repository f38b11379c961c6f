//! [`Interrupt`]: how [`Backend::stop_reserving`](crate::Backend::stop_reserving)
//! wakes the reserves that are waiting in a backend.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// Wakes the reserves waiting in one backend when a worker stops.
///
/// A reserve takes a [`mark`](Interrupt::mark) when it starts and waits on
/// [`fired`](Interrupt::fired) beside its broker wake-up; once
/// [`fire`](Interrupt::fire) is called, every reserve that started before
/// returns with what it holds, and reserves that start later wait as usual.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let interrupt = jobsmith_core::Interrupt::default();
/// let mark = interrupt.mark();
/// interrupt.fire();
/// interrupt.fired(mark).await; // returns at once
/// assert!(!interrupt.has_fired(interrupt.mark()));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Interrupt {
    epoch: AtomicU64,
    notify: Notify,
}

impl Interrupt {
    /// Taken by a reserve as it starts.
    pub fn mark(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Wakes every reserve that took its mark before this call.
    pub fn fire(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether [`fire`](Interrupt::fire) was called since `mark` was taken.
    pub fn has_fired(&self, mark: u64) -> bool {
        self.epoch.load(Ordering::SeqCst) != mark
    }

    /// Completes once [`fire`](Interrupt::fire) was called since `mark` was taken.
    pub async fn fired(&self, mark: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a fire between the two is not missed.
            notified.as_mut().enable();
            if self.has_fired(mark) {
                return;
            }
            notified.await;
        }
    }
}
