//! Parsing: the attribute's options into set-once slots, and the function into
//! its parts. Only syntax is checked here; meaning is checked in `validate`.

use crate::Errors;
use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::{
    Expr, ExprLit, ExprPath, ExprUnary, Ident, ItemFn, Lit, LitBool, LitInt, LitStr, Path, Type,
    TypePath, UnOp,
};

/// The option names, in the order the "unknown option" error lists them.
pub(crate) const OPTION_NAMES: &[&str] = &[
    "name", "queue", "priority", "retries", "backoff", "ttl", "timeout", "unique", "cron", "tz",
    "missed", "on", "crate",
];

/// An integer option: its value, and the expression it was written as, for errors.
pub(crate) struct Int {
    pub(crate) value: i128,
    pub(crate) expr: Expr,
}

/// A slot that may be set once; a second `key = ...` is an error on that key.
/// The value keeps its option's position, so that errors come out in source order.
pub(crate) struct Slot<T>(Option<(usize, T)>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Slot<T> {
    pub(crate) fn set(&mut self, key: &Ident, value: T, errors: &mut Errors) {
        if self.0.is_some() {
            errors.push(syn::Error::new(
                key.span(),
                format!("duplicate `{key}` option; remove one"),
            ));
        } else {
            self.0 = Some((errors.position, value));
        }
    }

    /// The value, if the option was given (and well-formed), with its position.
    pub(crate) fn take(&mut self) -> Option<(usize, T)> {
        self.0.take()
    }

    /// Whether the option was given (and well-formed).
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// `on = ...` as written, with its key, which a conflict with `cron` is reported on.
pub(crate) struct RawOn {
    pub(crate) key: Ident,
    pub(crate) target: OnTarget,
}

/// What `on = ...` names.
pub(crate) enum OnTarget {
    /// `on = UserSignedUp`: an event type.
    Event(Box<Type>),
    /// `on = "user.*"`: a topic pattern.
    Pattern(LitStr),
}

/// `#[job(...)]` as written: literal values, not yet checked for meaning.
#[derive(Default)]
pub(crate) struct RawOptions {
    pub(crate) name: Slot<LitStr>,
    pub(crate) queue: Slot<LitStr>,
    pub(crate) priority: Slot<Int>,
    pub(crate) retries: Slot<Int>,
    pub(crate) backoff: Slot<LitStr>,
    pub(crate) ttl: Slot<LitStr>,
    pub(crate) timeout: Slot<LitStr>,
    pub(crate) unique: Slot<bool>,
    pub(crate) cron: Slot<LitStr>,
    pub(crate) tz: Slot<LitStr>,
    pub(crate) missed: Slot<LitStr>,
    pub(crate) on: Slot<RawOn>,
    pub(crate) krate: Slot<Path>,
}

/// Parses the attribute's arguments; every problem goes to `errors`, and
/// parsing carries on past it so that all of them are reported at once.
pub(crate) fn options(args: TokenStream, errors: &mut Errors) -> RawOptions {
    let mut opts = RawOptions::default();
    let parser = syn::meta::parser(|meta| {
        errors.position += 1;
        let Some(key) = meta.path.get_ident().cloned() else {
            return reject_unknown(&meta, OPTION_NAMES, errors);
        };
        match key.to_string().as_str() {
            "name" => parse_str(&meta, &key, errors, &mut opts.name),
            "queue" => parse_str(&meta, &key, errors, &mut opts.queue),
            "backoff" => parse_str(&meta, &key, errors, &mut opts.backoff),
            "ttl" => parse_str(&meta, &key, errors, &mut opts.ttl),
            "timeout" => parse_str(&meta, &key, errors, &mut opts.timeout),
            "cron" => parse_str(&meta, &key, errors, &mut opts.cron),
            "tz" => parse_str(&meta, &key, errors, &mut opts.tz),
            "missed" => parse_str(&meta, &key, errors, &mut opts.missed),
            "priority" => parse_int(&meta, &key, errors, &mut opts.priority),
            "retries" => parse_int(&meta, &key, errors, &mut opts.retries),
            "unique" => {
                if meta.input.peek(syn::Token![=]) {
                    match value_expr(&meta)? {
                        Expr::Lit(ExprLit {
                            lit: Lit::Bool(LitBool { value, .. }),
                            ..
                        }) => {
                            opts.unique.set(&key, value, errors);
                        }
                        other => errors.push(syn::Error::new_spanned(
                            other,
                            "`unique` takes `true` or `false`, or no value: write `unique`",
                        )),
                    }
                    Ok(())
                } else {
                    expect_no_args(&meta, &key, errors)?;
                    opts.unique.set(&key, true, errors);
                    Ok(())
                }
            }
            "on" => parse_on(&meta, &key, errors, &mut opts.on),
            "crate" => parse_crate(&meta, &key, errors, &mut opts.krate),
            _ => reject_unknown(&meta, OPTION_NAMES, errors),
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        errors.push(e);
    }
    opts
}

/// An option that is not one of `names`: an error on its name, with a
/// suggestion when one is close, and its value skipped so that parsing goes on.
pub(crate) fn reject_unknown(
    meta: &ParseNestedMeta<'_>,
    names: &[&str],
    errors: &mut Errors,
) -> syn::Result<()> {
    errors.push(meta.error(unknown(&meta.path, names)));
    skip_value(meta)
}

/// The message for an option that is not one of `names`, with a suggestion
/// when one is close.
pub(crate) fn unknown(path: &Path, names: &[&str]) -> String {
    let written = quote::quote!(#path).to_string().replace(' ', "");
    let expected = names.join(", ");
    match names.iter().find(|name| edit_distance(name, &written) <= 2) {
        Some(close) => {
            format!(
                "unknown option `{written}`; did you mean `{close}`? Expected one of: {expected}"
            )
        }
        None => format!("unknown option `{written}`; expected one of: {expected}"),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Consumes whatever follows an option that is being rejected, so that
/// parsing can go on to the next one.
pub(crate) fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        value_expr(meta)?;
    } else if meta.input.peek(syn::token::Paren) {
        let _group: proc_macro2::Group = meta.input.parse()?;
    }
    Ok(())
}

fn value_expr(meta: &ParseNestedMeta<'_>) -> syn::Result<Expr> {
    meta.value()?.parse()
}

/// `key(...)` where `key = ...` or a bare `key` was meant.
fn expect_no_args(meta: &ParseNestedMeta<'_>, key: &Ident, errors: &mut Errors) -> syn::Result<()> {
    if meta.input.peek(syn::token::Paren) {
        let group: proc_macro2::Group = meta.input.parse()?;
        errors.push(syn::Error::new(
            group.span(),
            format!("`{key}` takes no parenthesized arguments: write `{key}` or `{key} = true`"),
        ));
    }
    Ok(())
}

pub(crate) fn parse_str(
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
    errors: &mut Errors,
    slot: &mut Slot<LitStr>,
) -> syn::Result<()> {
    if !meta.input.peek(syn::Token![=]) {
        errors.push(syn::Error::new(
            key.span(),
            format!("`{key}` needs a value: write `{key} = \"...\"`"),
        ));
        return skip_value(meta);
    }
    match value_expr(meta)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => slot.set(key, s, errors),
        other => errors.push(syn::Error::new_spanned(
            other,
            format!("`{key}` takes a string: write `{key} = \"...\"`"),
        )),
    }
    Ok(())
}

/// `crate = path`, or the path as a string, as serde's `crate = "..."` is written.
pub(crate) fn parse_crate(
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
    errors: &mut Errors,
    slot: &mut Slot<Path>,
) -> syn::Result<()> {
    let path = match value_expr(meta)? {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => Some(p.path),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => match s.parse::<Path>() {
            Ok(p) => Some(p),
            Err(_) => {
                errors.push(syn::Error::new(
                    s.span(),
                    "`crate` takes a path: write `crate = ::my_reexport::jobsmith`",
                ));
                None
            }
        },
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                "`crate` takes a path: write `crate = ::my_reexport::jobsmith`",
            ));
            None
        }
    };
    if let Some(path) = path {
        slot.set(key, path, errors);
    }
    Ok(())
}

/// `on = EventType` or `on = "topic.pattern"`. An event type cannot be
/// generic, so a path expression spells every type `on` can take.
fn parse_on(
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
    errors: &mut Errors,
    slot: &mut Slot<RawOn>,
) -> syn::Result<()> {
    if !meta.input.peek(syn::Token![=]) {
        errors.push(syn::Error::new(
            key.span(),
            format!(
                "`{key}` needs a value: write `{key} = UserSignedUp` (an event type) \
                 or `{key} = \"user.*\"` (a topic pattern)"
            ),
        ));
        return skip_value(meta);
    }
    let target = match value_expr(meta)? {
        Expr::Path(ExprPath {
            qself, path, attrs, ..
        }) if attrs.is_empty() => OnTarget::Event(Box::new(Type::Path(TypePath { qself, path }))),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => OnTarget::Pattern(s),
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                format!(
                    "`{key}` takes an event type or a topic pattern: write `{key} = UserSignedUp` \
                     or `{key} = \"user.*\"`"
                ),
            ));
            return Ok(());
        }
    };
    let on = RawOn {
        key: key.clone(),
        target,
    };
    slot.set(key, on, errors);
    Ok(())
}

