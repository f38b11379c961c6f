//! A job's options: what `#[job(...)]` writes, as the runtime reads it.

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::event::Subscribe;
use jobsmith_grammar as grammar;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A job's options, from `#[job(...)]`; per-call overrides go on the [`Enqueue`](crate::Enqueue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobOptions {
    /// The queue the job goes on. Default `"default"`.
    pub queue: &'static str,
    /// Priority: higher runs first. Default 0.
    pub priority: i32,
    /// How many times a failed job is tried again. Default 3.
    pub retries: u32,
    /// The delay between attempts.
    pub backoff: Backoff,
    /// After this long from enqueue, the job is never run. Default none.
    pub ttl: Option<Duration>,
    /// One attempt fails after this long. Default none.
    pub timeout: Option<Duration>,
    /// Whether a job with equal arguments that is queued or completed is not enqueued again.
    pub unique: bool,
    /// A periodic schedule, from `#[job(cron = "...")]`: every worker enqueues
    /// the job once per tick. Default none.
    pub cron: Option<CronOptions>,
    /// The event name or topic pattern the job subscribes to, from
    /// `#[job(on = ...)]`: every publish that matches creates one of it. Default none.
    pub on: Option<Subscribe>,
}

/// A job's periodic schedule, as `#[job(cron = "...", tz = "...", missed = "...")]` writes it.
///
/// The macro checks the expression and the zone at compile time with the same
/// parser the worker uses, so a registered schedule always parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CronOptions {
    /// The cron expression, with seconds: `"0 */5 * * * *"`.
    pub expr: &'static str,
    /// The IANA zone the expression is read in, such as `"Europe/Paris"`. Default `"UTC"`.
    pub tz: &'static str,
    /// What happens to ticks when no worker was running.
    pub missed: Missed,
}

impl JobOptions {
    /// The defaults: queue `"default"`, priority 0, 3 retries, exponential backoff
    /// from 1 s doubling to at most 1 h with full jitter, no TTL, no timeout, not unique,
    /// no schedule, no subscription.
    pub const DEFAULT: JobOptions = JobOptions {
        queue: "default",
        priority: 0,
        retries: 3,
        backoff: Backoff::DEFAULT,
        ttl: None,
        timeout: None,
        unique: false,
        cron: None,
        on: None,
    };
}

impl Default for JobOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a schedule does about ticks that passed while no worker was running.
///
/// Stored (in a schedule's state) and parsed as the attribute writes it,
/// `"skip"` or `"catch_up"`: the words are the grammar crate's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Fire nothing for them; the schedule goes on from the next tick. The default.
    #[default]
    Skip,
    /// Enqueue the job once, for the most recent missed tick, when a worker starts.
    CatchUp,
}

impl Missed {
    /// The policy's name as the attribute writes it: `"skip"` or `"catch_up"`.
    pub fn as_str(self) -> &'static str {
        self.syntax().as_str()
    }

    /// The policy as `missed = ".."` writes it.
    fn syntax(self) -> grammar::Missed {
        match self {
            Missed::Skip => grammar::Missed::Skip,
            Missed::CatchUp => grammar::Missed::CatchUp,
        }
    }
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Missed {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match grammar::parse_missed(s).map_err(Error::Schedule)? {
            grammar::Missed::Skip => Ok(Missed::Skip),
            grammar::Missed::CatchUp => Ok(Missed::CatchUp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_reads_and_is_stored_as_the_attribute_writes_it() {
        for policy in [Missed::Skip, Missed::CatchUp] {
            assert_eq!(policy.as_str().parse::<Missed>().ok(), Some(policy));
            assert_eq!(
                serde_json::to_value(policy).ok(),
                Some(serde_json::Value::from(policy.as_str())),
                "the stored form is the written one"
            );
        }
        let e = "sometimes".parse::<Missed>().expect_err("no such policy");
        assert!(
            matches!(&e, Error::Schedule(m)
                if m == "`sometimes` is not a missed-tick policy: write `skip` or `catch_up`"),
            "{e:?}"
        );
    }
}
