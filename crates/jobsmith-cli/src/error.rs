//! The CLI's one error type.

/// What can go wrong in a command. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No backend URL was given.
    #[error("no backend URL: pass `--url redis://127.0.0.1:6379` (or amqp://, sqs://, memory://) or set JOBSMITH_URL")]
    NoUrl,
    /// Connecting to a backend failed (bad URL, unknown scheme, server down).
    #[error("cannot connect to `{url}`")]
    Connect {
        /// The URL, its password hidden.
        url: String,
        /// Why.
        #[source]
        source: jobsmith::Error,
    },
    /// `enqueue` was given a job name that no worker has published, without `--force`.
    #[error("no worker has published a job named `{name}`{}; a worker publishes the jobs it runs when it starts: check the name, start a worker that runs it, or pass --force to enqueue it anyway (queue `default`, 4 attempts, unless given)", known_jobs(.known))]
    UnknownJob {
        /// The name given.
        name: String,
        /// The names the workers published, closest to `name` first.
        known: Vec<String>,
    },
    /// A command-line value is malformed.
    #[error("{0}")]
    Usage(String),
    /// A backend operation failed.
    #[error("backend operation failed")]
    Backend(#[from] jobsmith::Error),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Io(#[from] std::io::Error),
    /// `stats` could not read these queues; their rows were printed, marked broken.
    #[error("could not read the counts of {}: {} (printed above, marked broken, with why); the other queues were read", plural(.0.len()), .0.join(", "))]
    BrokenQueues(Vec<String>),
    /// A migration stopped at the fault point `JOBSMITH_MIGRATE_FAULT_AFTER`
    /// asked for (feature `test-util`, for crash tests).
    #[cfg(feature = "test-util")]
    #[error("migration stopped at the injected fault point after {0} jobs were copied")]
    Fault(u64),
}

fn known_jobs(known: &[String]) -> String {
    if known.is_empty() {
        " (none is published on this backend yet)".to_owned()
    } else {
        format!(" (known, closest first: {})", known.join(", "))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "a queue"
    } else {
        "queues"
    }
}

/// `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The message with its chain of causes, `a: b: c`, for printing: its
    /// control characters are escaped (newlines and tabs kept), as names in
    /// it may come from the broker.
    pub fn report(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        jobsmith_core::printable_lines(&s).to_string()
    }
}
