//! Dead letters: each jobsmith queue's `__dead` SQS queue.
//!
//! A dead job is a message there: the envelope with `last_error` set (or the
//! raw payload that did not parse), and the attributes `jobsmith-reason`,
//! `jobsmith-died-at` and `jobsmith-id`. Messages that SQS's redrive policy
//! moved there (received `max_receives` times without being settled) have no
//! such attributes; their reason says so, and their time of death is when
//! they were first sent.
//!
//! SQS cannot list a queue, so review operations scan it: they receive every
//! message (hiding each for `dead_scan_window`, and longer when the scan
//! outlasts it: see [`scan`]), act, and make the rest visible again. Retention is applied on every scan, and a scan runs after
//! a burial whenever the queue holds more than `dead_max`. A burial reads the
//! queue's size from SQS only when this process's count (the size SQS last
//! gave, plus its own burials since) passes `dead_max`, or that size is more
//! than `RECOUNT` (in `dead_sizes.rs`) old: one `GetQueueAttributes` a minute, not one per
//! burial, while the queue is well under `dead_max`. SQS's own
//! retention of the dead-letter queue is `dead_max_age`, between SQS's
//! bounds of one minute and 14 days.

use crate::backend::SqsBackend;
use crate::calls::{self, Send};
use crate::codec::{self, Outgoing, DIED_AT, ID, REASON};
use crate::config::{MAX_VISIBILITY_SECS, SQS_MESSAGE_LIMIT};
use crate::inner::Inner;
use crate::names::priority_level;
use crate::queues::Family;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use jobsmith_core::{DeadJob, DeadLetters, Envelope, JobId, Malformed, Result, Timestamp};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest reason kept.
const REASON_MAX: usize = 8 * 1024;

