//! Walking argument and return types for what can never be part of a job:
//! borrows, lifetimes, `impl Trait`. Everything else is left to the
//! compiler, through the bounds that `generate` emits at each type.

use crate::Errors;
use syn::{GenericArgument, PathArguments, Type, TypeReference};

/// Whether the type is named `State<..>` or `JobContext`, the types the
/// worker injects. The value itself is obtained through `FromContext`, so a
/// foreign type of the same name fails with that trait's message.
pub(super) fn names_injected_type(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "State" || s.ident == "JobContext"),
        Type::Group(g) => names_injected_type(&g.elem),
        Type::Reference(r) => names_injected_type(&r.elem),
        Type::Paren(p) => names_injected_type(&p.elem),
        _ => false,
    }
}

/// Rejects what can never be a job argument: borrows, lifetimes, `impl Trait`.
/// Everything else is left to the compiler, through the `JobArg` and
/// `FromContext` bounds that `generate` emits at each argument's type.
pub(super) fn check_arg_type(ty: &Type, injected: bool, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => errors.push(borrowed(r, injected)),
        Type::ImplTrait(i) => errors.push(syn::Error::new(
            i.impl_token.span,
            "a job argument needs a concrete type, as the worker deserializes it: \
             replace `impl Trait` with a type",
        )),
        Type::Path(p) => {
            if let Some(q) = &p.qself {
                check_arg_type(&q.ty, injected, errors);
            }
            for segment in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Lifetime(l) if l.ident != "static" => {
                                errors.push(syn::Error::new(
                                    l.span(),
                                    format!(
                                        "job arguments are serialized, so they cannot borrow: \
                                         remove `{l}` and take an owned type such as `String`"
                                    ),
                                ));
                            }
                            GenericArgument::Type(t) => check_arg_type(t, injected, errors),
                            _ => {}
                        }
                    }
                }
            }
        }
        Type::Array(a) => check_arg_type(&a.elem, injected, errors),
        Type::Slice(s) => check_arg_type(&s.elem, injected, errors),
        Type::Group(g) => check_arg_type(&g.elem, injected, errors),
        Type::Paren(p) => check_arg_type(&p.elem, injected, errors),
        Type::Tuple(t) => t
            .elems
            .iter()
            .for_each(|t| check_arg_type(t, injected, errors)),
        _ => {}
    }
}

/// The error for `&T`, suggesting the owned type.
fn borrowed(r: &TypeReference, injected: bool) -> syn::Error {
    let elem = &*r.elem;
    let written = quote::quote!(#elem).to_string();
    let message = if injected || names_injected_type(elem) {
        format!("injected parameters are passed by value: take `{written}` instead of `&{written}`")
    } else {
        let owned = match elem {
            Type::Path(p) if p.path.is_ident("str") => "String".to_owned(),
            Type::Slice(s) => {
                let inner = &*s.elem;
                format!("Vec<{}>", quote::quote!(#inner))
            }
            _ => written.clone(),
        };
        format!(
            "job arguments are serialized, so they are owned: take an owned type \
             such as `{owned}` instead of `&{written}`"
        )
    };
    syn::Error::new(r.and_token.span, message)
}

/// The return type must be nameable and own its data: it is boxed for direct calls.
pub(super) fn check_return_type(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::ImplTrait(i) => errors.push(syn::Error::new(
            i.impl_token.span,
            "a job's return type must be named: return `()` or `Result<T, E>` \
             with `E: Display` instead of `impl Trait`",
        )),
        Type::Reference(r) if r.lifetime.as_ref().is_none_or(|l| l.ident != "static") => {
            errors.push(syn::Error::new(
                r.and_token.span,
                "a job's result cannot borrow: return an owned value",
            ));
        }
        Type::Path(p) => {
            for segment in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Lifetime(l) if l.ident != "static" => {
                                errors.push(syn::Error::new(
                                    l.span(),
                                    "a job's result cannot borrow: return an owned value",
                                ));
                            }
                            GenericArgument::Type(t) => check_return_type(t, errors),
                            _ => {}
                        }
                    }
                }
            }
        }
        Type::Tuple(t) => t.elems.iter().for_each(|t| check_return_type(t, errors)),
        _ => {}
    }
}
