//! How a job attempt fails: [`Failure`], and the traits that turn a job's
//! error into one.

use std::fmt;

/// Why a job attempt failed, and whether it may be tried again.
///
/// Any error that implements `Display` becomes a retryable `Failure` when a
/// job returns it. To skip the remaining retries, return
/// `Failure::permanent(e)` or use [`ResultExt::permanent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    message: String,
    permanent: bool,
}

impl Failure {
    /// A failure that may be retried.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            permanent: false,
        }
    }

    /// A failure that must not be retried: the job goes to the dead-letter queue at once.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            permanent: true,
        }
    }

    /// Whether the retries are skipped.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Turns a job's error into a [`Failure`]; implemented for every `Display` type.
pub trait IntoFailure {
    /// The failure; permanent only when `self` is a permanent [`Failure`].
    fn into_failure(self) -> Failure;
}

impl<E: fmt::Display + 'static> IntoFailure for E {
    fn into_failure(self) -> Failure {
        match (&self as &dyn std::any::Any).downcast_ref::<Failure>() {
            Some(f) => f.clone(),
            None => Failure::retryable(self),
        }
    }
}

/// Marks errors as permanent: `client.fetch(url).await.permanent()?`.
pub trait ResultExt<T> {
    /// The error, if any, as a permanent [`Failure`] that skips the retries.
    fn permanent(self) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, Failure> {
        self.map_err(Failure::permanent)
    }
}
