//! Helpers for testing code that uses jobs: run jobs inline, or inspect and
//! drain what an app enqueued.

use crate::app::App;
use crate::backend::Settings;

use crate::context::{JobContext, StateMap};
use crate::enqueue::Enqueue;
use crate::envelope::Envelope;
use crate::error::Result;
use crate::failure::Failure;
use crate::memory::MemoryBackend;
use crate::registry::Registry;
use crate::worker::WorkerReport;
use std::sync::Arc;
use std::time::Duration;

/// Runs an enqueue's job right here, without a queue, with `state`, as the
/// worker would (arguments round-trip through JSON).
///
/// ```ignore
/// let out = jobsmith::testing::run_inline(send_welcome.delay(7, "hi".into()), &state).await;
/// ```
pub async fn run_inline(job: Enqueue, state: &StateMap) -> Result<Result<(), Failure>> {
    let env = job.into_envelope()?;
    let def = Registry::global()?.get(&env.job)?;
    let ctx = JobContext::inline(def.name, Arc::new(state.clone()));
    let fut = (def.run)(&env.args, ctx).map_err(|source| crate::Error::BadArguments {
        job: env.job.clone(),
        source,
    })?;
    Ok(fut.await)
}

/// An app on a private memory backend whose jobs a test can see and run.
#[derive(Clone, Debug)]
pub struct TestApp {
    app: App,
    backend: MemoryBackend,
}

impl TestApp {
    /// A new, empty test app.
    pub fn new() -> Self {
        let backend = MemoryBackend::new(Settings::default());
        Self {
            app: App::new(backend.clone()),
            backend,
        }
    }

    /// The app, to pass to `.on(&app)` or to code under test.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The memory backend underneath.
    pub fn backend(&self) -> &MemoryBackend {
        &self.backend
    }

    /// The jobs waiting in `queue`, ready ones first in the order they will
    /// run, then scheduled ones by due time; nothing is changed.
    pub fn enqueued(&self, queue: &str) -> Vec<Envelope> {
        self.backend.peek(queue)
    }

    /// Runs every job until nothing is ready, scheduled or running, with
    /// `state`, and returns what the worker did. Retries and schedules are
    /// waited for in real time: give jobs under test short backoffs.
    pub async fn drain(&self, state: StateMap) -> Result<WorkerReport> {
        let mut worker = self
            .app
            .worker()
            .until_idle()
            .grace_period(Duration::from_secs(5));
        worker.state = state;
        let queues = crate::Inspect::queues(&self.backend).await?;
        if !queues.is_empty() {
            worker = worker.queues(queues);
        }
        worker.run_report().await
    }
}

impl Default for TestApp {
    fn default() -> Self {
        Self::new()
    }
}
