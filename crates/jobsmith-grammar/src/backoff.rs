//! Backoffs: `"exponential(1s, max = 10m, jitter = none)"`, `"fixed(30s)"`, `"none"`.
//!
//! The `#[job]` macro checks `backoff = ".."` with [`parse_backoff`], and the
//! runtime writes a job's backoff in its published record with [`Backoff`]'s
//! `Display`, so what a record says can be pasted back into the attribute.

use crate::duration::{format_duration, parse_duration};
use std::fmt;
use std::time::Duration;

/// The `max` of an exponential backoff that does not give one: 1 h, the
/// runtime's default backoff's.
const DEFAULT_MAX: Duration = Duration::from_secs(3600);

/// A backoff as `backoff = ".."` writes it.
///
/// The runtime's `Backoff` has the same variants; both are exhaustive, so
/// that a new form is a compile error until both sides know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// `exponential(base, max = .., jitter = ..)`: `base × 2^(attempt−1)`, at most `max`.
    Exponential {
        /// The first delay; never zero once parsed.
        base: Duration,
        /// The largest delay, 1 h unless given; never less than `base` once parsed.
        max: Duration,
        /// `jitter = full` (the default) or `jitter = none`.
        jitter: Jitter,
    },
    /// `fixed(d)`: always `d`.
    Fixed(Duration),
    /// `none`: retry at once.
    None,
}

/// How a backoff's delay is randomised, as `jitter = ..` writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// `full`: uniformly random between zero and the delay. The default.
    Full,
    /// `none`: exactly the delay.
    None,
}

impl Jitter {
    /// The word for it: `"full"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Jitter::Full => "full",
            Jitter::None => "none",
        }
    }
}

/// Parses `"exponential(1s)"`, `"exponential(1s, max = 10m, jitter = none)"`,
/// `"fixed(30s)"` or `"none"`; the error says what to write.
///
/// ```
/// use jobsmith_grammar::{parse_backoff, Backoff, Jitter};
/// use std::time::Duration;
///
/// assert_eq!(
///     parse_backoff("exponential(500ms, max = 10m)"),
///     Ok(Backoff::Exponential {
///         base: Duration::from_millis(500),
///         max: Duration::from_secs(600),
///         jitter: Jitter::Full,
///     })
/// );
/// assert!(parse_backoff("linear(1s)").is_err());
/// ```
pub fn parse_backoff(text: &str) -> Result<Backoff, String> {
    let hint = "write \"exponential(1s)\", \"exponential(1s, max = 10m, jitter = none)\", \
                \"fixed(30s)\" or \"none\"";
    let text = text.trim();
    if text == "none" {
        return Ok(Backoff::None);
    }
    let Some((kind, rest)) = text.split_once('(') else {
        return Err(format!("`{text}` is not a backoff: {hint}"));
    };
    let Some(inner) = rest.trim_end().strip_suffix(')') else {
        return Err(format!("`{text}` is missing its closing `)`: {hint}"));
    };
    let mut parts = inner.split(',').map(str::trim);
    let first = parts.next().unwrap_or_default();
    let duration = |d: &str| parse_duration(d).map_err(|e| format!("in backoff `{text}`: {e}"));
    match kind.trim() {
        "fixed" => {
            let delay = duration(first)?;
            match parts.next() {
                None => Ok(Backoff::Fixed(delay)),
                Some(extra) => Err(format!(
                    "`fixed` takes only a delay, not `{extra}`: write \"fixed(30s)\""
                )),
            }
        }
        "exponential" => {
            let base = duration(first)?;
            if base.is_zero() {
                return Err(format!(
                    "the first delay of `{text}` is zero, so every delay is: \
                     write \"none\" to retry at once, or a delay such as \"exponential(1s)\""
                ));
            }
            let mut max = None;
            let mut jitter = None;
            for part in parts {
                let Some((key, value)) = part.split_once('=') else {
                    return Err(format!(
                        "`{part}` in `{text}` is not an option: write `max = 10m` or `jitter = none`"
                    ));
                };
                match (key.trim(), value.trim()) {
                    ("max", value) if max.is_none() => max = Some(duration(value)?),
                    ("jitter", value) if jitter.is_none() => jitter = Some(parse_jitter(value)?),
                    (key @ ("max" | "jitter"), _) => {
                        return Err(format!("duplicate `{key}` in `{text}`; remove one"));
                    }
                    (other, _) => {
                        return Err(format!(
                        "unknown backoff option `{other}` in `{text}`; expected `max` or `jitter`"
                    ))
                    }
                }
            }
            let max = max.unwrap_or(DEFAULT_MAX);
            if max < base {
                return Err(format!(
                    "in backoff `{text}`, `max` is less than the first delay: raise `max` or lower the first delay"
                ));
            }
            Ok(Backoff::Exponential {
                base,
                max,
                jitter: jitter.unwrap_or(Jitter::Full),
            })
        }
        other => Err(format!("`{other}` is not a kind of backoff: {hint}")),
    }
}

