//! Generation: the `Event` impl and the type's link-time registration,
//! naming the runtime through `<crate>::__private` and the standard library
//! through `::core`.

use super::validate::Event;
use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;

/// Everything `#[derive(Event)]` expands to for a valid event type.
pub(super) fn event(event: &Event<'_>) -> TokenStream {
    let Event {
        ident, name, krate, ..
    } = event;
    let p = quote!(#krate::__private);
    let rust_type = ident.unraw().to_string();
    quote! {
        const _: () = {
            impl #p::Event for #ident {
                const NAME: &'static str = #name;
            }

            #p::inventory::submit! {
                #p::EventRegistration(&#p::EventDef {
                    name: #name,
                    rust_type: #rust_type,
                    location: ::core::concat!(
                        ::core::module_path!(), " (", ::core::file!(), ":", ::core::line!(), ")"
                    ),
                })
            }
        };
    }
}
