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
    /// The broker answered with an error, or with an answer the backend
    /// cannot read. Build it with [`Error::backend`] or, when another error
    /// is the cause, [`Error::backend_caused`].
    #[error("backend error: {message}")]
    Backend {
        /// What went wrong, in the backend's words.
        message: String,
        /// The error this one comes from, when there is one (the client's).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A job's arguments or envelope could not be serialized.
    #[error("could not serialize the job")]
    Serialize(#[source] serde_json::Error),
    /// A job argument holds a float JSON cannot carry (NaN or an infinity);
    /// nothing was enqueued.
    #[error("job argument `{path}` is {value}, which JSON cannot carry (it has no NaN or infinity), so nothing was enqueued; check for it before enqueueing, or send such a value as an `Option` or a string")]
    NonFiniteArgument {
        /// Where it is: the argument's name, then fields, `[index]` and `["key"]`.
        path: String,
        /// `NaN`, `inf` or `-inf`.
        value: &'static str,
    },
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
    /// The broker refused how it was reached or set up, and will refuse it
    /// again however often it is asked: a wrong password or user, a
    /// database or virtual host it does not have, or a queue it holds with
    /// other settings than the ones declared. [`Error::is_permanent`]:
    /// `connect` fails with it and a worker stops with it (see
    /// `docs/operations.md`).
    #[error("{problem}; {fix}")]
    Misconfigured {
        /// What the broker refused, naming the server (never a credential).
        problem: String,
        /// What to change so that it works.
        fix: String,
    },
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
    /// Two event types were declared with one name.
    #[error("two event types are declared as `{name}`: {first} and {second}; give one of them another `#[event(name = \"...\")]`")]
    DuplicateEvent {
        /// The shared name.
        name: String,
        /// The first type and where it is defined.
        first: String,
        /// The second type and where it is defined.
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
    /// A value is past jobsmith's bounds (a queue name, an attempt count, a
    /// run time); nothing was enqueued or started. The message says what to give.
    #[error("{0}")]
    Invalid(String),
    /// The operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The backend does not have a capability the operation needs (see
    /// [`Backend`](crate::Backend)'s capability accessors).
    #[error("the {backend} backend has no {capability}; use a backend that has it (see docs/backends.md)")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What it lacks.
        capability: &'static str,
    },
}

impl Error {
    /// An error of the same kind (transient, permanent or neither) and
    /// message, to give a failure again: for each further lease of a batch
    /// that failed as one, or a refusal remembered. Causes are kept as text.
    pub fn same_kind(&self) -> Self {
        match self {
            Self::Timeout(d) => Self::Timeout(*d),
            Self::Config(m) => Self::Config(m.clone()),
            Self::Invalid(m) => Self::Invalid(m.clone()),
            Self::Misconfigured { problem, fix } => Self::Misconfigured {
                problem: problem.clone(),
                fix: fix.clone(),
            },
            Self::Backend { message, source } => Self::Backend {
                message: message.clone(),
                source: source.as_deref().map(|s| with_causes(s).into()),
            },
            e if e.is_transient() => Self::Connection(e.describe().into()),
            e => Self::backend(e.describe()),
        }
    }

    /// A [`Error::Backend`] with no underlying error: an answer the backend
    /// cannot read, or a refusal it has only as text.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::Backend`] caused by `cause` (the client's error), which
    /// [`std::error::Error::source`] gives back. `message` may quote the
    /// cause: [`Error::describe`] does not repeat what it already says.
    pub fn backend_caused(
        message: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            message: message.into(),
            source: Some(cause.into()),
        }
    }

    /// Wraps any error as a [`Error::Connection`].
    pub fn connection(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Connection(Box::new(e))
    }

    /// Whether the operation may succeed if tried again after reconnecting.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::Timeout(_))
    }

    /// Whether nothing but a change of configuration can make the operation
    /// succeed: a URL that does not parse ([`Error::Config`]) or a broker
    /// that refuses the credentials, database, virtual host or declarations
    /// ([`Error::Misconfigured`]). A worker stops on such an error from the
    /// broker and returns it from `run`, rather than retrying for ever.
    ///
    /// Neither transient nor permanent is an error of one queue or one job
    /// (a key of the wrong type, a queue deleted behind the worker's back):
    /// the worker backs off and tries again, as it does for a transient one.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::Invalid(_) | Self::Misconfigured { .. }
        )
    }

    /// This error and each of its causes, joined by `: `, for a log line
    /// (`Display` describes one layer only).
    pub fn describe(&self) -> String {
        with_causes(self)
    }
}

/// `e` and each of its causes, joined by `: ` (an error's `Display` describes
/// its own layer only).
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        // Some errors quote their source, or its whole chain, in their own
        // message: say each thing once.
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_backend_error_keeps_its_cause() {
        let io = std::io::Error::other("pipe burst");
        let e = Error::backend_caused(format!("disk: {io}"), io);
        assert_eq!(e.to_string(), "backend error: disk: pipe burst");
        let cause = e.source().expect("the cause is kept");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("the io error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::Other);
        assert_eq!(e.describe(), "backend error: disk: pipe burst", "said once");
        let plain = Error::backend("short reply");
        assert_eq!(plain.to_string(), "backend error: short reply");
        assert!(plain.source().is_none());
    }

    #[test]
    fn a_copy_keeps_the_message_and_the_cause_as_text() {
        let e = Error::backend_caused("refused", std::io::Error::other("queue is gone"));
        let copy = e.same_kind();
        assert_eq!(copy.to_string(), "backend error: refused");
        assert_eq!(copy.describe(), e.describe());
        assert!(!copy.is_transient() && !copy.is_permanent());
    }

    #[test]
    fn a_cause_already_quoted_whole_is_not_repeated() {
        let inner = std::io::Error::other("no route");
        let outer = Error::connection(inner);
        let e = Error::backend_caused(format!("sqs Send: {}", with_causes(&outer)), outer);
        assert_eq!(
            e.describe(),
            "backend error: sqs Send: connection to the backend failed: no route"
        );
    }
}
