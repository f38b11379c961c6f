//! Human durations: `"500ms"`, `"30s"`, `"10m"`, `"2h"`, `"7d"`, and sums such as `"1h30m"`.
//!
//! The same parser checks `#[job(ttl = "...")]` when the user's crate compiles
//! and parses durations in backend URLs, so the two can never disagree; the
//! runtime writes durations for people (a job's published record) with
//! [`format_duration`], which this parser reads back.

use std::time::Duration;

/// Parses a human duration such as `"500ms"`, `"30s"`, `"10m"`, `"2h"`, `"7d"` or `"1h30m"`.
///
/// Units are `ms`, `s`, `m`, `h` and `d`; a number without a unit is an error,
/// so that `"30"` is never silently read as seconds or milliseconds.
///
/// `parse_duration("1m30s")` is 90 seconds; `parse_duration("7 parsecs")` is an error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "write a number and a unit, such as \"500ms\", \"30s\", \"10m\", \"2h\" or \"7d\"";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration: {hint}"));
        }
        let number: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` has a number without a unit: {hint}")),
            other => {
                return Err(format!(
                    "`{other}` is not a duration unit in `{text}`: {hint}"
                ))
            }
        };
        total = total
            .checked_add(number.saturating_mul(millis_per_unit))
            .ok_or_else(|| format!("`{text}` is too large a duration"))?;
    }
    let millis = u64::try_from(total).map_err(|_| format!("`{text}` is too large a duration"))?;
    Ok(Duration::from_millis(millis))
}

/// Writes a duration as [`parse_duration`] reads it, in the largest unit
/// that divides it: `"7d"`, `"90s"`, `"1500ms"`. Parts of a millisecond are
/// dropped.
///
/// ```
/// use jobsmith_grammar::format_duration;
/// use std::time::Duration;
///
/// assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
/// assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
/// ```
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::{format_duration, parse_duration};
    use std::time::Duration;

    #[test]
    fn parses_each_unit_and_sums() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "30", "7 parsecs", "s", "10y", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_in_the_largest_unit_and_reads_back() {
        for (ms, text) in [
            (0, "0ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1500, "1500ms"),
            (90_000, "90s"),
            (600_000, "10m"),
            (7_200_000, "2h"),
            (5_400_000, "90m"),
            (7 * 86_400_000, "7d"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }
}
