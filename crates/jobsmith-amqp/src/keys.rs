//! Idempotency keys, kept in RabbitMQ itself so that they hold across processes.
//!
//! A key of queue `q` is two queues. `p.q.key.<hash>` is declared with
//! `x-max-length: 1` and `x-overflow: reject-publish`: publishing the job id
//! into it is an atomic "take the key if free" (the broker nacks the publish
//! when the key is taken), and it holds the id while the job is queued or
//! running. When the job completes, its id goes into `p.q.done.<hash>` with a
//! per-message TTL of `unique_for`, and the hold queue is deleted. Enqueue
//! checks the done queue before and after taking the hold, so a completion
//! racing an enqueue is seen by one check or the other.

use crate::error::from_lapin;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, Confirmed, Outgoing};
use jobsmith_core::{Error, JobId, Result};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use std::sync::Arc;

/// Whether an enqueue took the key.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The key was free and now belongs to the new job.
    Taken,
    /// The key belongs to this job, queued, running or completed.
    Existing(JobId),
}

pub(crate) fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 404)
}

fn id_message(queue: String, id: &JobId, ttl_ms: Option<u64>) -> Outgoing {
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(ms) = ttl_ms {
        props = props.with_expiration(ms.to_string().into());
    }
    Outgoing {
        exchange: String::new(),
        routing_key: queue,
        body: id.as_str().as_bytes().to_vec(),
        props,
    }
}

/// The id a key queue holds, leaving it there; `None` when the queue is
/// missing or empty. A missing queue closes the channel, which is reopened.
async fn peek(link: &Link, ch: &mut Channel, queue: &str) -> Result<Option<JobId>> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) if q.message_count() == 0 => return Ok(None),
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            *ch = link.reopen_admin().await?;
            return Ok(None);
        }
        Err(e) => return Err(from_lapin(e)),
    }
    let got = match ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
    {
        Ok(got) => got,
        Err(e) if is_not_found(&e) => {
            *ch = link.reopen_admin().await?;
            return Ok(None);
        }
        Err(e) => return Err(from_lapin(e)),
    };
    let Some(m) = got else { return Ok(None) };
    let id = JobId(String::from_utf8_lossy(&m.delivery.data).into_owned());
    ch.basic_nack(
        m.delivery.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .map_err(from_lapin)?;
    Ok(Some(id))
}

impl Inner {
    /// Takes `key` of queue `q` for job `id`, or names the job that has it.
    pub(crate) async fn claim_key(
        self: &Arc<Self>,
        link: &Link,
        q: &str,
        key: &str,
        id: &JobId,
    ) -> Result<Claim> {
        let hold = self.names.hold(q, key);
        let done = self.names.done(q, key);
        let mut ch = link.admin().await?;
        for _ in 0..10 {
            if let Some(existing) = peek(link, &mut ch, &done).await? {
                return Ok(Claim::Existing(existing));
            }
            ch.queue_declare(
                hold.as_str().into(),
                QueueDeclareOptions::durable(),
                self.topology().hold_args(),
            )
            .await
            .map_err(from_lapin)?;
            let outcome =
                message::publish_all(&ch, vec![id_message(hold.clone(), id, None)], true).await?;
            match outcome.first() {
                Some(Confirmed::Ack) => {
                    if let Some(existing) = peek(link, &mut ch, &done).await? {
                        // It completed while we took the hold: give the hold back.
                        ch.queue_delete(hold.as_str().into(), QueueDeleteOptions::default())
                            .await
                            .map_err(from_lapin)?;
                        return Ok(Claim::Existing(existing));
                    }
                    return Ok(Claim::Taken);
                }
                Some(Confirmed::Nack) => {
                    if let Some(existing) = peek(link, &mut ch, &hold).await? {
                        return Ok(Claim::Existing(existing));
                    }
                    // Freed in between: try again.
                }
                // The hold queue was deleted in between: declare it again.
                Some(Confirmed::Unroutable) | None => {}
            }
        }
        Err(Error::Backend(format!(
            "idempotency key `{key}` is too contended to take"
        )))
    }

    /// The job holding `key` completed: remember it for `unique_for`, then free the hold.
    pub(crate) async fn complete_key(
        &self,
        link: &Link,
        q: &str,
        key: &str,
        id: &JobId,
    ) -> Result<()> {
        let done = self.names.done(q, key);
        let ch = link.admin().await?;
        ch.queue_declare(
            done.as_str().into(),
            QueueDeclareOptions::durable(),
            self.topology().done_args(),
        )
        .await
        .map_err(from_lapin)?;
        let ttl = u64::try_from(self.cfg.settings.unique_for.as_millis())
            .unwrap_or(u64::MAX)
            .min(crate::topology::MAX_TTL_MS);
        message::publish_confirmed(&ch, vec![id_message(done, id, Some(ttl))]).await?;
        ch.queue_delete(
            self.names.hold(q, key).into(),
            QueueDeleteOptions::default(),
        )
        .await
        .map_err(from_lapin)?;
        Ok(())
    }

    /// The job holding `key` died or expired: the key is free again.
    pub(crate) async fn free_key(&self, link: &Link, q: &str, key: &str) -> Result<()> {
        let ch = link.admin().await?;
        ch.queue_delete(
            self.names.hold(q, key).into(),
            QueueDeleteOptions::default(),
        )
        .await
        .map_err(from_lapin)?;
        Ok(())
    }

    /// A dead job is requeued: it takes its key again, whoever had it.
    pub(crate) async fn retake_key(
        &self,
        link: &Link,
        q: &str,
        key: &str,
        id: &JobId,
    ) -> Result<()> {
        let hold = self.names.hold(q, key);
        let ch = link.admin().await?;
        ch.queue_declare(
            hold.as_str().into(),
            QueueDeclareOptions::durable(),
            self.topology().hold_args(),
        )
        .await
        .map_err(from_lapin)?;
        ch.queue_purge(hold.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(from_lapin)?;
        message::publish_all(&ch, vec![id_message(hold, id, None)], true).await?;
        Ok(())
    }
}
