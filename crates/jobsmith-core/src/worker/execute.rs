//! Running one delivered job and deciding what becomes of it.

use super::catch::catch_panic;
use super::outcome::{Outcome, Settle};
use super::shared::Shared;
use crate::backend::{Delivery, Lease, Malformed};
use crate::context::JobContext;
use crate::envelope::Envelope;
use crate::failure::Failure;
use crate::job::JobDef;
use crate::printable::printable;
use crate::time::Timestamp;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tracing::Instrument;

/// Runs one delivery to its outcome and hands that to the settler.
pub(super) async fn execute(shared: Arc<Shared>, delivery: Delivery) {
    let Delivery { lease, envelope } = delivery;
    // One lease, shared by the running-jobs table and the job's context.
    let lease = Arc::new(lease);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let slot = shared.track(Arc::clone(&lease), cancel_tx);
    let mut outcome = decide(&shared, &lease, envelope, cancel_rx).await;
    if shared.past_grace.load(Ordering::SeqCst) && !matches!(outcome, Outcome::Ack(_)) {
        // Cancelled because the grace period ran out: the job did not
        // finish, so it goes back as at any stop, its attempt uncounted.
        outcome = Outcome::Release;
    }
    // No await between these two: a shutdown abort sees the job either still
    // running (and releases it) or settled, never neither.
    shared.untrack(slot);
    // The context is gone with the job's future, unless the job kept a clone.
    let lease = Arc::try_unwrap(lease).unwrap_or_else(|kept| Lease::clone(&kept));
    shared.send(Settle {
        slot,
        lease,
        outcome,
    });
}

async fn decide(
    shared: &Arc<Shared>,
    lease: &Arc<Lease>,
    envelope: Result<Envelope, Malformed>,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    let env = match envelope {
        Ok(env) => env,
        Err(bad) => {
            tracing::error!(queue = %printable(&lease.queue), id = %printable(lease.id.as_str()), reason = %printable(&bad.reason), "dead-lettering a payload that is not a job envelope");
            return Outcome::Dead(bad.reason, "malformed");
        }
    };
    let now = Timestamp::now();
    if env.is_expired(now) {
        let name = shared.registry.registered_name(&env.job);
        return Outcome::Expire(name.unwrap_or(crate::registry::UNREGISTERED));
    }
    let def = match shared.registry.get(&env.job) {
        Ok(def) => def,
        Err(e) => {
            tracing::error!(queue = %printable(&lease.queue), id = %printable(env.id.as_str()), job = %printable(&env.job), "dead-lettering a job of unknown name");
            return Outcome::Dead(e.to_string(), crate::registry::UNREGISTERED);
        }
    };
    if env.attempt > env.max_attempts {
        let reason = format!(
            "attempt {} of {}: the worker running the last attempt was lost (its lease expired)",
            env.attempt, env.max_attempts
        );
        return Outcome::Dead(reason, def.name);
    }
    let ctx = JobContext::new(
        def.name,
        Arc::clone(lease),
        (env.attempt, env.max_attempts),
        Arc::clone(&shared.state),
        cancel,
        Some((Arc::clone(&shared.backend), shared.lease)),
    )
    .with_scheduled_for(
        env.idempotency_key
            .as_deref()
            .and_then(crate::schedule::tick_of_key)
            .unwrap_or(env.run_at),
    )
    .with_event(env.event.clone());
    let fut = match (def.run)(&env.args, ctx) {
        Ok(fut) => fut,
        Err(e) => {
            let reason = format!(
                "arguments of job `{}` do not match its signature: {e}",
                def.name
            );
            tracing::warn!(queue = %printable(&lease.queue), id = %printable(env.id.as_str()), job = def.name, error = %printable(&e.to_string()), "dead-lettering a job whose arguments do not match its signature (enqueued by another version of the job?)");
            return Outcome::Dead(reason, def.name);
        }
    };

    let queue_wait = now.since(env.run_at).as_secs_f64();
    // The queue the job was taken from, not the envelope's `queue`, which
    // says whatever its writer put there.
    let labels = [
        ("queue", shared.queue_label(&lease.queue)),
        ("job", def.name.to_owned()),
    ];
    metrics::counter!("jobsmith_jobs_started_total", &labels).increment(1);
    metrics::histogram!("jobsmith_job_queue_wait_seconds", &labels).record(queue_wait);
    shared.counters.started.inc();
    let span = tracing::info_span!(
        "jobsmith.job",
        job.id = %printable(env.id.as_str()),
        job.name = def.name,
        queue = %printable(&env.queue),
        attempt = env.attempt,
        trace = %printable(env.trace.as_deref().unwrap_or("")),
    );
    // Before the span is entered: an OpenTelemetry exporter shows it as the enqueue's child.
    crate::trace::set_parent(&span, env.trace.as_deref());
    let started = Instant::now();
    let result = run_guarded(def, env.trace.clone(), fut)
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed();
    shared.ran_for(elapsed);
    metrics::histogram!("jobsmith_job_duration_seconds", &labels).record(elapsed.as_secs_f64());
    let _enter = span.enter();
    match result {
        Ok(()) => {
            tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "job succeeded");
            Outcome::Ack(def.name)
        }
        Err(failure) => failed(def, env, failure),
    }
}

/// Runs the job's future with its timeout, turning a panic or timeout into a failure.
async fn run_guarded(
    def: &'static JobDef,
    trace: Option<String>,
    fut: crate::job::BoxFuture<'static, Result<(), Failure>>,
) -> Result<(), Failure> {
    let fut = match trace {
        None => fut,
        Some(tp) => Box::pin(crate::trace::with_traceparent(Some(tp), fut)),
    };
    let guarded = catch_panic(fut);
    let outcome = match def.options.timeout {
        None => guarded.await,
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(Failure::retryable(format!("timed out after {limit:?}"))),
        },
    };
    outcome.unwrap_or_else(|panic| Err(Failure::retryable(format!("panicked: {panic}"))))
}

fn failed(def: &'static JobDef, mut env: Envelope, failure: Failure) -> Outcome {
    let attempt = env.attempt;
    if failure.is_permanent() {
        tracing::error!(error = %failure, "job failed permanently");
        return Outcome::Dead(format!("failed permanently: {failure}"), def.name);
    }
    if attempt >= env.max_attempts {
        tracing::error!(error = %failure, "job failed on its last attempt");
        return Outcome::Dead(
            format!(
                "attempt {attempt} of {} failed: {failure}",
                env.max_attempts
            ),
            def.name,
        );
    }
    let delay = def.options.backoff.delay(attempt);
    tracing::warn!(error = %failure, retry_in_ms = delay.as_millis() as u64, "job failed; will retry");
    env.last_error = Some(failure.message().to_owned());
    env.run_at = Timestamp::now().plus(delay);
    Outcome::Retry(env, def.name)
}