fn parse_int(
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
    errors: &mut Errors,
    slot: &mut Slot<Int>,
) -> syn::Result<()> {
    if !meta.input.peek(syn::Token![=]) {
        errors.push(syn::Error::new(
            key.span(),
            format!("`{key}` needs a value: write `{key} = 3`"),
        ));
        return skip_value(meta);
    }
    let expr = value_expr(meta)?;
    let parsed = match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => int_value(int),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match &**inner {
            Expr::Lit(ExprLit {
                lit: Lit::Int(int), ..
            }) => int_value(int).map(|v| -v),
            _ => None,
        },
        _ => None,
    };
    match parsed {
        Some(value) => slot.set(
            key,
            Int {
                value,
                expr: expr.clone(),
            },
            errors,
        ),
        None => errors.push(syn::Error::new_spanned(
            &expr,
            format!("`{key}` takes a whole number: write `{key} = 3`"),
        )),
    }
    Ok(())
}

/// An integer literal's value; `None` for suffixes other than integer types, or overflow.
fn int_value(int: &LitInt) -> Option<i128> {
    int.base10_parse::<i128>().ok()
}

/// Parses the item; anything other than a function is an error spanned at
/// its first token after any attributes, returned with the item's tokens so
/// that the item is still emitted.
pub(crate) fn function(item: TokenStream) -> Result<ItemFn, (TokenStream, syn::Error)> {
    syn::parse2::<ItemFn>(item.clone()).map_err(|_| {
        let mut tokens = item.clone().into_iter().peekable();
        let mut span = Span::call_site();
        while let Some(token) = tokens.next() {
            let is_attr = matches!(&token, proc_macro2::TokenTree::Punct(p) if p.as_char() == '#')
                && matches!(tokens.peek(), Some(proc_macro2::TokenTree::Group(_)));
            if is_attr {
                tokens.next();
            } else {
                span = token.span();
                break;
            }
        }
        let message =
            "`#[job]` goes on an `async fn`: write `#[job] async fn name(arg: Type) { ... }`";
        (item, syn::Error::new(span, message))
    })
}
