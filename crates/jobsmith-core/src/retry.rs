//! Waiting between attempts that failed: capped doubling delays, jitter, and
//! retrying an operation through transient errors.
//!
//! Every retry in jobsmith waits the same way: a first delay, doubled after
//! each failure up to a cap, back to the first after a success. The loops
//! that use [`Doubling`] differ in what they retry, what they log and when
//! they give up, and keep those rules at the call site; [`retry_transient`]
//! is the common case of one call retried until it succeeds or fails for good.
//! Public for the backend crates, hidden: not an API for applications.
//!
//! ```
//! use jobsmith_core::retry::Doubling;
//! use std::time::Duration;
//! let mut b = Doubling::new(Duration::from_millis(50), Duration::from_millis(300));
//! let ms: Vec<u128> = (&mut b).take(5).map(|d| d.as_millis()).collect();
//! assert_eq!(ms, [50, 100, 200, 300, 300]);
//! b.reset();
//! assert_eq!(b.next_delay(), Duration::from_millis(50));
//! ```

use crate::error::{Error, Result};
use backon::Retryable;
use std::future::Future;
use std::time::Duration;

/// Delays that start at `first` and double after each one, never above `cap`
/// (not to be confused with [`crate::Backoff`], a job's retry policy).
///
/// Exact: each delay is a whole multiple of `first` (or `cap`), with no
/// floating-point rounding. An endless [`Iterator`], so it is also a
/// `backon` backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doubling {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Doubling {
    /// Delays from `first`, doubling, capped at `cap`.
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Doubling {
            first,
            cap,
            next: first,
        }
    }

    /// The delay to wait now; the next one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next.min(self.cap);
        self.next = now.saturating_mul(2).min(self.cap);
        now
    }

    /// Starts again from the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Iterator for Doubling {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

/// A random extra wait of up to half of `delay`, in whole milliseconds, so
/// that the clients of a server that went away do not all come back at once.
pub fn jitter(delay: Duration) -> Duration {
    let half = u64::try_from(delay.as_millis() / 2).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=half))
}

/// Calls `op` until it succeeds or fails with an error that is not
/// [transient](Error::is_transient), which it returns. Before each wait it
/// calls `on_retry` with the error and the delay, taken from `delays`.
///
/// ```
/// use jobsmith_core::retry::{retry_transient, Doubling};
/// use jobsmith_core::Error;
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut calls = 0;
/// let delays = Doubling::new(Duration::from_millis(1), Duration::from_millis(4));
/// let got = retry_transient(
///     delays,
///     || {
///         calls += 1;
///         let n = calls;
///         async move { if n < 3 { Err(Error::Connection("down".into())) } else { Ok(n) } }
///     },
///     |e, wait| eprintln!("{e}; trying again in {wait:?}"),
/// )
/// .await;
/// assert_eq!(got.unwrap(), 3);
/// # }
/// ```
pub async fn retry_transient<T, F, Fut>(
    delays: Doubling,
    op: F,
    on_retry: impl FnMut(&Error, Duration),
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    op.retry(delays)
        .sleep(tokio::time::sleep)
        .when(Error::is_transient)
        .notify(on_retry)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_exactly_up_to_the_cap_and_reset() {
        let mut b = Doubling::new(50 * MS, 10_000 * MS);
        let ms: Vec<u128> = (&mut b).take(10).map(|d| d.as_millis()).collect();
        assert_eq!(
            ms,
            [50, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(b.next_delay(), 10_000 * MS, "exact, no rounding");
        b.reset();
        assert_eq!(b.next_delay(), 50 * MS);
    }

    #[test]
    fn jitter_is_at_most_half_in_whole_milliseconds() {
        for _ in 0..200 {
            let j = jitter(101 * MS);
            assert!(j <= 50 * MS && j.subsec_nanos() % 1_000_000 == 0, "{j:?}");
        }
        assert_eq!(jitter(MS), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_error_is_retried_and_a_permanent_one_returned() {
        let mut waits = Vec::new();
        let mut calls = 0;
        let got: Result<()> = retry_transient(
            Doubling::new(50 * MS, 100 * MS),
            || {
                calls += 1;
                let n = calls;
                async move {
                    Err(if n < 4 {
                        Error::Connection("down".into())
                    } else {
                        Error::Config("refused".into())
                    })
                }
            },
            |_, wait| waits.push(wait),
        )
        .await;
        assert!(matches!(got, Err(Error::Config(_))), "{got:?}");
        assert_eq!(waits, [50 * MS, 100 * MS, 100 * MS]);
    }
}
