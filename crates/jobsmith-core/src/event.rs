//! Events: one typed value, published once, handled by every job that
//! subscribes to it. `#[derive(Event)]` names an event type; `#[job(on = ..)]`
//! subscribes a job to an event type or a topic pattern; [`App::publish`]
//! creates one job per matching subscription (see `docs/events.md`).
//!
//! [`App::publish`]: crate::App::publish

use crate::envelope::JobId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An event: a serializable value with a stable name, which
/// `#[derive(Event)]` gives it from `#[event(name = "...")]`.
///
/// Its name travels with every job it creates and is what topic patterns
/// match, so renaming the Rust type changes nothing; changing `name` starts a
/// new event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "only an event type can be published or subscribed to",
    note = "declare it with `#[derive(serde::Serialize, serde::Deserialize, jobsmith::Event)]` and `#[event(name = \"user.signed_up\")]`"
)]
pub trait Event: Serialize + serde::de::DeserializeOwned + Send + 'static {
    /// The event's name: words separated by dots (`user.signed_up`).
    const NAME: &'static str;
}

/// An event type linked into the binary, as `#[derive(Event)]` registers it:
/// two types with one name are an error at worker start, naming both.
#[derive(Debug)]
pub struct EventDef {
    /// The event's name.
    pub name: &'static str,
    /// The Rust type, as the derive saw it.
    pub rust_type: &'static str,
    /// Where the type is defined (`module::path (file:line)`).
    pub location: &'static str,
}

/// A link-time registration; `#[derive(Event)]` submits one per event type.
#[derive(Debug)]
pub struct EventRegistration(pub &'static EventDef);

inventory::collect!(EventRegistration);

/// Every event type linked into this binary, by name; an error naming both
/// types when two share a name.
pub(crate) fn registered_events(
) -> crate::Result<std::collections::BTreeMap<&'static str, &'static EventDef>> {
    let mut by_name: std::collections::BTreeMap<&'static str, &'static EventDef> =
        std::collections::BTreeMap::new();
    for reg in inventory::iter::<EventRegistration> {
        let def = reg.0;
        if let Some(prev) = by_name.insert(def.name, def) {
            let describe = |d: &EventDef| format!("`{}` at {}", d.rust_type, d.location);
            let (a, b) = (describe(prev), describe(def));
            let (first, second) = if a <= b { (a, b) } else { (b, a) };
            return Err(crate::Error::DuplicateEvent {
                name: def.name.to_owned(),
                first,
                second,
            });
        }
    }
    Ok(by_name)
}

/// What a handler of a topic pattern receives: the event's name and its
/// payload as JSON, since the pattern may match events of many types.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnyEvent {
    /// The event's name, such as `user.signed_up`.
    pub name: String,
    /// The event's value as it was published.
    pub payload: serde_json::Value,
}

/// A job's subscription, as `#[job(on = ..)]` writes it into the job's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// The event name (`on = UserSignedUp`) or topic pattern (`on = "user.*"`).
    pub pattern: &'static str,
    /// Whether the handler takes an [`AnyEvent`] (a pattern) rather than the
    /// event's own type.
    pub any: bool,
}

/// The parameter of a handler that subscribes to event `E` must be `E`.
#[diagnostic::on_unimplemented(
    message = "this handler subscribes to `{E}`, so its event parameter must be `{E}`, not `{Self}`",
    label = "expected `{E}` here",
    note = "change the parameter's type to `{E}`, or subscribe to the event this type is: `#[job(on = {Self})]`"
)]
pub trait SubscribesTo<E> {}

impl<E> SubscribesTo<E> for E {}

/// The parameter of a handler that subscribes to a topic pattern must be [`AnyEvent`].
#[diagnostic::on_unimplemented(
    message = "a handler of a topic pattern takes `AnyEvent`, not `{Self}`",
    label = "expected `AnyEvent` here",
    note = "a pattern matches events of many types: take `e: jobsmith::AnyEvent` (its `name` and JSON `payload`), or subscribe to one event type with `#[job(on = EventType)]`"
)]
pub trait TakesAnyEvent {}

impl TakesAnyEvent for AnyEvent {}

/// Checks, at compile time, that a handler's parameter `P` takes event `E`:
/// what `#[job(on = E)]` generates.
pub const fn subscribes_to<E: Event, P: SubscribesTo<E>>() {}

/// Checks, at compile time, that a pattern handler's parameter `P` is [`AnyEvent`].
pub const fn takes_any_event<P: TakesAnyEvent>() {}

/// An event's id: a UUIDv7, time-ordered, as job ids are.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(JobId::new().0)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for EventId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// The event a job was created for, carried in its [`Envelope`](crate::Envelope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// The event's id.
    pub id: EventId,
    /// The event's name.
    pub name: String,
}

/// What a publish did: the event's id and how many subscriptions it reached
/// (one job each). Reaching none is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The event's id: every job it created carries it.
    pub id: EventId,
    /// How many subscriptions matched, and so how many jobs were created (or
    /// found already created by an earlier try of the same publish).
    pub reached: usize,
}

/// A subscription as it is stored on the broker: a job that runs for every
/// event whose name matches `pattern`.
///
/// A worker registers the subscriptions of the jobs it runs when it starts;
/// they stay until removed (`jobsmith subscriptions remove`), so a publisher
/// needs none of its subscribers' code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscribing job's name: it identifies the subscription.
    pub job: String,
    /// The queue its jobs go on.
    pub queue: String,
    /// The event name or topic pattern it subscribes to.
    pub pattern: String,
    /// Whether the handler takes an [`AnyEvent`] rather than the payload.
    pub any: bool,
    /// The name of the handler's event parameter: the key of the payload in the job's arguments.
    pub param: String,
    /// The job's priority.
    pub priority: i32,
    /// Attempts allowed in all (the job's retries + 1).
    pub max_attempts: u32,
    /// The job's TTL, in milliseconds, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// When a worker last registered it.
    pub registered_at: Timestamp,
}

impl Subscription {
    /// Whether an event named `name` reaches this subscription.
    pub fn matches(&self, name: &str) -> bool {
        jobsmith_grammar::topic_matches(&self.pattern, name)
    }

    /// The same subscription, registration time aside.
    pub fn same_as(&self, other: &Subscription) -> bool {
        Subscription {
            registered_at: other.registered_at,
            ..self.clone()
        } == *other
    }
}
