//! What `#[job]` generates against: a job's definition, its runner, and the
//! bounds on its arguments and its result. Its options are in `options.rs`.

use crate::context::JobContext;
use crate::failure::{Failure, IntoFailure};
use crate::options::JobOptions;
use crate::shape::Shape;
use serde_json::value::RawValue;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future, as job runners return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decodes a job's arguments and starts it: the runner `#[job]` generates.
///
/// An `Err` means the arguments do not match the job's signature; the worker
/// dead-letters such a job without running it.
pub type RunFn =
    fn(&RawValue, JobContext) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error>;

/// A registered job: only constant data, so that it can be registered at link time.
#[derive(Debug)]
pub struct JobDef {
    /// The job's name, as it travels in envelopes.
    pub name: &'static str,
    /// Where the job is defined (`module::path`, `file:line`), for error messages.
    pub location: &'static str,
    /// The job's options from its attribute.
    pub options: JobOptions,
    /// Decodes the arguments and runs the job.
    pub run: RunFn,
    /// The serialized parameters, in order: what its published
    /// [`JobRecord`](crate::JobRecord) names.
    pub params: &'static [Param],
    /// The JSON [`Shape`] of each serialized parameter, in order, as its
    /// type's `Deserialize` reads it (see [`shape_of`](crate::shape_of)).
    pub shapes: fn() -> Vec<Shape>,
}

/// A serialized parameter of a job, as `#[job]` registers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name: the key of its value in the envelope's `args` object.
    pub name: &'static str,
    /// Its Rust type, as written in the signature (`Vec<String>`).
    pub rust_type: &'static str,
}

/// What a job function may return: `()`, or a `Result` whose error is `Display`.
#[diagnostic::on_unimplemented(
    message = "a job must return `()` or `Result<T, E>` where `E: Display`",
    label = "this return type cannot report a job's outcome"
)]
pub trait IntoJobResult {
    /// The outcome of the attempt.
    fn into_job_result(self) -> Result<(), Failure>;
}

impl IntoJobResult for () {
    fn into_job_result(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl<T, E: IntoFailure> IntoJobResult for Result<T, E> {
    fn into_job_result(self) -> Result<(), Failure> {
        self.map(|_| ()).map_err(IntoFailure::into_failure)
    }
}

/// A serialized job argument: owned, serializable and sendable.
///
/// `#[job]` checks every argument that is not injected against this trait, at
/// the argument's own type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a job argument",
    label = "not `Serialize + DeserializeOwned + Send + 'static`",
    note = "job arguments are serialized to JSON: derive both traits on your type with `#[derive(serde::Serialize, serde::Deserialize)]` (and make it `Send` and owned), use an owned type (`String` for `&str`, `Vec<T>` for `&[T]`), or pass it as `State<T>` if the worker should provide it"
)]
pub trait JobArg: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

// `do_not_recommend`: a type that misses several of the bounds gets one
// error, this trait's, rather than one per missing bound.
#[diagnostic::do_not_recommend]
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> JobArg for T {}

/// A `#[job]` function: the type that `#[job]` generates implements this.
pub trait Job: Send + Sync + 'static {
    /// The job's registered definition.
    const DEF: &'static JobDef;
}
