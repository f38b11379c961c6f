//! Parsing cron expressions and zone names, with errors that say what to write.
//!
//! The `#[job]` macro checks `cron = ".."` and `tz = ".."` with these at
//! compile time, and `Cron` parses with them at run time.

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
