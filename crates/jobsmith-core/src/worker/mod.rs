//! The worker: reserves jobs in batches and runs every registered job.
//!
//! [`Worker`] is the builder; `run.rs` is the reserve loop, `execute.rs` runs
//! one job and decides its outcome, `settle.rs` reports outcomes to the
//! backend in batches, `heartbeat.rs` keeps long jobs' leases alive and
//! samples queue depth, and `endpoint.rs` serves `/metrics` (feature `prometheus`).

mod catch;
#[cfg(feature = "prometheus")]
mod endpoint;
mod execute;
mod heartbeat;
mod outcome;
mod run;
mod settle;
mod shared;
pub(crate) mod subscribe;

use crate::app::App;
use crate::context::StateMap;
use crate::enqueue::Enqueue;
use crate::error::Result;
use crate::job::BoxFuture;
use crate::registry::Registry;
use crate::schedule::scheduler::Pending;
use crate::schedule::Cron;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// Runs jobs from an [`App`]'s backend. Built by [`App::worker`].
///
/// ```no_run
/// # async fn f(app: jobsmith_core::App) -> jobsmith_core::Result<()> {
/// app.worker()
///     .queues(["email", "default"])
///     .concurrency(32)
///     .grace_period(std::time::Duration::from_secs(20))
///     .run()
///     .await
/// # }
/// ```
#[must_use = "a worker does nothing until `.run()` is awaited"]
pub struct Worker {
    pub(crate) app: App,
    pub(crate) queues: Option<Vec<String>>,
    pub(crate) concurrency: usize,
    pub(crate) batch: usize,
    pub(crate) prefetch: usize,
    pub(crate) state: StateMap,
    pub(crate) grace: Duration,
    pub(crate) lease: Duration,
    pub(crate) registry: Option<Registry>,
    pub(crate) stop: Option<BoxFuture<'static, ()>>,
    pub(crate) until_idle: bool,
    /// `None`: the backend's [`Backend::depth_sample_every`](crate::Backend::depth_sample_every).
    pub(crate) sample_every: Option<Duration>,
    #[cfg(feature = "prometheus")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    pub(crate) schedules: Vec<Pending>,
}

/// What a worker did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs started (attempts).
    pub started: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and were scheduled to retry.
    pub retried: u64,
    /// Jobs moved to the dead-letter queue.
    pub dead: u64,
    /// Jobs dropped because their TTL had passed.
    pub expired: u64,
    /// Jobs handed back at shutdown without counting an attempt.
    pub released: u64,
    /// Settlements the backend refused because the lease was lost.
    pub lost_leases: u64,
    /// Reserve calls made to the backend. Short jobs come in batches of up
    /// to the concurrency, so `started / reserves` near it means few round
    /// trips per job.
    pub reserves: u64,
}

impl App {
    /// A worker on this app, to configure and run.
    pub fn worker(&self) -> Worker {
        Worker::new(self.clone())
    }
}

impl Worker {
    fn new(app: App) -> Self {
        Self {
            app,
            queues: None,
            concurrency: 16,
            batch: 64,
            prefetch: 64,
            state: StateMap::new(),
            grace: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            registry: None,
            stop: None,
            until_idle: false,
            sample_every: None,
            #[cfg(feature = "prometheus")]
            metrics_addr: None,
            schedules: Vec::new(),
        }
    }

