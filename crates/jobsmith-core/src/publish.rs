//! Publishing events ([`App::publish`]) and keeping subscriptions
//! ([`App::subscribe`]): one job per matching subscription, each with its
//! subscriber's options and an idempotency key made of the event's id and the
//! subscription, so that a publish tried again creates no job twice.

use crate::app::App;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, EventId, EventRef, Published, Subscription};
use crate::job::BoxFuture;
use crate::retry::Doubling;
use crate::time::Timestamp;
use serde_json::value::RawValue;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a publisher trusts the subscriptions it read. A registration
/// that changed something waits this long (and a little more) before it
/// returns, so that every publish that starts after it reads them anew.
pub(crate) const SUBSCRIPTIONS_FRESH_FOR: Duration = Duration::from_secs(1);

/// How long a registration that changed something waits before it returns:
/// what another process's reading may still be trusted for, and a margin.
const REGISTRATION_SETTLES: Duration =
    SUBSCRIPTIONS_FRESH_FOR.saturating_add(Duration::from_millis(100));

/// How many times a publish tries its enqueue through transient errors.
const PUBLISH_TRIES: usize = 4;

/// What a publish needs from the backend's [`Events`](crate::Events): its
/// subscriptions, and whether the jobs they make are keyed.
#[derive(Debug)]
struct Reading {
    subs: Vec<Subscription>,
    keyed: bool,
}

/// The subscriptions an app read last, and when it began reading them.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionCache {
    read: tokio::sync::Mutex<Option<(Instant, Arc<Reading>)>>,
}

impl SubscriptionCache {
    /// The subscriptions, read again when the last read began over
    /// [`SUBSCRIPTIONS_FRESH_FOR`] ago. One read at a time per app.
    async fn get(&self, app: &App) -> Result<Arc<Reading>> {
        let mut read = self.read.lock().await;
        if let Some((at, reading)) = &*read {
            if at.elapsed() < SUBSCRIPTIONS_FRESH_FOR {
                return Ok(Arc::clone(reading));
            }
        }
        let began = Instant::now();
        let events = app.backend().events()?;
        let reading = Arc::new(Reading {
            subs: events.subscriptions().await?,
            keyed: events.keys_jobs(),
        });
        *read = Some((began, Arc::clone(&reading)));
        Ok(reading)
    }

    /// Forgets what was read, so that the next publish reads again.
    async fn forget(&self) {
        *self.read.lock().await = None;
    }
}

/// A publish of one event, sent when awaited; [`Publish::id`] sets its id.
#[must_use = "a publish does nothing until it is awaited"]
#[derive(Debug)]
pub struct Publish<'a> {
    app: &'a App,
    name: &'static str,
    payload: Result<Box<RawValue>>,
    id: Option<EventId>,
}

impl Publish<'_> {
    /// Publishes under this id rather than a new one. Publishing again under
    /// the id of an earlier publish (one whose answer was lost) creates no
    /// job that the earlier one created, while the keys of its jobs are kept
    /// (`unique_for`, 24 h by default).
    pub fn id(mut self, id: impl Into<EventId>) -> Self {
        self.id = Some(id.into());
        self
    }
}

impl<'a> IntoFuture for Publish<'a> {
    type Output = Result<Published>;
    type IntoFuture = BoxFuture<'a, Result<Published>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let payload = self.payload?;
            let id = self.id.unwrap_or_default();
            self.app.publish_one(self.name, payload, id).await
        })
    }
}

