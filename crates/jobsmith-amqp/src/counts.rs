//! Processed and failed totals shared by every process, kept in RabbitMQ itself.
//!
//! AMQP has no atomic counter, so a queue's totals are the sum of the
//! messages in its counter queue `p.q.counts` (durable, lazy): each message
//! carries a number of acks and a number of failed attempts in its headers.
//! Settling a job only adds to the process's [`Tally`](jobsmith_core::Tally);
//! about once a second a background task publishes the tally's deltas, one
//! small confirmed message per queue that has any, and so does `stats`
//! before it reads, and the worker when it stops ([`Backend::flush`]).
//!
//! Reading a total merges the counter queue: under the queue's lock, take
//! every message with `basic.get` (manual ack), publish ONE confirmed message
//! holding their sum, then ack what was taken. The lock is an exclusive
//! consumer on the empty queue `p.q.counts.lock`, on the same channel as the
//! gets: RabbitMQ refuses a second exclusive consumer (`ACCESS_REFUSED`), and
//! when the channel closes, however the holder ends, the broker frees the
//! lock and puts back whatever it took and had not acked. So a merger sees
//! every message (no other merger holds any), and its sum is the total at
//! that moment, counts flushed while it worked aside (they are later). A
//! reader that finds the lock taken waits for the other merge to end, up to
//! [`LOCK_WAIT`], then reports the total as unknown (`None`) rather than a
//! short one. A flush also merges, folding its own deltas in, once the
//! counter queue holds [`MERGE_AT`] messages or more, so the queue stays
//! small even when nobody reads it; a flush that finds the lock taken just
//! publishes its deltas.
//!
//! What can go wrong: publish before ack means a merger that dies (or loses
//! its connection) between the two leaves the sum and the messages it summed
//! (they go back to the queue): those count twice; nothing is ever lost. A
//! process that dies loses the counts it had not flushed, at most its last
//! second. A publish whose confirm is lost is published again with the next
//! flush, and may count twice.
//!
//! [`Backend::flush`]: jobsmith_core::Backend::flush

use crate::call::Calls;
use crate::error::from_lapin;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, header_u64, Outgoing};
use crate::topology::passive_count;
use futures_util::future::{join_all, try_join_all};
use jobsmith_core::{Outcomes, Result};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The header holding a count message's acks.
const PROCESSED: &str = "x-jobsmith-processed";
/// The header holding a count message's failed attempts.
const FAILED: &str = "x-jobsmith-failed";

/// A flush merges the counter queue once it holds this many messages.
pub(crate) const MERGE_AT: u32 = 100;

/// At most this many messages are merged per round; a reader goes on with
/// more rounds until one empties the queue.
const ROUND: usize = 10_000;

/// `basic.get` requests sent at once, answered in order.
const GETS_AT_ONCE: usize = 32;

/// How long a reader waits for another process's merge before it answers `None`.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(3);

/// How a merge went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// Merged, with what was added. `complete`: the queue was emptied, so
    /// `total` is the queue's whole total at that moment.
    Done { total: Outcomes, complete: bool },
    /// Another process holds the lock.
    Busy,
}

/// A message adding `o` to the totals of `q`.
fn count_message(inner: &Inner, q: &str, o: Outcomes) -> Outgoing {
    let mut m = message::to_queue(inner.names.counts(q), Vec::new());
    let mut headers = FieldTable::default();
    let n = |v: u64| AMQPValue::LongLongInt(i64::try_from(v).unwrap_or(i64::MAX));
    headers.insert(PROCESSED.into(), n(o.processed));
    headers.insert(FAILED.into(), n(o.failed));
    m.props = m.props.with_headers(headers);
    m
}

/// What one count message adds (nothing, for a message without the headers).
fn outcomes_of(props: &BasicProperties) -> Outcomes {
    Outcomes {
        processed: header_u64(props, PROCESSED).unwrap_or(0),
        failed: header_u64(props, FAILED).unwrap_or(0),
    }
}

fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 403)
}

impl Inner {
    /// Adds this process's pending counts to the counter queues.
    pub(crate) async fn flush_counts(self: &Arc<Self>) -> Result<()> {
        let _turn = self.flushing.lock().await;
        self.flush_counts_locked().await
    }

    /// [`Inner::flush_counts`], for a caller that holds `flushing`. Counts
    /// that could not be written stay pending.
    pub(crate) async fn flush_counts_locked(self: &Arc<Self>) -> Result<()> {
        let pending = self.tally.take();
        if pending.is_empty() {
            return Ok(());
        }
        let mut written = vec![false; pending.len()];
        let result = self.write_counts(&pending, &mut written).await;
        for ((q, o), done) in pending.iter().zip(written) {
            if !done {
                self.tally.restore(q, *o);
            }
        }
        result
    }

