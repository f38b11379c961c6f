//! Times and ages on the command line: `--at`, `--older-than`, `--newer-than`.

use crate::error::{Error, Result};
use jobsmith::Timestamp;
use std::time::Duration;

const AT_HINT: &str = "write an RFC 3339 time such as `2026-11-29T18:00:00Z`, or a time from now such as `+10m` or `in 2h`";

/// Parses `--at`: an RFC 3339 time (`2026-11-29T18:00:00Z`, any offset) or a
/// time from now (`+10m`, `in 10m`, `now`), relative to `now`.
pub fn parse_at(text: &str, now: Timestamp) -> Result<Timestamp> {
    let at = parse_at_unbounded(text, now)?;
    if at > now.plus(jobsmith_core::MAX_AHEAD) {
        return Err(Error::Usage(format!(
            "bad --at `{text}`: it is more than 100 years from now; give a nearer time"
        )));
    }
    Ok(at)
}

fn parse_at_unbounded(text: &str, now: Timestamp) -> Result<Timestamp> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let relative = t
        .strip_prefix('+')
        .or_else(|| t.strip_prefix("in "))
        .map(str::trim);
    if let Some(rel) = relative {
        let d = jobsmith_core::parse_duration(rel)
            .map_err(|e| Error::Usage(format!("bad --at `{text}`: {e}; {AT_HINT}")))?;
        return Ok(now.plus(d));
    }
    let at = chrono::DateTime::parse_from_rfc3339(t)
        .map_err(|e| Error::Usage(format!("bad --at `{text}`: {e}; {AT_HINT}")))?;
    let ms = u64::try_from(at.timestamp_millis())
        .map_err(|_| Error::Usage(format!("bad --at `{text}`: it is before 1970; {AT_HINT}")))?;
    Ok(Timestamp(ms))
}

/// Parses an age such as `1h`, `30m` or `7d` (for `--older-than` / `--newer-than`).
pub fn parse_age(flag: &str, text: &str) -> Result<Duration> {
    jobsmith_core::parse_duration(text)
        .map_err(|e| Error::Usage(format!("bad {flag} `{text}`: {e}")))
}

/// A timestamp as RFC 3339 UTC, to the second.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    i64::try_from(t.as_millis())
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || t.as_millis().to_string(),
            |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// A duration as a short human age: `850ms`, `42s`, `5m10s`, `3h02m`, `4d03h`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_rfc3339_and_relative_times() {
        let now = Timestamp(1_000_000);
        assert_eq!(parse_at("+10m", now).unwrap(), Timestamp(1_600_000));
        assert_eq!(parse_at("in 10m", now).unwrap(), Timestamp(1_600_000));
        assert_eq!(parse_at("now", now).unwrap(), now);
        assert_eq!(
            parse_at("1970-01-01T00:00:01+00:00", now).unwrap(),
            Timestamp(1000)
        );
        assert_eq!(
            parse_at("1970-01-01T01:00:01+01:00", now).unwrap(),
            Timestamp(1000)
        );
        let err = parse_at("tomorrow", now).unwrap_err().to_string();
        assert!(
            err.contains("bad --at `tomorrow`") && err.contains("+10m"),
            "{err}"
        );
        let err = parse_at("+10 parsecs", now).unwrap_err().to_string();
        assert!(err.contains("bad --at"), "{err}");
    }

    #[test]
    fn ages_print_short() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_secs(310)), "5m10s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 120)), "3h02m");
        assert_eq!(rfc3339(Timestamp(1000)), "1970-01-01T00:00:01Z");
    }
}
