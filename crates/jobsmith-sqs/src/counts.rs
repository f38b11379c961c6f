//! Processed and failed totals shared by every process, in the key table.
//!
//! SQS counts nothing per outcome, so the totals live in DynamoDB, one item
//! per queue in the key table (see `unique.rs`). Settling a job only adds to
//! the process's [`Tally`](jobsmith_core::Tally); about once a second a
//! background task adds the tally's deltas to the items (`UpdateItem` with
//! `ADD`, atomic, one call per queue that has any), and so does `stats`
//! before it reads them, and the worker when it stops ([`Backend::flush`]).
//! A delta whose write fails stays pending for the next flush; one whose
//! answer was lost after DynamoDB applied it is added again, and counts
//! twice. A process that dies loses what it had not flushed, at most its
//! last second. When the totals cannot be read, `stats` reports them as
//! unknown (`None`) and logs why, and its other counts stand.
//!
//! [`Backend::flush`]: jobsmith_core::Backend::flush

use crate::inner::Inner;
use futures_util::future::join_all;
use jobsmith_core::{Outcomes, Result};

impl Inner {
    /// Adds this process's pending counts to the shared totals.
    pub(crate) async fn flush_counts(&self) -> Result<()> {
        let _turn = self.flushing.lock().await;
        self.flush_counts_locked().await
    }

    /// [`Inner::flush_counts`], for a caller that holds `flushing`. Counts
    /// that could not be written stay pending.
    async fn flush_counts_locked(&self) -> Result<()> {
        let pending = self.tally.take();
        if pending.is_empty() {
            return Ok(());
        }
        let written = join_all(pending.iter().map(|(q, o)| self.keys.add_counts(q, *o))).await;
        let mut first_err = None;
        for ((q, o), w) in pending.iter().zip(written) {
            if let Err(e) = w {
                self.tally.restore(q, *o);
                first_err = first_err.or(Some(e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The totals of each of `queues` counted by every process, this
    /// process's included; `None` for all when they could not be read.
    pub(crate) async fn read_counts(&self, queues: &[String]) -> Option<Vec<Outcomes>> {
        // Nothing of ours is in flight while the totals are read.
        let _turn = self.flushing.lock().await;
        if let Err(e) = self.flush_counts_locked().await {
            tracing::debug!(error = %e, "could not flush outcome counts before reading them; adding ours as pending");
        }
        match self.keys.read_counts(queues).await {
            Ok(totals) => Some(
                queues
                    .iter()
                    .zip(totals)
                    .map(|(q, t)| t.plus(self.tally.pending(q)))
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, table = %self.keys.table(), "could not read the processed and failed totals; they are unknown this time");
                None
            }
        }
    }
}