    async fn write_counts(
        self: &Arc<Self>,
        pending: &[(String, Outcomes)],
        written: &mut [bool],
    ) -> Result<()> {
        let link = self.link().await?;
        for (q, _) in pending {
            self.ensure_queue(&link, q).await?;
        }
        let sizes = {
            let ch = link.admin().await?;
            // Requests on one channel are answered in order: send them all, then read the answers.
            try_join_all(
                pending
                    .iter()
                    .map(|(q, _)| passive_count(&link.calls, &ch, self.names.counts(q))),
            )
            .await?
        };
        let mut plain = Vec::new();
        for (i, ((q, o), size)) in pending.iter().zip(sizes).enumerate() {
            if size >= MERGE_AT {
                match self.merge(&link, q, *o).await {
                    Ok(Merge::Done { .. }) => {
                        written[i] = true;
                        continue;
                    }
                    Ok(Merge::Busy) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, queue = %q, "could not merge outcome counts; publishing them as they are");
                    }
                }
            }
            plain.push(i);
        }
        if plain.is_empty() {
            return Ok(());
        }
        let msgs = plain
            .iter()
            .map(|&i| count_message(self, &pending[i].0, pending[i].1))
            .collect();
        message::publish_confirmed(&link.calls, &link.publish, msgs).await?;
        for i in plain {
            written[i] = true;
        }
        Ok(())
    }

    /// The totals of `q` counted by every process: merges its counter
    /// queue, waiting up to [`LOCK_WAIT`] for another process's merge to
    /// end; `None` if it did not.
    pub(crate) async fn read_counts(
        self: &Arc<Self>,
        link: &Link,
        q: &str,
    ) -> Result<Option<Outcomes>> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match self.merge(link, q, Outcomes::default()).await? {
                Merge::Done {
                    total,
                    complete: true,
                } => return Ok(Some(total)),
                Merge::Done { .. } => {}
                Merge::Busy if Instant::now() >= deadline => {
                    tracing::warn!(queue = %q, wait_ms = LOCK_WAIT.as_millis() as u64, "another process kept merging the outcome counts; processed and failed are unknown this time");
                    return Ok(None);
                }
                Merge::Busy => {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(5..=20))).await;
                }
            }
        }
    }

    /// Merges the counter queue of `q`, plus `add`, into one message, on a
    /// channel of its own that is closed afterwards: the close frees the
    /// lock and puts back anything taken and not acked.
    async fn merge(&self, link: &Link, q: &str, add: Outcomes) -> Result<Merge> {
        let ch = link.scratch().await?;
        let result = self.merge_on(&link.calls, &ch, q, add).await;
        match result {
            Ok(_) => {
                let close = ch.close(200, "merge done".into());
                let _ = link.calls.answer("channel.close", close).await;
            }
            // Not waited for: the broker may be the reason it failed.
            Err(_) => Calls::abandon(&ch),
        }
        result
    }

    async fn merge_on(&self, calls: &Calls, ch: &Channel, q: &str, add: Outcomes) -> Result<Merge> {
        let lock = self.names.counts_lock(q);
        // A taken lock shows as a consumer: looking first spares the refusal,
        // which closes the channel (two mergers that both look still get one).
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let seen = ch.queue_declare(lock.as_str().into(), passive, FieldTable::default());
        let seen = calls.answer("queue.declare", seen).await?;
        if seen.consumer_count() > 0 {
            return Ok(Merge::Busy);
        }
        let exclusive = BasicConsumeOptions {
            exclusive: true,
            ..BasicConsumeOptions::default()
        };
        // Held to the end: dropping the consumer cancels it, which frees the lock.
        let consume = ch.basic_consume(
            lock.as_str().into(),
            "".into(),
            exclusive,
            FieldTable::default(),
        );
        let _lock = match calls.within("basic.consume", consume).await? {
            Ok(c) => c,
            Err(e) if is_access_refused(&e) => return Ok(Merge::Busy),
            Err(e) => return Err(from_lapin(e)),
        };
        calls
            .answer(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        let counts = self.names.counts(q);
        let mut total = add;
        let mut taken = 0usize;
        let mut last_tag = None;
        let mut complete = false;
        while !complete && taken < ROUND {
            let gets = (0..GETS_AT_ONCE)
                .map(|_| ch.basic_get(counts.as_str().into(), BasicGetOptions { no_ack: false }));
            for got in calls.within("basic.get", join_all(gets)).await? {
                match got.map_err(from_lapin)? {
                    Some(m) => {
                        total = total.plus(outcomes_of(&m.delivery.properties));
                        last_tag = Some(m.delivery.delivery_tag);
                        taken += 1;
                    }
                    None => complete = true,
                }
            }
        }
        if add.is_zero() && taken <= 1 {
            // Nothing to merge or add: the one message there (if any) goes back as it was.
            return Ok(Merge::Done { total, complete });
        }
        message::publish_confirmed(calls, ch, vec![count_message(self, q, total)]).await?;
        if let Some(tag) = last_tag {
            let ack = ch.basic_ack(tag, BasicAckOptions { multiple: true });
            if let Err(e) = calls.answer("basic.ack", ack).await {
                tracing::warn!(error = %e, queue = %q, "merged outcome counts were written, but the messages merged could not be acked: they count twice");
            }
        }
        Ok(Merge::Done { total, complete })
    }
}
