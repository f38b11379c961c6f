//! Parsing: every `#[event(..)]` attribute's options into set-once slots,
//! with the same errors as `#[job(..)]`'s. Only syntax is checked here.

use crate::parse::{parse_crate, parse_str, reject_unknown, Slot};
use crate::Errors;
use syn::{Attribute, LitStr, Path};

/// The option names, in the order the "unknown option" error lists them.
const OPTION_NAMES: &[&str] = &["name", "crate"];

/// `#[event(...)]` as written.
#[derive(Default)]
pub(super) struct RawOptions {
    pub(super) name: Slot<LitStr>,
    pub(super) krate: Slot<Path>,
}

/// Parses the options of every `#[event(..)]` on the type; every problem
/// goes to `errors`, and parsing carries on past it.
pub(super) fn options(attrs: &[Attribute], errors: &mut Errors) -> RawOptions {
    let mut opts = RawOptions::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        let parsed = attr.parse_nested_meta(|meta| {
            errors.position += 1;
            let Some(key) = meta.path.get_ident().cloned() else {
                return reject_unknown(&meta, OPTION_NAMES, errors);
            };
            match key.to_string().as_str() {
                "name" => parse_str(&meta, &key, errors, &mut opts.name),
                "crate" => parse_crate(&meta, &key, errors, &mut opts.krate),
                _ => reject_unknown(&meta, OPTION_NAMES, errors),
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    opts
}
