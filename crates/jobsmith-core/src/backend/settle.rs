//! Settling reserved jobs: the [`Outcome`] of each, and the helpers for a
//! backend that settles each kind of outcome on its own.

use crate::backend::{Backend, Lease, LeaseStatus};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use futures_util::StreamExt;

/// What became of one reserved job, told to [`Backend::settle`] with its lease.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Completed: the job leaves the backend, and its idempotency key is
    /// remembered for [`Settings::unique_for`](crate::Settings::unique_for).
    Ack(Lease),
    /// Failed: put back to run at the envelope's `run_at`, the envelope
    /// (with its `last_error`) stored in place of the old one. Its attempt
    /// stays counted.
    Retry(Lease, Envelope),
    /// Handed back unfinished (a graceful stop): ready again at once, without
    /// counting the attempt.
    Release(Lease),
    /// Failed for good: moved to its queue's dead-letter queue with the
    /// reason, and its idempotency key freed.
    DeadLetter(Lease, String),
    /// Dropped unrun because its TTL had passed, counted as expired in the
    /// queue's stats (the worker counts it in the metric).
    Expire(Lease),
}

impl Outcome {
    /// The lease the outcome settles.
    pub fn lease(&self) -> &Lease {
        match self {
            Self::Ack(l)
            | Self::Retry(l, _)
            | Self::Release(l)
            | Self::DeadLetter(l, _)
            | Self::Expire(l) => l,
        }
    }
}

/// How a backend settles each kind of [`Outcome`] on its own: acks and
/// releases in batches, the others one lease at a time. Such a backend's
/// [`Backend::settle`] is [`settle_by_kind`].
#[async_trait::async_trait]
pub trait SettleByKind: Send + Sync {
    /// Completes jobs ([`Outcome::Ack`]).
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;

    /// Returns jobs to the ready state without counting the attempt ([`Outcome::Release`]).
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;

    /// Puts a failed job back to run later ([`Outcome::Retry`]).
    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus>;

    /// Moves a job to its dead-letter queue ([`Outcome::DeadLetter`]).
    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus>;

    /// Drops a job whose TTL has passed ([`Outcome::Expire`]).
    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus>;
}

/// How many retries, dead letters and expiries of one settle go to the broker at once.
const CONCURRENT: usize = 32;

/// [`Backend::settle`] for a backend that settles each kind on its own:
/// the acks in one call, the releases in another, and each retry, dead
/// letter and expiry in a call of its own, at most 32 at once. The three
/// go at once: a retry or a dead letter is a confirmed write of its own
/// on some brokers, and the acks do not wait behind it.
pub async fn settle_by_kind<B: SettleByKind + ?Sized>(
    backend: &B,
    outcomes: &[Outcome],
) -> Vec<Result<LeaseStatus>> {
    let n = outcomes.len();
    let mut acks = (Vec::new(), Vec::new());
    let mut releases = (Vec::new(), Vec::new());
    let mut others = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Outcome::Ack(lease) => {
                acks.0.push(i);
                acks.1.push(lease.clone());
            }
            Outcome::Release(lease) => {
                releases.0.push(i);
                releases.1.push(lease.clone());
            }
            _ => others.push(i),
        }
    }
    let batch = |leases: Vec<Lease>, release: bool| async move {
        if leases.is_empty() {
            return Vec::new();
        }
        let answer = if release {
            backend.release(&leases).await
        } else {
            backend.ack(&leases).await
        };
        per_lease(answer, leases.len())
    };
    let one = |i: usize| async move {
        let status = match &outcomes[i] {
            Outcome::Retry(lease, env) => backend.retry(lease, env).await,
            Outcome::DeadLetter(lease, reason) => backend.dead_letter(lease, reason).await,
            Outcome::Expire(lease) => backend.expire(lease).await,
            Outcome::Ack(_) | Outcome::Release(_) => unreachable!("batched above"),
        };
        (i, status)
    };
    let (acked, released, settled) = futures_util::future::join3(
        batch(acks.1, false),
        batch(releases.1, true),
        futures_util::stream::iter(others)
            .map(one)
            .buffer_unordered(CONCURRENT)
            .collect::<Vec<_>>(),
    )
    .await;
    let mut out: Vec<Option<Result<LeaseStatus>>> = (0..n).map(|_| None).collect();
    for (i, r) in acks.0.into_iter().zip(acked) {
        out[i] = Some(r);
    }
    for (i, r) in releases.0.into_iter().zip(released) {
        out[i] = Some(r);
    }
    for (i, r) in settled {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::backend("no answer for this lease"))))
        .collect()
}

/// One answer per lease from the answer for a batch of `n`: its statuses,
/// or its error for each lease (a backend that answers with the wrong
/// count is an error for the leases it did not answer).
fn per_lease(answer: Result<Vec<LeaseStatus>>, n: usize) -> Vec<Result<LeaseStatus>> {
    match answer {
        Ok(statuses) => {
            let mut out: Vec<_> = statuses.into_iter().take(n).map(Ok).collect();
            while out.len() < n {
                out.push(Err(Error::backend(format!(
                    "the backend answered for {} of {n} leases",
                    out.len()
                ))));
            }
            out
        }
        Err(e) => {
            let mut out: Vec<_> = (1..n).map(|_| Err(e.same_kind())).collect();
            out.insert(0, Err(e));
            out
        }
    }
}

/// One kind of outcome at a time, through [`Backend::settle`]: for callers
/// that settle a few leases by hand (the CLI, tests).
#[async_trait::async_trait]
pub trait SettleExt {
    /// Completes jobs ([`Outcome::Ack`]).
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;
    /// Returns jobs to ready without counting the attempt ([`Outcome::Release`]).
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>>;
    /// Puts a failed job back to run at `envelope.run_at` ([`Outcome::Retry`]).
    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus>;
    /// Moves a job to its dead-letter queue ([`Outcome::DeadLetter`]).
    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus>;
    /// Drops a job whose TTL has passed ([`Outcome::Expire`]).
    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus>;
}

#[async_trait::async_trait]
impl<B: Backend + ?Sized> SettleExt for B {
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        all(self
            .settle(&leases.iter().cloned().map(Outcome::Ack).collect::<Vec<_>>())
            .await)
    }
    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        all(self
            .settle(
                &leases
                    .iter()
                    .cloned()
                    .map(Outcome::Release)
                    .collect::<Vec<_>>(),
            )
            .await)
    }
    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        one(self
            .settle(&[Outcome::Retry(lease.clone(), envelope.clone())])
            .await)
    }
    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        one(self
            .settle(&[Outcome::DeadLetter(lease.clone(), reason.to_owned())])
            .await)
    }
    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        one(self.settle(&[Outcome::Expire(lease.clone())]).await)
    }
}

fn all(answers: Vec<Result<LeaseStatus>>) -> Result<Vec<LeaseStatus>> {
    answers.into_iter().collect()
}

fn one(answers: Vec<Result<LeaseStatus>>) -> Result<LeaseStatus> {
    answers
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(Error::backend("no answer for the lease")))
}
