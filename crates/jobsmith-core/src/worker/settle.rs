//! Reporting outcomes to the backend, batched: acks go in one call per batch,
//! beside the batch's retries, dead letters and expiries.

use super::run::Shared;
use crate::backend::{Lease, LeaseStatus};
use crate::envelope::Envelope;
use futures_util::StreamExt;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The outcome of one delivery, to be told to the backend with its lease.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Succeeded.
    Ack(&'static str),
    /// Failed; run again at the envelope's `run_at`.
    Retry(Envelope, &'static str),
    /// Failed for good, with the reason and the job's name (`malformed` for
    /// a payload that is not an envelope).
    Dead(String, Cow<'static, str>),
    /// Its TTL had passed; dropped unrun.
    Expire(String),
}

/// An outcome and the lease to settle it with.
#[derive(Debug)]
pub(super) struct Settle {
    /// The job's slot in the worker, whose lease is kept alive until this is reported.
    pub(super) slot: u64,
    pub(super) lease: Lease,
    pub(super) outcome: Outcome,
}

/// How many outcomes one flush takes at most.
const MAX_BATCH: usize = 512;

/// Receives outcomes until every sender is gone, flushing them in batches.
pub(super) async fn settler(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let slots: Vec<u64> = batch.iter().map(|s| s.slot).collect();
        flush(&shared, &mut batch).await;
        shared.settled(&slots);
    }
}

/// How many retries, dead letters and expiries of one flush go to the backend at once.
const CONCURRENT_SETTLES: usize = 32;

async fn flush(shared: &Shared, batch: &mut Vec<Settle>) {
    let mut acks = Vec::new();
    let mut labels = Vec::new();
    let mut others = Vec::new();
    for Settle { lease, outcome, .. } in batch.drain(..) {
        match outcome {
            Outcome::Ack(name) => {
                labels.push((lease.queue.clone(), name));
                acks.push(lease);
            }
            other => others.push(settle_one(shared, lease, other)),
        }
    }
    // A retry or a dead letter is a confirmed write of its own on some
    // brokers: the batch's acks do not wait behind them, nor they behind each
    // other. Outcomes of different leases are independent.
    let others = futures_util::stream::iter(others)
        .buffer_unordered(CONCURRENT_SETTLES)
        .for_each(|()| async {});
    futures_util::future::join(ack_all(shared, acks, labels), others).await;
}

async fn ack_all(shared: &Shared, acks: Vec<Lease>, labels: Vec<(String, &'static str)>) {
    if acks.is_empty() {
        return;
    }
    let statuses = persist(|| shared.backend.ack(&acks)).await;
    for (status, (queue, name)) in statuses.iter().zip(labels) {
        if shared.count(*status, "ack") {
            metrics::counter!("jobsmith_jobs_succeeded_total", "queue" => queue, "job" => name)
                .increment(1);
            shared.counters.succeeded.inc();
        }
    }
}

async fn settle_one(shared: &Shared, lease: Lease, outcome: Outcome) {
    let (status, what, series, counter, name) = match outcome {
        Outcome::Ack(name) => {
            let label = (lease.queue.clone(), name);
            return ack_all(shared, vec![lease], vec![label]).await;
        }
        Outcome::Retry(env, name) => (
            persist(|| shared.backend.retry(&lease, &env)).await,
            "retry",
            "jobsmith_jobs_retried_total",
            &shared.counters.retried,
            Cow::Borrowed(name),
        ),
        Outcome::Dead(reason, name) => (
            persist(|| shared.backend.dead_letter(&lease, &reason)).await,
            "dead-letter",
            "jobsmith_jobs_dead_total",
            &shared.counters.dead,
            name,
        ),
        Outcome::Expire(name) => (
            persist(|| shared.backend.expire(&lease)).await,
            "expire",
            "jobsmith_jobs_expired_total",
            &shared.counters.expired,
            Cow::Owned(name),
        ),
    };
    if shared.count(status, what) {
        metrics::counter!(series, "queue" => lease.queue, "job" => name).increment(1);
        counter.inc();
    }
}

/// Retries an operation through connection errors, with capped exponential backoff.
///
/// A non-transient error is logged and reported as a lost lease: the job's
/// lease then runs out and it is delivered again, so nothing is lost.
async fn persist<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<T>>,
    T: Lost,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not settle a job; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "could not settle a job; it will be delivered again when its lease runs out");
                return T::lost();
            }
        }
    }
}

/// What an operation that gave up reports.
trait Lost {
    fn lost() -> Self;
}

impl Lost for LeaseStatus {
    fn lost() -> Self {
        LeaseStatus::Lost
    }
}

impl Lost for Vec<LeaseStatus> {
    fn lost() -> Self {
        Vec::new()
    }
}
