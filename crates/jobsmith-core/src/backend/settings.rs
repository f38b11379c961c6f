//! The settings every backend reads from its URL.

use crate::error::Result;
use std::time::Duration;

/// Settings every backend honours; each can be set in the URL's query string
/// (`?dead_max=10000&dead_max_age=180d&unique_for=24h&max_payload=1048576&call_timeout=10s`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// At most this many dead jobs per queue are kept; the oldest go first. Default 10,000.
    pub dead_max: usize,
    /// Dead jobs older than this are dropped. Default 180 days.
    pub dead_max_age: Duration,
    /// How long a completed job's idempotency key keeps equal jobs out. Default 24 h.
    pub unique_for: Duration,
    /// The largest envelope, in bytes, an enqueue accepts; `None` for the backend's own limit.
    pub max_payload: Option<usize>,
    /// The longest one call to the broker may wait for its answer before it
    /// fails with a transient error (a reserve's own wait for work comes on
    /// top); `None` for the backend's default (Redis 10 s, RabbitMQ and SQS
    /// 30 s; see [`Settings::call_timeout_or`] and `docs/backends/contract.md`).
    /// From 100 ms to 1 hour.
    pub call_timeout: Option<Duration>,
}

/// The values `call_timeout` may take: a shorter limit fails healthy calls
/// on a loaded broker, a longer one hides a hung broker.
const CALL_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

impl Default for Settings {
    fn default() -> Self {
        Self {
            dead_max: 10_000,
            dead_max_age: Duration::from_secs(180 * 86_400),
            unique_for: Duration::from_secs(86_400),
            max_payload: None,
            call_timeout: None,
        }
    }
}

impl Settings {
    /// The URL settings every backend reads.
    pub const KEYS: &'static [&'static str] = &[
        "dead_max",
        "dead_max_age",
        "unique_for",
        "max_payload",
        "call_timeout",
    ];

    /// The smallest `max_payload` accepted: an envelope without arguments
    /// takes about 200 bytes, so less would refuse every job.
    pub const MIN_PAYLOAD: usize = 1024;

    /// Reads the settings from `key=value` pairs, ignoring keys it does not
    /// know (the backend refuses those: see [`crate::UrlQuery::refuse_unknown`]).
    /// A value that would make the backend useless (no dead jobs kept, or
    /// every job too large) is refused.
    pub fn from_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut s = Settings::default();
        let bad = |k: &str, v: &str, why: String| {
            crate::Error::Config(format!(
                "bad URL setting `{k}={}`: {why}",
                crate::redact_url(v)
            ))
        };
        for (k, v) in pairs {
            match k {
                "dead_max" => {
                    s.dead_max = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        bad(
                            k,
                            v,
                            "how many dead jobs to keep per queue, 1 or more (default 10000)"
                                .into(),
                        )
                    })?;
                }
                "dead_max_age" => {
                    s.dead_max_age = crate::parse_duration(v)
                        .map_err(|e| bad(k, v, e))
                        .and_then(|d| {
                            if d >= Duration::from_secs(1) {
                                Ok(d)
                            } else {
                                Err(bad(k, v, "at least 1s (default 180d)".into()))
                            }
                        })?;
                }
                "unique_for" => {
                    s.unique_for = crate::parse_duration(v).map_err(|e| bad(k, v, e))?
                }
                "max_payload" => {
                    s.max_payload = Some(
                        v.parse()
                            .ok()
                            .filter(|n| *n >= Self::MIN_PAYLOAD)
                            .ok_or_else(|| {
                                bad(
                                    k,
                                    v,
                                    format!(
                                        "the largest envelope in bytes, {} or more",
                                        Self::MIN_PAYLOAD
                                    ),
                                )
                            })?,
                    );
                }
                "call_timeout" => {
                    let d = crate::parse_duration(v).map_err(|e| bad(k, v, e))?;
                    if !CALL_TIMEOUT_RANGE.contains(&d) {
                        return Err(bad(
                            k,
                            v,
                            "a call's time limit is from 100ms to 1h, such as `10s`".into(),
                        ));
                    }
                    s.call_timeout = Some(d);
                }
                _ => {}
            }
        }
        Ok(s)
    }

    /// [`Settings::call_timeout`], or `default` (the backend's own) when the URL sets none.
    pub fn call_timeout_or(&self, default: Duration) -> Duration {
        self.call_timeout.unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_timeout(v: &str) -> Result<Option<Duration>> {
        Settings::from_query([("call_timeout", v)]).map(|s| s.call_timeout)
    }

    #[test]
    fn call_timeout_is_read_and_bounded() {
        assert_eq!(Settings::default().call_timeout, None);
        assert_eq!(
            Settings::default().call_timeout_or(Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        assert_eq!(
            call_timeout("10s").ok(),
            Some(Some(Duration::from_secs(10)))
        );
        assert_eq!(
            call_timeout("100ms").ok(),
            Some(Some(Duration::from_millis(100)))
        );
        assert_eq!(
            call_timeout("1h").ok(),
            Some(Some(Duration::from_secs(3600)))
        );
        for bad in ["0s", "0", "99ms", "2h", "1000d", "soon", ""] {
            let err = call_timeout(bad).expect_err(bad).to_string();
            assert!(err.contains("call_timeout"), "{bad}: {err}");
        }
        assert!(call_timeout("0s")
            .expect_err("0s")
            .to_string()
            .contains("from 100ms to 1h"));
    }
}
