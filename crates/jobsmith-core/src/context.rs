//! What a running job is handed: [`JobContext`] and [`State`].

use crate::backend::{Backend, Lease};
use crate::envelope::JobId;
use crate::event::EventRef;
use crate::failure::Failure;
use crate::time::Timestamp;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Shared application state, handed to the worker with `.state(value)` and
/// injected into any job that takes a `State<T>` parameter.
///
/// Cloning is cheap: the value is behind an `Arc`.
pub struct State<T: ?Sized>(pub Arc<T>);

impl<T> State<T> {
    /// Wraps a value, for calling a job function directly in a test.
    pub fn new(value: T) -> Self {
        Self(Arc::new(value))
    }
}

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&&*self.0).finish()
    }
}

/// The state values a worker was given, by type.
#[derive(Clone, Default)]
pub struct StateMap {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    names: Vec<&'static str>,
}

impl StateMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value, replacing any of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
        self.names.push(std::any::type_name::<T>());
    }

    /// Adds a value that is already shared, replacing any of the same type.
    pub fn insert_shared<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.values.insert(TypeId::of::<T>(), value);
        self.names.push(std::any::type_name::<T>());
    }

    /// The value of type `T`, if one was given.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| Arc::clone(v).downcast::<T>().ok())
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(&self.names).finish()
    }
}

/// The running job's own details, injected into any job with a `JobContext` parameter.
///
/// Cloning is cheap: the job's lease is shared, not copied.
#[derive(Clone)]
pub struct JobContext {
    name: &'static str,
    lease: Arc<Lease>,
    attempt: u32,
    max_attempts: u32,
    state: Arc<StateMap>,
    cancel: watch::Receiver<bool>,
    /// Where and for how long `heartbeat` extends the lease; none when run inline.
    renew: Option<(Arc<dyn Backend>, Duration)>,
    /// The tick, for a job enqueued by a schedule, or when it was due.
    scheduled_for: Timestamp,
    /// The event the job was created for, if a publish created it.
    event: Option<Box<EventRef>>,
}

impl JobContext {
    pub(crate) fn new(
        name: &'static str,
        lease: Arc<Lease>,
        (attempt, max_attempts): (u32, u32),
        state: Arc<StateMap>,
        cancel: watch::Receiver<bool>,
        renew: Option<(Arc<dyn Backend>, Duration)>,
    ) -> Self {
        Self {
            name,
            lease,
            attempt,
            max_attempts,
            state,
            cancel,
            renew,
            scheduled_for: Timestamp::now(),
            event: None,
        }
    }

    /// Sets the event the job was created for.
    pub(crate) fn with_event(mut self, event: Option<Box<EventRef>>) -> Self {
        self.event = event;
        self
    }

    /// Sets when the job was due (its schedule's tick, or its `run_at`).
    pub(crate) fn with_scheduled_for(mut self, at: Timestamp) -> Self {
        self.scheduled_for = at;
        self
    }

    /// A context for running a job inline, outside any worker, with `state`.
    pub fn inline(name: &'static str, state: Arc<StateMap>) -> Self {
        // The sender is dropped: an inline job is never cancelled.
        let (_tx, cancel) = watch::channel(false);
        let lease = Lease {
            id: JobId::new(),
            queue: "inline".to_owned(),
            token: String::new(),
            expires_at: crate::time::Timestamp(u64::MAX),
        };
        Self::new(name, Arc::new(lease), (1, 1), state, cancel, None)
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.lease.id
    }

    /// The job's registered name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &str {
        &self.lease.queue
    }

    /// When the job was due. For a job enqueued by a schedule, the tick it
    /// was enqueued for, on every attempt; for any other job, the time it was
    /// due to run (for a retry, when the retry was due). For a job run inline, now.
    pub fn scheduled_for(&self) -> Timestamp {
        self.scheduled_for
    }

    /// The event this job was created for (its id and name), when a publish
    /// created it: the id is the same in every subscriber's job and on every
    /// attempt, so a handler can use it to take effect once.
    pub fn event(&self) -> Option<&EventRef> {
        self.event.as_deref()
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The number of attempts allowed in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether this is the last attempt the job will get.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// A state value by type, as `State<T>` parameters receive it.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        self.state.get::<T>().map(State)
    }

    /// Extends the job's lease now. The worker already extends leases of long
    /// jobs on its own; call this from a job that holds the worker's runtime
    /// busy for long stretches. Returns `false` when the lease was lost: another
    /// worker may now own the job, and this one should stop.
    pub async fn heartbeat(&self) -> bool {
        let Some((backend, extend_by)) = &self.renew else {
            return true;
        };
        matches!(
            backend
                .extend(std::slice::from_ref(&*self.lease), *extend_by)
                .await
                .as_deref(),
            Ok([crate::backend::LeaseStatus::Held])
        )
    }

    /// Whether the worker asked this job to stop (shutdown grace period over, or timeout).
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Completes when the worker asks this job to stop; use it in `tokio::select!`.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.clone();
        // An error means the sender is gone: nobody can cancel any more.
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", self.id())
            .field("name", &self.name)
            .field("queue", &self.queue())
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A job parameter that the worker injects rather than deserializes.
///
/// Implemented for [`State<T>`] and [`JobContext`]; implement it for your own
/// types to inject them the same way.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected into a job",
    label = "injected parameters must implement `FromContext`",
    note = "`State<T>` and `JobContext` are injected; any other parameter must be a serializable job argument"
)]
pub trait FromContext: Sized {
    /// The value for this attempt, or a failure when it cannot be had.
    fn from_context(ctx: &JobContext) -> Result<Self, Failure>;
}

impl FromContext for JobContext {
    fn from_context(ctx: &JobContext) -> Result<Self, Failure> {
        Ok(ctx.clone())
    }
}

impl<T: Send + Sync + 'static> FromContext for State<T> {
    fn from_context(ctx: &JobContext) -> Result<Self, Failure> {
        ctx.state::<T>().ok_or_else(|| {
            Failure::retryable(format!(
                "no state of type `{}`: give it to the worker with `.state(value)`",
                std::any::type_name::<T>()
            ))
        })
    }
}
