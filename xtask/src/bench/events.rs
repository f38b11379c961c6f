//! `cargo xtask bench --events`: how fast `publish_all` turns events into
//! jobs, beside a plain batched enqueue of as many jobs, in one run.
//!
//! For 1, 4 and 16 subscriptions (hand-built, spread over up to 4 queues;
//! no handler runs), the bench publishes events in batches that make as
//! many jobs per backend call as the plain enqueue bench sends (1,000), and
//! enqueues the same number of plain jobs on the same queues in batches of
//! 1,000. The two alternate, slice by slice, so that drift hits both. A
//! third measurement, plain jobs each with an idempotency key of its own,
//! tells what the key that every event job carries costs on the backend.

use super::{bench_noop, default_jobs, forget_amqp_namespace, forget_redis_namespace, url_for};
use jobsmith::prelude::*;
use jobsmith::{SettleExt as _, Subscription, Timestamp};
use std::time::{Duration, Instant};

/// The bench's event.
#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(name = "bench.thing")]
struct BenchEvent {
    n: u64,
}

/// Jobs per backend call, as the plain enqueue bench sends them.
const BATCH: u64 = 1_000;

/// The subscription counts measured.
const SUBSCRIPTIONS: [u64; 3] = [1, 4, 16];

/// The most queues the subscriptions are spread over.
const QUEUES: u64 = 4;

/// Slices per measurement, taken in turn with the other measurements'.
const SLICES: u64 = 4;

/// One backend and subscription count's figures.
#[derive(Debug)]
struct Row {
    backend: String,
    subscriptions: u64,
    jobs: u64,
    events_per_s: f64,
    jobs_per_s: f64,
    enqueue_jobs_per_s: f64,
    keyed_jobs_per_s: f64,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.jobs_per_s / self.enqueue_jobs_per_s
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": self.backend,
            "subscriptions": self.subscriptions,
            "events_per_s": self.events_per_s.round(),
            "jobs_per_s": self.jobs_per_s.round(),
            "enqueue_jobs_per_s": self.enqueue_jobs_per_s.round(),
            "ratio": (self.ratio() * 1000.0).round() / 1000.0,
            "keyed_enqueue_jobs_per_s": self.keyed_jobs_per_s.round(),
            "jobs": self.jobs,
        })
    }
}

/// Whether plain jobs that each carry a key are measured too, to show what
/// the key costs. Not on RabbitMQ: a key there is queues of its own
/// (`jobsmith-amqp/src/unique.rs`), so its events' jobs carry none, and
/// thousands of keyed jobs would declare thousands of queues on a broker
/// whose open-file limit is about 1,000.
fn keyed_control(backend: &str) -> bool {
    backend != "amqp"
}

pub(super) fn main(backends: &[String], jobs: Option<u64>, json: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut rows = Vec::new();
    for backend in backends {
        let jobs = jobs.unwrap_or_else(|| default_jobs(backend));
        let url = url_for(backend)?;
        eprintln!(
            "bench: {backend}: events, {jobs} jobs per measurement at {}",
            jobsmith::redact_url(&url)
        );
        let measured = rt.block_on(bench_backend(backend, &url, jobs));
        rt.block_on(forget(backend, &url));
        match measured {
            Ok(r) => rows.extend(r),
            Err(e) => return Err(format!("{backend}: {e}")),
        }
    }
    if json {
        let all: Vec<serde_json::Value> = rows.iter().map(Row::to_json).collect();
        println!("{}", serde_json::Value::Array(all));
    } else {
        println!("{}", table(&rows));
    }
    Ok(())
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| backend | subscriptions | jobs | events/s | jobs/s | enqueue jobs/s | jobs/s ÷ enqueue | keyed enqueue jobs/s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} |\n",
            r.backend,
            r.subscriptions,
            r.jobs,
            r.events_per_s,
            r.jobs_per_s,
            r.enqueue_jobs_per_s,
            r.ratio(),
            if r.keyed_jobs_per_s.is_nan() {
                "-".to_owned()
            } else {
                format!("{:.0}", r.keyed_jobs_per_s)
            }
        ));
    }
    out
}

/// What one slice measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `publish_all`.
    Publish,
    /// `enqueue_many` of plain jobs.
    Enqueue,
    /// `enqueue_many` of plain jobs, each with a key of its own.
    Keyed,
}

async fn bench_backend(backend: &str, url: &str, jobs: u64) -> Result<Vec<Row>, String> {
    let app = jobsmith::connect(url).await.map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for subs in SUBSCRIPTIONS {
        rows.push(bench_subscriptions(backend, &app, subs, jobs).await?);
        let r = rows.last().map(Row::to_json).unwrap_or_default();
        eprintln!("bench: {r}");
    }
    Ok(rows)
}

/// The queues of a run with `subs` subscriptions.
fn queues_for(subs: u64) -> Vec<String> {
    (0..subs.min(QUEUES))
        .map(|i| format!("bench_ev{subs}_{i}"))
        .collect()
}

