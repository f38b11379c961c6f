//! [`App`]: a handle on one backend, for enqueueing and for starting workers.
//!
//! An [`Enqueue`] is built in `enqueue.rs` and sent from here (`.on(&app)`,
//! `.await` on the default app). [`App::worker`] is in `worker/`, which
//! builds on the app: nothing here needs the worker.

use crate::backend::{Backend, QueueStats, Settings};
use crate::enqueue::Enqueue;
use crate::envelope::{Envelope, JobId};
use crate::error::{Error, Result};
use crate::job::BoxFuture;
use crate::lock::RwLockExt;
use crate::memory::MemoryBackend;
use crate::publish::SubscriptionCache;
use crate::url::BackendUrl;
use futures_util::{StreamExt, TryStreamExt};
use std::fmt;
use std::future::IntoFuture;
use std::sync::{Arc, RwLock};

/// A handle on one backend. Cheap to clone; share it across the application.
#[derive(Clone)]
pub struct App {
    backend: Arc<dyn Backend>,
    subscriptions: Arc<SubscriptionCache>,
}

static DEFAULT: RwLock<Option<App>> = RwLock::new(None);

/// How many earlier-form keys one `enqueue_many` looks up at once.
const LOOKUPS_AT_ONCE: usize = 16;

impl App {
    /// An app on `backend`.
    pub fn new(backend: impl Backend) -> Self {
        Self::from_backend(Arc::new(backend))
    }

    /// An app on a shared backend.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            subscriptions: Arc::default(),
        }
    }

    /// An app on a new in-process memory backend.
    pub fn memory() -> Self {
        Self::new(MemoryBackend::new(Settings::default()))
    }

    /// An app on the memory backend for a `memory://` URL (settings in its query string).
    pub fn connect_memory(url: &str) -> Result<Self> {
        let url = BackendUrl::parse(url)?;
        if url.scheme() != "memory" {
            return Err(Error::Config(format!(
                "`{}` is not a memory:// URL",
                url.redacted()
            )));
        }
        // Credentials or a port come with a host: the `url` crate refuses them alone.
        if url.host().is_some() || !url.path().is_empty() || url.fragment().is_some() {
            return Err(Error::Config(format!(
                "`{}`: a memory:// URL names no host, path or fragment, only settings: `memory://?dead_max=100`",
                url.redacted()
            )));
        }
        url.refuse_unknown(&[Settings::KEYS])?;
        let settings = Settings::from_query(url.query().iter())?;
        Ok(Self::new(MemoryBackend::new(settings)))
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The subscriptions this app's publishes read (`publish.rs`).
    pub(crate) fn subscription_cache(&self) -> &SubscriptionCache {
        &self.subscriptions
    }

    /// Makes this app the one that enqueues without `.on(&app)` use.
    pub fn set_default(&self) {
        let mut slot = DEFAULT.write_unpoisoned();
        *slot = Some(self.clone());
    }

    /// Makes this app the default unless one is set already.
    pub fn set_default_if_unset(&self) {
        let mut slot = DEFAULT.write_unpoisoned();
        if slot.is_none() {
            *slot = Some(self.clone());
        }
    }

    /// The default app, if one is set.
    pub fn default_app() -> Option<App> {
        DEFAULT.read_unpoisoned().clone()
    }

    /// Enqueues one job, returning its id.
    pub async fn enqueue(&self, job: Enqueue) -> Result<JobId> {
        let (env, legacy) = job.prepare()?;
        if let Some(id) = self.legacy_holder(&env, legacy.as_deref()).await? {
            // A no-op enqueue counts, as when the backend finds the key taken.
            metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => env.queue).increment(1);
            return Ok(id);
        }
        let queue = env.queue.clone();
        let ids = self.backend.enqueue(vec![env]).await?;
        metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => queue).increment(1);
        ids.into_iter()
            .next()
            .ok_or_else(|| Error::backend("enqueue returned no id"))
    }

    /// Enqueues many jobs in as few round trips as the backend allows.
    pub async fn enqueue_many(
        &self,
        jobs: impl IntoIterator<Item = Enqueue>,
    ) -> Result<Vec<JobId>> {
        let prepared = jobs
            .into_iter()
            .map(Enqueue::prepare)
            .collect::<Result<Vec<_>>>()?;
        let mut per_queue: Vec<(String, u64)> = Vec::new();
        for (env, _) in &prepared {
            match per_queue.iter_mut().find(|(q, _)| *q == env.queue) {
                Some((_, n)) => *n += 1,
                None => per_queue.push((env.queue.clone(), 1)),
            }
        }
        // The existing job of each enqueue whose earlier-form key is taken.
        let held: Vec<Option<JobId>> = if prepared.iter().any(|(_, l)| l.is_some()) {
            futures_util::stream::iter(&prepared)
                .map(|(env, legacy)| self.legacy_holder(env, legacy.as_deref()))
                .buffered(LOOKUPS_AT_ONCE)
                .try_collect()
                .await?
        } else {
            vec![None; prepared.len()]
        };
        let envs: Vec<Envelope> = prepared
            .into_iter()
            .zip(&held)
            .filter(|(_, h)| h.is_none())
            .map(|((env, _), _)| env)
            .collect();
        let mut ids = self.backend.enqueue(envs).await?.into_iter();
        for (queue, n) in per_queue {
            metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => queue).increment(n);
        }
        held.into_iter()
            .map(|h| {
                h.or_else(|| ids.next())
                    .ok_or_else(|| Error::backend("enqueue returned too few ids"))
            })
            .collect()
    }

    /// The job holding `legacy`, the key an earlier version derived for this
    /// `unique` job: while such a key lives (queued, running, or completed
    /// within `unique_for`), an enqueue of equal arguments is a no-op
    /// returning that job's id, as it was before the upgrade.
    async fn legacy_holder(&self, env: &Envelope, legacy: Option<&str>) -> Result<Option<JobId>> {
        match legacy {
            Some(key) => self.backend.key_holder(&env.queue, key).await,
            None => Ok(None),
        }
    }

    /// Counts for every queue the backend knows.
    pub async fn stats(&self) -> Result<Vec<QueueStats>> {
        let inspect = self.backend.inspect()?;
        let queues = inspect.queues().await?;
        inspect.stats(&queues).await
    }
}

impl Enqueue {
    /// Enqueues on `app`, returning the job's id (the existing job's id when
    /// its idempotency key was already taken).
    pub async fn on(self, app: &App) -> Result<JobId> {
        app.enqueue(self).await
    }
}

impl IntoFuture for Enqueue {
    type Output = Result<JobId>;
    type IntoFuture = BoxFuture<'static, Result<JobId>>;

    /// Enqueues on the default app (see [`App::set_default`]).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let app = App::default_app().ok_or(Error::NoDefaultApp)?;
            app.enqueue(self).await
        })
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.backend.name())
            .finish()
    }
}
