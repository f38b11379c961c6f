//! [`Inspect`] for [`AmqpBackend`]: the queues in use and their counts.

use crate::backend::AmqpBackend;
use crate::link::Link;
use crate::message;
use crate::topology::passive_count;
use jobsmith_core::lock::LockExt;
use jobsmith_core::{Inspect, QueueStats, Result, Timestamp};

impl AmqpBackend {
    /// One queue's counts, on `link` (the caller holds the flushing turn).
    async fn stats_one(&self, link: &Link, q: &str) -> Result<QueueStats> {
        let inner = &self.inner;
        inner.ensure_queue(link, q).await?;
        let names = &inner.names;
        let ch = link.admin().await?;
        let calls = &link.calls;
        let ready = u64::from(passive_count(calls, &ch, names.work(q)).await?);
        let scheduled: u64 = futures_util::future::try_join_all(
            (0..crate::names::LEVELS)
                .map(|k| names.level_queue(q, k))
                .chain([names.soon(q)])
                .map(|name| passive_count(calls, &ch, name)),
        )
        .await?
        .into_iter()
        .map(u64::from)
        .sum();
        let dead = u64::from(passive_count(calls, &ch, names.dead(q)).await?);
        let expired = u64::from(passive_count(calls, &ch, names.expired(q)).await?);
        drop(ch);
        let counted = inner
            .read_counts(link, q)
            .await?
            .map(|total| total.plus(inner.tally.pending(q)));
        let now = Timestamp::now();
        let st = inner.state.lock_unpoisoned();
        let (buffered, oldest) = st.buffers.get(q).map_or((0, None), |buf| {
            let oldest = buf
                .values()
                .filter(|b| b.gen == link.gen)
                .filter_map(|b| message::parse(&b.data).ok())
                .map(|e| e.run_at.min(now))
                .min();
            (buf.len() as u64, oldest)
        });
        let in_flight = st.leases.values().filter(|h| h.queue == q).count() as u64;
        // Jobs held here until due, staged or early, are still scheduled.
        let held_early = (st.held_early(q) + st.stagers.get(q).map_or(0, |s| s.held())) as u64;
        Ok({
            let mut stats = QueueStats::new(q.to_owned());
            stats.ready = ready + buffered;
            stats.scheduled = scheduled + held_early;
            stats.in_flight = in_flight;
            stats.dead = dead;
            stats.expired = expired;
            stats.oldest_ready_age = oldest.map(|at| now.since(at));
            stats.processed = counted.map(|c| c.processed);
            stats.failed = counted.map(|c| c.failed);
            stats
        })
    }
}

#[async_trait::async_trait]
impl Inspect for AmqpBackend {
    async fn queues(&self) -> Result<Vec<String>> {
        let inner = &self.inner;
        let link = inner.link().await?;
        let mut held = crate::browse::collect(
            &link,
            &inner.names.registry(),
            inner.topology().registry_args(),
        )
        .await?;
        let deliveries = std::mem::take(&mut held.deliveries);
        held.close().await;
        let mut names: Vec<String> = deliveries
            .into_iter()
            .map(|d| String::from_utf8_lossy(&d.data).into_owned())
            .collect();
        {
            let st = inner.state.lock_unpoisoned();
            names.extend(st.wanted.iter().cloned());
            names.extend(st.declared.iter().cloned());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let inner = &self.inner;
        let link = inner.link().await?;
        // This process's own counts go out first, and nothing of ours is in
        // flight while the totals are read (see `counts.rs`).
        let _turn = inner.flushing.lock().await;
        if let Err(e) = inner.flush_counts_locked().await {
            tracing::debug!(error = %e, "could not flush outcome counts before reading them; adding ours as pending");
        }
        let mut rows = Vec::with_capacity(queues.len());
        for q in queues {
            let row = self.stats_one(&link, q).await;
            if row.is_err() {
                // Declared in full next time: it may have been deleted, or
                // declared otherwise, since.
                inner.state.lock_unpoisoned().declared.remove(q);
            }
            rows.push((q.clone(), row));
        }
        inner.errors.stats_rows(rows)
    }
}
