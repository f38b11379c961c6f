//! Periodic jobs: cron schedules that enqueue a job once per tick, however
//! many workers run.
//!
//! A schedule comes from `#[job(cron = "...")]` on a job without serialized
//! arguments, or from [`Worker::schedule`](crate::Worker::schedule) for a job
//! with fixed arguments. Every worker runs a small scheduler task per
//! schedule (`scheduler.rs`): it sleeps until the next tick and enqueues the
//! job with the idempotency key `cron:{name}:{tick in unix seconds}`, so that
//! the backend keeps one job per tick whichever workers race for it. Each
//! schedule's state ([`ScheduleInfo`]) is kept in the backend's metadata
//! store, where [`schedules`] reads it from any process.

mod expr;
mod parse;
pub(crate) mod scheduler;

pub use self::expr::{Cron, Missed};

use crate::app::App;
use crate::envelope::JobId;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};

/// The prefix of schedule states in the backend's metadata store.
pub(crate) const META_PREFIX: &str = "schedule:";

/// The idempotency key of a schedule's tick.
pub(crate) fn tick_key(name: &str, tick: Timestamp) -> String {
    format!("cron:{name}:{}", tick.as_millis() / 1000)
}

/// The tick of a job enqueued by a schedule, read back from its idempotency key.
pub(crate) fn tick_of_key(key: &str) -> Option<Timestamp> {
    let rest = key.strip_prefix("cron:")?;
    let (_, secs) = rest.rsplit_once(':')?;
    secs.parse::<u64>().ok().map(|s| Timestamp(s * 1000))
}

/// One schedule and where it stands, as the backend's metadata store holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// The schedule's name: the job's name, unless the schedule was given another.
    pub name: String,
    /// The job it enqueues.
    pub job: String,
    /// The cron expression.
    pub expr: String,
    /// The IANA zone the expression is read in.
    pub tz: String,
    /// The missed-tick policy.
    pub missed: Missed,
    /// The last tick fired, if any.
    pub prev: Option<Timestamp>,
    /// The next tick.
    pub next: Option<Timestamp>,
    /// The id of the job enqueued for the last tick fired (the id the
    /// idempotency key returned, so every worker records the same one).
    pub last_job: Option<JobId>,
    /// When a worker last wrote this state; `None` for a registered schedule
    /// that no worker has run yet.
    pub updated_at: Option<Timestamp>,
}

impl ScheduleInfo {
    /// A state for `cron` with nothing fired yet.
    pub(crate) fn new(name: &str, job: &str, cron: &Cron) -> Self {
        Self {
            name: name.to_owned(),
            job: job.to_owned(),
            expr: cron.expr().to_owned(),
            tz: cron.zone().to_owned(),
            missed: cron.missed_policy(),
            prev: None,
            next: cron.next_after(Timestamp::now()),
            last_job: None,
            updated_at: None,
        }
    }

    /// The schedules as an aligned text table, one line each, with a header.
    pub fn table(schedules: &[ScheduleInfo]) -> String {
        let time = |t: Option<Timestamp>| t.map_or_else(|| "-".to_owned(), expr::rfc3339);
        let rows: Vec<[String; 8]> = schedules
            .iter()
            .map(|s| {
                [
                    s.name.clone(),
                    s.job.clone(),
                    s.expr.clone(),
                    s.tz.clone(),
                    s.missed.to_string(),
                    time(s.prev),
                    time(s.next),
                    s.last_job
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), ToString::to_string),
                ]
            })
            .collect();
        let header = [
            "NAME", "JOB", "CRON", "ZONE", "MISSED", "PREVIOUS", "NEXT", "LAST JOB",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.zip(widths).enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                let _ = write!(l, "{cell:<w$}");
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut header.iter().copied());
        for row in &rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

impl fmt::Display for ScheduleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::table(std::slice::from_ref(self)))
    }
}

/// Every schedule that a worker has run on `app`'s backend, from the
/// backend's metadata store, together with the `#[job(cron = ..)]` schedules
/// linked into this binary that no worker has run yet; sorted by name.
///
/// This reads what the workers wrote, so it works from any process, such as
/// the `jobsmith` CLI:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobsmith_core::Result<()> {
/// let app = jobsmith_core::App::memory();
/// let schedules = jobsmith_core::schedules(&app).await?;
/// print!("{}", jobsmith_core::ScheduleInfo::table(&schedules));
/// # Ok(()) }
/// ```
pub async fn schedules(app: &App) -> Result<Vec<ScheduleInfo>> {
    let stored = app.backend().list_meta(META_PREFIX).await?;
    let mut out = Vec::with_capacity(stored.len());
    for (key, bytes) in stored {
        let info: ScheduleInfo = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Backend(format!(
                "the schedule state under `{key}` is not readable ({e}); the next tick rewrites it"
            ))
        })?;
        out.push(info);
    }
    if let Ok(registry) = Registry::global() {
        for def in registry.defs() {
            let Some(opts) = def.options.cron else {
                continue;
            };
            if out.iter().any(|s| s.name == def.name) {
                continue;
            }
            if let Ok(cron) = Cron::new(opts.expr).and_then(|c| c.tz(opts.tz)) {
                out.push(ScheduleInfo::new(
                    def.name,
                    def.name,
                    &cron.missed(opts.missed),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_tick() {
        let t = Timestamp(1_700_000_000_000);
        let key = tick_key("nightly:eu", t);
        assert_eq!(key, "cron:nightly:eu:1700000000");
        assert_eq!(tick_of_key(&key), Some(t));
        assert_eq!(tick_of_key("user-key"), None);
    }

    #[test]
    fn table_aligns_columns() {
        let cron = Cron::new("*/5 * * * * *").expect("parses");
        let mut info = ScheduleInfo::new("tick", "tick", &cron);
        info.prev = Some(Timestamp(1_700_000_000_000));
        let table = ScheduleInfo::table(&[info]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME  JOB   CRON"), "{table}");
        assert!(lines[1].contains("2023-11-14T22:13:20Z"), "{table}");
    }
}
