//! Validation: gives the parsed options their meaning (durations, backoff,
//! ranges) and checks that the function can be a job. Every problem is an
//! error on the offending token that says how to fix it.

use crate::parse::{Int, RawOptions, Slot};
use crate::Errors;
use proc_macro2::Span;
use syn::{
    FnArg, GenericArgument, Ident, ItemFn, LitStr, Pat, PathArguments, ReturnType, Type,
    TypeReference,
};

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

/// A function that can be a job.
pub(crate) struct Job {
    /// The function, with `#[inject]` markers removed from its parameters.
    pub(crate) item: ItemFn,
    /// Its parameters, in order.
    pub(crate) params: Vec<Param>,
    /// Its return type; `()` when it has none.
    pub(crate) output: Type,
    /// Whether it takes `self`: then it is in an `impl` block, where the
    /// fallback can only leave it as it is.
    pub(crate) has_receiver: bool,
}

/// One parameter of a job.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// Given by the worker (`State<T>`, `JobContext`, `#[inject]`), not serialized.
    pub(crate) injected: bool,
}

impl Job {
    /// The parameters that are serialized into the job's arguments.
    pub(crate) fn serialized(&self) -> impl Iterator<Item = &Param> + '_ {
        self.params.iter().filter(|p| !p.injected)
    }

    /// The parameters that the worker injects.
    pub(crate) fn injected(&self) -> impl Iterator<Item = &Param> + '_ {
        self.params.iter().filter(|p| p.injected)
    }
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

/// A scheduled job is enqueued by its schedule, which has no arguments to
/// give it: each serialized parameter is an error.
pub(crate) fn scheduled_job_args(job: &Job, opts: &Options, errors: &mut Errors) -> bool {
    if opts.cron.is_none() {
        return true;
    }
    let mut ok = true;
    for param in job.serialized() {
        let name = &param.ident;
        errors.push(syn::Error::new(
            name.span(),
            format!(
                "a job with `cron = ..` is enqueued by its schedule, which passes no arguments: \
                 remove `{name}` (only `State<T>` and `JobContext` can be taken), or drop `cron` and \
                 schedule the job with fixed arguments with `worker.schedule(\"..\", job.delay(..))`"
            ),
        ));
        ok = false;
    }
    ok
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

/// A function after its checks.
pub(crate) enum Checked {
    /// It can be a job.
    Valid(Job),
    /// It cannot; the errors are reported, and the model is kept for the fallback.
    Invalid(Job),
}

/// Checks that `item` can be a job, and builds its model.
pub(crate) fn function(mut item: ItemFn, errors: &mut Errors) -> Checked {
    let before = errors.len();
    let sig = &item.sig;
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(
            c.span,
            "a job cannot be a `const fn`: remove `const`",
        ));
    }
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "a job must be an `async fn`: add `async` before `fn`",
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new(
            u.span,
            "a job cannot be `unsafe`: remove `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "a job cannot have an ABI: remove `extern`",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            v,
            "a job cannot be variadic: remove `...`",
        ));
    }
    if !sig.generics.params.is_empty() {
        let only_lifetimes = sig
            .generics
            .params
            .iter()
            .all(|p| matches!(p, syn::GenericParam::Lifetime(_)));
        let message = if only_lifetimes {
            "a job cannot have lifetime parameters: job arguments are serialized, \
             so take owned types such as `String` and remove the lifetimes"
        } else {
            "a job cannot be generic: the worker must know the argument types to \
             deserialize them; use concrete types and remove the type parameters"
        };
        errors.push(syn::Error::new_spanned(&sig.generics, message));
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            w,
            "a job cannot have a `where` clause: use concrete types and remove it",
        ));
    }
    item.attrs.retain(|attr| {
        let path = attr.path();
        let is_job = path.is_ident("job")
            || (path.segments.len() == 2
                && path.segments[0].ident == "jobsmith"
                && path.segments[1].ident == "job");
        if is_job {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[job]` is repeated: remove this one",
            ));
        }
        !is_job
    });

    let mut params = Vec::new();
    for (i, input) in item.sig.inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                errors.push(syn::Error::new(
                    r.self_token.span,
                    "a job is a free function, not a method: remove `self` and \
                     move the function out of the `impl` block",
                ));
            }
            FnArg::Typed(pat_ty) => {
                let mut inject = false;
                pat_ty.attrs.retain(|attr| {
                    if !attr.path().is_ident("inject") {
                        return true;
                    }
                    if let Err(e) = attr.meta.require_path_only() {
                        errors.push(syn::Error::new(
                            e.span(),
                            "`#[inject]` takes no arguments: write `#[inject]`",
                        ));
                    }
                    inject = true;
                    false
                });
                let injected = inject || names_injected_type(&pat_ty.ty);
                check_arg_type(&pat_ty.ty, injected, errors);
                let ident = match &*pat_ty.pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
                    Pat::Wild(w) => {
                        errors.push(syn::Error::new(
                            w.underscore_token.span,
                            "job arguments are serialized by name: give this argument \
                             a name, such as `_unused`",
                        ));
                        Ident::new(&format!("arg{i}"), Span::call_site())
                    }
                    other => {
                        errors.push(syn::Error::new_spanned(
                            other,
                            "job arguments are serialized by name: bind this argument to \
                             a plain name (`point: (i32, i32)`) and destructure it in the body",
                        ));
                        Ident::new(&format!("arg{i}"), Span::call_site())
                    }
                };
                params.push(Param {
                    ident,
                    ty: (*pat_ty.ty).clone(),
                    injected,
                });
            }
        }
    }

    let output = match &item.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            check_return_type(ty, errors);
            (**ty).clone()
        }
    };

    let has_receiver = item.sig.receiver().is_some();
    let job = Job {
        item,
        params,
        output,
        has_receiver,
    };
    if errors.len() > before {
        Checked::Invalid(job)
    } else {
        Checked::Valid(job)
    }
}

