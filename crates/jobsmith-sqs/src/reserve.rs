//! Reserving: sweeps of the priority levels, long polls, handing out with a
//! lease, and handing back what was received when a worker stops.

use crate::calls::{self, whole_seconds_up};
use crate::inbox::Received;
use crate::inner::Inner;
use crate::leases::{Held, SETTLE_MARGIN};
use crate::receive::EARLY;
use jobsmith_core::{Delivery, Error, Lease, Result, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stop waits for running receives to end, beyond the call
/// timeout: a long poll waits 20 s at most.
const POLLS_END: Duration = Duration::from_secs(21);

/// The queues that failed during one reserve call, each with its first error.
#[derive(Default)]
struct Failed(Vec<(String, Error)>);

impl Failed {
    fn has(&self, queue: &str) -> bool {
        self.0.iter().any(|(q, _)| q == queue)
    }

    fn add(&mut self, queue: String, e: Error) {
        if !self.has(&queue) {
            self.0.push((queue, e));
        }
    }

    /// An error to fail the call with, when every one of `queues` failed.
    fn all_of(&mut self, queues: &[String]) -> Option<Error> {
        if self.0.is_empty() || !queues.iter().all(|q| self.has(q)) {
            return None;
        }
        Some(self.0.swap_remove(0).1)
    }
}

/// How a sweep of one queue ended.
enum Swept {
    /// A level gave a full batch, or `max` jobs are due: the sweep is over.
    Full,
    /// Every level was asked: sweep the next queue.
    More,
}

impl Inner {
    /// Receives once from each level of `queues`, highest first, until `max`
    /// are due; stops at a level that gave a full batch (more may wait there,
    /// and lower levels must not pass it). The messages go to the inbox; a
    /// queue without room there ([`Inbox::claim`](crate::inbox::Inbox::claim))
    /// is passed over. One receive per level keeps batches small, so a
    /// worker's receives and its acks overlap instead of taking turns. A
    /// queue that fails is reported and added to `failed`, and the next
    /// queue is swept.
    async fn sweep(&self, queues: &[String], max: usize, visibility: u64, failed: &mut Failed) {
        for queue in queues {
            if failed.has(queue) {
                continue;
            }
            match self.sweep_one(queue, queues, max, visibility).await {
                Ok(Swept::Full) => return,
                Ok(Swept::More) => self.errors.worked(queue),
                Err(e) => {
                    self.errors.failed(queue, "receive", &e);
                    failed.add(queue.clone(), e);
                }
            }
        }
    }

    /// Sweeps the levels of one of `queues`: whether a level gave a full batch.
    async fn sweep_one(
        &self,
        queue: &str,
        queues: &[String],
        max: usize,
        visibility: u64,
    ) -> Result<Swept> {
        let family = self.queues.family(queue).await?;
        for (level, url) in family.levels_desc() {
            let need = max.saturating_sub(self.inbox.due_count(queues, Timestamp::now()));
            if need == 0 {
                return Ok(Swept::Full);
            }
            let claim = self.inbox.claim(queue, need.min(calls::BATCH));
            if claim.n() == 0 {
                return Ok(Swept::More);
            }
            let (msgs, sent) = self
                .receive(url, claim.n(), Duration::ZERO, visibility)
                .await?;
            let full = msgs.len() >= claim.n();
            let (got, failed) = self
                .sort_received(queue, level, url, msgs, sent, visibility)
                .await;
            self.inbox.fill(claim, got);
            if let Some(e) = failed {
                return Err(e);
            }
            if full {
                return Ok(Swept::Full);
            }
        }
        Ok(Swept::More)
    }

    /// Whether a reserve of `queues` that may wait a second or more sweeps
    /// before it long-polls: only when they span more than one level queue,
    /// where the sweep takes the levels in order. With one level queue a long
    /// poll alone does the same work (it answers at once when messages are
    /// visible, as a sweep would) and saves the receive a sweep makes when
    /// the queue is empty: one request per idle reserve, in the common case
    /// of a queue without priorities. (A shorter wait always sweeps: a long
    /// poll waits whole seconds.)
    /// A queue whose family cannot be read counts as needing the sweep,
    /// which reports it.
    async fn sweep_needed(&self, queues: &[String]) -> bool {
        let mut levels = 0;
        for queue in queues {
            match self.queues.family(queue).await {
                Ok(family) => levels += family.levels.len(),
                Err(_) => return true,
            }
            if levels > 1 {
                return true;
            }
        }
        false
    }

    /// Starts a long poll on every level of `queues` that has none running,
    /// but for the queues that `failed` (a queue whose family cannot be read
    /// is reported and added to them). The room the inbox has for a queue
    /// is shared out between its levels, highest first, each asking for at
    /// most `max`; a level left without room is not polled, and is swept by
    /// the next reserve.
    async fn start_polls(
        self: &Arc<Self>,
        queues: &[String],
        max: usize,
        wait: Duration,
        visibility: u64,
        failed: &mut Failed,
    ) {
        let mut idle = Vec::new();
        for queue in queues {
            if failed.has(queue) {
                continue;
            }
            match self.queues.family(queue).await {
                Ok(family) => idle.extend(
                    family
                        .levels_desc()
                        .filter(|(_, url)| !self.inbox.is_polling(url))
                        .map(|(level, url)| (queue, level, url.clone())),
                ),
                Err(e) => {
                    self.errors.failed(queue, "receive", &e);
                    failed.add(queue.clone(), e);
                }
            }
        }
        let wait = Duration::from_secs(whole_seconds_up(wait).min(20));
        let mut left = idle.len();
        for (queue, level, url) in idle {
            let share = self.inbox.room(queue).div_ceil(left);
            left -= 1;
            let claim = self.inbox.claim(queue, share.min(max).min(calls::BATCH));
            if claim.n() == 0 || !self.inbox.start_poll(&url, queue) {
                continue;
            }
            let me = Arc::clone(self);
            let queue = queue.clone();
            tokio::spawn(async move {
                let failed = match me.receive(&url, claim.n(), wait, visibility).await {
                    Ok((msgs, sent)) => {
                        let (got, failed) = me
                            .sort_received(&queue, level, &url, msgs, sent, visibility)
                            .await;
                        me.inbox.fill(claim, got);
                        failed
                    }
                    Err(e) => {
                        drop(claim);
                        Some(e)
                    }
                };
                me.inbox.end_poll(&url, failed.map(|e| (queue, e)));
            });
        }
    }

    /// Hands out received messages with a lease of `lease`: extends those
    /// whose visibility is shorter, and records each lease. Messages of an
    /// SQS queue whose extension failed wait in the inbox for the next
    /// reserve, and the others are handed out; the call fails only when
    /// nothing could be.
    async fn hand_out(&self, taken: Vec<Received>, lease: Duration) -> Result<Vec<Delivery>> {
        let want = Instant::now() + lease;
        let mut short: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in taken.iter().enumerate() {
            if r.deadline < want {
                short.entry(r.url.as_str()).or_default().push(i);
            }
        }
        let mut deadlines: Vec<Option<Instant>> = taken.iter().map(|r| Some(r.deadline)).collect();
        let mut kept = vec![false; taken.len()];
        let secs = whole_seconds_up(lease);
        let mut failed = None;
        for (url, idx) in &short {
            let receipts: Vec<&str> = idx.iter().map(|&i| taken[i].receipt.as_str()).collect();
            let sent = Instant::now();
            match calls::change_visibility(&self.client, url, &receipts, secs).await {
                Ok(ok) => {
                    for (&i, ok) in idx.iter().zip(ok) {
                        deadlines[i] = ok.then(|| sent + Duration::from_secs(secs));
                    }
                }
                Err(e) => {
                    if let Some(&i) = idx.first() {
                        self.errors.failed(&taken[i].queue, "receive", &e);
                    }
                    for &i in idx {
                        kept[i] = true;
                    }
                    failed.get_or_insert(e);
                }
            }
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut out = Vec::with_capacity(taken.len());
        let mut back = Vec::new();
        for ((r, deadline), kept) in taken.into_iter().zip(deadlines).zip(kept) {
            if kept {
                // Nothing is lost: the message waits for the next reserve.
                back.push(r);
                continue;
            }
            let Some(deadline) = deadline else { continue };
            let lease = Lease {
                id: r.id,
                queue: r.queue,
                token: r.receipt.clone(),
                expires_at: wall.plus(deadline.saturating_duration_since(now)),
            };
            self.leases.insert(Held {
                url: r.url,
                receipt: r.receipt,
                payload: r.payload.clone(),
                deadline,
            });
            out.push(Delivery {
                lease,
                envelope: r.payload,
            });
        }
        self.inbox.put(back);
        match failed {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    pub(crate) async fn reserve(
        self: &Arc<Self>,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mark = self.interrupt.mark();
        // Covers the second a job may be held before it is due.
        let visibility = whole_seconds_up(lease) + EARLY.as_secs();
        let mut swept = false;
        // Queues that failed in this call: reported, and left alone until the
        // next call (no sweep, no poll), so that the others are served.
        let mut failed = Failed::default();
        loop {
            let notified = self.inbox.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let new_level = self.queues.levels_changed.notified();
            tokio::pin!(new_level);
            new_level.as_mut().enable();
            if !swept {
                swept = true;
                if wait < Duration::from_secs(1) || self.sweep_needed(queues).await {
                    self.sweep(queues, max, visibility, &mut failed).await;
                }
            }
            let taken = self
                .inbox
                .take(queues, max, Timestamp::now(), SETTLE_MARGIN);
            if !taken.is_empty() {
                let out = self.hand_out(taken, lease).await?;
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            for (queue, e) in self.inbox.take_errors() {
                self.errors.failed(&queue, "receive", &e);
                if queues.contains(&queue) {
                    failed.add(queue, e);
                }
            }
            if let Some(e) = failed.all_of(queues) {
                return Err(e);
            }
            let now = tokio::time::Instant::now();
            // After a stop no poll starts: what one brought in would be held
            // by a process on its way out.
            if now >= deadline || self.interrupt.has_fired(mark) {
                return Ok(Vec::new());
            }
            self.start_polls(queues, max, deadline - now, visibility, &mut failed)
                .await;
            let mut until = deadline;
            if let Some(due) = self.inbox.next_due(queues) {
                until = until.min(now + due.until_now() + Duration::from_millis(1));
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut new_level => {}
                () = tokio::time::sleep_until(until) => {}
                () = self.interrupt.fired(mark) => return Ok(Vec::new()),
            }
        }
    }

    /// Ends waiting reserves, waits for the polls of `queues` to end, and
    /// hands back, uncounted, every message of theirs received and not
    /// reserved: a copy with the attempt as stored, and the received one
    /// deleted, as a release does (SQS counts every receive, so a message
    /// made visible again would come back one attempt on).
    pub(crate) async fn stop_reserving(&self, queues: &[String]) -> Result<()> {
        self.interrupt.fire();
        let until = tokio::time::Instant::now() + POLLS_END + self.config.call_timeout();
        let mut first_error = None;
        loop {
            let notified = self.inbox.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let polling = self.inbox.polling_any(queues);
            // What the polls brought so far goes back now: a poll still
            // waiting on another queue must not hold it for its whole wait.
            if let Err(e) = self.hand_back(self.inbox.take_all(queues)).await {
                first_error.get_or_insert(e);
            }
            if !polling {
                break;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                tracing::warn!("a receive did not end in time; what it brings in returns when its visibility timeout runs out");
                break;
            }
        }
        self.inbox.stop_reserving(queues);
        first_error.map_or(Ok(()), Err)
    }

    /// Makes received messages visible again at once, without counting
    /// the receive as an attempt.
    async fn hand_back(&self, received: Vec<Received>) -> Result<()> {
        if received.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let leases: Vec<Lease> = received
            .into_iter()
            .map(|r| {
                let lease = Lease {
                    id: r.id,
                    queue: r.queue,
                    token: r.receipt.clone(),
                    expires_at: wall.plus(r.deadline.saturating_duration_since(now)),
                };
                self.leases.insert(Held {
                    url: r.url,
                    receipt: r.receipt,
                    payload: r.payload,
                    deadline: r.deadline,
                });
                lease
            })
            .collect();
        // A message too close to its visibility's end is refused here, and
        // SQS delivers it again as it would have anyway.
        self.release(&leases).await.map(drop)
    }
}
