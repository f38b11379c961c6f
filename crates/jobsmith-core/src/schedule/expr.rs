//! [`Cron`]: a parsed cron expression in a named time zone.

use crate::error::{Error, Result};
use crate::options::Missed;
use crate::time::Timestamp;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use jobsmith_grammar::{parse_cron, parse_zone};
use std::fmt;

/// A cron expression with seconds, read in a named IANA time zone, and its
/// missed-tick policy.
///
/// The expression has six fields, seconds first, and an optional year:
/// `sec min hour day-of-month month day-of-week [year]`, such as
/// `"0 */5 * * * *"` (every five minutes) or `"0 30 3 * * Mon-Fri"`.
///
/// ```
/// use jobsmith_core::{Cron, Missed};
///
/// let nightly = Cron::new("0 0 3 * * *")?.tz("Europe/Paris")?.missed(Missed::CatchUp);
/// assert_eq!(nightly.zone(), "Europe/Paris");
/// assert!(Cron::new("*/5 * * * *").is_err()); // five fields: the seconds are missing
/// # Ok::<(), jobsmith_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Cron {
    expr: String,
    schedule: cron::Schedule,
    tz: Tz,
    missed: Missed,
}

impl Cron {
    /// Parses `expr`, read in UTC, skipping missed ticks; an error says how to write it.
    pub fn new(expr: &str) -> Result<Self> {
        let schedule = parse_cron(expr).map_err(Error::Schedule)?;
        Ok(Self {
            expr: expr.to_owned(),
            schedule,
            tz: Tz::UTC,
            missed: Missed::Skip,
        })
    }

    /// Reads the expression in the IANA zone `zone`, such as `"Europe/Paris"`.
    pub fn tz(mut self, zone: &str) -> Result<Self> {
        self.tz = parse_zone(zone).map_err(Error::Schedule)?;
        Ok(self)
    }

    /// Sets the missed-tick policy.
    #[must_use]
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone's IANA name.
    pub fn zone(&self) -> &str {
        self.tz.name()
    }

    /// The missed-tick policy.
    pub fn missed_policy(&self) -> Missed {
        self.missed
    }

    /// The first tick strictly after `t`, if the schedule has one.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let from = self.tz.from_utc_datetime(&utc(t).naive_utc());
        self.schedule.after(&from).next().map(|d| stamp(&d))
    }

    /// The last tick at or before `t`, if the schedule has one.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        // `prev_from` is strictly before an instant on a whole second, and at
        // or before one with a fraction: nudge `t` by a millisecond.
        let from = self
            .tz
            .from_utc_datetime(&utc(t.plus(std::time::Duration::from_millis(1))).naive_utc());
        self.schedule.after(&from).next_back().map(|d| stamp(&d))
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cron")
            .field("expr", &self.expr)
            .field("tz", &self.zone())
            .field("missed", &self.missed)
            .finish()
    }
}

fn utc(t: Timestamp) -> DateTime<Utc> {
    let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn stamp<Z: TimeZone>(d: &DateTime<Z>) -> Timestamp {
    Timestamp(u64::try_from(d.timestamp_millis()).unwrap_or(0))
}

/// An instant as RFC 3339 in UTC, to the second: `2026-11-29T04:05:00Z`.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    utc(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        let d = DateTime::parse_from_rfc3339(s).expect("test instant");
        stamp(&d)
    }

    #[test]
    fn ticks_around_an_instant() {
        let c = Cron::new("*/10 * * * * *").expect("parses");
        let t = at("2026-01-01T00:00:05.500Z");
        assert_eq!(c.next_after(t), Some(at("2026-01-01T00:00:10Z")));
        assert_eq!(c.last_at_or_before(t), Some(at("2026-01-01T00:00:00Z")));
        let on = at("2026-01-01T00:00:10Z");
        assert_eq!(c.next_after(on), Some(at("2026-01-01T00:00:20Z")));
        assert_eq!(c.last_at_or_before(on), Some(on));
    }

    #[test]
    fn zones_move_the_ticks() {
        let c = Cron::new("0 0 3 * * *")
            .and_then(|c| c.tz("Europe/Paris"))
            .expect("parses");
        // 03:00 in Paris in winter is 02:00 UTC.
        let t = at("2026-01-10T12:00:00Z");
        assert_eq!(c.next_after(t), Some(at("2026-01-11T02:00:00Z")));
    }

    #[test]
    fn bad_input_says_what_to_write() {
        for bad in [
            "*/5 * * * *",
            "61 * * * * *",
            "nonsense",
            "",
            "* * * * * * * *",
        ] {
            let e = Cron::new(bad).expect_err(bad).to_string();
            assert!(e.contains("write"), "{bad}: {e}");
        }
        let e = Cron::new("* * * * * *")
            .and_then(|c| c.tz("Mars/Olympus"))
            .expect_err("unknown zone")
            .to_string();
        assert!(e.contains("IANA"), "{e}");
    }
}
