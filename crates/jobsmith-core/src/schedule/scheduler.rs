//! The scheduler task: one per schedule in every worker, sleeping until the
//! next tick and enqueueing the job for it under the tick's idempotency key.

use super::{tick_key, Cron, ScheduleInfo, META_PREFIX};
use crate::backend::Backend;
use crate::enqueue::Enqueue;
use crate::envelope::{Envelope, JobId};
use crate::error::{Error, Result};
use crate::options::Missed;
use crate::registry::Registry;
use crate::retry::Doubling;
use crate::time::Timestamp;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A tick overdue by more than this (the process was suspended, or the
/// backend unreachable) is treated as missed, by the schedule's policy,
/// rather than fired late one by one.
const OVERDUE: Duration = Duration::from_secs(60);

/// The largest random delay a scheduler waits after a tick before firing it.
const MAX_JITTER: Duration = Duration::from_millis(500);

/// A schedule added on a worker, checked when the worker starts.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) name: Option<String>,
    pub(crate) cron: Result<Cron>,
    pub(crate) job: Enqueue,
}

/// A checked schedule: what a scheduler task runs.
#[derive(Debug)]
pub(crate) struct Scheduled {
    pub(crate) name: String,
    pub(crate) cron: Cron,
    /// The envelope that each tick enqueues a copy of.
    pub(crate) template: Envelope,
}

/// The schedules a worker runs: those of `#[job(cron = ..)]` jobs in its
/// registry, then those added with `Worker::schedule`. A bad expression,
/// zone or argument, an expression with no tick to come, or two schedules
/// of one name, is an error naming it.
pub(crate) fn collect(registry: &Registry, pending: Vec<Pending>) -> Result<Vec<Scheduled>> {
    let now = Timestamp::now();
    let mut out: Vec<Scheduled> = Vec::new();
    for def in registry.defs() {
        let Some(opts) = def.options.cron else {
            continue;
        };
        let cron = Cron::new(opts.expr)
            .and_then(|c| c.tz(opts.tz))
            .map_err(|e| Error::Schedule(format!("schedule of job `{}`: {e}", def.name)))?
            .missed(opts.missed);
        has_ticks(
            &cron,
            now,
            &format!("schedule of job `{}`", def.name),
            "fix the expression in its `#[job(cron = ..)]`, or remove the `cron` option",
        )?;
        let no_args = RawValue::from_string("{}".to_owned()).map_err(Error::Serialize)?;
        out.push(Scheduled {
            name: def.name.to_owned(),
            cron,
            template: Enqueue::raw(def, no_args).into_envelope()?,
        });
    }
    for p in pending {
        let template = p.job.into_envelope()?;
        let name = p.name.unwrap_or_else(|| template.job.clone());
        let cron = p
            .cron
            .map_err(|e| Error::Schedule(format!("schedule `{name}`: {e}")))?;
        has_ticks(
            &cron,
            now,
            &format!("schedule `{name}`"),
            "fix the expression, or stop registering the schedule",
        )?;
        if out.iter().any(|s| s.name == name) {
            return Err(Error::Schedule(format!(
                "two schedules are named `{name}`: name one with `.schedule_cron(\"other-name\", ..)`"
            )));
        }
        out.push(Scheduled {
            name,
            cron,
            template,
        });
    }
    Ok(out)
}

/// Refuses `what` (a schedule) when its expression has no tick after `now`,
/// saying why and how to `fix` it.
fn has_ticks(cron: &Cron, now: Timestamp, what: &str, fix: &str) -> Result<()> {
    if cron.next_after(now).is_some() {
        return Ok(());
    }
    Err(Error::Schedule(format!(
        "{what}: `{}` has no tick after now ({}, read in {}), so it would never fire \
         (a year in the past?); {fix}",
        cron.expr(),
        super::expr::rfc3339(now),
        cron.zone()
    )))
}

/// Runs one schedule until `stop` turns true.
pub(crate) async fn run(backend: Arc<dyn Backend>, s: Scheduled, mut stop: watch::Receiver<bool>) {
    let key = format!("{META_PREFIX}{}", s.name);
    let mut cursor = Timestamp::now();
    start(&*backend, &s, &key, cursor).await;
    loop {
        let Some(tick) = s.cron.next_after(cursor) else {
            tracing::info!(schedule = %s.name, "schedule has no more ticks");
            return;
        };
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(tick.until_now() + jitter(&s.cron, tick)) => {}
        }
        let now = Timestamp::now();
        if now.since(tick) > OVERDUE {
            // Fell far behind: the ticks in between were missed.
            let latest = s.cron.last_at_or_before(now).unwrap_or(tick);
            if s.cron.missed_policy() == Missed::CatchUp {
                fire_retrying(&*backend, &s, &key, latest, &mut stop).await;
            }
            cursor = latest;
            continue;
        }
        fire_retrying(&*backend, &s, &key, tick, &mut stop).await;
        cursor = tick;
    }
}

