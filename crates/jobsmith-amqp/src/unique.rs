//! Idempotency keys, kept in RabbitMQ itself so that they hold across processes.
//!
//! A key of queue `q` is two queues. `p.q.key.<hash>` is declared with
//! `x-max-length: 1` and `x-overflow: reject-publish`: publishing the job id
//! into it is an atomic "take the key if free" (the broker nacks the publish
//! when the key is taken), and it holds the id while the job is queued or
//! running. The hold queue is never read: a message being read (unacked)
//! does not count towards `x-max-length`, so a read would let a racing
//! publish take the key a second time. The holder's id is therefore also
//! written to `p.q.owner.<hash>` (`x-max-length: 1`, newest kept), which
//! enqueues that find the key taken read instead. When the job completes, its
//! id goes into `p.q.done.<hash>` with a per-message TTL of `unique_for`, and
//! the owner and hold queues are deleted, in that order. Enqueue checks the
//! done queue before and after taking the hold, so a completion racing an
//! enqueue is seen by one check or the other.
//!
//! `<hash>` is the first 128 bits of the key's SHA-256 (`KeyForm::Sha256`):
//! a key may come from a job's caller, and a fast hash would let them make
//! two keys share queues, turning a real job into a no-op. Versions before
//! it named the queues by two FNV-1a passes (`KeyForm::Fnv`); a key held or
//! remembered under those names is still honoured (read by claims and
//! lookups) and freed with the key, so jobs enqueued before an upgrade keep
//! their keys for their lifetime. That costs a keyed enqueue two passive
//! declares more.

use crate::call::Calls;
use crate::error::from_lapin;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, Confirmed, Outgoing};
use crate::names::KeyForm;
use jobsmith_core::{Error, JobId, Result};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
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

/// A job id for a key queue, persistent.
fn id_message(queue: String, id: &JobId) -> Outgoing {
    message::to_queue(queue, id.as_str().as_bytes().to_vec())
}

/// What a request on a key queue found: `None` when the queue is missing,
/// which closes the channel, so it is reopened.
async fn found<T>(link: &Link, ch: &mut Channel, answer: lapin::Result<T>) -> Result<Option<T>> {
    match answer {
        Ok(t) => Ok(Some(t)),
        Err(e) if is_not_found(&e) => {
            *ch = link.reopen_admin().await?;
            Ok(None)
        }
        Err(e) => Err(from_lapin(e)),
    }
}

