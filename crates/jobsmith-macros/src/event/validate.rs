//! Validation: the name, with the grammar the broker routes it with
//! (`jobsmith_grammar::parse_event_name`), and the type, which one name must
//! stand for alone. Every problem is an error on the offending token that
//! says how to fix it.

use super::parse::RawOptions;
use crate::Errors;
use jobsmith_grammar::parse_event_name;
use syn::{DeriveInput, Ident, Path};

/// An event type, as the derive generates it.
pub(super) struct Event<'a> {
    pub(super) ident: &'a Ident,
    /// Its name; empty when it was missing or malformed.
    pub(super) name: String,
    /// The path of the `jobsmith` crate, `::jobsmith` unless `crate = ...` says otherwise.
    pub(super) krate: Path,
    /// Whether it has type or lifetime parameters, which only the fallback sees.
    pub(super) generic: bool,
}

/// An event type after its checks.
pub(super) enum Checked<'a> {
    /// It can be an event.
    Valid(Event<'a>),
    /// It cannot; the errors are reported, and the model is kept for the fallback.
    Invalid(Event<'a>),
}

/// Checks the options and the type, and builds the event's model.
pub(super) fn event<'a>(
    input: &'a DeriveInput,
    mut raw: RawOptions,
    errors: &mut Errors,
) -> Checked<'a> {
    let before = errors.len();
    let ident = &input.ident;
    let name = match raw.name.take() {
        Some((position, lit)) => match parse_event_name(&lit.value()) {
            Ok(()) => lit.value(),
            Err(message) => {
                errors.push_at(position, syn::Error::new(lit.span(), message));
                String::new()
            }
        },
        None => {
            errors.push(syn::Error::new(
                ident.span(),
                format!(
                    "an event needs a name, which its jobs carry and topic patterns match: \
                     add `#[event(name = \"user.signed_up\")]` to `{ident}`"
                ),
            ));
            String::new()
        }
    };
    let generic = !input.generics.params.is_empty();
    if generic {
        errors.push(syn::Error::new_spanned(
            &input.generics,
            "an event type cannot be generic: its name must stand for one type, \
             which every handler deserializes; use concrete types and remove the parameters",
        ));
    }
    let krate = raw
        .krate
        .take()
        .map_or_else(|| syn::parse_quote!(::jobsmith), |(_, path)| path);
    let event = Event {
        ident,
        name,
        krate,
        generic,
    };
    if errors.len() > before {
        Checked::Invalid(event)
    } else {
        Checked::Valid(event)
    }
}
