//! Fallback: what `#[job]` emits when the function cannot be a job, so that
//! the errors are the only errors, not an "unresolved name" at every use.
//!
//! The job type is still defined, with stand-in `delay` and `schedule`
//! methods, and the function stays in it as `call`, so its body is still
//! checked.

use crate::generate::{job_type, Attrs};
use crate::validate::{Job, Options};
use proc_macro2::TokenStream;
use quote::quote;

/// The job type with stand-in methods, and the function as its `call`.
pub(crate) fn job(job: &Job, opts: &Options) -> TokenStream {
    let item = &job.item;
    if job.has_receiver {
        // A method: no type can be defined in an `impl` block.
        return quote!(#item);
    }
    let krate = &opts.krate;
    let p = quote!(#krate::__private);
    let vis = &item.vis;
    let name = &item.sig.ident;
    let attrs = Attrs::sort(&item.attrs);
    let type_def = job_type(item, &attrs);
    let everywhere = &attrs.everywhere;

    // The function itself, as an associated function.
    let mut call = item.clone();
    call.sig.ident = syn::Ident::new("call", name.span());
    call.attrs = attrs
        .docs
        .iter()
        .chain(&attrs.call_only)
        .map(|a| (*a).clone())
        .collect();

    // The stand-ins take the declared types, generics included, so that a
    // call to them type-checks as it would once the function is fixed.
    let serialized: Vec<&syn::Type> = job.serialized().map(|p| &p.ty).collect();
    let generics = &item.sig.generics;
    let where_clause = &generics.where_clause;
    quote! {
        #type_def

        #(#everywhere)*
        #[allow(dead_code, clippy::all)]
        impl #name {
            #call

            #vis fn delay #generics (&self, #(_: #serialized),*) -> #p::Enqueue #where_clause {
                ::core::unreachable!()
            }

            #vis fn schedule #generics (
                &self,
                _: impl ::core::convert::Into<#p::When>,
                #(_: #serialized),*
            ) -> #p::Enqueue #where_clause {
                ::core::unreachable!()
            }
        }
    }
}

/// The item as written, for an item that is not a function.
pub(crate) fn item(tokens: TokenStream) -> TokenStream {
    tokens
}
