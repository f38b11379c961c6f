//! The attribute's options, checked: strings given their meaning with the
//! grammar the runtime reads them with (`jobsmith_grammar`), numbers held to
//! their ranges. A malformed option is an error on its value that says what
//! to write, and is left at the runtime's default.

use crate::parse::{Int, OnTarget, RawOn, RawOptions, Slot};
use crate::Errors;
use jobsmith_grammar::{parse_backoff, parse_cron, parse_duration, parse_missed, parse_zone};
use jobsmith_grammar::{parse_topic_pattern, Backoff, Missed};
use std::time::Duration;
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
    pub(crate) ttl: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) unique: Option<bool>,
    /// A periodic schedule.
    pub(crate) cron: Option<Cron>,
    /// The events the job handles.
    pub(crate) on: Option<On>,
    /// The path of the `jobsmith` crate, `::jobsmith` unless `crate = ...` says otherwise.
    pub(crate) krate: syn::Path,
}

/// A checked `on`.
pub(crate) enum On {
    /// `on = EventType`: the handler takes the event's own type. Whether it
    /// is an event is left to the compiler, through the `Event` bound.
    Event(Box<syn::Type>),
    /// `on = "user.*"`: a valid topic pattern; the handler takes `AnyEvent`.
    Pattern(LitStr),
}

/// A checked `cron`, `tz` and `missed`.
pub(crate) struct Cron {
    pub(crate) expr: String,
    pub(crate) tz: String,
    pub(crate) missed: Missed,
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
    let scheduled_and_subscribed = raw.on.is_set() && raw.cron.is_set();
    let options = Options {
        name: check(&mut raw.name, errors, |s, e| non_empty(&s, "name", e)),
        queue: check(&mut raw.queue, errors, |s, e| non_empty(&s, "queue", e)),
        priority: check(&mut raw.priority, errors, |p, e| priority(&p, e)),
        retries: check(&mut raw.retries, errors, |r, e| retries(&r, e)),
        backoff: check(&mut raw.backoff, errors, |b, e| {
            parse_backoff(&b.value())
                .map_err(|message| e.push(syn::Error::new(b.span(), message)))
                .ok()
        }),
        ttl: check(&mut raw.ttl, errors, |d, e| positive_duration(&d, "ttl", e)),
        timeout: check(&mut raw.timeout, errors, |d, e| {
            positive_duration(&d, "timeout", e)
        }),
        unique: check(&mut raw.unique, errors, |u, _| Some(u)),
        on: on(&mut raw.on, scheduled_and_subscribed, errors),
        cron: cron(&mut raw, errors).filter(|_| !scheduled_and_subscribed),
        krate: check(&mut raw.krate, errors, |k, _| Some(k))
            .unwrap_or_else(|| syn::parse_quote!(::jobsmith)),
    };
    // What follows (the function's errors) comes after every option's.
    errors.position = usize::MAX;
    options
}

/// Checks `on`: a pattern with the grammar the broker matches it with. A job
/// given both `on` and `cron` is an error on `on`, and is left with neither,
/// so that neither's checks of the parameters add to that error.
fn on(slot: &mut Slot<RawOn>, with_cron: bool, errors: &mut Errors) -> Option<On> {
    let (position, on) = slot.take()?;
    if with_cron {
        errors.push_at(
            position,
            syn::Error::new(
                on.key.span(),
                "a job runs either on a schedule or on an event: remove `cron` or `on`",
            ),
        );
        return None;
    }
    match on.target {
        OnTarget::Event(ty) => Some(On::Event(ty)),
        OnTarget::Pattern(lit) => match parse_topic_pattern(&lit.value()) {
            Ok(()) => Some(On::Pattern(lit)),
            Err(message) => {
                errors.push_at(position, syn::Error::new(lit.span(), message));
                None
            }
        },
    }
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
    if let Err(message) = parse_cron(&lit.value()) {
        file(position, syn::Error::new(lit.span(), message), errors);
        ok = false;
    }
    let zone = match &tz {
        Some((position, z)) => match parse_zone(&z.value()) {
            Ok(_) => z.value(),
            Err(message) => {
                file(*position, syn::Error::new(z.span(), message), errors);
                ok = false;
                String::new()
            }
        },
        None => "UTC".to_owned(),
    };
    let missed = match &missed {
        Some((position, m)) => match parse_missed(&m.value()) {
            Ok(policy) => policy,
            // Worded for the attribute, with the option as it is written.
            Err(_) => {
                let message = format!(
                    "`{}` is not a missed-tick policy: write `missed = \"skip\"` (the default) or `missed = \"catch_up\"`",
                    m.value()
                );
                file(*position, syn::Error::new(m.span(), message), errors);
                ok = false;
                Missed::Skip
            }
        },
        None => Missed::Skip,
    };
    errors.position = saved;
    ok.then(|| Cron {
        expr: lit.value(),
        tz: zone,
        missed,
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

fn positive_duration(d: &LitStr, key: &str, errors: &mut Errors) -> Option<Duration> {
    let result = parse_duration(&d.value()).and_then(|duration| {
        if duration.is_zero() {
            Err(format!(
                "a zero `{key}` would make every job fail: remove `{key}` to have none"
            ))
        } else {
            Ok(duration)
        }
    });
    result
        .map_err(|e| errors.push(syn::Error::new(d.span(), e)))
        .ok()
}