/// Whether the type is named `State<..>` or `JobContext`, the types the
/// worker injects. The value itself is obtained through `FromContext`, so a
/// foreign type of the same name fails with that trait's message.
fn names_injected_type(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "State" || s.ident == "JobContext"),
        Type::Group(g) => names_injected_type(&g.elem),
        Type::Reference(r) => names_injected_type(&r.elem),
        Type::Paren(p) => names_injected_type(&p.elem),
        _ => false,
    }
}

/// Rejects what can never be a job argument: borrows, lifetimes, `impl Trait`.
/// Everything else is left to the compiler, through the `JobArg` and
/// `FromContext` bounds that `generate` emits at each argument's type.
fn check_arg_type(ty: &Type, injected: bool, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => errors.push(borrowed(r, injected)),
        Type::ImplTrait(i) => errors.push(syn::Error::new(
            i.impl_token.span,
            "a job argument needs a concrete type, as the worker deserializes it: \
             replace `impl Trait` with a type",
        )),
        Type::Path(p) => {
            if let Some(q) = &p.qself {
                check_arg_type(&q.ty, injected, errors);
            }
            for segment in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Lifetime(l) if l.ident != "static" => {
                                errors.push(syn::Error::new(
                                    l.span(),
                                    format!(
                                        "job arguments are serialized, so they cannot borrow: \
                                         remove `{l}` and take an owned type such as `String`"
                                    ),
                                ));
                            }
                            GenericArgument::Type(t) => check_arg_type(t, injected, errors),
                            _ => {}
                        }
                    }
                }
            }
        }
        Type::Array(a) => check_arg_type(&a.elem, injected, errors),
        Type::Slice(s) => check_arg_type(&s.elem, injected, errors),
        Type::Group(g) => check_arg_type(&g.elem, injected, errors),
        Type::Paren(p) => check_arg_type(&p.elem, injected, errors),
        Type::Tuple(t) => t
            .elems
            .iter()
            .for_each(|t| check_arg_type(t, injected, errors)),
        _ => {}
    }
}

/// The error for `&T`, suggesting the owned type.
fn borrowed(r: &TypeReference, injected: bool) -> syn::Error {
    let elem = &*r.elem;
    let written = quote::quote!(#elem).to_string();
    let message = if injected || names_injected_type(elem) {
        format!("injected parameters are passed by value: take `{written}` instead of `&{written}`")
    } else {
        let owned = match elem {
            Type::Path(p) if p.path.is_ident("str") => "String".to_owned(),
            Type::Slice(s) => {
                let inner = &*s.elem;
                format!("Vec<{}>", quote::quote!(#inner))
            }
            _ => written.clone(),
        };
        format!(
            "job arguments are serialized, so they are owned: take an owned type \
             such as `{owned}` instead of `&{written}`"
        )
    };
    syn::Error::new(r.and_token.span, message)
}

/// The return type must be nameable and own its data: it is boxed for direct calls.
fn check_return_type(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::ImplTrait(i) => errors.push(syn::Error::new(
            i.impl_token.span,
            "a job's return type must be named: return `()` or `Result<T, E>` \
             with `E: Display` instead of `impl Trait`",
        )),
        Type::Reference(r) if r.lifetime.as_ref().is_none_or(|l| l.ident != "static") => {
            errors.push(syn::Error::new(
                r.and_token.span,
                "a job's result cannot borrow: return an owned value",
            ));
        }
        Type::Path(p) => {
            for segment in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Lifetime(l) if l.ident != "static" => {
                                errors.push(syn::Error::new(
                                    l.span(),
                                    "a job's result cannot borrow: return an owned value",
                                ));
                            }
                            GenericArgument::Type(t) => check_return_type(t, errors),
                            _ => {}
                        }
                    }
                }
            }
        }
        Type::Tuple(t) => t.elems.iter().for_each(|t| check_return_type(t, errors)),
        _ => {}
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
