//! Reporting outcomes to the backend, batched: each batch in one
//! [`Backend::settle`](crate::Backend::settle) call, and what failed with a
//! transient error tried again.

use super::outcome::{Outcome, Settle};
use super::shared::Shared;
use crate::backend::{self, LeaseStatus};
use crate::retry::Doubling;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How many outcomes one flush takes at most.
const MAX_BATCH: usize = 512;

/// Receives outcomes until every sender is gone, flushing them in batches.
pub(super) async fn settler(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let batching = shared.backend.settle_batching();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        take_ready(&mut rx, &mut batch);
        if let Some((n, linger)) = batching {
            // Up to `linger` for a full request's worth; never past a stop,
            // which waits for what is unsettled.
            let until = tokio::time::Instant::now() + linger;
            while batch.len() % n != 0 && batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(next)) => {
                        batch.push(next);
                        take_ready(&mut rx, &mut batch);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let slots: Vec<u64> = batch.iter().map(|s| s.slot).collect();
        flush(&shared, &mut batch).await;
        shared.settled(&slots);
    }
}

/// Adds to `batch` the outcomes already waiting, up to [`MAX_BATCH`].
fn take_ready(rx: &mut mpsc::UnboundedReceiver<Settle>, batch: &mut Vec<Settle>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
}

async fn flush(shared: &Shared, batch: &mut Vec<Settle>) {
    let mut told = Vec::with_capacity(batch.len());
    let mut outcomes = Vec::with_capacity(batch.len());
    for Settle { lease, outcome, .. } in batch.drain(..) {
        let (tell, told_as) = match outcome {
            Outcome::Ack(name) => (backend::Outcome::Ack(lease), Told::Ack(name)),
            Outcome::Retry(env, name) => (backend::Outcome::Retry(lease, env), Told::Retry(name)),
            Outcome::Dead(reason, name) => (
                backend::Outcome::DeadLetter(lease, reason),
                Told::Dead(name),
            ),
            Outcome::Expire(name) => (backend::Outcome::Expire(lease), Told::Expire(name)),
            Outcome::Release => (backend::Outcome::Release(lease), Told::Release),
        };
        outcomes.push(tell);
        told.push(told_as);
    }
    let statuses = persist(shared, &outcomes).await;
    for ((outcome, status), told) in outcomes.iter().zip(statuses).zip(told) {
        let Some(status) = status else { continue };
        let lease = outcome.lease();
        let (what, series, counter, name) = match told {
            Told::Ack(name) => (
                "ack",
                "jobsmith_jobs_succeeded_total",
                &shared.counters.succeeded,
                name,
            ),
            Told::Release => {
                if shared.count(status, "release", lease) {
                    shared.counters.released.inc();
                }
                continue;
            }
            Told::Retry(name) => (
                "retry",
                "jobsmith_jobs_retried_total",
                &shared.counters.retried,
                name,
            ),
            Told::Dead(name) => (
                "dead-letter",
                "jobsmith_jobs_dead_total",
                &shared.counters.dead,
                name,
            ),
            Told::Expire(name) => (
                "expire",
                "jobsmith_jobs_expired_total",
                &shared.counters.expired,
                name,
            ),
        };
        if shared.count(status, what, lease) {
            let queue = shared.queue_label(&lease.queue);
            metrics::counter!(series, "queue" => queue, "job" => name).increment(1);
            counter.inc();
        }
    }
}

/// What was told of a lease, with the job's name for the metric.
enum Told {
    Ack(&'static str),
    Retry(&'static str),
    Dead(&'static str),
    Expire(&'static str),
    Release,
}

/// Settles `outcomes`, trying again those that failed with a transient
/// error, with capped exponential backoff, until each is answered.
///
/// Answers, in order, each outcome's status; `None` for one whose error
/// was not transient, which is logged: the job's lease then runs out and it
/// is delivered again, so nothing is lost. The first call settles
/// `outcomes` as they are; only a retry copies the ones that failed.
async fn persist(shared: &Shared, outcomes: &[backend::Outcome]) -> Vec<Option<LeaseStatus>> {
    let mut answers = vec![None; outcomes.len()];
    let mut pending: Vec<usize> = (0..outcomes.len()).collect();
    let mut delays = Doubling::new(Duration::from_millis(50), Duration::from_secs(5));
    while !pending.is_empty() {
        let results = if pending.len() == outcomes.len() {
            shared.backend.settle(outcomes).await
        } else {
            let again: Vec<_> = pending.iter().map(|&i| outcomes[i].clone()).collect();
            shared.backend.settle(&again).await
        };
        let mut again = Vec::new();
        let mut transient = None;
        for (i, result) in pending.into_iter().zip(results) {
            match result {
                Ok(status) => answers[i] = Some(status),
                Err(e) if e.is_transient() => {
                    transient.get_or_insert(e);
                    again.push(i);
                }
                Err(e) => {
                    tracing::error!(error = %e.describe(), "could not settle a job; it will be delivered again when its lease runs out");
                }
            }
        }
        pending = again;
        if let Some(e) = transient {
            let delay = delays.next_delay();
            tracing::warn!(error = %e.describe(), jobs = pending.len(), retry_in_ms = delay.as_millis() as u64, "could not settle jobs; retrying");
            tokio::time::sleep(delay).await;
        }
    }
    answers
}
