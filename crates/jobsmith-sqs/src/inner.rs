//! [`Inner`]: what the clones of an [`SqsBackend`](crate::SqsBackend) share,
//! and the helpers that reserving, settling and the capabilities share.

use crate::calls::{self, Send};
use crate::codec::{self, Outgoing};
use crate::config::{SqsConfig, SQS_MESSAGE_LIMIT};
use crate::dead_sizes::Sizes;
use crate::inbox::Inbox;
use crate::leases::{Held, Leases};
use crate::queues::Queues;
use crate::unique::Keys;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use jobsmith_core::{Envelope, Lease, LeaseStatus, QueueErrors, Result, Tally, Timestamp};
use std::collections::BTreeMap;
use std::fmt;

/// Per SQS queue URL: items with the index of their lease in a request.
type ByUrl<T> = BTreeMap<String, Vec<(usize, T)>>;

/// Held messages by the SQS queue they came from, with their index in a request.
pub(crate) type HeldByQueue = ByUrl<Held>;

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) config: SqsConfig,
    pub(crate) queues: Queues,
    pub(crate) leases: Leases,
    pub(crate) keys: Keys,
    pub(crate) inbox: Inbox,
    /// Ends waiting reserves when a worker stops.
    pub(crate) interrupt: jobsmith_core::Interrupt,
    /// Dead-letter queue sizes, so a burial reads them from SQS only now and then.
    pub(crate) dead_sizes: Sizes,
    /// Receives whose answer was lost: (queue URL, from, to) in ms since the epoch.
    pub(crate) lost_receives: std::sync::Mutex<Vec<(String, u64, u64)>>,
    /// Outcome counts not yet added to the shared totals (see `counts.rs`).
    pub(crate) tally: Tally,
    /// Serialises flushing the tally with reading the totals, so a read
    /// never misses counts another task of this process is flushing.
    pub(crate) flushing: tokio::sync::Mutex<()>,
    /// Queues failing on their own, reported while the others go on.
    pub(crate) errors: QueueErrors,
}

/// The attempt count a received message's body carries, plus its receives.
pub(crate) fn receive_count(m: &Message) -> u32 {
    codec::system_number(
        m.attributes(),
        &MessageSystemAttributeName::ApproximateReceiveCount,
    )
    .and_then(|n| u32::try_from(n).ok())
    .unwrap_or(1)
}

impl Inner {
    pub(crate) fn limit(&self) -> usize {
        self.config.limit()
    }

    /// A batch call's total size budget.
    pub(crate) fn budget(&self) -> usize {
        self.limit().max(SQS_MESSAGE_LIMIT)
    }

    fn fifo_ids(&self, env: &Envelope, first: bool) -> Option<(String, String)> {
        if !self.config.fifo {
            return None;
        }
        let group = env
            .idempotency_key
            .clone()
            .unwrap_or_else(|| env.id.to_string());
        let dedup = match (&env.idempotency_key, first) {
            (Some(k), true) => k.clone(),
            _ => format!("{}-{}", env.id, fastrand::u64(..)),
        };
        Some((fifo_safe(&group), fifo_safe(&dedup)))
    }

    pub(crate) fn send_of(&self, env: &Envelope, body: String, first: bool) -> Send {
        let delay = delay_for(env.run_at);
        Send {
            out: Outgoing::text(body),
            delay,
            fifo: self.fifo_ids(env, first),
        }
    }

    /// Adds `n` to `queue`'s expired count: one small message each in its counter queue.
    pub(crate) async fn count_expired(&self, queue: &str, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let family = self.queues.family(queue).await?;
        let sends: Vec<Send> = (0..n)
            .map(|_| Send {
                out: Outgoing::text("1".to_owned()),
                delay: 0,
                fifo: None,
            })
            .collect();
        calls::send(&self.client, &family.expired, sends, self.budget()).await
    }

    /// Takes leases that still hold, grouped by the queue they came from.
    pub(crate) fn take_held(&self, leases: &[Lease]) -> (Vec<LeaseStatus>, HeldByQueue) {
        by_url(leases, |lease| {
            let h = self.leases.take(lease)?;
            Some((h.url.clone(), h))
        })
    }

    /// Deletes the held messages of one queue; puts them back on a transport error.
    pub(crate) async fn delete_held(
        &self,
        url: &str,
        held: Vec<(usize, Held)>,
    ) -> Result<Vec<(usize, Held, bool)>> {
        let receipts: Vec<&str> = held.iter().map(|(_, h)| h.receipt.as_str()).collect();
        match calls::delete(&self.client, url, &receipts).await {
            Ok(ok) => Ok(held
                .into_iter()
                .zip(ok)
                .map(|((i, h), ok)| (i, h, ok))
                .collect()),
            Err(e) => {
                for (_, h) in held {
                    self.leases.restore(h);
                }
                Err(e)
            }
        }
    }

    /// Frees the idempotency key of a settled job that did not complete.
    pub(crate) async fn free_key(&self, queue: &str, held: &Held) {
        if let Ok(env) = &held.payload {
            if let Some(k) = &env.idempotency_key {
                self.keys.free_all(&[(queue, k, &env.id)]).await;
            }
        }
    }
}

/// Each lease's status (`Held` where `pick` finds it still held, else
/// `Lost`), and what `pick` found, grouped by SQS queue URL with the lease's index.
pub(crate) fn by_url<T>(
    leases: &[Lease],
    mut pick: impl FnMut(&Lease) -> Option<(String, T)>,
) -> (Vec<LeaseStatus>, ByUrl<T>) {
    let mut statuses = vec![LeaseStatus::Lost; leases.len()];
    let mut groups: ByUrl<T> = BTreeMap::new();
    for (i, lease) in leases.iter().enumerate() {
        if let Some((url, found)) = pick(lease) {
            statuses[i] = LeaseStatus::Held;
            groups.entry(url).or_default().push((i, found));
        }
    }
    (statuses, groups)
}

/// Whole seconds of SQS delay until `run_at`, rounded down (the rest is
/// waited out in the inbox), at most 15 minutes.
pub(crate) fn delay_for(run_at: Timestamp) -> u64 {
    run_at.until_now().as_secs().min(calls::MAX_DELAY)
}

/// A FIFO group or deduplication id: at most 128 of the characters SQS allows.
pub(crate) fn fifo_safe(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    if out.is_empty() {
        out.push('-');
    }
    out
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}