async fn bench_subscriptions(
    backend: &str,
    app: &App,
    subs: u64,
    jobs: u64,
) -> Result<Row, String> {
    let queues = queues_for(subs);
    let names: Vec<String> = (0..subs)
        .map(|i| format!("bench_ev{subs}_sub{i}"))
        .collect();
    app.subscribe_all(names.iter().enumerate().map(|(i, job)| Subscription {
        job: job.clone(),
        queue: queues[i % queues.len()].clone(),
        pattern: BenchEvent::NAME.to_owned(),
        any: false,
        param: "e".to_owned(),
        priority: 0,
        max_attempts: 1,
        ttl_ms: None,
        registered_at: Timestamp::now(),
    }))
    .await
    .map_err(|e| format!("subscribe: {e}"))?;

    // Events per publish, so that each makes as many jobs as a plain batch.
    let batch = BATCH;
    let keyed = keyed_control(backend);
    let per_publish = (batch / subs).max(1);
    let events = (jobs / subs).max(SLICES);
    let slice = events.div_ceil(SLICES);
    let mut tag = 0u64;

    // Warm up, untimed: queues declared, subscriptions read. One publish,
    // no larger than a slice: moto slows down with the depth of its queues.
    let warm = per_publish.min(slice);
    publish(app, &mut tag, warm, per_publish).await?;
    enqueue(app, &queues, &mut tag, warm * subs, batch, false).await?;
    let mut warmed = 2;
    if keyed {
        enqueue(app, &queues, &mut tag, warm * subs, batch, true).await?;
        warmed += 1;
    }
    settle_all(app, &queues, warm * subs * warmed).await?;

    let mut took = [Duration::ZERO; 3];
    let mut made = [0u64; 3];
    for round in 0..SLICES {
        let order = if round % 2 == 0 {
            [Kind::Publish, Kind::Enqueue, Kind::Keyed]
        } else {
            [Kind::Keyed, Kind::Enqueue, Kind::Publish]
        };
        for kind in order {
            if matches!(kind, Kind::Keyed) && !keyed {
                continue;
            }
            let n = slice * subs;
            let started = Instant::now();
            let created = match kind {
                Kind::Publish => publish(app, &mut tag, slice, per_publish).await?,
                Kind::Enqueue => enqueue(app, &queues, &mut tag, n, batch, false).await?,
                Kind::Keyed => enqueue(app, &queues, &mut tag, n, batch, true).await?,
            };
            took[kind as usize] += started.elapsed();
            made[kind as usize] += created;
            settle_all(app, &queues, created).await?;
        }
    }
    // Once, not per slice: on SQS it waits for the receives under way.
    let _ = app.backend().stop_reserving(&queues).await;
    for job in &names {
        app.unsubscribe(job)
            .await
            .map_err(|e| format!("unsubscribe: {e}"))?;
    }
    let rate = |k: Kind| made[k as usize] as f64 / took[k as usize].as_secs_f64();
    let jobs_per_s = rate(Kind::Publish);
    Ok(Row {
        backend: backend.to_owned(),
        subscriptions: subs,
        jobs: made[Kind::Publish as usize],
        events_per_s: jobs_per_s / subs as f64,
        jobs_per_s,
        enqueue_jobs_per_s: rate(Kind::Enqueue),
        keyed_jobs_per_s: rate(Kind::Keyed),
    })
}

/// Publishes `events` events, `per_publish` at a time; the jobs they made.
async fn publish(app: &App, tag: &mut u64, events: u64, per_publish: u64) -> Result<u64, String> {
    let mut sent = 0;
    let mut made = 0;
    while sent < events {
        let n = (events - sent).min(per_publish);
        let first = *tag;
        *tag += n;
        let answers = app
            .publish_all((first..first + n).map(|n| BenchEvent { n }))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        made += answers.iter().map(|p| p.reached as u64).sum::<u64>();
        sent += n;
    }
    Ok(made)
}

/// Enqueues `jobs` no-op jobs over `queues` in turn, `batch` at a time,
/// each with a key of its own when `keyed`; the jobs made.
async fn enqueue(
    app: &App,
    queues: &[String],
    tag: &mut u64,
    jobs: u64,
    batch: u64,
    keyed: bool,
) -> Result<u64, String> {
    let mut sent = 0;
    while sent < jobs {
        let n = (jobs - sent).min(batch);
        let first = *tag;
        *tag += n;
        app.enqueue_many((first..first + n).map(|k| {
            let e = bench_noop
                .delay(0)
                .queue(&queues[(k % queues.len() as u64) as usize]);
            if keyed {
                e.key(format!("bench:{k}"))
            } else {
                e
            }
        }))
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
        sent += n;
    }
    Ok(jobs)
}

/// Takes `jobs` jobs off `queues` and acknowledges them, untimed, so that
/// the next slice starts on empty queues.
async fn settle_all(app: &App, queues: &[String], jobs: u64) -> Result<(), String> {
    let b = app.backend();
    let mut left = jobs;
    let mut empty = 0;
    while left > 0 && empty < 3 {
        let got = b
            .reserve(
                queues,
                BATCH as usize,
                Duration::from_secs(60),
                Duration::from_millis(500),
            )
            .await
            .map_err(|e| format!("reserve: {e}"))?;
        if got.is_empty() {
            empty += 1;
            continue;
        }
        let leases: Vec<_> = got.into_iter().map(|d| d.lease).collect();
        b.ack(&leases).await.map_err(|e| format!("ack: {e}"))?;
        left = left.saturating_sub(leases.len() as u64);
    }
    if left > 0 {
        eprintln!("bench: {left} jobs were not found to drain");
    }
    Ok(())
}

/// Deletes what the run made on the broker.
async fn forget(backend: &str, url: &str) {
    match backend {
        "redis" => forget_redis_namespace(url).await,
        "sqs" => match jobsmith::sqs::SqsBackend::connect(url).await {
            Ok(b) => {
                let _ = b.delete_all_queues().await;
                let _ = b.delete_key_table().await;
            }
            Err(e) => eprintln!("bench: could not delete the run's SQS queues: {e}"),
        },
        "amqp" => {
            if let Some(tag) = url
                .split("prefix=")
                .nth(1)
                .and_then(|rest| rest.split('&').next())
            {
                forget_amqp_namespace(url, tag).await;
            }
        }
        _ => {}
    }
}