/// The message that buries a payload.
pub(crate) fn burial(
    payload: &std::result::Result<Envelope, Malformed>,
    id: &JobId,
    reason: &str,
    budget: usize,
) -> Outgoing {
    let mut reason = truncate(reason, REASON_MAX).to_owned();
    let died = Timestamp::now().as_millis();
    let make = |reason: &str, with_error: bool| {
        let body = match payload {
            Ok(env) => {
                let mut env = env.clone();
                if with_error {
                    env.last_error = Some(reason.to_owned());
                }
                Outgoing::text(String::from_utf8(env.to_bytes()).unwrap_or_default())
            }
            Err(m) => Outgoing::from_raw(&m.raw),
        };
        body.with(REASON, reason.to_owned())
            .with_number(DIED_AT, died)
            .with(ID, id.to_string())
    };
    let limit = budget.max(SQS_MESSAGE_LIMIT);
    let out = make(&reason, true);
    if out.size() <= limit {
        return out;
    }
    // At the size limit: the reason goes in the attribute only, cut to fit.
    let bare = make("", false);
    let room = limit.saturating_sub(bare.size());
    reason = truncate(&reason, room).to_owned();
    make(&reason, false)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One message found by a scan.
struct Found {
    /// The receipt of its latest receive: SQS honours only that one.
    receipt: String,
    job: DeadJob,
}

/// Every message in the dead-letter queue at `url`, hidden from other scans.
///
/// Each message is hidden when received, at first for `dead_scan_window`.
/// A scan that cannot read the whole queue within its window would find its
/// first messages visible again and go round them for ever (only a receive
/// that comes back empty ends it). So the window grows to twice the time the
/// rest of the queue should take to read, judged from its size and the
/// slowest receive so far; before what was found shows again, all of it is
/// hidden again for the new window; and a message received a second time
/// (its window ran out before it could be hidden again) is the one found
/// before, with a newer receipt.
async fn scan(inner: &Inner, queue: &str, url: &str) -> Result<Vec<Found>> {
    let (visible, _, _) = calls::counts(&inner.client, url).await?;
    let mut window = inner.config.dead_scan_window.as_secs().max(1);
    let mut found: Vec<Found> = Vec::new();
    let mut by_message: HashMap<String, usize> = HashMap::new();
    // When the first message found since the last re-hiding shows again.
    let mut deadline: Option<Instant> = None;
    let mut slowest = Duration::ZERO;
    let mut wait = Duration::ZERO;
    loop {
        // Receives still to make, and (one batch call per ten found) the
        // calls a re-hiding of everything found takes.
        let receives_left = visible.saturating_sub(found.len() as u64) / calls::BATCH as u64 + 1;
        let rehide = (found.len() / calls::BATCH + 1) as u32;
        let needed =
            calls::whole_seconds_up(slowest * 2 * u32::try_from(receives_left).unwrap_or(u32::MAX));
        if let Some(d) = deadline {
            let margin = (Duration::from_secs(window) / 2).max(slowest * (rehide + 2));
            if Instant::now() + margin >= d {
                window = (window * 2).max(needed).min(MAX_VISIBILITY_SECS);
                let started = Instant::now();
                let receipts: Vec<&str> = found.iter().map(|f| f.receipt.as_str()).collect();
                // A message whose window already ran out may be refused
                // here; it is received again below.
                calls::change_visibility(&inner.client, url, &receipts, window).await?;
                deadline = Some(started + Duration::from_secs(window));
            }
        }
        window = window.max(needed.min(MAX_VISIBILITY_SECS));
        let (msgs, sent) = calls::receive(&inner.client, url, calls::BATCH, wait, window).await?;
        if wait.is_zero() {
            slowest = slowest.max(sent.elapsed());
        }
        if msgs.is_empty() {
            // Counts are approximate on AWS: one long poll makes sure.
            if wait.is_zero() && (found.len() as u64) < visible {
                wait = Duration::from_secs(1);
                continue;
            }
            break;
        }
        deadline.get_or_insert(sent + Duration::from_secs(window));
        for m in msgs {
            let Some(receipt) = m.receipt_handle().map(str::to_owned) else {
                continue;
            };
            let message = m.message_id().unwrap_or_default().to_owned();
            if let Some(&i) = by_message.get(&message) {
                found[i].receipt = receipt;
                continue;
            }
            by_message.insert(message, found.len());
            found.push(Found {
                receipt,
                job: dead_job(inner, queue, &m),
            });
        }
    }
    // Newest first; a later message of the same millisecond is newer.
    let mut indexed: Vec<(usize, Found)> = found.into_iter().enumerate().collect();
    indexed.sort_by(|(ia, a), (ib, b)| b.job.died_at.cmp(&a.job.died_at).then(ib.cmp(ia)));
    Ok(indexed.into_iter().map(|(_, f)| f).collect())
}

/// The dead job a dead-letter message holds.
fn dead_job(inner: &Inner, queue: &str, m: &Message) -> DeadJob {
    let raw = codec::decode_body(m.body().unwrap_or(""), m.message_attributes());
    let attrs = m.message_attributes();
    let sent = codec::system_number(m.attributes(), &MessageSystemAttributeName::SentTimestamp)
        .unwrap_or(0);
    let died_at = codec::attribute(attrs, DIED_AT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(sent);
    let id = codec::attribute(attrs, ID)
        .map(JobId::from)
        .or_else(|| Envelope::from_bytes(&raw).ok().map(|e| e.id))
        .unwrap_or_else(|| JobId::from(m.message_id().unwrap_or_default()));
    let reason = codec::attribute(attrs, REASON).map_or_else(
        || {
            format!(
                "received {} times without being settled: moved by the SQS redrive policy",
                inner.config.max_receives
            )
        },
        str::to_owned,
    );
    DeadJob::new(id, queue.to_owned(), reason, Timestamp(died_at), raw)
}

/// Scans, then deletes what retention drops: past `dead_max_age`, or past
/// the newest `dead_max`. Returns what is kept, newest first.
async fn scan_retained(inner: &Inner, queue: &str, url: &str) -> Result<Vec<Found>> {
    let settings = &inner.config.settings;
    let cutoff = Timestamp(
        Timestamp::now()
            .as_millis()
            .saturating_sub(u64::try_from(settings.dead_max_age.as_millis()).unwrap_or(u64::MAX)),
    );
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for f in scan(inner, queue, url).await? {
        // A second message of one id: a migration's import that was
        // interrupted and run again (see `migrate.rs`).
        let again = !ids.insert(f.job.id.clone());
        if again || f.job.died_at < cutoff || kept.len() >= settings.dead_max {
            dropped.push(f.receipt);
        } else {
            kept.push(f);
        }
    }
    if !dropped.is_empty() {
        let receipts: Vec<&str> = dropped.iter().map(String::as_str).collect();
        calls::delete(&inner.client, url, &receipts).await?;
    }
    inner.dead_sizes.counted(url, kept.len() as u64);
    Ok(kept)
}

/// Makes scanned messages visible again.
async fn unhide(inner: &Inner, url: &str, found: &[Found]) -> Result<()> {
    if found.is_empty() {
        return Ok(());
    }
    let receipts: Vec<&str> = found.iter().map(|f| f.receipt.as_str()).collect();
    calls::change_visibility(&inner.client, url, &receipts, 0).await?;
    Ok(())
}

/// After a burial: applies retention when the queue holds more than `dead_max`.
pub(crate) async fn enforce_retention(inner: &Inner, queue: &str, family: &Family) -> Result<()> {
    let max = inner.config.settings.dead_max as u64;
    if !inner.dead_sizes.buried(&family.dead, max) {
        return Ok(());
    }
    let (visible, hidden, _) = calls::counts(&inner.client, &family.dead).await?;
    inner.dead_sizes.counted(&family.dead, visible + hidden);
    if visible + hidden <= max {
        return Ok(());
    }
    let kept = scan_retained(inner, queue, &family.dead).await?;
    unhide(inner, &family.dead, &kept).await
}

/// Dead jobs of `queue`, newest first.
pub(crate) async fn list(
    inner: &Inner,
    queue: &str,
    offset: usize,
    limit: usize,
) -> Result<Vec<DeadJob>> {
    let Some(family) = inner.queues.existing(queue).await? else {
        return Ok(Vec::new());
    };
    let kept = scan_retained(inner, queue, &family.dead).await?;
    unhide(inner, &family.dead, &kept).await?;
    Ok(kept
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|f| f.job)
        .collect())
}

/// Puts dead envelopes with these ids back, ready now, attempts reset.
pub(crate) async fn requeue(inner: &Inner, queue: &str, ids: &[JobId]) -> Result<usize> {
    let Some(family) = inner.queues.existing(queue).await? else {
        return Ok(0);
    };
    let kept = scan_retained(inner, queue, &family.dead).await?;
    let (chosen, rest): (Vec<Found>, Vec<Found>) = kept
        .into_iter()
        .partition(|f| ids.contains(&f.job.id) && f.job.envelope().is_some());
    let mut moved = 0;
    let mut failed = None;
    // Oldest first, so they run in the order they first died.
    for f in chosen.iter().rev() {
        let Some(mut env) = f.job.envelope() else {
            continue;
        };
        env.attempt = 0;
        env.run_at = Timestamp::now();
        let body = String::from_utf8(env.to_bytes()).unwrap_or_default();
        let key = env.idempotency_key.as_deref();
        // The job takes its key again, unless another job took it meanwhile
        // (then both run: the requeue was asked for by name).
        let (mut claimed, mut sent) = (false, false);
        let step = async {
            if let Some(k) = key {
                claimed = inner.keys.claim(queue, k, &env.id).await?.is_none();
            }
            let url = inner
                .queues
                .level_url(queue, priority_level(env.priority))
                .await?;
            let fifo = inner.config.fifo.then(|| {
                let id = env.id.to_string();
                (id.clone(), format!("{id}-{}", fastrand::u64(..)))
            });
            let send = Send {
                out: Outgoing::text(body),
                delay: 0,
                fifo,
            };
            calls::send(&inner.client, &url, vec![send], inner.budget()).await?;
            sent = true;
            calls::delete(&inner.client, &family.dead, &[f.receipt.as_str()]).await
        };
        match step.await {
            Ok(_) => moved += 1,
            Err(e) => {
                if let (Some(k), true, false) = (key, claimed, sent) {
                    inner.keys.free_all(&[(queue, k, &env.id)]).await;
                }
                failed = Some(e);
                break;
            }
        }
    }
    unhide(inner, &family.dead, &rest).await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(moved),
    }
}