/// The id a key queue holds, leaving it there; `None` when the queue is
/// missing or empty.
async fn peek(link: &Link, ch: &mut Channel, queue: &str) -> Result<Option<JobId>> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let calls = &link.calls;
    let declare = ch.queue_declare(queue.into(), passive, FieldTable::default());
    let declared = calls.within("queue.declare", declare).await?;
    match found(link, ch, declared).await? {
        Some(q) if q.message_count() > 0 => {}
        _ => return Ok(None),
    }
    let get = ch.basic_get(queue.into(), BasicGetOptions { no_ack: false });
    let got = match calls.within("basic.get", get).await {
        Ok(got) => got,
        Err(e) => {
            // The id it may yet take goes back when the channel closes.
            Calls::abandon(ch);
            return Err(e);
        }
    };
    let Some(Some(m)) = found(link, ch, got).await? else {
        return Ok(None);
    };
    let id = JobId(String::from_utf8_lossy(&m.delivery.data).into_owned());
    let requeue = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    calls
        .answer(
            "basic.nack",
            ch.basic_nack(m.delivery.delivery_tag, requeue),
        )
        .await?;
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
        let hold = self.names.hold(q, key, KeyForm::Sha256);
        let owner = self.names.owner(q, key, KeyForm::Sha256);
        let done = self.names.done(q, key, KeyForm::Sha256);
        let mut ch = link.admin().await?;
        let calls = &link.calls;
        if let Some(existing) = self.holder_of(link, &mut ch, q, key, KeyForm::Fnv).await? {
            return Ok(Claim::Existing(existing));
        }
        for _ in 0..40 {
            if let Some(existing) = peek(link, &mut ch, &done).await? {
                return Ok(Claim::Existing(existing));
            }
            declare(calls, &ch, &hold, self.topology().hold_args()).await?;
            let taking = vec![id_message(hold.clone(), id)];
            let outcome = message::publish_all(calls, &ch, taking, true).await?;
            match outcome.first() {
                Some(Confirmed::Ack) => {
                    if let Some(existing) = peek(link, &mut ch, &done).await? {
                        // It completed while we took the hold: give the hold back.
                        delete(calls, &ch, hold).await?;
                        return Ok(Claim::Existing(existing));
                    }
                    self.name_owner(calls, &ch, q, key, id).await?;
                    return Ok(Claim::Taken);
                }
                Some(Confirmed::Nack) => {
                    if let Some(existing) = peek(link, &mut ch, &owner).await? {
                        return Ok(Claim::Existing(existing));
                    }
                    // Freed in between, or the holder has not named itself
                    // yet: look again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                // The hold queue was deleted in between: declare it again.
                Some(Confirmed::Unroutable) | None => {}
            }
        }
        Err(Error::backend(format!(
            "idempotency key `{key}` is too contended to take"
        )))
    }

    /// The job holding `key` of queue `q`, read without taking anything: the
    /// completed job the done queue remembers, else the holder the owner
    /// queue names (a hold is taken before its owner is named, so a key
    /// taken this very moment may not show yet).
    pub(crate) async fn key_holder(
        &self,
        link: &Link,
        q: &str,
        key: &str,
    ) -> Result<Option<JobId>> {
        let mut ch = link.admin().await?;
        for form in [KeyForm::Sha256, KeyForm::Fnv] {
            if let Some(holder) = self.holder_of(link, &mut ch, q, key, form).await? {
                return Ok(Some(holder));
            }
        }
        Ok(None)
    }

    /// The job that the queues of `key` in `form` name: the completed one
    /// the done queue remembers, else the owner.
    async fn holder_of(
        &self,
        link: &Link,
        ch: &mut Channel,
        q: &str,
        key: &str,
        form: KeyForm,
    ) -> Result<Option<JobId>> {
        if let Some(done) = peek(link, ch, &self.names.done(q, key, form)).await? {
            return Ok(Some(done));
        }
        peek(link, ch, &self.names.owner(q, key, form)).await
    }

    /// Deletes the owner and hold queues of `key` in both forms: the key is free.
    async fn release_holds(&self, calls: &Calls, ch: &Channel, q: &str, key: &str) -> Result<()> {
        for form in [KeyForm::Sha256, KeyForm::Fnv] {
            delete(calls, ch, self.names.owner(q, key, form)).await?;
            delete(calls, ch, self.names.hold(q, key, form)).await?;
        }
        Ok(())
    }

    /// The job holding `key` completed: remember it for `unique_for`, then free the hold.
    pub(crate) async fn complete_key(
        &self,
        link: &Link,
        q: &str,
        key: &str,
        id: &JobId,
    ) -> Result<()> {
        let done = self.names.done(q, key, KeyForm::Sha256);
        let ch = link.admin().await?;
        let calls = &link.calls;
        declare(calls, &ch, &done, self.topology().done_args()).await?;
        let mut msg = id_message(done, id);
        msg.props = msg
            .props
            .with_expiration(message::expiration(self.cfg.settings.unique_for));
        message::publish_confirmed(calls, &ch, vec![msg]).await?;
        self.release_holds(calls, &ch, q, key).await
    }

    /// The job holding `key` died or expired: the key is free again.
    pub(crate) async fn free_key(&self, link: &Link, q: &str, key: &str) -> Result<()> {
        let ch = link.admin().await?;
        self.release_holds(&link.calls, &ch, q, key).await
    }

    /// A dead job is requeued: it takes its key again, whoever had it.
    pub(crate) async fn retake_key(
        &self,
        link: &Link,
        q: &str,
        key: &str,
        id: &JobId,
    ) -> Result<()> {
        let hold = self.names.hold(q, key, KeyForm::Sha256);
        let ch = link.admin().await?;
        let calls = &link.calls;
        self.release_holds(calls, &ch, q, key).await?;
        declare(calls, &ch, &hold, self.topology().hold_args()).await?;
        let purge = ch.queue_purge(hold.as_str().into(), QueuePurgeOptions::default());
        calls.answer("queue.purge", purge).await?;
        message::publish_all(calls, &ch, vec![id_message(hold, id)], true).await?;
        self.name_owner(calls, &ch, q, key, id).await
    }

    /// Names `id` as the holder of `key`, for enqueues that find it taken.
    async fn name_owner(
        &self,
        calls: &Calls,
        ch: &Channel,
        q: &str,
        key: &str,
        id: &JobId,
    ) -> Result<()> {
        let owner = self.names.owner(q, key, KeyForm::Sha256);
        declare(calls, ch, &owner, self.topology().owner_args()).await?;
        message::publish_confirmed(calls, ch, vec![id_message(owner, id)]).await
    }
}

/// Declares a durable key queue.
async fn declare(calls: &Calls, ch: &Channel, queue: &str, args: FieldTable) -> Result<()> {
    let declare = ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args);
    calls.answer("queue.declare", declare).await?;
    Ok(())
}

/// Deletes a key queue, and the id in it.
async fn delete(calls: &Calls, ch: &Channel, queue: String) -> Result<()> {
    let delete = ch.queue_delete(queue.into(), QueueDeleteOptions::default());
    calls.answer("queue.delete", delete).await?;
    Ok(())
}
