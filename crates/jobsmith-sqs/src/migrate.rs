//! Moving jobs in and out for `jobsmith migrate`: take, remove, import.
//!
//! - **Take** receives messages from each priority level with a visibility
//!   timeout a little past the hold. When the hold runs out, a copy of each
//!   job still held is sent again (its receives folded into its attempt)
//!   and the original deleted, so the hold counts no attempt. If this
//!   process dies instead, the messages come back when their visibility
//!   runs out, with one receive more on their count (one attempt more, as
//!   for any consumer that dies). A job within its SQS delay cannot be
//!   received, so it cannot be taken before it is due: `migrate` reports it
//!   as left behind; run again once it is due (at most 15 minutes).
//! - **Remove** deletes what take held.
//! - **Import** must write each job id once, and SQS can neither look a
//!   message up nor write conditionally. The key table in DynamoDB can:
//!   1. if the item `migrated:<id>` exists, the job was imported: skip it;
//!   2. send the job with the message attribute `jobsmith-import` set to a
//!      fresh token;
//!   3. write `migrated:<id>`.
//!
//!   A crash between 2 and 3 lets the next run send a second copy, with
//!   another token. So whoever first receives an imported message (a
//!   worker, or a later migration) claims `run:<id>` for its token with a
//!   conditional write; a copy whose token loses that claim is a duplicate,
//!   and is deleted unrun. Each imported job runs once, whatever the timing
//!   of a crash. Dead jobs are imported the same way, and a dead-letter scan
//!   deletes a second message with an id it has already seen.
//!
//! The two items per imported job stay in the key table; they are small,
//! and can be deleted once the migration is finished and its jobs have run.

use crate::backend::SqsBackend;
use crate::calls::{self, Send};
use crate::codec::{self, Outgoing, DIED_AT, ID, IMPORT, REASON};
use crate::inner::{delay_for, Inner};
use crate::names::priority_level;
use aws_sdk_sqs::types::Message;
use futures_util::future::join_all;
use jobsmith_core::{
    DeadJob, Delivery, Envelope, Error, JobId, Lease, LeaseStatus, Migrate, Result,
};
use std::time::Duration;

/// The key-table key marking `id` imported.
fn migrated_key(id: &JobId) -> String {
    format!("\u{1}migrated:{id}")
}

/// The key-table key an imported job's first receiver claims.
fn run_key(id: &JobId) -> String {
    format!("\u{1}run:{id}")
}

impl Inner {
    /// Whether `m` is a second copy of an imported job whose first copy was
    /// claimed already (see the module docs); claims it when it is the first.
    pub(crate) async fn import_duplicate(&self, queue: &str, m: &Message) -> Result<bool> {
        let Some(token) = codec::attribute(m.message_attributes(), IMPORT) else {
            return Ok(false);
        };
        let raw = codec::decode_body(m.body().unwrap_or(""), m.message_attributes());
        let Ok(env) = Envelope::from_bytes(&raw) else {
            return Ok(false);
        };
        let holder = self
            .keys
            .claim(queue, &run_key(&env.id), &JobId::from(token))
            .await?;
        Ok(holder.is_some())
    }
}

/// Which of `keys` (as `(queue, key)`) the key table marks already.
async fn marked(inner: &Inner, keys: &[(String, String)]) -> Result<Vec<bool>> {
    let found = join_all(keys.iter().map(|(q, k)| inner.keys.peek(q, k))).await;
    found.into_iter().map(|r| r.map(|h| h.is_some())).collect()
}

/// Marks `keys` in the key table.
async fn mark(inner: &Inner, keys: &[(String, String, JobId)]) -> Result<()> {
    for r in join_all(keys.iter().map(|(q, k, id)| inner.keys.claim(q, k, id))).await {
        r?;
    }
    Ok(())
}