/// A random delay after a tick, up to a quarter of the period (at most
/// 500 ms): the worker that wakes first enqueues and records the tick, and
/// the others mostly find it recorded and skip it, so that the backend's
/// idempotency key settles a race only now and then instead of on every tick.
fn jitter(cron: &Cron, tick: Timestamp) -> Duration {
    let period = cron
        .next_after(tick)
        .map_or(Duration::ZERO, |next| next.since(tick));
    let cap = (period / 4).min(MAX_JITTER);
    Duration::from_millis(fastrand::u64(
        0..=u64::try_from(cap.as_millis()).unwrap_or(0),
    ))
}

/// On start: catches up once on the most recent missed tick if the policy
/// says so, and records the schedule's next tick. Never catches up on a
/// schedule that has no stored state (its very first start).
async fn start(backend: &dyn Backend, s: &Scheduled, key: &str, now: Timestamp) {
    let stored = match load(backend, key).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(schedule = %s.name, error = %e, "could not read the schedule's state; it is written at the next tick");
            return;
        }
    };
    let latest = s.cron.last_at_or_before(now);
    let missed = match (stored.as_ref().and_then(|i| i.prev), latest) {
        (Some(prev), Some(latest)) if prev < latest => Some(latest),
        _ => None,
    };
    if let Some(tick) = missed {
        if s.cron.missed_policy() == Missed::CatchUp {
            tracing::info!(schedule = %s.name, tick = %super::expr::rfc3339(tick), "catching up on a missed tick");
            if let Err(e) = fire(backend, s, key, tick).await {
                tracing::warn!(schedule = %s.name, error = %e, "could not catch up on a missed tick");
            }
            return;
        }
        tracing::info!(schedule = %s.name, since = %super::expr::rfc3339(tick), "skipping ticks missed while no worker ran");
    }
    let mut info = stored.unwrap_or_else(|| ScheduleInfo::new(&s.name, &s.template.job, &s.cron));
    // Read the state again just before writing it: another worker may have
    // fired a tick since the first read, and a first read that found nothing
    // may have been wrong for a moment (on RabbitMQ, while another process
    // read the entry). What is written never records less than is stored.
    match load(backend, key).await {
        Ok(Some(current)) => keep_later_tick(&mut info, &current),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(schedule = %s.name, error = %e, "could not read the schedule's state; it is written at the next tick");
            return;
        }
    }
    refresh(&mut info, s);
    // The first tick after now, or after the last tick fired if a worker
    // whose clock runs ahead has already fired one past now.
    info.next = s
        .cron
        .next_after(info.prev.map_or(now, |prev| prev.max(now)));
    info.updated_at = Some(now);
    if let Err(e) = save(backend, key, &info).await {
        tracing::warn!(schedule = %s.name, error = %e, "could not record the schedule's state");
    }
}

