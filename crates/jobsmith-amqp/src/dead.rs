//! Reading a dead-letter queue.
//!
//! AMQP has no way to look into a queue without taking messages out. A browse
//! opens a channel of its own, consumes every message in the dead-letter queue
//! (prefetch unlimited, manual ack), acks the ones it removes (requeued,
//! purged, past retention) and closes the channel, which puts the rest back
//! where they were, in order. It costs one transfer of the whole dead-letter
//! queue (at most `dead_max` messages), so it is for operators, not hot paths.
//! A browse keeps one entry per job id, the newest: burying a job and acking
//! its delivery are two steps, and a worker that dies between them leaves the
//! job to run, and be buried, again.

use crate::error::from_lapin;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, DIED_AT, REASON};
use jobsmith_core::{DeadJob, JobId, Result, Timestamp};
use lapin::message::DeliveryResult;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::sync::Arc;
use std::time::Duration;

/// How long a browse waits for the next message before it takes what it has.
const QUIET: Duration = Duration::from_millis(300);

/// A dead-letter queue's messages, oldest first, held on their own channel.
pub(crate) struct Browse {
    held: Held,
    pub(crate) jobs: Vec<(u64, DeadJob)>,
}

impl Browse {
    /// Removes one message for good.
    pub(crate) async fn remove(&self, tag: u64) -> Result<()> {
        self.held.remove(tag).await
    }

    /// Puts back what was not removed.
    pub(crate) async fn finish(self) {
        self.held.close().await;
    }
}

/// The messages a browse took off a queue, held unacknowledged on a channel
/// of its own until [`Held::close`] puts them back.
pub(crate) struct Held {
    channel: Channel,
    /// Kept until the channel closes: dropping it first would cancel the
    /// consumer while its messages are still held, and for that moment they
    /// would belong to no consumer, so that another process would find the
    /// queue empty with no browse under way (see `whole`).
    _consumer: Option<Consumer>,
    /// The messages, oldest first.
    pub(crate) deliveries: Vec<lapin::message::Delivery>,
    /// Whether the browse saw the whole queue: when it began no other
    /// consumer (another process's browse) held any of the queue's messages,
    /// and every message the queue counted then came. A browse that finds
    /// nothing and is whole proves the queue empty at that moment.
    pub(crate) whole: bool,
}

impl Held {
    /// Removes one message for good.
    pub(crate) async fn remove(&self, tag: u64) -> Result<()> {
        self.channel
            .basic_ack(tag, BasicAckOptions::default())
            .await
            .map_err(from_lapin)
    }

    /// Puts back every message not removed (the broker requeues, in order,
    /// what a closing channel held).
    pub(crate) async fn close(self) {
        let _ = self.channel.close(200, "browse done".into()).await;
    }
}

/// The instant `age` before now (the epoch if that is earlier).
pub(crate) fn ago(age: Duration) -> Timestamp {
    Timestamp(
        Timestamp::now()
            .as_millis()
            .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// Every message of `queue` (as many as it held when the browse began),
/// held until the result is closed.
pub(crate) async fn collect(link: &Link, queue: &str, args: FieldTable) -> Result<Held> {
    let ch = link.scratch().await?;
    let declared = ch
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .map_err(from_lapin)?;
    let n = declared.message_count() as usize;
    // The only consumers of the queues browsed are other browses: one under
    // way holds messages that the count above leaves out.
    let unbrowsed = declared.consumer_count() == 0;
    let mut got = Vec::with_capacity(n);
    if n == 0 {
        return Ok(Held {
            channel: ch,
            _consumer: None,
            deliveries: got,
            whole: unbrowsed,
        });
    }
    ch.basic_qos(0, BasicQosOptions { global: false })
        .await
        .map_err(from_lapin)?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(from_lapin)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    consumer.set_delegate(move |d: DeliveryResult| {
        let tx = tx.clone();
        async move {
            if let Ok(Some(d)) = d {
                let _ = tx.send(d);
            }
        }
    });
    while got.len() < n {
        match tokio::time::timeout(QUIET, rx.recv()).await {
            Ok(Some(d)) => got.push(d),
            _ => break,
        }
    }
    // The delegate may run out of order; delivery tags count up in queue order.
    got.sort_by_key(|d| d.delivery_tag);
    Ok(Held {
        channel: ch,
        _consumer: Some(consumer),
        whole: unbrowsed && got.len() >= n,
        deliveries: got,
    })
}

impl Inner {
    /// Browses the dead-letter queue of `q`, dropping what is past `dead_max_age`.
    pub(crate) async fn browse_dead(self: &Arc<Self>, link: &Link, q: &str) -> Result<Browse> {
        self.ensure_queue(link, q).await?;
        let mut held = collect(link, &self.names.dead(q), self.topology().dead_args()).await?;
        let deliveries = std::mem::take(&mut held.deliveries);
        let oldest = ago(self.cfg.settings.dead_max_age);
        let mut browse = Browse {
            held,
            jobs: Vec::with_capacity(deliveries.len()),
        };
        let mut seen = std::collections::HashSet::new();
        // Newest first, so that of two entries of one id the newer stays.
        for d in deliveries.into_iter().rev() {
            let job = DeadJob {
                id: d
                    .properties
                    .message_id()
                    .as_ref()
                    .map_or_else(JobId::new, |id| JobId::from(id.as_str())),
                queue: q.to_owned(),
                reason: message::header_text(&d.properties, REASON).unwrap_or_default(),
                died_at: Timestamp(message::header_u64(&d.properties, DIED_AT).unwrap_or(0)),
                raw: d.data,
            };
            // A second entry of one id: its worker died after burying the job
            // and before acking the delivery, so the job ran and died again.
            let again = !seen.insert(job.id.clone());
            if again || job.died_at < oldest {
                browse.remove(d.delivery_tag).await?;
                continue;
            }
            browse.jobs.push((d.delivery_tag, job));
        }
        browse.jobs.reverse();
        Ok(browse)
    }
}
