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
pub(crate) mod scheduler;

pub use self::expr::Cron;

use crate::app::App;
use crate::envelope::JobId;
use crate::error::Result;
use crate::options::Missed;
use crate::registry::Registry;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};

/// The prefix of schedule states in the backend's metadata store.
pub(crate) const META_PREFIX: &str = "schedule:";

/// What the listing shows for a field of an unreadable state.
const UNKNOWN: &str = "?";

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
    /// Why the stored state could not be read, if it could not (written by
    /// a later version of jobsmith, say): [`schedules`] still lists the
    /// schedule, under the name its key gives, with its state unknown
    /// (shown as `?`); a worker running the schedule rewrites the state
    /// when it starts, and at each tick. Never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
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
            unreadable: None,
        }
    }

    /// A schedule whose stored state under `key` is not readable, for `why`.
    fn unknown_state(key: &str, why: String) -> Self {
        let name = key.strip_prefix(META_PREFIX).unwrap_or(key);
        Self {
            name: name.to_owned(),
            job: UNKNOWN.to_owned(),
            expr: UNKNOWN.to_owned(),
            tz: UNKNOWN.to_owned(),
            missed: Missed::default(),
            prev: None,
            next: None,
            last_job: None,
            updated_at: None,
            unreadable: Some(why),
        }
    }

    /// The schedules as an aligned text table, one line each, with a header.
    /// `-` is "none"; `?` is "unknown", for a schedule whose stored state
    /// is [`unreadable`](Self::unreadable).
    pub fn table(schedules: &[ScheduleInfo]) -> String {
        let rows: Vec<[String; 8]> = schedules
            .iter()
            .map(|s| {
                let known = |cell: String| {
                    if s.unreadable.is_some() {
                        UNKNOWN.to_owned()
                    } else {
                        cell
                    }
                };
                let time =
                    |t: Option<Timestamp>| known(t.map_or_else(|| "-".to_owned(), expr::rfc3339));
                [
                    s.name.clone(),
                    s.job.clone(),
                    s.expr.clone(),
                    s.tz.clone(),
                    if s.expr == UNKNOWN {
                        UNKNOWN.to_owned()
                    } else {
                        s.missed.to_string()
                    },
                    time(s.prev),
                    time(s.next),
                    known(
                        s.last_job
                            .as_ref()
                            .map_or_else(|| "-".to_owned(), ToString::to_string),
                    ),
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
/// A stored state that cannot be read does not fail the listing: its
/// schedule is listed with [`unreadable`](ScheduleInfo::unreadable) saying
/// why (and a warning is logged), its configuration taken from a linked
/// `#[job(cron = ..)]` of that name if there is one, else unknown.
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
    let stored = app.backend().meta()?.list_meta(META_PREFIX).await?;
    let mut out = Vec::with_capacity(stored.len());
    for (key, bytes) in stored {
        match serde_json::from_slice::<ScheduleInfo>(&bytes) {
            Ok(mut info) => {
                info.unreadable = None;
                out.push(info);
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "a schedule's stored state is not readable; it is listed as unknown, and a worker running the schedule rewrites it (when it starts, and at each tick)");
                out.push(ScheduleInfo::unknown_state(&key, e.to_string()));
            }
        }
    }
    if let Ok(registry) = Registry::global() {
        for def in registry.defs() {
            let Some(opts) = def.options.cron else {
                continue;
            };
            let Ok(cron) = Cron::new(opts.expr).and_then(|c| c.tz(opts.tz)) else {
                continue;
            };
            let linked = ScheduleInfo::new(def.name, def.name, &cron.missed(opts.missed));
            match out.iter_mut().find(|s| s.name == def.name) {
                // Its configuration is known from the binary; its state is not.
                Some(s) if s.unreadable.is_some() => {
                    s.job = linked.job;
                    s.expr = linked.expr;
                    s.tz = linked.tz;
                    s.missed = linked.missed;
                }
                Some(_) => {}
                None => out.push(linked),
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

    #[test]
    fn an_unreadable_state_is_listed_as_unknown() {
        let info = ScheduleInfo::unknown_state("schedule:nightly", "expected value".to_owned());
        assert_eq!(info.name, "nightly");
        let table = ScheduleInfo::table(std::slice::from_ref(&info));
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .expect("a row")
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            ["nightly", "?", "?", "?", "?", "?", "?", "?"],
            "{table}"
        );
        let json = serde_json::to_value(&info).expect("serializes");
        assert_eq!(json["unreadable"], "expected value");
        // A readable state never carries the field.
        let cron = Cron::new("* * * * * *").expect("parses");
        let json = serde_json::to_value(ScheduleInfo::new("a", "a", &cron)).expect("serializes");
        assert!(json.get("unreadable").is_none(), "{json}");
    }
}
