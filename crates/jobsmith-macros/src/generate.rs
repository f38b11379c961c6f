//! Generation: the job type, its enqueue methods, its runner and its registration.
//!
//! Everything generated names the runtime through `<crate>::__private` and
//! the standard library through `::core`, so it works whatever the user has
//! in scope. The function body is re-emitted as tokens, never re-parsed.

use crate::validate::{Job, On, Options};
use jobsmith_grammar::{Backoff, Jitter, Missed};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use std::time::Duration;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Ident};

/// The attributes of the function, sorted by where they go.
pub(crate) struct Attrs<'a> {
    /// `#[cfg]`, `#[cfg_attr]` and lint levels: on every generated item.
    pub(crate) everywhere: Vec<&'a Attribute>,
    /// Doc comments: on the type and on `call`.
    pub(crate) docs: Vec<&'a Attribute>,
    /// `#[deprecated]`: on the type only, so that every use warns once.
    pub(crate) type_only: Vec<&'a Attribute>,
    /// Everything else (`#[inline]`, `#[tracing::instrument]`, ...): on `call`.
    pub(crate) call_only: Vec<&'a Attribute>,
}

impl<'a> Attrs<'a> {
    pub(crate) fn sort(attrs: &'a [Attribute]) -> Self {
        let mut sorted = Attrs {
            everywhere: vec![],
            docs: vec![],
            type_only: vec![],
            call_only: vec![],
        };
        for attr in attrs {
            let path = attr.path();
            let is = |name: &str| path.is_ident(name);
            if is("cfg") || is("cfg_attr") || is("allow") || is("warn") || is("deny") {
                sorted.everywhere.push(attr);
            } else if is("expect") || is("forbid") {
                // `expect` would be unfulfilled on the items that do not trip the
                // lint, so it stays on the function body; `forbid` likewise.
                sorted.call_only.push(attr);
            } else if is("doc") {
                sorted.docs.push(attr);
            } else if is("deprecated") {
                sorted.type_only.push(attr);
            } else {
                sorted.call_only.push(attr);
            }
        }
        sorted
    }
}

/// The unit struct that stands for the job, as the fallback emits it too.
pub(crate) fn job_type(item: &syn::ItemFn, attrs: &Attrs<'_>) -> TokenStream {
    let Attrs {
        everywhere,
        docs,
        type_only,
        ..
    } = attrs;
    let vis = &item.vis;
    let name = &item.sig.ident;
    quote! {
        #(#everywhere)*
        #(#docs)*
        #(#type_only)*
        #[allow(non_camel_case_types, dead_code)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #name;
    }
}

