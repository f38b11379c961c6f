//! The subscriptions of the jobs linked in: a worker registers those of the
//! queues it runs before its first reserve.

use crate::app::App;
use crate::error::Result;
use crate::event::{registered_events, Subscription};
use crate::registry::Registry;
use crate::time::Timestamp;

/// Registers the subscription of every job of `registry` on `queues` (all
/// of them when `None`: what [`App::register_subscriptions`] does) that has
/// `#[job(on = ..)]`, once event names are known to be unique in this
/// binary. Returns the jobs it registered. When one is new or changed, this
/// returns only once every later publish reaches it ([`App::subscribe_all`]).
pub(crate) async fn register(
    app: &App,
    registry: &Registry,
    queues: Option<&[String]>,
) -> Result<Vec<String>> {
    registered_events()?;
    let subs: Vec<Subscription> = registry
        .defs()
        .filter(|def| queues.is_none_or(|queues| queues.iter().any(|q| q == def.options.queue)))
        .filter_map(|def| {
            let on = def.options.on?;
            Some(Subscription {
                job: def.name.to_owned(),
                queue: def.options.queue.to_owned(),
                pattern: on.pattern.to_owned(),
                any: on.any,
                // `#[job(on = ..)]` takes exactly one serialized parameter.
                param: def.params.first()?.name.to_owned(),
                priority: def.options.priority,
                max_attempts: def.options.retries.saturating_add(1),
                ttl_ms: def
                    .options
                    .ttl
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                registered_at: Timestamp::now(),
            })
        })
        .collect();
    let jobs = subs.iter().map(|s| s.job.clone()).collect();
    for sub in &subs {
        tracing::info!(job = %sub.job, queue = %sub.queue, pattern = %sub.pattern, "registering subscription");
    }
    if !subs.is_empty() {
        app.subscribe_all(subs).await?;
    }
    Ok(jobs)
}
