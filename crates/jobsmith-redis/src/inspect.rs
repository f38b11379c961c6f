//! [`Inspect`] on Redis: the queue names and each queue's counts.

use crate::backend::RedisBackend;
use crate::error::from_redis;
use crate::reply;
use crate::scripts::{Scripts, SETTLE_LIMIT};
use futures_util::future::join_all;
use jobsmith_core::{Error, Inspect, QueueStats, Result};
use std::time::Duration;

impl RedisBackend {
    /// One queue's counts, settling it first.
    async fn stats_one(&self, queue: &str) -> Result<QueueStats> {
        let mut inv = Scripts::get().stats.key(self.inner.keys.base(queue));
        inv.arg(SETTLE_LIMIT);
        let v = reply::array(self.run_again(&inv).await?, "stats")?;
        let n = |i: usize| -> Result<i64> {
            v.get(i)
                .map_or(Err(Error::backend("redis: stats reply is short")), |x| {
                    reply::int(x, "stats")
                })
        };
        let count = |i: usize| n(i).map(|x| u64::try_from(x).unwrap_or(0));
        Ok({
            let mut stats = QueueStats::new(queue.to_owned());
            stats.ready = count(0)?;
            stats.scheduled = count(1)?;
            stats.in_flight = count(2)?;
            stats.dead = count(3)?;
            stats.expired = count(4)?;
            stats.oldest_ready_age = u64::try_from(n(5)?).ok().map(Duration::from_millis);
            stats.processed = Some(count(6)?);
            stats.failed = Some(count(7)?);
            stats
        })
    }
}

#[async_trait::async_trait]
impl Inspect for RedisBackend {
    async fn queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.inner.keys.queues())
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        names.sort();
        Ok(names)
    }

    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let calls = queues
            .iter()
            .map(|queue| async move { (queue.clone(), self.stats_one(queue).await) });
        self.inner.errors.stats_rows(join_all(calls).await)
    }
}
