//! The attribute's options, checked: strings given their meaning (durations,
//! backoff, cron), numbers held to their ranges. A malformed option is an
//! error on its value that says what to write, and is left at the runtime's
//! default.

use crate::parse::{Int, RawOptions, Slot};
use crate::Errors;
use syn::LitStr;

/// The largest `retries` accepted.
const MAX_RETRIES: i128 = 100;

/// The job's options, checked; `None` means the runtime's default.
pub(crate) struct Options {
    pub(crate) name: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<i32>,
    pub(crate) retries: Option<u32>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) ttl: Option<u64>,
    pub(crate) timeout: Option<u64>,
    pub(crate) unique: Option<bool>,
    /// A periodic schedule.
    pub(crate) cron: Option<Cron>,
    /// The path of the `jobsmith` crate, `::jobsmith` unless `crate = ...` says otherwise.
    pub(crate) krate: syn::Path,
}

/// A checked `cron`, `tz` and `missed`.
pub(crate) struct Cron {
    pub(crate) expr: String,
    pub(crate) tz: String,
    /// `true` for `missed = "catch_up"`.
    pub(crate) catch_up: bool,
}

/// A backoff, with durations in milliseconds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Backoff {
    Exponential {
        base: u64,
        max: u64,
        full_jitter: bool,
    },
    Fixed(u64),
    None,
}

/// Checks the options, in the order they were written. A malformed option
/// is reported and left at its default.
pub(crate) fn options(mut raw: RawOptions, errors: &mut Errors) -> Options {
    /// Checks the option in `slot`, with errors at the option's position.
    fn check<T, U>(
        slot: &mut Slot<T>,
        errors: &mut Errors,
        f: impl FnOnce(T, &mut Errors) -> Option<U>,
    ) -> Option<U> {
        let (position, value) = slot.take()?;
        let saved = std::mem::replace(&mut errors.position, position);
        let checked = f(value, errors);
        errors.position = saved;
        checked
    }
    let options = Options {
        name: check(&mut raw.name, errors, |s, e| non_empty(&s, "name", e)),
        queue: check(&mut raw.queue, errors, |s, e| non_empty(&s, "queue", e)),
        priority: check(&mut raw.priority, errors, |p, e| priority(&p, e)),
        retries: check(&mut raw.retries, errors, |r, e| retries(&r, e)),
        backoff: check(&mut raw.backoff, errors, |b, e| {
            backoff(&b.value())
                .map_err(|message| e.push(syn::Error::new(b.span(), message)))
                .ok()
        }),
        ttl: check(&mut raw.ttl, errors, |d, e| positive_duration(&d, "ttl", e)),
        timeout: check(&mut raw.timeout, errors, |d, e| {
            positive_duration(&d, "timeout", e)
        }),
        unique: check(&mut raw.unique, errors, |u, _| Some(u)),
        cron: cron(&mut raw, errors),
        krate: check(&mut raw.krate, errors, |k, _| Some(k))
            .unwrap_or_else(|| syn::parse_quote!(::jobsmith)),
    };
    // What follows (the function's errors) comes after every option's.
    errors.position = usize::MAX;
    options
}

/// Checks `cron`, `tz` and `missed` with the runtime's parser; `tz` and
/// `missed` mean nothing without `cron`.
fn cron(raw: &mut RawOptions, errors: &mut Errors) -> Option<Cron> {
    let saved = errors.position;
    let expr = raw.cron.take();
    let tz = raw.tz.take();
    let missed = raw.missed.take();
    let mut ok = true;
    let file = |position: usize, error: syn::Error, errors: &mut Errors| {
        let saved = std::mem::replace(&mut errors.position, position);
        errors.push(error);
        errors.position = saved;
    };
    if expr.is_none() {
        for (key, slot) in [("tz", &tz), ("missed", &missed)] {
            if let Some((position, lit)) = slot {
                let message = format!(
                    "`{key}` belongs to a schedule: add `cron = \"0 */5 * * * *\"`, or remove `{key}`"
                );
                file(*position, syn::Error::new(lit.span(), message), errors);
            }
        }
        return None;
    }
    let (position, lit) = expr?;
    if let Err(message) = jobsmith_grammar::parse_cron(&lit.value()) {
        file(position, syn::Error::new(lit.span(), message), errors);
        ok = false;
    }
    let zone = match &tz {
        Some((position, z)) => match jobsmith_grammar::parse_zone(&z.value()) {
            Ok(_) => z.value(),
            Err(message) => {
                file(*position, syn::Error::new(z.span(), message), errors);
                ok = false;
                String::new()
            }
        },
        None => "UTC".to_owned(),
    };
    let catch_up = match &missed {
        Some((position, m)) => match m.value().as_str() {
            "skip" => false,
            "catch_up" => true,
            other => {
                let message = format!(
                    "`{other}` is not a missed-tick policy: write `missed = \"skip\"` (the default) or `missed = \"catch_up\"`"
                );
                file(*position, syn::Error::new(m.span(), message), errors);
                ok = false;
                false
            }
        },
        None => false,
    };
    errors.position = saved;
    ok.then(|| Cron {
        expr: lit.value(),
        tz: zone,
        catch_up,
    })
}

