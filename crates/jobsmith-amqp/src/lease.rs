//! Leases on top of unacknowledged deliveries: expiry, fencing, reconnects.
//!
//! The broker holds a delivered message until it is acked or its channel
//! closes; the lease (a token, an expiry) lives in this process. When a lease
//! runs out, the reaper republishes the job to its work queue with the lost
//! attempt counted and acks the delivery, and the token is gone: every later
//! operation with it is refused. A lease whose connection died is kept as an
//! orphan: if the broker redelivers the job to this process, the lease moves
//! onto the new delivery, so the worker can still settle it.

use crate::inner::Inner;
use crate::message::{self, Outgoing};
use crate::state::Held;
use jobsmith_core::lock::LockExt;
use jobsmith_core::Timestamp;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

impl Inner {
    /// The message that puts a held job back in line, ready now, as it stands.
    pub(crate) fn requeue_message(&self, held: &Held) -> Outgoing {
        self.requeue_message_counting(held, true)
    }

    /// [`Inner::requeue_message`], with this delivery's attempt counted or not.
    pub(crate) fn requeue_message_counting(&self, held: &Held, count: bool) -> Outgoing {
        match &held.payload {
            Ok(env) => {
                let now = Timestamp::now();
                let mut env = env.clone();
                if !count {
                    env.attempt = env.attempt.saturating_sub(1);
                }
                env.run_at = env.run_at.min(now);
                message::job(&self.names, &env, now)
            }
            Err(m) => message::raw(&self.names, &held.queue, m.raw.clone(), held.priority),
        }
    }

    /// Requeues the jobs whose leases ran out; returns when the next one will.
    async fn reap(self: &Arc<Self>) -> Option<Timestamp> {
        let now = Timestamp::now();
        let expired: Vec<Held> = {
            let mut st = self.state.lock_unpoisoned();
            let mut out = Vec::new();
            while let Some((at, _)) = st.expiry.first() {
                if *at > now {
                    break;
                }
                let (_, token) = st.expiry.pop_first().expect("checked non-empty");
                if let Some(h) = st.leases.remove(&token) {
                    st.forget(&h);
                    out.push(h);
                }
            }
            out
        };
        if !expired.is_empty() {
            if let Some(link) = self.current() {
                // A parked lease's copy goes back to the work queue by itself when its TTL runs out.
                let live: Vec<&Held> = expired
                    .iter()
                    .filter(|h| h.gen == link.gen && h.parked.is_none())
                    .collect();
                let msgs = live.iter().map(|h| self.requeue_message(h)).collect();
                let tags = live.iter().map(|h| h.tag).collect();
                if let Err(e) = self.replace(&link, msgs, tags).await {
                    tracing::warn!(error = %e, "could not requeue jobs whose lease ran out; the broker returns them");
                }
                tracing::debug!(count = live.len(), "leases ran out; jobs requeued");
            }
        }
        self.state
            .lock_unpoisoned()
            .expiry
            .first()
            .map(|(at, _)| *at)
    }
}

/// Runs [`Inner::reap`] whenever a lease may have run out, and
/// [`Inner::hand_over`] every [`Inner::handover_every`]. Ends when the backend is dropped.
pub(crate) async fn reaper(weak: Weak<Inner>, notify: Arc<Notify>) {
    let mut handed_over = std::time::Instant::now();
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (next, every) = {
            let Some(inner) = weak.upgrade() else { return };
            let next = inner.reap().await;
            let every = inner.handover_every();
            if handed_over.elapsed() >= every {
                inner.hand_over().await;
                handed_over = std::time::Instant::now();
            }
            (next, every)
        };
        let sleep = next.map_or(Duration::from_secs(1), |at| {
            at.until_now() + Duration::from_millis(1)
        });
        let _ = tokio::time::timeout(sleep.min(every), notified).await;
    }
}