fn parse_jitter(value: &str) -> Result<Jitter, String> {
    match value {
        "full" => Ok(Jitter::Full),
        "none" => Ok(Jitter::None),
        other => Err(format!(
            "`{other}` is not a jitter: write `jitter = full` or `jitter = none`"
        )),
    }
}

/// The backoff in full, every option spelled out:
/// `exponential(1s, max = 1h, jitter = full)`, `fixed(100ms)` or `none`.
impl fmt::Display for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Backoff::None => f.write_str("none"),
            Backoff::Fixed(d) => write!(f, "fixed({})", format_duration(d)),
            Backoff::Exponential { base, max, jitter } => write!(
                f,
                "exponential({}, max = {}, jitter = {})",
                format_duration(base),
                format_duration(max),
                jitter.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_backoff, Backoff, Jitter, DEFAULT_MAX};
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_form_parses() {
        assert_eq!(parse_backoff("none"), Ok(Backoff::None));
        assert_eq!(parse_backoff("fixed(30s)"), Ok(Backoff::Fixed(ms(30_000))));
        assert_eq!(
            parse_backoff("exponential(1s)"),
            Ok(Backoff::Exponential {
                base: ms(1000),
                max: DEFAULT_MAX,
                jitter: Jitter::Full
            })
        );
        assert_eq!(
            parse_backoff(" exponential( 500ms , max = 10m, jitter = none ) "),
            Ok(Backoff::Exponential {
                base: ms(500),
                max: ms(600_000),
                jitter: Jitter::None
            })
        );
        assert_eq!(
            parse_backoff("exponential(1s, jitter = full, max = 1h)"),
            Ok(Backoff::Exponential {
                base: ms(1000),
                max: ms(3_600_000),
                jitter: Jitter::Full
            })
        );
    }

    #[test]
    fn errors_say_what_to_write() {
        for bad in [
            "",
            "linear(1s)",
            "exponential",
            "exponential(1s",
            "exponential(1 parsec)",
            "exponential(0s)",
            "exponential(1m, max = 1s)",
            "exponential(1s, max = 1m, max = 2m)",
            "exponential(1s, jitter = some)",
            "exponential(1s, cap = 1m)",
            "exponential(1s, 1m)",
            "fixed(30s, 1m)",
            "fixed()",
        ] {
            let err = parse_backoff(bad).expect_err(bad);
            assert!(
                ["write", "remove", "expected", "raise"]
                    .iter()
                    .any(|w| err.contains(w)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_written_form_reads_back() {
        for (backoff, text) in [
            (Backoff::None, "none"),
            (Backoff::Fixed(ms(100)), "fixed(100ms)"),
            (
                Backoff::Exponential {
                    base: ms(1000),
                    max: DEFAULT_MAX,
                    jitter: Jitter::Full,
                },
                "exponential(1s, max = 1h, jitter = full)",
            ),
            (
                Backoff::Exponential {
                    base: ms(1500),
                    max: ms(90_000),
                    jitter: Jitter::None,
                },
                "exponential(1500ms, max = 90s, jitter = none)",
            ),
        ] {
            assert_eq!(backoff.to_string(), text);
            assert_eq!(parse_backoff(text), Ok(backoff), "{text}");
        }
    }
}
