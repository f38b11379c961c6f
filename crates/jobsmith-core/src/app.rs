//! [`App`]: a handle on one backend, for enqueueing and for starting workers.

use crate::backend::{Backend, QueueStats, Settings};
use crate::enqueue::Enqueue;
use crate::envelope::JobId;
use crate::error::{Error, Result};
use crate::memory::MemoryBackend;
use crate::worker::Worker;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A handle on one backend. Cheap to clone; share it across the application.
#[derive(Clone)]
pub struct App {
    backend: Arc<dyn Backend>,
}

static DEFAULT: RwLock<Option<App>> = RwLock::new(None);

impl App {
    /// An app on `backend`.
    pub fn new(backend: impl Backend) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// An app on a shared backend.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// An app on a new in-process memory backend.
    pub fn memory() -> Self {
        Self::new(MemoryBackend::new(Settings::default()))
    }

    /// An app on the memory backend for a `memory://` URL (settings in its query string).
    pub fn connect_memory(url: &str) -> Result<Self> {
        let (scheme, rest) = split_scheme(url)?;
        if scheme != "memory" {
            return Err(Error::Config(format!("`{url}` is not a memory:// URL")));
        }
        let settings = Settings::from_query(query_pairs(rest))?;
        Ok(Self::new(MemoryBackend::new(settings)))
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Makes this app the one that enqueues without `.on(&app)` use.
    pub fn set_default(&self) {
        let mut slot = DEFAULT
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(self.clone());
    }

    /// Makes this app the default unless one is set already.
    pub fn set_default_if_unset(&self) {
        let mut slot = DEFAULT
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(self.clone());
        }
    }

    /// The default app, if one is set.
    pub fn default_app() -> Option<App> {
        DEFAULT
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Enqueues one job, returning its id.
    pub async fn enqueue(&self, job: Enqueue) -> Result<JobId> {
        let env = job.into_envelope()?;
        let queue = env.queue.clone();
        let ids = self.backend.enqueue(vec![env]).await?;
        metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => queue).increment(1);
        ids.into_iter()
            .next()
            .ok_or_else(|| Error::Backend("enqueue returned no id".into()))
    }

    /// Enqueues many jobs in as few round trips as the backend allows.
    pub async fn enqueue_many(
        &self,
        jobs: impl IntoIterator<Item = Enqueue>,
    ) -> Result<Vec<JobId>> {
        let envs = jobs
            .into_iter()
            .map(Enqueue::into_envelope)
            .collect::<Result<Vec<_>>>()?;
        let mut per_queue: Vec<(String, u64)> = Vec::new();
        for env in &envs {
            match per_queue.iter_mut().find(|(q, _)| *q == env.queue) {
                Some((_, n)) => *n += 1,
                None => per_queue.push((env.queue.clone(), 1)),
            }
        }
        let ids = self.backend.enqueue(envs).await?;
        for (queue, n) in per_queue {
            metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => queue).increment(n);
        }
        Ok(ids)
    }

    /// Counts for every queue the backend knows.
    pub async fn stats(&self) -> Result<Vec<QueueStats>> {
        let queues = self.backend.queues().await?;
        self.backend.stats(&queues).await
    }

    /// A worker on this app, to configure and run.
    pub fn worker(&self) -> Worker {
        Worker::new(self.clone())
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.backend.name())
            .finish()
    }
}

/// Splits `scheme://rest`, or explains what a URL must look like.
pub fn split_scheme(url: &str) -> Result<(&str, &str)> {
    url.split_once("://").ok_or_else(|| {
        Error::Config(format!(
            "`{url}` is not a backend URL: write `memory://`, `redis://host:6379`, `amqp://host:5672` or `sqs://region/prefix`"
        ))
    })
}

/// The `key=value` pairs of a URL's query string.
pub fn query_pairs(url: &str) -> impl Iterator<Item = (&str, &str)> {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}
