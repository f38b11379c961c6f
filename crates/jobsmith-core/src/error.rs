//! The one error type of `jobsmith-core`.

use std::time::Duration;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the runtime, a backend or an enqueue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection to the broker failed or was lost; the operation may be retried.
    #[error("connection to the backend failed")]
    Connection(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The broker answered with an error.
    #[error("backend error: {0}")]
    Backend(String),
    /// A job's arguments or envelope could not be serialized.
    #[error("could not serialize the job")]
    Serialize(#[source] serde_json::Error),
    /// A payload is larger than the backend accepts; nothing was enqueued.
    #[error("job payload is {size} bytes, over the backend's limit of {limit} bytes; pass large data by reference (a URL or a database id) instead")]
    PayloadTooLarge {
        /// The envelope's size in bytes.
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
    },
    /// The URL is malformed or names a backend that is not compiled in.
    #[error("{0}")]
    Config(String),
    /// The lease is no longer held: it expired and the job may belong to another worker.
    #[error("lease on job {0} is no longer held")]
    LeaseLost(String),
    /// No job of that name is registered.
    #[error("no job named `{name}` is registered; known jobs: {known}")]
    UnknownJob {
        /// The name that was asked for.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// Two jobs were registered under one name.
    #[error("two jobs are registered as `{name}`: {first} and {second}; give one of them `#[job(name = \"...\")]`")]
    DuplicateJob {
        /// The shared name.
        name: String,
        /// Where the first is defined.
        first: String,
        /// Where the second is defined.
        second: String,
    },
    /// The worker was started with no jobs linked in.
    #[error("no jobs are registered: the crate that defines your #[job] functions is not linked into this binary; add `use your_jobs_crate as _;` to main.rs")]
    NoJobs,
    /// No default app has been set, and the enqueue named none.
    #[error(
        "no default app: call `.on(&app)` on the enqueue, or `app.set_default()` once at start-up"
    )]
    NoDefaultApp,
    /// A job's arguments could not be read.
    #[error("arguments of job `{job}` do not match its signature")]
    BadArguments {
        /// The job's name.
        job: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The Prometheus endpoint could not listen on its address.
    #[error("cannot serve Prometheus metrics on {addr}: {source}; pick a free port with `.prometheus(addr)`, or stop what holds this one")]
    MetricsBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why the bind failed.
        #[source]
        source: std::io::Error,
    },
    /// Another metrics recorder is installed in this process, so jobsmith's
    /// Prometheus recorder cannot be; the endpoint would serve nothing.
    #[error("cannot serve Prometheus metrics: another global `metrics` recorder is already installed in this process; drop `.prometheus(..)` and export through that recorder, or remove it and let jobsmith install its own")]
    MetricsRecorder,
    /// A schedule's cron expression, zone or definition is malformed, or it has no tick to come.
    #[error("{0}")]
    Schedule(String),
    /// The operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// Wraps any error as a [`Error::Connection`].
    pub fn connection(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Connection(Box::new(e))
    }

    /// Whether the operation may succeed if tried again after reconnecting.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::Timeout(_))
    }
}
