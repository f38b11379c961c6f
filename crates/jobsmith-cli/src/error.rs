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
    /// A command-line value is malformed.
    #[error("{0}")]
    Usage(String),
    /// A backend operation failed.
    #[error("backend operation failed")]
    Backend(#[from] jobsmith::Error),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Io(#[from] std::io::Error),
    /// A migration stopped at the fault point `JOBSMITH_MIGRATE_FAULT_AFTER` asked for (tests only).
    #[error("migration stopped at the injected fault point after {0} jobs were copied")]
    Fault(u64),
}

/// `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The message with its chain of causes, `a: b: c`, for printing.
    pub fn report(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        s
    }
}