/// Fires `tick`, trying again with backoff while the backend fails, until
/// the tick is overdue or the worker stops.
async fn fire_retrying(
    backend: &dyn Backend,
    s: &Scheduled,
    key: &str,
    tick: Timestamp,
    stop: &mut watch::Receiver<bool>,
) {
    let mut delays = Doubling::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let delay = match fire(backend, s, key, tick).await {
            Ok(()) => return,
            Err(e) if Timestamp::now().since(tick) < OVERDUE => {
                let delay = delays.next_delay();
                tracing::warn!(schedule = %s.name, error = %e, retry_in_ms = delay.as_millis() as u64, "could not enqueue a tick; trying again");
                delay
            }
            Err(e) => {
                tracing::error!(schedule = %s.name, error = %e, "could not enqueue a tick; it is missed");
                return;
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Enqueues the job for `tick` unless the stored state says that tick was
/// fired already, then records it. Racing workers enqueue under the same
/// key, so the backend keeps one job and every one of them gets its id.
async fn fire(backend: &dyn Backend, s: &Scheduled, key: &str, tick: Timestamp) -> Result<()> {
    if fired(load(backend, key).await?.as_ref(), tick) {
        return Ok(());
    }
    let now = Timestamp::now();
    let mut env = s.template.clone();
    env.expires_at = env
        .expires_at
        .map(|at| tick.plus(at.since(env.enqueued_at)));
    env.id = JobId::new();
    env.enqueued_at = now;
    env.run_at = tick;
    env.idempotency_key = Some(tick_key(&s.name, tick));
    env.trace = None;
    let queue = env.queue.clone();
    let id = backend
        .enqueue(vec![env])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::backend("enqueue returned no id"))?;
    metrics::counter!("jobsmith_jobs_enqueued_total", "queue" => queue).increment(1);
    tracing::debug!(schedule = %s.name, tick = %super::expr::rfc3339(tick), job.id = %id, "tick enqueued");
    // Read the state again: on a slow backend another worker may have fired
    // a later tick meanwhile, and its record must not be put back by this one.
    let stored = load(backend, key).await?;
    if fired(stored.as_ref(), tick) {
        return Ok(());
    }
    let mut info = stored.unwrap_or_else(|| ScheduleInfo::new(&s.name, &s.template.job, &s.cron));
    refresh(&mut info, s);
    info.prev = Some(tick);
    info.next = s.cron.next_after(tick);
    info.last_job = Some(id);
    info.updated_at = Some(now);
    save(backend, key, &info).await
}

/// Takes `other`'s last fired tick, and its job, when it is later than
/// `info`'s: of two states, the one written after more ticks wins those fields.
fn keep_later_tick(info: &mut ScheduleInfo, other: &ScheduleInfo) {
    if other.prev > info.prev {
        info.prev = other.prev;
        info.last_job.clone_from(&other.last_job);
    }
}

/// Whether the stored state records `tick`, or a later one, as fired.
fn fired(stored: Option<&ScheduleInfo>, tick: Timestamp) -> bool {
    stored.and_then(|i| i.prev).is_some_and(|prev| prev >= tick)
}

/// Brings a stored state's configuration up to date with the running schedule.
fn refresh(info: &mut ScheduleInfo, s: &Scheduled) {
    info.name.clone_from(&s.name);
    info.job.clone_from(&s.template.job);
    s.cron.expr().clone_into(&mut info.expr);
    s.cron.zone().clone_into(&mut info.tz);
    info.missed = s.cron.missed_policy();
}

async fn load(backend: &dyn Backend, key: &str) -> Result<Option<ScheduleInfo>> {
    let Some(bytes) = backend.meta()?.get_meta(key).await? else {
        return Ok(None);
    };
    // An unreadable state (written by a future version, say) counts as none.
    Ok(serde_json::from_slice(&bytes).ok())
}

async fn save(backend: &dyn Backend, key: &str, info: &ScheduleInfo) -> Result<()> {
    let bytes = serde_json::to_vec(info).map_err(Error::Serialize)?;
    backend.meta()?.put_meta(key, &bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(prev: Option<u64>, job: Option<&str>) -> ScheduleInfo {
        let cron = Cron::new("* * * * * *").expect("parses");
        let mut info = ScheduleInfo::new("s", "j", &cron);
        info.prev = prev.map(Timestamp);
        info.last_job = job.map(JobId::from);
        info
    }

    #[test]
    fn a_state_written_never_records_an_earlier_tick_than_the_stored_one() {
        // A first read that found nothing: the stored tick and job are kept.
        let mut fresh = state(None, None);
        keep_later_tick(&mut fresh, &state(Some(5_000), Some("a")));
        assert_eq!(
            (fresh.prev, fresh.last_job),
            (Some(Timestamp(5_000)), Some(JobId::from("a")))
        );
        // Another worker fired a later tick meanwhile: its tick and job win.
        let mut read_before = state(Some(5_000), Some("a"));
        keep_later_tick(&mut read_before, &state(Some(6_000), Some("b")));
        assert_eq!(
            (read_before.prev, read_before.last_job),
            (Some(Timestamp(6_000)), Some(JobId::from("b")))
        );
        // An earlier stored tick changes nothing.
        let mut newer = state(Some(6_000), Some("b"));
        keep_later_tick(&mut newer, &state(Some(5_000), Some("a")));
        assert_eq!(
            (newer.prev, newer.last_job),
            (Some(Timestamp(6_000)), Some(JobId::from("b")))
        );
    }
}
