//! [`Inspect`] for [`SqsBackend`]: the queues under the prefix and their
//! counts, from SQS's approximate counts and the shared totals.

use crate::backend::SqsBackend;
use crate::calls;
use crate::inner::Inner;
use crate::names::Role;
use futures_util::future::join_all;
use jobsmith_core::{Inspect, QueueStats, Result, Timestamp};

#[async_trait::async_trait]
impl Inspect for SqsBackend {
    async fn queues(&self) -> Result<Vec<String>> {
        let q = &self.inner.queues;
        let mut names: Vec<String> = q
            .list(&q.namer.family_start())
            .await?
            .into_iter()
            .filter_map(|(name, _)| q.namer.parse(&name))
            .filter(|(_, role)| *role == Role::Level(0))
            .map(|(queue, _)| queue)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let (all, counted) = futures_util::future::join(
            join_all(queues.iter().map(|q| self.inner.stats_one(q))),
            self.inner.read_counts(queues),
        )
        .await;
        let mut out = self
            .inner
            .errors
            .stats_rows(queues.iter().cloned().zip(all))?;
        if let Some(counted) = counted {
            for (s, c) in out.iter_mut().zip(counted) {
                if s.error.is_none() {
                    s.processed = Some(c.processed);
                    s.failed = Some(c.failed);
                }
            }
        }
        Ok(out)
    }
}

impl Inner {
    async fn stats_one(&self, queue: &str) -> Result<QueueStats> {
        let mut s = QueueStats::new(queue.to_owned());
        let Some(family) = self.queues.existing(queue).await? else {
            return Ok(s);
        };
        let urls: Vec<&String> = family
            .levels
            .values()
            .chain([&family.dead, &family.expired])
            .collect();
        let counts = join_all(urls.iter().map(|u| calls::counts(&self.client, u))).await;
        let n = family.levels.len();
        for (i, c) in counts.into_iter().enumerate() {
            let (visible, hidden, delayed) = c?;
            if i < n {
                s.ready += visible;
                s.in_flight += hidden;
                s.scheduled += delayed;
            } else if i == n {
                s.dead = (visible + hidden + delayed).min(self.config.settings.dead_max as u64);
            } else {
                s.expired = visible + hidden + delayed;
            }
        }
        // Messages this process received early or has not handed out yet
        // count as SQS sees them (in flight) nowhere else; here, as what they are.
        let (due, early) = self.inbox.held(queue, Timestamp::now());
        let moved = (due + early).min(s.in_flight);
        s.in_flight -= moved;
        s.ready += due.min(moved);
        s.scheduled += moved - due.min(moved);
        Ok(s)
    }
}
