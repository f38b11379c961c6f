//! [`DeadLetters`] for [`AmqpBackend`], and reading a dead-letter queue.
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

use crate::backend::AmqpBackend;
use crate::browse::{collect, Held};
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, DIED_AT, REASON};
use jobsmith_core::{DeadJob, DeadLetters, JobId, Result, Timestamp};
use lapin::options::QueuePurgeOptions;
use std::sync::Arc;
use std::time::Duration;

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

/// The instant `age` before now (the epoch if that is earlier).
pub(crate) fn ago(age: Duration) -> Timestamp {
    Timestamp(
        Timestamp::now()
            .as_millis()
            .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
    )
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
            let job = DeadJob::new(
                d.properties
                    .message_id()
                    .as_ref()
                    .map_or_else(JobId::new, |id| JobId::from(id.as_str())),
                q.to_owned(),
                message::header_text(&d.properties, REASON).unwrap_or_default(),
                Timestamp(message::header_u64(&d.properties, DIED_AT).unwrap_or(0)),
                d.data,
            );
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

#[async_trait::async_trait]
impl DeadLetters for AmqpBackend {
    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let out = browse
            .jobs
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(_, j)| j.clone())
            .collect();
        browse.finish().await;
        Ok(out)
    }

    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let out = browse
            .jobs
            .iter()
            .find(|(_, j)| &j.id == id)
            .map(|(_, j)| j.clone());
        browse.finish().await;
        Ok(out)
    }

    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let now = Timestamp::now();
        let mut n = 0;
        let mut result = Ok(());
        for (tag, job) in &browse.jobs {
            if !ids.contains(&job.id) {
                continue;
            }
            let Some(mut env) = job.envelope() else {
                continue;
            };
            env.attempt = 0;
            env.run_at = now;
            let step = async {
                if let Some(k) = &env.idempotency_key {
                    self.inner.retake_key(&link, queue, k, &env.id).await?;
                }
                message::publish_confirmed(
                    &link.calls,
                    &link.publish,
                    vec![message::job(&self.inner.names, &env, now)],
                )
                .await?;
                browse.remove(*tag).await
            };
            match step.await {
                Ok(()) => n += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        browse.finish().await;
        result.map(|()| n)
    }

    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize> {
        let link = self.inner.link().await?;
        let Some(age) = older_than else {
            self.inner.ensure_queue(&link, queue).await?;
            let ch = link.admin().await?;
            let purge = ch.queue_purge(
                self.inner.names.dead(queue).into(),
                QueuePurgeOptions::default(),
            );
            let n = link.calls.answer("queue.purge", purge).await?;
            return Ok(n as usize);
        };
        let cutoff = ago(age);
        let browse = self.inner.browse_dead(&link, queue).await?;
        let mut n = 0;
        let mut result = Ok(());
        for (tag, job) in &browse.jobs {
            if job.died_at <= cutoff {
                if let Err(e) = browse.remove(*tag).await {
                    result = Err(e);
                    break;
                }
                n += 1;
            }
        }
        browse.finish().await;
        result.map(|()| n)
    }

    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let mut n = 0;
        let mut result = Ok(());
        for (tag, job) in &browse.jobs {
            if ids.contains(&job.id) {
                if let Err(e) = browse.remove(*tag).await {
                    result = Err(e);
                    break;
                }
                n += 1;
            }
        }
        browse.finish().await;
        result.map(|()| n)
    }
}
