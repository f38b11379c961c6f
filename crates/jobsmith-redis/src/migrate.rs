//! [`Migrate`] on Redis: taking jobs out of a queue and importing jobs and dead jobs.

use crate::backend::{delivery, ms, RedisBackend, MAX_RESERVE};
use crate::error::from_redis;
use crate::reply;
use crate::scripts::{Scripts, CHUNK, SETTLE_LIMIT};
use jobsmith_core::{
    DeadJob, Delivery, Envelope, Error, Lease, LeaseStatus, Migrate, Result, Timestamp,
};
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;

impl RedisBackend {
    /// The indices of `queues` grouped by queue, once each queue is
    /// registered in the set `queues()` reads (one `SADD` for all of them).
    async fn register_groups<'a>(
        &self,
        queues: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<&'a str, Vec<usize>>> {
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, q) in queues.enumerate() {
            groups.entry(q).or_default().push(i);
        }
        let mut conn = self.conn();
        redis::cmd("SADD")
            .arg(self.inner.keys.queues())
            .arg(groups.keys().collect::<Vec<_>>())
            .query_async::<Value>(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(groups)
    }
}

#[async_trait::async_trait]
impl Migrate for RedisBackend {
    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>> {
        let mut inv = Scripts::get().take.key(self.inner.keys.base(queue));
        inv.arg(max.min(MAX_RESERVE))
            .arg(ms(hold))
            .arg(SETTLE_LIMIT);
        let items = reply::array(self.run(&inv).await?, "take")?;
        let expires_at = Timestamp::now().plus(hold);
        items
            .into_iter()
            .map(|item| delivery(item, queue, expires_at, "take", "hold token"))
            .collect()
    }

    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.per_lease(leases, &Scripts::get().remove, None, "remove")
            .await
    }

    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
        let limit = self.limit();
        let mut payloads = Vec::with_capacity(jobs.len());
        for env in &jobs {
            let mut p = format!("{} ", env.run_at.as_millis()).into_bytes();
            let head = p.len();
            serde_json::to_writer(&mut p, env).map_err(Error::Serialize)?;
            if p.len() - head > limit {
                return Err(Error::PayloadTooLarge {
                    size: p.len() - head,
                    limit,
                });
            }
            payloads.push(p);
        }
        let groups = self
            .register_groups(jobs.iter().map(|e| e.queue.as_str()))
            .await?;
        let mut out = vec![false; jobs.len()];
        for (queue, idx) in &groups {
            for chunk in idx.chunks(CHUNK) {
                let mut inv = Scripts::get().import.key(self.inner.keys.base(queue));
                for &i in chunk {
                    let env = &jobs[i];
                    inv.arg(env.id.as_str())
                        .arg(&payloads[i][..])
                        .arg(env.priority)
                        .arg(env.run_at.as_millis())
                        .arg(env.expires_at.map_or(0, Timestamp::as_millis))
                        .arg(env.idempotency_key.as_deref().unwrap_or(""))
                        .arg(env.attempt);
                }
                // Safe to repeat: a second call finds every id marked.
                let flags = reply::flags(self.run_again(&inv).await?, "import")?;
                for (&i, written) in chunk.iter().zip(flags) {
                    out[i] = written;
                }
            }
        }
        Ok(out)
    }

    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
        let groups = self
            .register_groups(jobs.iter().map(|d| d.queue.as_str()))
            .await?;
        let mut out = vec![false; jobs.len()];
        for (queue, idx) in &groups {
            for chunk in idx.chunks(CHUNK) {
                let mut inv = Scripts::get().import_dead.key(self.inner.keys.base(queue));
                for &i in chunk {
                    let d = &jobs[i];
                    let mut p = format!("{} ", d.died_at.as_millis()).into_bytes();
                    p.extend_from_slice(&d.raw);
                    inv.arg(d.id.as_str())
                        .arg(p)
                        .arg(d.reason.as_str())
                        .arg(d.died_at.as_millis().saturating_mul(1000))
                        .arg(d.envelope().map_or(0, |e| e.attempt));
                }
                let flags = reply::flags(self.run_again(&inv).await?, "import dead")?;
                for (&i, written) in chunk.iter().zip(flags) {
                    out[i] = written;
                }
            }
        }
        Ok(out)
    }
}
