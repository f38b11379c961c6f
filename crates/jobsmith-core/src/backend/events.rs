//! The [`Events`] capability: where a backend keeps event subscriptions.

use crate::backend::MetaStore;
use crate::error::{Error, Result};
use crate::event::Subscription;
use std::fmt;

/// The subscriptions of a backend's events, kept on the broker so that a
/// publisher needs none of its subscribers' code.
///
/// [`App::publish`](crate::App::publish) reads them and enqueues one job per
/// matching subscription. A backend with a
/// [`MetaStore`] has this capability without writing any of it (see
/// [`dyn Backend::events`](crate::Backend#method.events)); a backend
/// whose broker routes events itself implements it and returns itself from
/// [`Backend::as_events`](crate::Backend::as_events).
#[async_trait::async_trait]
pub trait Events: Send + Sync + fmt::Debug {
    /// Stores a subscription, replacing the one of the same job.
    async fn put_subscription(&self, sub: &Subscription) -> Result<()>;

    /// Removes the subscription of `job`; whether there was one.
    async fn remove_subscription(&self, job: &str) -> Result<bool>;

    /// Every subscription, sorted by job.
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;

    /// Whether a publish gives each job it creates the idempotency key
    /// `event:<event id>:<job>`, so that a publish tried again under its id
    /// creates no job twice. Yes by default; a backend whose keys cost the
    /// broker more than a small entry each (RabbitMQ: queues) says no, and
    /// documents that a publish tried again after a lost answer may create a
    /// job twice, each carrying the event's id.
    fn keys_jobs(&self) -> bool {
        true
    }
}

/// The metadata entries subscriptions are kept in: this prefix, then the job's name.
pub(crate) const SUBSCRIPTION_PREFIX: &str = "event-sub:";

/// Subscriptions kept in a backend's [`MetaStore`], one entry per job: what
/// a backend that does not keep them its own way has, and what one that
/// only changes [`Events::keys_jobs`] delegates to.
///
/// The store has no delete: a removed subscription is an empty entry, which
/// no listing shows and a later registration overwrites.
pub struct MetaEvents<'a>(pub &'a dyn MetaStore);

impl fmt::Debug for MetaEvents<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MetaEvents").field(&self.0.name()).finish()
    }
}

#[async_trait::async_trait]
impl Events for MetaEvents<'_> {
    async fn put_subscription(&self, sub: &Subscription) -> Result<()> {
        let value = serde_json::to_vec(sub).map_err(|e| Error::backend(e.to_string()))?;
        self.0
            .put_meta(&format!("{SUBSCRIPTION_PREFIX}{}", sub.job), &value)
            .await
    }

    async fn remove_subscription(&self, job: &str) -> Result<bool> {
        let key = format!("{SUBSCRIPTION_PREFIX}{job}");
        match self.0.get_meta(&key).await? {
            Some(v) if !v.is_empty() => {
                self.0.put_meta(&key, b"").await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let mut subs = Vec::new();
        for (key, value) in self.0.list_meta(SUBSCRIPTION_PREFIX).await? {
            if value.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Subscription>(&value) {
                Ok(sub) => subs.push(sub),
                // One unreadable entry (a newer format, a hand edit) must not
                // stop every publish: it is skipped, and said.
                Err(e) => tracing::warn!(
                    entry = %key,
                    error = %e,
                    "skipping a subscription entry that does not parse; `jobsmith subscriptions remove` deletes it"
                ),
            }
        }
        subs.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(subs)
    }
}
