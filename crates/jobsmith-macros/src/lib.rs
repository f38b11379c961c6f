//! The `#[job]` attribute and `#[derive(Event)]` of [jobsmith](https://docs.rs/jobsmith).
//!
//! Use them through the `jobsmith` crate (`jobsmith::job`, `jobsmith::Event`),
//! whose documentation describes every option; the code this crate generates
//! names only `::jobsmith::__private` and `::core`.
//!
//! The expansion is a pipeline of four steps, one module each: `parse` the
//! options and the function, `validate` them (the options with the grammar
//! the runtime uses, `jobsmith_grammar`), then `generate` the job or, when
//! there were errors, emit a `fallback` next to them. `event` is the same
//! four steps for the derive.

mod event;
mod fallback;
mod generate;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Makes an `async fn` a background job. The `jobsmith` crate re-exports this
/// attribute as `jobsmith::job` and documents it there, option by option.
#[proc_macro_attribute]
pub fn job(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into()).into()
}

/// Makes a type an event, named by `#[event(name = "...")]`. The `jobsmith`
/// crate re-exports this derive as `jobsmith::Event`, next to the trait, and
/// documents it there.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(item: TokenStream) -> TokenStream {
    event::expand(item.into()).into()
}

/// The pipeline: parse, validate, then generate or fall back; errors come out together.
fn expand(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut errors = Errors::default();
    let raw = parse::options(args, &mut errors);
    let opts = validate::options(raw, &mut errors);
    let output = match parse::function(item) {
        Ok(item) => match validate::function(item, &mut errors) {
            validate::Checked::Valid(job)
                if validate::scheduled_job_args(&job, &opts, &mut errors)
                    && validate::event_handler_args(&job, &opts, &mut errors) =>
            {
                generate::job(&job, &opts)
            }
            validate::Checked::Valid(job) => fallback::job(&job, &opts),
            validate::Checked::Invalid(job) => fallback::job(&job, &opts),
        },
        Err((tokens, error)) => {
            errors.push(error);
            fallback::item(tokens)
        }
    };
    let errors = errors.into_compile_error();
    quote::quote!(#output #errors)
}

/// Errors gathered along the pipeline, reported all at once and in source
/// order: each error is filed under the position of the option it is about
/// (options are checked after they are all parsed), and the function's errors
/// come last.
#[derive(Default)]
struct Errors {
    errors: Vec<(usize, syn::Error)>,
    /// The position new errors are filed under.
    position: usize,
}

impl Errors {
    /// Adds an error.
    fn push(&mut self, error: syn::Error) {
        self.errors.push((self.position, error));
    }

    /// Adds an error filed under `position`, the position of the option it is about.
    fn push_at(&mut self, position: usize, error: syn::Error) {
        self.errors.push((position, error));
    }

    /// How many errors were pushed.
    fn len(&self) -> usize {
        self.errors.len()
    }

    /// The errors as `compile_error!` invocations; nothing when there were none.
    fn into_compile_error(mut self) -> proc_macro2::TokenStream {
        self.errors.sort_by_key(|(position, _)| *position);
        let mut errors = self.errors.into_iter().map(|(_, e)| e);
        let Some(mut all) = errors.next() else {
            return proc_macro2::TokenStream::new();
        };
        all.extend(errors);
        all.to_compile_error()
    }
}
