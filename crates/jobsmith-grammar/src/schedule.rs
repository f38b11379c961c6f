//! Parsing cron expressions, zone names and missed-tick policies, with
//! errors that say what to write.
//!
//! The `#[job]` macro checks `cron = ".."`, `tz = ".."` and `missed = ".."`
//! with these at compile time, and the runtime parses with them at run time
//! (`Cron`, and its `Missed` from a string).

use chrono_tz::Tz;
use std::str::FromStr;

/// Parses a cron expression with seconds, `sec min hour day-of-month month
/// day-of-week [year]`; the error says how to write one.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let hint = "write six fields, seconds first: `sec min hour day-of-month month day-of-week`, \
                such as \"0 */5 * * * *\"";
    if fields == 5 {
        return Err(format!(
            "`{expr}` has five fields, but jobsmith's cron expressions start with seconds: \
             write \"0 {expr}\" to fire at second 0"
        ));
    }
    if !expr.trim_start().starts_with('@') && !(6..=7).contains(&fields) {
        return Err(format!(
            "`{expr}` has {fields} fields, not a cron expression: {hint}"
        ));
    }
    cron::Schedule::from_str(expr).map_err(|e| {
        // The parser's message draws a caret under the expression; keep its last line.
        let e = e.to_string();
        let why = e
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        format!("`{expr}` is not a valid cron expression ({why}): {hint}")
    })
}

/// Parses an IANA zone name; the error says how to write one.
pub fn parse_zone(zone: &str) -> Result<Tz, String> {
    zone.parse::<Tz>().map_err(|_| {
        format!("`{zone}` is not an IANA time zone: write a name such as \"UTC\", \"Europe/Paris\" or \"America/New_York\"")
    })
}

/// What a schedule does about ticks that passed while no worker ran, as
/// `missed = ".."` writes it.
///
/// The runtime's `Missed` has the same variants; both are exhaustive, so
/// that a new policy is a compile error until both sides know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    /// `"skip"`: fire nothing for them. The default.
    Skip,
    /// `"catch_up"`: fire once, for the most recent of them.
    CatchUp,
}

impl Missed {
    /// The word for it: `"skip"` or `"catch_up"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::CatchUp => "catch_up",
        }
    }
}

/// Parses a missed-tick policy, `"skip"` or `"catch_up"`; the error says
/// what to write.
pub fn parse_missed(policy: &str) -> Result<Missed, String> {
    match policy {
        "skip" => Ok(Missed::Skip),
        "catch_up" => Ok(Missed::CatchUp),
        other => Err(format!(
            "`{other}` is not a missed-tick policy: write `skip` or `catch_up`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_cron, parse_missed, parse_zone, Missed};

    #[test]
    fn cron_errors_say_what_to_write() {
        let five = parse_cron("*/5 * * * *").expect_err("five fields");
        assert!(five.contains("write \"0 */5 * * * *\""), "{five}");
        for bad in ["61 * * * * *", "nonsense", "", "* * * * * * * *"] {
            let e = parse_cron(bad).expect_err(bad);
            assert!(e.contains("write six fields"), "{bad}: {e}");
        }
        assert!(parse_cron("0 0 3 * * Mon-Fri").is_ok());
        assert!(parse_cron("@daily").is_ok());
    }

    #[test]
    fn zones_are_iana_names() {
        assert!(parse_zone("Europe/Paris").is_ok());
        let e = parse_zone("Mars/Olympus").expect_err("no such zone");
        assert!(e.contains("IANA"), "{e}");
    }

    #[test]
    fn missed_policies_read_back_as_written() {
        for policy in [Missed::Skip, Missed::CatchUp] {
            assert_eq!(parse_missed(policy.as_str()), Ok(policy));
        }
        let e = parse_missed("sometimes").expect_err("no such policy");
        assert_eq!(
            e,
            "`sometimes` is not a missed-tick policy: write `skip` or `catch_up`"
        );
    }
}