fn non_empty(s: &LitStr, key: &str, errors: &mut Errors) -> Option<String> {
    let value = s.value();
    if value.trim().is_empty() {
        let message = format!("`{key}` cannot be empty: write `{key} = \"...\"`, or remove it");
        errors.push(syn::Error::new(s.span(), message));
        return None;
    }
    if value.trim() != value {
        let message = format!("`{key}` has leading or trailing spaces: remove them");
        errors.push(syn::Error::new(s.span(), message));
        return None;
    }
    Some(value)
}

fn priority(p: &Int, errors: &mut Errors) -> Option<i32> {
    let fitted = i32::try_from(p.value).ok();
    if fitted.is_none() {
        let message = format!(
            "priority must be between {} and {}; higher runs first, the default is 0",
            i32::MIN,
            i32::MAX
        );
        errors.push(syn::Error::new_spanned(&p.expr, message));
    }
    fitted
}

fn retries(r: &Int, errors: &mut Errors) -> Option<u32> {
    if (0..=MAX_RETRIES).contains(&r.value) {
        u32::try_from(r.value).ok()
    } else {
        let message = format!(
            "retries must be between 0 and {MAX_RETRIES}: a job runs at most retries + 1 times"
        );
        errors.push(syn::Error::new_spanned(&r.expr, message));
        None
    }
}

fn positive_duration(d: &LitStr, key: &str, errors: &mut Errors) -> Option<u64> {
    let result = millis(&d.value()).and_then(|ms| {
        if ms == 0 {
            Err(format!(
                "a zero `{key}` would make every job fail: remove `{key}` to have none"
            ))
        } else {
            Ok(ms)
        }
    });
    result
        .map_err(|e| errors.push(syn::Error::new(d.span(), e)))
        .ok()
}

/// A duration in milliseconds, parsed exactly as the runtime parses durations.
fn millis(text: &str) -> Result<u64, String> {
    let d = jobsmith_grammar::parse_duration(text)?;
    u64::try_from(d.as_millis()).map_err(|_| format!("`{text}` is too large a duration"))
}

/// Parses `"exponential(1s)"`, `"exponential(1s, max = 10m, jitter = none)"`,
/// `"fixed(30s)"` or `"none"`.
pub(crate) fn backoff(text: &str) -> Result<Backoff, String> {
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
    match kind.trim() {
        "fixed" => {
            let delay = millis(first).map_err(|e| format!("in backoff `{text}`: {e}"))?;
            match parts.next() {
                None => Ok(Backoff::Fixed(delay)),
                Some(extra) => Err(format!(
                    "`fixed` takes only a delay, not `{extra}`: write \"fixed(30s)\""
                )),
            }
        }
        "exponential" => {
            let base = millis(first).map_err(|e| format!("in backoff `{text}`: {e}"))?;
            if base == 0 {
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
                let (key, value) = (key.trim(), value.trim());
                match key {
                    "max" if max.is_none() => {
                        max = Some(millis(value).map_err(|e| format!("in backoff `{text}`: {e}"))?);
                    }
                    "jitter" if jitter.is_none() => {
                        jitter = Some(match value {
                            "full" => true,
                            "none" => false,
                            other => {
                                return Err(format!(
                                    "`{other}` is not a jitter: write `jitter = full` or `jitter = none`"
                                ))
                            }
                        });
                    }
                    "max" | "jitter" => {
                        return Err(format!("duplicate `{key}` in `{text}`; remove one"));
                    }
                    other => {
                        return Err(format!(
                        "unknown backoff option `{other}` in `{text}`; expected `max` or `jitter`"
                    ))
                    }
                }
            }
            let max = max.unwrap_or(3_600_000);
            if max < base {
                return Err(format!(
                    "in backoff `{text}`, `max` is less than the first delay: raise `max` or lower the first delay"
                ));
            }
            Ok(Backoff::Exponential {
                base,
                max,
                full_jitter: jitter.unwrap_or(true),
            })
        }
        other => Err(format!("`{other}` is not a kind of backoff: {hint}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{backoff, Backoff};

    #[test]
    fn backoff_forms() {
        assert_eq!(backoff("none"), Ok(Backoff::None));
        assert_eq!(backoff("fixed(30s)"), Ok(Backoff::Fixed(30_000)));
        assert_eq!(
            backoff("exponential(1s)"),
            Ok(Backoff::Exponential {
                base: 1000,
                max: 3_600_000,
                full_jitter: true
            })
        );
        assert_eq!(
            backoff(" exponential( 500ms , max = 10m, jitter = none ) "),
            Ok(Backoff::Exponential {
                base: 500,
                max: 600_000,
                full_jitter: false
            })
        );
        assert_eq!(
            backoff("exponential(1s, jitter = full, max = 1h)"),
            Ok(Backoff::Exponential {
                base: 1000,
                max: 3_600_000,
                full_jitter: true
            })
        );
    }

    #[test]
    fn backoff_errors_say_what_to_write() {
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
            let err = backoff(bad).expect_err(bad);
            assert!(
                ["write", "remove", "expected", "raise"]
                    .iter()
                    .any(|w| err.contains(w)),
                "{bad}: {err}"
            );
        }
    }
}