impl App {
    /// Publishes an event: one job for each subscription whose event name or
    /// topic pattern matches, on the subscriber's queue with its retries,
    /// backoff, TTL and timeout. Returns the event's id and how many
    /// subscriptions it reached; reaching none is not an error.
    ///
    /// ```
    /// # use jobsmith_core::{App, Event};
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct UserSignedUp { user_id: u64 }
    /// impl Event for UserSignedUp { const NAME: &'static str = "user.signed_up"; }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> jobsmith_core::Result<()> {
    /// let app = App::memory();
    /// let published = app.publish(UserSignedUp { user_id: 7 }).await?;
    /// assert_eq!(published.reached, 0); // nobody subscribes yet
    /// # Ok(()) }
    /// ```
    ///
    /// Subscriptions are those the workers registered (see
    /// [`App::subscribe`]); this process reads them at most once a second.
    /// The jobs of one queue are enqueued together; across queues, a publish
    /// that fails part way is safe to try again with [`Publish::id`].
    pub fn publish<E: Event>(&self, event: E) -> Publish<'_> {
        Publish {
            app: self,
            name: E::NAME,
            payload: crate::args::to_json(&event),
            id: None,
        }
    }

    /// Publishes an event given by name and JSON payload, as `jobsmith
    /// publish` does; `name` must be a valid event name.
    pub async fn publish_json(
        &self,
        name: &str,
        payload: &serde_json::Value,
        id: Option<EventId>,
    ) -> Result<Published> {
        jobsmith_grammar::parse_event_name(name).map_err(Error::Config)?;
        let payload = crate::args::to_json(payload)?;
        self.publish_one(name, payload, id.unwrap_or_default())
            .await
    }

    /// Publishes many events of one type in as few round trips as the
    /// backend allows: every job they create is enqueued in one batch. Each
    /// event gets a new id; the answers are in order.
    pub async fn publish_all<E: Event>(
        &self,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Vec<Published>> {
        let batch = events
            .into_iter()
            .map(|e| Ok((E::NAME, crate::args::to_json(&e)?, EventId::new())))
            .collect::<Result<Vec<_>>>()?;
        self.publish_batch(&batch).await
    }

    async fn publish_one(
        &self,
        name: &str,
        payload: Box<RawValue>,
        id: EventId,
    ) -> Result<Published> {
        let mut one = self.publish_batch(&[(name, payload, id)]).await?;
        one.pop()
            .ok_or_else(|| Error::backend("a publish of one event gave no answer"))
    }

    async fn publish_batch(
        &self,
        batch: &[(&str, Box<RawValue>, EventId)],
    ) -> Result<Vec<Published>> {
        let reading = self.subscription_cache().get(self).await?;
        let (subs, keyed) = (&reading.subs, reading.keyed);
        let now = Timestamp::now();
        let trace = crate::trace::current_traceparent();
        // Built again for each try, the same each time: no copy is kept.
        let build = || -> Result<(Vec<Envelope>, Vec<Published>)> {
            let mut envs = Vec::new();
            let mut answers = Vec::with_capacity(batch.len());
            for (name, payload, id) in batch {
                let event = EventRef {
                    id: id.clone(),
                    name: (*name).to_owned(),
                };
                let mut reached = 0;
                for sub in subs.iter().filter(|s| s.matches(name)) {
                    envs.push(job_for(sub, &event, payload, now, trace.clone(), keyed)?);
                    reached += 1;
                }
                answers.push(Published {
                    id: event.id,
                    reached,
                });
            }
            Ok((envs, answers))
        };
        let (mut envs, answers) = build()?;
        let mut per_queue: Vec<(String, u64)> = Vec::new();
        let mut per_job: Vec<(String, u64)> = Vec::new();
        for env in &envs {
            count(&mut per_queue, &env.queue);
            count(&mut per_job, &env.job);
        }
        let mut delays = Doubling::new(Duration::from_millis(50), Duration::from_secs(1));
        let mut tries = 1;
        while !envs.is_empty() {
            match self.backend().enqueue(envs).await {
                Ok(_) => break,
                Err(e) if e.is_transient() && tries < PUBLISH_TRIES => {
                    tries += 1;
                    let delay = delays.next_delay();
                    tracing::warn!(error = %e, ?delay, "publish failed; trying again with the same event ids");
                    tokio::time::sleep(delay).await;
                    envs = build()?.0;
                }
                Err(e) => return Err(e),
            }
        }
        for (queue, n) in per_queue {
            metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => queue).increment(n);
        }
        for (job, n) in per_job {
            metrics::counter!("jobsmith_event_jobs_total", "subscription" => job).increment(n);
        }
        let mut per_event: Vec<(String, u64)> = Vec::new();
        for (name, _, _) in batch {
            count(&mut per_event, name);
        }
        for (name, n) in per_event {
            metrics::counter!("jobsmith_events_published_total", "event" => name).increment(n);
        }
        Ok(answers)
    }

    /// Every subscription on the backend, read now.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.backend().events()?.subscriptions().await
    }

    /// Registers a subscription (a worker does, for each job it runs that
    /// subscribes). When it is new or changed, this returns only once every
    /// publish that starts from then on, in any process, reaches it.
    pub async fn subscribe(&self, sub: Subscription) -> Result<()> {
        self.subscribe_all([sub]).await
    }

    /// Registers subscriptions as [`App::subscribe`] does, waiting at most
    /// once for all of them.
    pub async fn subscribe_all(&self, subs: impl IntoIterator<Item = Subscription>) -> Result<()> {
        let subs: Vec<Subscription> = subs.into_iter().collect();
        for sub in &subs {
            jobsmith_grammar::parse_topic_pattern(&sub.pattern).map_err(Error::Config)?;
            crate::check_queue_name(&sub.queue)?;
        }
        let events = self.backend().events()?;
        let known = events.subscriptions().await?;
        let now = Timestamp::now();
        let mut changed = false;
        for sub in &subs {
            // The same one registered moments ago may still be settling (its
            // registrar waiting, or gone before it finished): wait too.
            changed |= !known.iter().any(|k| {
                k.job == sub.job
                    && k.same_as(sub)
                    && now.since(k.registered_at) > REGISTRATION_SETTLES
            });
            events.put_subscription(sub).await?;
        }
        self.subscription_cache().forget().await;
        if changed {
            // Other processes may hold a reading from before the writes for
            // up to this long.
            tokio::time::sleep(REGISTRATION_SETTLES).await;
        }
        Ok(())
    }

    /// Registers the subscription of every `#[job(on = ..)]` linked into this
    /// binary, whatever its queue, as a worker does for the queues it runs
    /// when it starts; returns the jobs. For a process that publishes and
    /// then starts its worker, so that its first publish already reaches its
    /// own handlers.
    pub async fn register_subscriptions(&self) -> Result<Vec<String>> {
        crate::worker::subscribe::register(self, crate::Registry::global()?, None).await
    }

    /// Removes the subscription of `job`; whether there was one. Publishes
    /// stop reaching it within a second ([`App::subscribe`]'s bound); its
    /// jobs already queued stay. A worker that runs the job registers it again when it starts.
    pub async fn unsubscribe(&self, job: &str) -> Result<bool> {
        let removed = self.backend().events()?.remove_subscription(job).await?;
        self.subscription_cache().forget().await;
        Ok(removed)
    }
}