    /// Only these queues, taken in turn. Default: every queue a registered job names.
    ///
    /// The worker then fires only the schedules whose job goes to one of these
    /// queues (*Which workers fire a schedule* in the `#[job]` guide,
    /// `crates/jobsmith/docs/jobs.md`).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// How many jobs run at once. Default 16.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// At most this many jobs per reserve call. Default 64.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// At most this many jobs taken ahead of the free slots, and never more
    /// than the concurrency. Default 64 (so, at the default concurrency,
    /// 16); 0 takes only as many as there are free slots.
    ///
    /// The worker takes jobs ahead only while they are short: as many as its
    /// slots run in about 10 ms at the mean run time so far (none before the
    /// first job has run, none for a slot whose job has run longer than
    /// that). The next jobs then arrive while the slots are busy instead of
    /// after, and a long job never waits in this worker while another has a
    /// free slot. Jobs taken ahead keep their leases extended, and go back
    /// without counting an attempt at a graceful stop; as the worker never
    /// holds more unstarted jobs than its concurrency, a kill -9 still
    /// charges an attempt to at most `concurrency` jobs that never ran.
    ///
    /// On a backend that takes jobs in ahead by itself (RabbitMQ's consumer
    /// prefetch, SQS's background receives) the worker takes none ahead.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// Shared state, injected into jobs that take a `State<T>` parameter. Call once per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Shared state that is already behind an `Arc`, injected as `State<T>`.
    pub fn state_shared<T: Send + Sync + 'static>(mut self, value: std::sync::Arc<T>) -> Self {
        self.state.insert_shared(value);
        self
    }

    /// How long running jobs may take to finish after a stop signal before
    /// they are cancelled and released. Default 30 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long a reservation lasts without a heartbeat; the worker extends
    /// it every third of this while a job runs. Default 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// Runs exactly these jobs instead of every linked one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Stops when `signal` completes, instead of on SIGINT or SIGTERM.
    pub fn stop_on(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.stop = Some(Box::pin(signal));
        self
    }

    /// Stops once its queues hold nothing ready, scheduled or in flight and
    /// no job is running: for examples, tests and one-off drains.
    pub fn until_idle(mut self) -> Self {
        self.until_idle = true;
        self
    }

    /// How often queue depth and the oldest ready job's age are sampled from
    /// the backend into the `jobsmith_queue_depth` and
    /// `jobsmith_queue_oldest_age_seconds` gauges. Default 5 s (15 s on
    /// SQS, where each sample costs billed requests); at least 100 ms.
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = Some(every.max(Duration::from_millis(100)));
        self
    }

    /// Serves `GET /metrics` in the Prometheus text format on `addr` while
    /// the worker runs, and stops serving when it stops (feature `prometheus`).
    ///
    /// `addr` is a [`SocketAddr`](std::net::SocketAddr), or a bare port,
    /// which listens on 127.0.0.1 only. [`run`](Self::run) fails at once with
    /// [`Error::MetricsBind`](crate::Error::MetricsBind) when the port is
    /// taken, and with [`Error::MetricsRecorder`](crate::Error::MetricsRecorder)
    /// when another `metrics` recorder is installed in the process.
    ///
    /// ```no_run
    /// # async fn f(app: jobsmith_core::App) -> jobsmith_core::Result<()> {
    /// app.worker().prometheus(9464).run().await // http://127.0.0.1:9464/metrics
    /// # }
    /// ```
    #[cfg(feature = "prometheus")]
    pub fn prometheus(mut self, addr: impl Into<crate::prometheus::MetricsAddr>) -> Self {
        self.metrics_addr = Some(addr.into().0);
        self
    }

    /// Enqueues `job`, with its fixed arguments, at every tick of the cron
    /// expression `cron` (six fields, seconds first; read in UTC; missed
    /// ticks skipped). The schedule is named after the job; every worker
    /// that is given it enqueues the job once per tick between them. A worker
    /// fires it only if it runs the queue `job` goes to, and otherwise logs
    /// at start that it skips it.
    ///
    /// A malformed expression makes [`run`](Self::run) fail at once with
    /// [`Error::Schedule`](crate::Error::Schedule), saying how to write it;
    /// so does one with no tick to come (a year in the past), which would
    /// never fire.
    ///
    /// ```no_run
    /// # async fn f(app: jobsmith_core::App, nightly: jobsmith_core::Enqueue) -> jobsmith_core::Result<()> {
    /// app.worker().schedule("0 0 3 * * *", nightly).run().await
    /// # }
    /// ```
    pub fn schedule(mut self, cron: &str, job: Enqueue) -> Self {
        self.schedules.push(Pending {
            name: None,
            cron: Cron::new(cron),
            job,
        });
        self
    }

    /// Like [`schedule`](Self::schedule), with a [`Cron`] (zone, missed-tick
    /// policy) and a name of its own, for several schedules of one job.
    pub fn schedule_cron(mut self, name: impl Into<String>, cron: Cron, job: Enqueue) -> Self {
        self.schedules.push(Pending {
            name: Some(name.into()),
            cron: Ok(cron),
            job,
        });
        self
    }

    /// Runs until SIGINT or SIGTERM (or the [`stop_on`](Self::stop_on)
    /// signal), then stops reserving, lets running jobs finish within the
    /// grace period and releases the rest.
    ///
    /// A broker that cannot be reached is retried with backoff (50 ms
    /// doubling to 10 s) for as long as it takes. One that refuses the
    /// worker's configuration (a wrong password, an unknown database or
    /// virtual host, a queue declared with other arguments: an error whose
    /// [`is_permanent`](crate::Error::is_permanent) is true) stops the worker
    /// the same way, and `run` returns that error, which says what to fix.
    pub async fn run(self) -> Result<()> {
        self.run_report().await.map(drop)
    }

    /// Like [`run`](Self::run), returning what the worker did.
    pub async fn run_report(self) -> Result<WorkerReport> {
        run::run(self).await
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("app", &self.app)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("batch", &self.batch)
            .field("prefetch", &self.prefetch)
            .field("state", &self.state)
            .field("grace", &self.grace)
            .field("lease", &self.lease)
            .field("sample_every", &self.sample_every)
            .field("schedules", &self.schedules.len())
            .finish_non_exhaustive()
    }
}
