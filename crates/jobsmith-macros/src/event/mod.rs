//! `#[derive(Event)]`, as the same four steps as `#[job]`: `parse` the
//! `#[event(..)]` options, `validate` the name and the type, then `generate`
//! the `Event` impl and its registration or, when there were errors, a
//! `fallback` next to them.

mod fallback;
mod generate;
mod parse;
mod validate;

use crate::Errors;
use proc_macro2::TokenStream;

/// The pipeline: parse, validate, then generate or fall back; errors come out together.
pub(crate) fn expand(item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let output = match syn::parse2::<syn::DeriveInput>(item) {
        Ok(input) => {
            let raw = parse::options(&input.attrs, &mut errors);
            match validate::event(&input, raw, &mut errors) {
                validate::Checked::Valid(event) => generate::event(&event),
                validate::Checked::Invalid(event) => fallback::event(&event),
            }
        }
        Err(error) => {
            errors.push(error);
            TokenStream::new()
        }
    };
    let errors = errors.into_compile_error();
    quote::quote!(#output #errors)
}
