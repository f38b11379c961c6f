//! [`DeadLetters`] on Redis: listing, reading, requeueing, purging and deleting dead jobs.

use crate::backend::{stored_payload, RedisBackend};
use crate::reply;
use crate::scripts::{Scripts, CHUNK};
use jobsmith_core::{DeadJob, DeadLetters, Envelope, Error, JobId, Result, Timestamp};
use redis::Value;
use std::time::Duration;

impl RedisBackend {
    /// Reads dead jobs: `range` (offset, count) or the given ids.
    async fn dead_read(&self, queue: &str, args: &[String]) -> Result<Vec<DeadJob>> {
        let mut inv = Scripts::get().dead_read.key(self.inner.keys.base(queue));
        for a in args {
            inv.arg(a.as_str());
        }
        reply::array(self.run_again(&inv).await?, "dead jobs")?
            .into_iter()
            .map(|item| dead_job(queue, item))
            .collect()
    }
}

/// A dead job as stored: the envelope gets its attempt and the reason as `last_error`;
/// bytes that are not an envelope are handed back as found.
fn dead_job(queue: &str, item: Value) -> Result<DeadJob> {
    let mut f = reply::array(item, "dead job")?.into_iter();
    let (Some(id), Some(payload), Some(attempt), Some(reason), Some(died)) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err(Error::backend("redis: a dead job entry is short"));
    };
    let id = JobId(reply::string(id, "job id")?);
    let mut raw = stored_payload(reply::bytes(payload, "payload")?);
    let attempt = u32::try_from(reply::int(&attempt, "attempt")?).unwrap_or(0);
    let reason = reply::string(reason, "reason")?;
    let died_us = u64::try_from(reply::int(&died, "time of death")?).unwrap_or(0);
    if let Ok(mut env) = Envelope::from_bytes(&raw) {
        env.attempt = attempt;
        env.last_error = Some(reason.clone());
        raw = env.to_bytes();
    }
    Ok(DeadJob::new(
        id,
        queue.to_owned(),
        reason,
        Timestamp(died_us / 1000),
        raw,
    ))
}

#[async_trait::async_trait]
impl DeadLetters for RedisBackend {
    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>> {
        let mut out = Vec::new();
        let mut offset = offset;
        let mut left = limit;
        while left > 0 {
            let n = left.min(CHUNK);
            let got = self
                .dead_read(queue, &["range".into(), offset.to_string(), n.to_string()])
                .await?;
            let short = got.len() < n;
            offset += got.len();
            left -= got.len();
            out.extend(got);
            if short {
                break;
            }
        }
        Ok(out)
    }

    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>> {
        Ok(self
            .dead_read(queue, &["ids".into(), id.0.clone()])
            .await?
            .pop())
    }

    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let now = Timestamp::now();
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut args = vec!["ids".to_owned()];
            args.extend(chunk.iter().map(|id| id.0.clone()));
            let dead = self.dead_read(queue, &args).await?;
            let mut inv = Scripts::get().requeue.key(self.inner.keys.base(queue));
            let mut any = false;
            for d in dead {
                // Bytes that are not an envelope stay in the dead-letter queue.
                let Some(mut env) = d.envelope() else {
                    continue;
                };
                env.attempt = 0;
                env.run_at = now;
                inv.arg(d.id.as_str())
                    .arg(env.to_bytes())
                    .arg(env.priority)
                    .arg(env.expires_at.map_or(0, Timestamp::as_millis))
                    .arg(env.idempotency_key.as_deref().unwrap_or(""));
                any = true;
            }
            if any {
                n += usize::try_from(reply::int(&self.run(&inv).await?, "requeue")?).unwrap_or(0);
            }
        }
        Ok(n)
    }

    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize> {
        let cutoff = match older_than {
            None => "+inf".to_owned(),
            Some(d) => {
                let now_us = u128::from(Timestamp::now().as_millis()) * 1000;
                now_us.saturating_sub(d.as_micros()).to_string()
            }
        };
        let mut total = 0;
        loop {
            let mut inv = Scripts::get().purge.key(self.inner.keys.base(queue));
            inv.arg(cutoff.as_str()).arg(CHUNK);
            let n = usize::try_from(reply::int(&self.run(&inv).await?, "purge")?).unwrap_or(0);
            total += n;
            if n < CHUNK {
                return Ok(total);
            }
        }
    }

    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut inv = Scripts::get().dead_delete.key(self.inner.keys.base(queue));
            for id in chunk {
                inv.arg(id.as_str());
            }
            n += usize::try_from(reply::int(&self.run(&inv).await?, "dead delete")?).unwrap_or(0);
        }
        Ok(n)
    }
}