/// Adds one to `key`'s count: the few distinct labels of a batch, in order.
fn count(counts: &mut Vec<(String, u64)>, key: &str) {
    match counts.iter_mut().find(|(k, _)| k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key.to_owned(), 1)),
    }
}

/// The job a publish creates for one subscription: its arguments are the
/// handler's one serialized parameter, the payload (or, for a pattern, the
/// event's name beside it). `keyed`: whether it gets the key of its event
/// and subscription ([`Events::keys_jobs`](crate::Events::keys_jobs)).
fn job_for(
    sub: &Subscription,
    event: &EventRef,
    payload: &RawValue,
    now: Timestamp,
    trace: Option<String>,
    keyed: bool,
) -> Result<Envelope> {
    #[derive(serde::Serialize)]
    struct Any<'a> {
        name: &'a str,
        payload: &'a RawValue,
    }
    let key = serde_json::to_string(&sub.param).map_err(|e| Error::backend(e.to_string()))?;
    let value = if sub.any {
        crate::args::to_json(&Any {
            name: &event.name,
            payload,
        })?
    } else {
        payload.to_owned()
    };
    let args = RawValue::from_string(format!("{{{key}:{}}}", value.get()))
        .map_err(|e| Error::backend(format!("an event's job arguments did not form JSON: {e}")))?;
    let mut env = Envelope::new(&sub.job, &sub.queue, args);
    env.enqueued_at = now;
    env.run_at = now;
    env.priority = sub.priority;
    env.max_attempts = sub.max_attempts.max(1);
    env.expires_at = sub.ttl_ms.map(|ms| now.plus(Duration::from_millis(ms)));
    if keyed {
        env.idempotency_key = Some(format!("event:{}:{}", event.id, sub.job));
    }
    env.trace = trace;
    env.event = Some(Box::new(event.clone()));
    env.check_bounds()?;
    Ok(env)
}
