//! Running one delivered job and deciding what becomes of it.

use super::catch::CatchPanic;
use super::run::Shared;
use super::settle::Settle;
use crate::backend::Delivery;
use crate::context::{lease_heartbeat, JobContext};
use crate::envelope::Envelope;
use crate::job::{Failure, JobDef};
use crate::time::Timestamp;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tracing::Instrument;

/// Runs one delivery to its outcome and hands that to the settler.
pub(super) async fn execute(shared: Arc<Shared>, delivery: Delivery) {
    let lease = delivery.lease.clone();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    shared.track(&lease, cancel_tx);
    let settle = decide(&shared, delivery, cancel_rx).await;
    // No await between these two: a shutdown abort sees the job either still
    // running (and releases it) or settled, never neither.
    shared.untrack(&lease);
    shared.send(settle);
}

async fn decide(shared: &Arc<Shared>, delivery: Delivery, cancel: watch::Receiver<bool>) -> Settle {
    let lease = delivery.lease;
    let mut env = match delivery.envelope {
        Ok(env) => env,
        Err(bad) => {
            tracing::error!(queue = %lease.queue, id = %lease.id, reason = %bad.reason, "dead-lettering a payload that is not a job envelope");
            return Settle::Dead(lease, bad.reason);
        }
    };
    let now = Timestamp::now();
    if env.is_expired(now) {
        return Settle::Expire(lease, env.job);
    }
    let def = match shared.registry.get(&env.job) {
        Ok(def) => def,
        Err(e) => {
            tracing::error!(queue = %lease.queue, id = %lease.id, job = %env.job, "dead-lettering a job of unknown name");
            return Settle::Dead(lease, e.to_string());
        }
    };
    if env.attempt > env.max_attempts {
        let reason = format!(
            "attempt {} of {}: the worker running the last attempt was lost (its lease expired)",
            env.attempt, env.max_attempts
        );
        return Settle::Dead(lease, reason);
    }
    let ctx = JobContext::new(
        env.id.clone(),
        def.name.into(),
        env.queue.as_str().into(),
        env.attempt,
        env.max_attempts,
        Arc::clone(&shared.state),
        cancel,
        Some(lease_heartbeat(
            Arc::clone(&shared.backend),
            lease.clone(),
            shared.lease,
        )),
    );
    let fut = match (def.run)(&env.args, ctx) {
        Ok(fut) => fut,
        Err(e) => {
            let reason = format!(
                "arguments of job `{}` do not match its signature: {e}",
                def.name
            );
            return Settle::Dead(lease, reason);
        }
    };

    let queue_wait = now.since(env.run_at).as_secs_f64();
    metrics::counter!("jobsmith_jobs_started_total", "job" => def.name).increment(1);
    metrics::histogram!("jobsmith_job_queue_wait_seconds", "job" => def.name).record(queue_wait);
    shared.counters.started.inc();
    let span = tracing::info_span!(
        "jobsmith.job",
        job.id = %env.id,
        job.name = def.name,
        queue = %env.queue,
        attempt = env.attempt,
        trace = env.trace.as_deref().unwrap_or(""),
    );
    let started = Instant::now();
    let result = run_guarded(def, env.trace.clone(), fut)
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed();
    metrics::histogram!("jobsmith_job_duration_seconds", "job" => def.name)
        .record(elapsed.as_secs_f64());
    let _enter = span.enter();
    match result {
        Ok(()) => {
            tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "job succeeded");
            Settle::Ack(lease, def.name)
        }
        Err(failure) => failed(def, &mut env, lease, failure),
    }
}

/// Runs the job's future with its timeout, turning a panic or timeout into a failure.
async fn run_guarded(
    def: &'static JobDef,
    trace: Option<String>,
    fut: crate::job::BoxFuture<'static, Result<(), Failure>>,
) -> Result<(), Failure> {
    let guarded = match trace {
        None => CatchPanic(fut),
        Some(tp) => CatchPanic(Box::pin(crate::trace::with_traceparent(Some(tp), fut)) as _),
    };
    let outcome = match def.options.timeout {
        None => guarded.await,
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(Failure::retryable(format!("timed out after {limit:?}"))),
        },
    };
    outcome.unwrap_or_else(|panic| Err(Failure::retryable(format!("panicked: {panic}"))))
}

fn failed(
    def: &'static JobDef,
    env: &mut Envelope,
    lease: crate::backend::Lease,
    failure: Failure,
) -> Settle {
    let attempt = env.attempt;
    if failure.is_permanent() {
        tracing::error!(error = %failure, "job failed permanently");
        return Settle::Dead(lease, format!("failed permanently: {failure}"));
    }
    if attempt >= env.max_attempts {
        tracing::error!(error = %failure, "job failed on its last attempt");
        return Settle::Dead(
            lease,
            format!(
                "attempt {attempt} of {} failed: {failure}",
                env.max_attempts
            ),
        );
    }
    let delay = def.options.backoff.delay(attempt);
    tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "job failed; will retry");
    env.last_error = Some(failure.message().to_owned());
    env.run_at = Timestamp::now().plus(delay);
    Settle::Retry(lease, env.clone(), def.name)
}
