//! W3C trace context, carried from the enqueue into the job's run.
//!
//! A job that enqueues another passes its own `traceparent` on, so a chain of
//! jobs shares one trace. The worker records each job's `traceparent` on its
//! span (field `trace`), where an OpenTelemetry layer can pick it up.

use std::future::Future;

tokio::task_local! {
    static TRACEPARENT: Option<String>;
}

/// The `traceparent` in force for the current task, if any.
pub fn current_traceparent() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok().flatten()
}

/// Runs `fut` with `traceparent` in force, so the jobs it enqueues carry it.
pub async fn with_traceparent<F: Future>(traceparent: Option<String>, fut: F) -> F::Output {
    TRACEPARENT.scope(traceparent, fut).await
}