pub(crate) async fn import(inner: &Inner, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
    let limit = inner.limit();
    let mut bodies = Vec::with_capacity(jobs.len());
    for env in &jobs {
        let bytes = env.to_bytes();
        if bytes.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: bytes.len(),
                limit,
            });
        }
        bodies.push(String::from_utf8(bytes).unwrap_or_default());
    }
    let keys: Vec<(String, String)> = jobs
        .iter()
        .map(|e| (e.queue.clone(), migrated_key(&e.id)))
        .collect();
    let mut fresh: Vec<bool> = marked(inner, &keys).await?.iter().map(|m| !m).collect();
    let mut groups: Vec<((String, i8), Vec<Send>)> = Vec::new();
    let mut marks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, (env, body)) in jobs.iter().zip(bodies).enumerate() {
        if !fresh[i] || !seen.insert(&env.id) {
            fresh[i] = false;
            continue;
        }
        if let Some(k) = &env.idempotency_key {
            // The job is kept even if another job holds its key here.
            inner.keys.claim(&env.queue, k, &env.id).await?;
        }
        let token = format!("{:016x}", fastrand::u64(..));
        let id = env.id.to_string();
        let send = Send {
            out: Outgoing::text(body).with(IMPORT, token.clone()),
            delay: delay_for(env.run_at),
            fifo: inner
                .config
                .fifo
                .then(|| (id.clone(), format!("{id}-{token}"))),
        };
        let target = (env.queue.clone(), priority_level(env.priority));
        match groups.iter_mut().find(|(t, _)| *t == target) {
            Some((_, sends)) => sends.push(send),
            None => groups.push((target, vec![send])),
        }
        marks.push((
            env.queue.clone(),
            migrated_key(&env.id),
            JobId::from(token.as_str()),
        ));
    }
    for ((queue, level), sends) in groups {
        let url = inner.queues.level_url(&queue, level).await?;
        calls::send(&inner.client, &url, sends, inner.budget()).await?;
    }
    mark(inner, &marks).await?;
    Ok(fresh)
}

pub(crate) async fn import_dead(inner: &Inner, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
    let keys: Vec<(String, String)> = jobs
        .iter()
        .map(|d| (d.queue.clone(), migrated_key(&d.id)))
        .collect();
    let mut fresh: Vec<bool> = marked(inner, &keys).await?.iter().map(|m| !m).collect();
    let mut by_queue: Vec<(String, Vec<Send>)> = Vec::new();
    let mut marks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, d) in jobs.iter().enumerate() {
        if !fresh[i] || !seen.insert(&d.id) {
            fresh[i] = false;
            continue;
        }
        let out = Outgoing::from_raw(&d.raw)
            .with(REASON, d.reason.clone())
            .with_number(DIED_AT, d.died_at.as_millis())
            .with(ID, d.id.to_string());
        let id = d.id.to_string();
        let send = Send {
            out,
            delay: 0,
            fifo: inner
                .config
                .fifo
                .then(|| (id.clone(), format!("{id}-{}", fastrand::u64(..)))),
        };
        match by_queue.iter_mut().find(|(q, _)| *q == d.queue) {
            Some((_, sends)) => sends.push(send),
            None => by_queue.push((d.queue.clone(), vec![send])),
        }
        marks.push((d.queue.clone(), migrated_key(&d.id), d.id.clone()));
    }
    for (queue, sends) in by_queue {
        let family = inner.queues.family(&queue).await?;
        calls::send(&inner.client, &family.dead, sends, inner.budget()).await?;
    }
    mark(inner, &marks).await?;
    Ok(fresh)
}

#[async_trait::async_trait]
impl Migrate for SqsBackend {
    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>> {
        self.moves.take(&self.inner, queue, max, hold).await
    }

    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.moves.remove(&self.inner, leases).await
    }

    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
        crate::migrate::import(&self.inner, jobs).await
    }

    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
        crate::migrate::import_dead(&self.inner, jobs).await
    }
}
