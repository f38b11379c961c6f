//! Fallback: what `#[derive(Event)]` emits when the type cannot be an event,
//! so that its errors are the only errors, not a "not an event" at every
//! `#[job(on = ..)]` that names it.
//!
//! The `Event` impl is still emitted, for a type that is not generic, but
//! the type is not registered: a malformed name never reaches the registry.

use super::validate::Event;
use proc_macro2::TokenStream;
use quote::quote;

/// The `Event` impl alone, with the name as far as it was valid.
pub(super) fn event(event: &Event<'_>) -> TokenStream {
    if event.generic {
        // An impl would need the parameters' bounds, which are what is wrong.
        return TokenStream::new();
    }
    let Event {
        ident, name, krate, ..
    } = event;
    quote! {
        impl #krate::__private::Event for #ident {
            const NAME: &'static str = #name;
        }
    }
}
