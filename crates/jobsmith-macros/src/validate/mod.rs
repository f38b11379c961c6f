//! Validation: gives the parsed options their meaning (durations, backoff,
//! ranges) and checks that the function can be a job. Every problem is an
//! error on the offending token that says how to fix it.
//!
//! `options.rs` checks the options with the grammar the runtime reads them
//! with; `function.rs` checks the function and builds the job's model, with
//! `types.rs` walking its argument and return types. What needs both the
//! options and the function is here.

mod function;
mod options;
mod types;

pub(crate) use function::{function, Checked, Job};
pub(crate) use options::{options, On, Options};

use crate::Errors;

/// An event handler is given the event as its one serialized argument:
/// zero or several is an error on the parameter list.
pub(crate) fn event_handler_args(job: &Job, opts: &Options, errors: &mut Errors) -> bool {
    let serialized: Vec<String> = job.serialized().map(|p| format!("`{}`", p.ident)).collect();
    if opts.on.is_none() || serialized.len() == 1 {
        return true;
    }
    let found = if serialized.is_empty() {
        "this one takes none".to_owned()
    } else {
        format!("this one takes {}", serialized.join(", "))
    };
    errors.push(syn::Error::new(
        job.item.sig.paren_token.span.join(),
        format!(
            "a handler of `on = ..` takes exactly one serialized parameter, the event; \
             others must be injected (`State<T>`, `JobContext`): {found}"
        ),
    ));
    false
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