/// Deletes the dead jobs with these ids.
pub(crate) async fn delete(inner: &Inner, queue: &str, ids: &[JobId]) -> Result<usize> {
    let Some(family) = inner.queues.existing(queue).await? else {
        return Ok(0);
    };
    let kept = scan_retained(inner, queue, &family.dead).await?;
    let (doomed, rest): (Vec<Found>, Vec<Found>) =
        kept.into_iter().partition(|f| ids.contains(&f.job.id));
    let receipts: Vec<&str> = doomed.iter().map(|f| f.receipt.as_str()).collect();
    let deleted = calls::delete(&inner.client, &family.dead, &receipts).await?;
    unhide(inner, &family.dead, &rest).await?;
    Ok(deleted.into_iter().filter(|ok| *ok).count())
}

/// Deletes dead jobs: all, or those that died longer ago than `older_than`.
pub(crate) async fn purge(
    inner: &Inner,
    queue: &str,
    older_than: Option<Duration>,
) -> Result<usize> {
    let Some(family) = inner.queues.existing(queue).await? else {
        return Ok(0);
    };
    let cutoff = older_than.map(|d| {
        Timestamp(
            Timestamp::now()
                .as_millis()
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    });
    let kept = scan_retained(inner, queue, &family.dead).await?;
    let (doomed, rest): (Vec<Found>, Vec<Found>) = kept
        .into_iter()
        .partition(|f| cutoff.is_none_or(|c| f.job.died_at <= c));
    let receipts: Vec<&str> = doomed.iter().map(|f| f.receipt.as_str()).collect();
    let deleted = calls::delete(&inner.client, &family.dead, &receipts).await?;
    unhide(inner, &family.dead, &rest).await?;
    Ok(deleted.into_iter().filter(|ok| *ok).count())
}

#[async_trait::async_trait]
impl DeadLetters for SqsBackend {
    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>> {
        list(&self.inner, queue, offset, limit).await
    }

    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>> {
        Ok(list(&self.inner, queue, 0, usize::MAX)
            .await?
            .into_iter()
            .find(|d| d.id == *id))
    }

    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        requeue(&self.inner, queue, ids).await
    }

    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize> {
        purge(&self.inner, queue, older_than).await
    }

    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        delete(&self.inner, queue, ids).await
    }
}
