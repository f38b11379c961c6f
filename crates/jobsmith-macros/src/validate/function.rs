//! The function, checked: what keeps it from being a job (its signature,
//! its parameters, its return type), and the model of the job it makes.
//! Its errors come in this order: the signature's, a repeated `#[job]`,
//! each parameter's, the return type's.

use super::types::{check_arg_type, check_return_type, names_injected_type};
use crate::Errors;
use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::token::Comma;
use syn::{Attribute, FnArg, Ident, ItemFn, Pat, ReturnType, Signature, Type};

/// A function that can be a job.
pub(crate) struct Job {
    /// The function, with `#[inject]` markers removed from its parameters.
    pub(crate) item: ItemFn,
    /// Its parameters, in order.
    pub(crate) params: Vec<Param>,
    /// Its return type; `()` when it has none.
    pub(crate) output: Type,
    /// Whether it takes `self`: then it is in an `impl` block, where the
    /// fallback can only leave it as it is.
    pub(crate) has_receiver: bool,
}

/// One parameter of a job.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// Given by the worker (`State<T>`, `JobContext`, `#[inject]`), not serialized.
    pub(crate) injected: bool,
}

impl Job {
    /// The parameters that are serialized into the job's arguments.
    pub(crate) fn serialized(&self) -> impl Iterator<Item = &Param> + '_ {
        self.params.iter().filter(|p| !p.injected)
    }

    /// The parameters that the worker injects.
    pub(crate) fn injected(&self) -> impl Iterator<Item = &Param> + '_ {
        self.params.iter().filter(|p| p.injected)
    }
}

/// A function after its checks.
pub(crate) enum Checked {
    /// It can be a job.
    Valid(Job),
    /// It cannot; the errors are reported, and the model is kept for the fallback.
    Invalid(Job),
}

/// Checks that `item` can be a job, and builds its model.
pub(crate) fn function(mut item: ItemFn, errors: &mut Errors) -> Checked {
    let before = errors.len();
    check_signature(&item.sig, errors);
    remove_repeated_attribute(&mut item.attrs, errors);
    let params = params(&mut item.sig.inputs, errors);
    let output = match &item.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            check_return_type(ty, errors);
            (**ty).clone()
        }
    };
    let has_receiver = item.sig.receiver().is_some();
    let job = Job {
        item,
        params,
        output,
        has_receiver,
    };
    if errors.len() > before {
        Checked::Invalid(job)
    } else {
        Checked::Valid(job)
    }
}

/// The signature's own problems: what makes a function unable to be a job
/// whatever its parameters.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(
            c.span,
            "a job cannot be a `const fn`: remove `const`",
        ));
    }
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "a job must be an `async fn`: add `async` before `fn`",
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new(
            u.span,
            "a job cannot be `unsafe`: remove `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "a job cannot have an ABI: remove `extern`",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            v,
            "a job cannot be variadic: remove `...`",
        ));
    }
    if !sig.generics.params.is_empty() {
        let only_lifetimes = sig
            .generics
            .params
            .iter()
            .all(|p| matches!(p, syn::GenericParam::Lifetime(_)));
        let message = if only_lifetimes {
            "a job cannot have lifetime parameters: job arguments are serialized, \
             so take owned types such as `String` and remove the lifetimes"
        } else {
            "a job cannot be generic: the worker must know the argument types to \
             deserialize them; use concrete types and remove the type parameters"
        };
        errors.push(syn::Error::new_spanned(&sig.generics, message));
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            w,
            "a job cannot have a `where` clause: use concrete types and remove it",
        ));
    }
}

/// Removes a second `#[job]` (written above or below this one), which is an error.
fn remove_repeated_attribute(attrs: &mut Vec<Attribute>, errors: &mut Errors) {
    attrs.retain(|attr| {
        let path = attr.path();
        let is_job = path.is_ident("job")
            || (path.segments.len() == 2
                && path.segments[0].ident == "jobsmith"
                && path.segments[1].ident == "job");
        if is_job {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[job]` is repeated: remove this one",
            ));
        }
        !is_job
    });
}

/// The parameters, with `#[inject]` markers removed; a parameter that cannot
/// be one is an error, and gets a stand-in name so the fallback can still be built.
fn params(inputs: &mut Punctuated<FnArg, Comma>, errors: &mut Errors) -> Vec<Param> {
    let mut params = Vec::new();
    for (i, input) in inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                errors.push(syn::Error::new(
                    r.self_token.span,
                    "a job is a free function, not a method: remove `self` and \
                     move the function out of the `impl` block",
                ));
            }
            FnArg::Typed(pat_ty) => {
                let mut inject = false;
                pat_ty.attrs.retain(|attr| {
                    if !attr.path().is_ident("inject") {
                        return true;
                    }
                    if let Err(e) = attr.meta.require_path_only() {
                        errors.push(syn::Error::new(
                            e.span(),
                            "`#[inject]` takes no arguments: write `#[inject]`",
                        ));
                    }
                    inject = true;
                    false
                });
                let injected = inject || names_injected_type(&pat_ty.ty);
                check_arg_type(&pat_ty.ty, injected, errors);
                let ident = match &*pat_ty.pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
                    Pat::Wild(w) => {
                        errors.push(syn::Error::new(
                            w.underscore_token.span,
                            "job arguments are serialized by name: give this argument \
                             a name, such as `_unused`",
                        ));
                        Ident::new(&format!("arg{i}"), Span::call_site())
                    }
                    other => {
                        errors.push(syn::Error::new_spanned(
                            other,
                            "job arguments are serialized by name: bind this argument to \
                             a plain name (`point: (i32, i32)`) and destructure it in the body",
                        ));
                        Ident::new(&format!("arg{i}"), Span::call_site())
                    }
                };
                params.push(Param {
                    ident,
                    ty: (*pat_ty.ty).clone(),
                    injected,
                });
            }
        }
    }
    params
}
