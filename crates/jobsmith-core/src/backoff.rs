//! [`Backoff`]: the delay before a failed job is tried again.
//!
//! `backoff = ".."` is parsed by the grammar crate (`jobsmith_grammar`),
//! whose own `Backoff` is the text's model; this one is what a job carries
//! and what the worker waits by.

use jobsmith_grammar as grammar;
use std::time::Duration;

/// The delay before a failed job is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// `base * 2^(attempt - 1)`, at most `max`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The largest delay.
        max: Duration,
        /// Randomisation.
        jitter: Jitter,
    },
    /// The same delay every time.
    Fixed(Duration),
    /// Retry at once.
    None,
}

impl Backoff {
    /// Exponential from 1 s, doubling, at most 1 h, with full jitter.
    pub const DEFAULT: Backoff = Backoff::Exponential {
        base: Duration::from_secs(1),
        max: Duration::from_secs(3600),
        jitter: Jitter::Full,
    };

    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        match *self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, max, jitter } => {
                let shift = attempt.saturating_sub(1).min(62);
                let factor = 1u64 << shift;
                let ms = u64::try_from(base.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(factor);
                let capped = ms.min(u64::try_from(max.as_millis()).unwrap_or(u64::MAX));
                match jitter {
                    Jitter::None => Duration::from_millis(capped),
                    Jitter::Full => Duration::from_millis(fastrand::u64(0..=capped)),
                }
            }
        }
    }

    /// The backoff as `backoff = ".."` writes it: its `Display` is the text
    /// of a job's published record.
    pub(crate) fn syntax(self) -> grammar::Backoff {
        match self {
            Backoff::Exponential { base, max, jitter } => grammar::Backoff::Exponential {
                base,
                max,
                jitter: match jitter {
                    Jitter::Full => grammar::Jitter::Full,
                    Jitter::None => grammar::Jitter::None,
                },
            },
            Backoff::Fixed(d) => grammar::Backoff::Fixed(d),
            Backoff::None => grammar::Backoff::None,
        }
    }
}

/// How to randomise a backoff delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// "Full jitter": a uniformly random delay between zero and the computed delay.
    Full,
    /// Exactly the computed delay.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_what_the_attribute_leaves_out() {
        // `#[job(backoff = "exponential(1s)")]` means the default: the
        // grammar's defaults for `max` and `jitter` are the runtime's.
        assert_eq!(
            grammar::parse_backoff("exponential(1s)"),
            Ok(Backoff::DEFAULT.syntax())
        );
        assert_eq!(
            Backoff::DEFAULT.syntax().to_string(),
            "exponential(1s, max = 1h, jitter = full)"
        );
    }
}