/// Everything `#[job]` expands to for a valid job.
pub(crate) fn job(job: &Job, opts: &Options) -> TokenStream {
    let item = &job.item;
    let attrs = Attrs::sort(&item.attrs);
    let everywhere = &attrs.everywhere;
    let docs = &attrs.docs;
    let call_only = &attrs.call_only;
    let krate = &opts.krate;
    let p = quote!(#krate::__private);
    let vis = &item.vis;
    let name = &item.sig.ident;
    let name_str = opts
        .name
        .clone()
        .unwrap_or_else(|| name.unraw().to_string());
    let output = &job.output;
    let inputs = &item.sig.inputs;
    let fn_output = &item.sig.output;
    let block = &item.block;

    let all_idents: Vec<&Ident> = job.params.iter().map(|p| &p.ident).collect();
    let all_tys: Vec<&syn::Type> = job.params.iter().map(|p| &p.ty).collect();
    let ser_idents: Vec<&Ident> = job.serialized().map(|p| &p.ident).collect();
    let ser_tys: Vec<&syn::Type> = job.serialized().map(|p| &p.ty).collect();
    // The keys serde gives the fields: the names without `r#`.
    let ser_names: Vec<String> = ser_idents.iter().map(|i| i.unraw().to_string()).collect();
    let ser_type_texts: Vec<String> = ser_tys.iter().map(|ty| type_text(ty)).collect();
    let inj_idents: Vec<&Ident> = job.injected().map(|p| &p.ident).collect();
    let generics: Vec<Ident> = (0..ser_idents.len())
        .map(|i| format_ident!("__JobsmithArg{}", i))
        .collect();

    // Locals of the generated functions: hygienic, so they never clash with
    // the user's parameter names.
    let args = Ident::new("args", Span::mixed_site());
    let ctx = Ident::new("ctx", Span::mixed_site());
    let at = Ident::new("at", Span::mixed_site());

    // A wrong argument type is an error at the parameter, with the trait's
    // own message: the paths that name the traits carry the type's span.
    let codec_call = quote!(__jobsmith_codec::<#(#ser_tys),*>());
    let inject_calls = job.injected().map(|param| {
        let ty = &param.ty;
        let from_context = respan(quote!(#p::FromContext), ty.span());
        quote_spanned!(ty.span()=> <#ty as #from_context>::from_context(&#ctx))
    });
    let into_job_result = respan(quote!(#p::IntoJobResult), output.span());
    let into_job_result =
        quote_spanned!(output.span()=> <#output as #into_job_result>::into_job_result);
    // A future that is not `Send` is an error at the function's name; the
    // runner awaits this boxed future, so that there is one such error.
    let boxed_call = {
        let box_pin = respan(quote!(#p::Box::pin), name.span());
        quote_spanned!(name.span()=> #box_pin(#name::call(#(#all_idents),*)))
    };
    let box_pin = respan(quote!(#p::Box::pin), name.span());
    let delay = Ident::new("delay", name.span());
    let schedule = Ident::new("schedule", name.span());
    let serde_path = format!("{}::serde", p).replace(' ', "");
    let type_def = job_type(item, &attrs);
    let options = job_options(opts, &p);
    let subscription = subscription(job, opts, &p);
    let job_doc = format!("Enqueues the job `{name_str}` with these arguments.");
    let schedule_doc = format!("Enqueues the job `{name_str}` to run at `at`.");
    let await_doc = "Await the result to enqueue on the default app, or call `.on(&app)`.";

    quote! {
        #type_def

        #(#everywhere)*
        const _: () = {
            #subscription

            #[derive(#p::serde::Serialize, #p::serde::Deserialize)]
            #[serde(crate = #serde_path)]
            struct __JobsmithArgs<#(#generics),*> {
                #(#ser_idents: #generics,)*
            }

            // The job's future, boxed: what a direct call returns, and what the runner awaits.
            fn __jobsmith_boxed(#(#all_idents: #all_tys),*) -> #p::BoxFuture<'static, #output> {
                #boxed_call
            }

            // One generic function encodes and decodes the arguments, so that
            // a type that is not a `JobArg` is one error, at the parameter.
            #[allow(clippy::type_complexity)]
            fn __jobsmith_codec<#(#generics: #p::JobArg),*>() -> (
                fn(__JobsmithArgs<#(#generics),*>) -> #p::Enqueue,
                fn(&str) -> ::core::result::Result<__JobsmithArgs<#(#generics),*>, #p::serde_json::Error>,
                fn() -> #p::Vec<#p::Shape>,
            ) {
                (
                    |#args| #p::Enqueue::new(<#name as #p::Job>::DEF, &#args),
                    |#args| #p::serde_json::from_str(#args),
                    || <#p::Vec<#p::Shape>>::from([#(#p::shape_of::<#generics>()),*]),
                )
            }

            impl #name {
                #(#docs)*
                #(#call_only)*
                // `#[job]` needs an `async fn`, whether or not it awaits.
                #[allow(clippy::unused_async)]
                #vis async fn call(#inputs) #fn_output #block

                #[doc = #job_doc]
                #[doc = ""]
                #[doc = #await_doc]
                #[allow(dead_code)]
                #vis fn #delay(&self, #(#ser_idents: #ser_tys),*) -> #p::Enqueue {
                    (#codec_call.0)(__JobsmithArgs { #(#ser_idents,)* })
                }

                #[doc = #schedule_doc]
                #[doc = ""]
                #[doc = #await_doc]
                // Two more than the job's own parameters, which may be many.
                #[allow(dead_code, clippy::too_many_arguments)]
                #vis fn #schedule(
                    &self,
                    #at: impl ::core::convert::Into<#p::When>,
                    #(#ser_idents: #ser_tys),*
                ) -> #p::Enqueue {
                    self.delay(#(#ser_idents),*).at(#at)
                }

                // What its published record says each parameter takes.
                fn __jobsmith_shapes() -> #p::Vec<#p::Shape> {
                    (#codec_call.2)()
                }

                fn __jobsmith_run(
                    #args: &#p::RawValue,
                    #ctx: #p::JobContext,
                ) -> ::core::result::Result<
                    #p::BoxFuture<'static, ::core::result::Result<(), #p::Failure>>,
                    #p::serde_json::Error,
                > {
                    let __JobsmithArgs { #(#ser_idents,)* } = (#codec_call.1)(#args.get())?;
                    ::core::result::Result::Ok(#box_pin(async move {
                        #(
                            let #inj_idents = match #inject_calls {
                                ::core::result::Result::Ok(value) => value,
                                ::core::result::Result::Err(failure) => {
                                    return ::core::result::Result::Err(failure);
                                }
                            };
                        )*
                        #into_job_result(__jobsmith_boxed(#(#all_idents),*).await)
                    }))
                }
            }

            impl ::core::ops::Deref for #name {
                type Target = fn(#(#all_tys),*) -> #p::BoxFuture<'static, #output>;

                fn deref(&self) -> &Self::Target {
                    const CALL: fn(#(#all_tys),*) -> #p::BoxFuture<'static, #output> =
                        __jobsmith_boxed;
                    &CALL
                }
            }

            impl #p::Job for #name {
                const DEF: &'static #p::JobDef = &#p::JobDef {
                    name: #name_str,
                    location: ::core::concat!(
                        ::core::module_path!(), " (", ::core::file!(), ":", ::core::line!(), ")"
                    ),
                    options: #options,
                    run: #name::__jobsmith_run,
                    params: &[#(#p::Param {
                        name: #ser_names,
                        rust_type: #ser_type_texts,
                    }),*],
                    shapes: #name::__jobsmith_shapes,
                };
            }

            #p::inventory::submit! {
                #p::Registration(<#name as #p::Job>::DEF)
            }
        };
    }
}

/// For an event handler, `__JOBSMITH_ON`, the name or pattern it subscribes
/// to, and a check that its event parameter takes what it subscribes to: an
/// error on the parameter's type, with the trait's message, when it does
/// not. A type given to `on` that is not an event is an error on that type;
/// the check and the name are in one body, so that it is one error, not two.
fn subscription(job: &Job, opts: &Options, p: &TokenStream) -> TokenStream {
    let (Some(on), Some(param)) = (&opts.on, job.serialized().next()) else {
        return TokenStream::new();
    };
    let ty = &param.ty;
    let (check, name) = match on {
        On::Event(event) => {
            let check = respan(quote!(#p::subscribes_to), ty.span());
            let event_trait = respan(quote!(#p::Event), event.span());
            (
                quote_spanned!(ty.span()=> #check::<#event, #ty>()),
                quote_spanned!(event.span()=> <#event as #event_trait>::NAME),
            )
        }
        On::Pattern(pattern) => {
            let check = respan(quote!(#p::takes_any_event), ty.span());
            (
                quote_spanned!(ty.span()=> #check::<#ty>()),
                quote!(#pattern),
            )
        }
    };
    quote! {
        const __JOBSMITH_ON: &'static str = {
            #check;
            #name
        };
    }
}

/// The `JobOptions` constant: the options given, the runtime's defaults for the rest.
fn job_options(opts: &Options, p: &TokenStream) -> TokenStream {
    let duration = |d: Duration| {
        // Whole milliseconds, as many as fit in a `u64`: all that `parse_duration` returns.
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        quote!(::core::time::Duration::from_millis(#ms))
    };
    let some = |t: TokenStream| quote!(::core::option::Option::Some(#t));
    let mut fields = Vec::new();
    if let Some(queue) = &opts.queue {
        fields.push(quote!(queue: #queue));
    }
    if let Some(priority) = opts.priority {
        fields.push(quote!(priority: #priority));
    }
    if let Some(retries) = opts.retries {
        fields.push(quote!(retries: #retries));
    }
    if let Some(backoff) = &opts.backoff {
        let value = match backoff {
            Backoff::None => quote!(#p::Backoff::None),
            Backoff::Fixed(d) => {
                let d = duration(*d);
                quote!(#p::Backoff::Fixed(#d))
            }
            Backoff::Exponential { base, max, jitter } => {
                let (base, max) = (duration(*base), duration(*max));
                let jitter = match jitter {
                    Jitter::Full => quote!(Full),
                    Jitter::None => quote!(None),
                };
                quote!(#p::Backoff::Exponential { base: #base, max: #max, jitter: #p::Jitter::#jitter })
            }
        };
        fields.push(quote!(backoff: #value));
    }
    if let Some(ttl) = opts.ttl {
        let value = some(duration(ttl));
        fields.push(quote!(ttl: #value));
    }
    if let Some(timeout) = opts.timeout {
        let value = some(duration(timeout));
        fields.push(quote!(timeout: #value));
    }
    if let Some(unique) = opts.unique {
        fields.push(quote!(unique: #unique));
    }
    if let Some(cron) = &opts.cron {
        let (expr, tz) = (&cron.expr, &cron.tz);
        let missed = match cron.missed {
            Missed::Skip => quote!(Skip),
            Missed::CatchUp => quote!(CatchUp),
        };
        let value =
            some(quote!(#p::CronOptions { expr: #expr, tz: #tz, missed: #p::Missed::#missed }));
        fields.push(quote!(cron: #value));
    }
    if let Some(on) = &opts.on {
        // `subscription` defines the name, next to its checks.
        let any = matches!(on, On::Pattern(_));
        let value = some(quote!(#p::Subscribe { pattern: __JOBSMITH_ON, any: #any }));
        fields.push(quote!(on: #value));
    }
    if fields.len() == 9 {
        quote!(#p::JobOptions { #(#fields),* })
    } else {
        quote!(#p::JobOptions { #(#fields,)* ..#p::JobOptions::DEFAULT })
    }
}

/// A type as its signature writes it, `Option<Vec<u8>>`: the tokens with a
/// space kept only between two words, after `,` or `;`, and around `+`.
fn type_text(ty: &syn::Type) -> String {
    let spaced = quote!(#ty).to_string();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(spaced.len());
    let mut chars = spaced.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ' ' {
            out.push(c);
            continue;
        }
        let before = out.chars().last();
        let after = chars.peek().copied();
        if (word(before) && word(after))
            || matches!(before, Some(',' | ';' | '+'))
            || after == Some('+')
        {
            out.push(' ');
        }
    }
    out
}

/// The tokens, with every span set to `span`, so that an error about them
/// points where `span` does.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let proc_macro2::TokenTree::Group(g) = &token {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                token = proc_macro2::TokenTree::Group(group);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::type_text;

    #[test]
    fn types_read_as_written() {
        let text = |t: &str| type_text(&syn::parse_str(t).unwrap());
        assert_eq!(text("Option < Vec < u8 > >"), "Option<Vec<u8>>");
        assert_eq!(
            text("std::collections::HashMap<String,(u8, [i32;4])>"),
            "std::collections::HashMap<String, (u8, [i32; 4])>"
        );
        assert_eq!(text("Box<dyn Fn(u8) + Send>"), "Box<dyn Fn(u8) + Send>");
    }
}
