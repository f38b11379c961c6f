//! Driving a run: pacing the probes, rolling restarts of the workers,
//! enqueueing the waves, and waiting for the queues to drain.

use super::plan::{self, plan, QUEUE};
use super::workers::Pool;
use super::{ledger, now_ms, Counts, PROBE_GAP};
use jobsmith::{App, Enqueue};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Enqueues the probes handed over by the enqueuer's waves, one at a time,
/// [`PROBE_GAP`] apart at least, until the enqueuer is done.
pub(super) async fn pace_probes(
    app: App,
    seed: u64,
    failure_rate: f64,
    mut probes: tokio::sync::mpsc::UnboundedReceiver<u64>,
    counts: Arc<Counts>,
) {
    while let Some(n) = probes.recv().await {
        let next = Instant::now() + PROBE_GAP;
        enqueue_all(
            &app,
            vec![plan::enqueue(n, plan(seed, failure_rate, n))],
            &counts,
        )
        .await;
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Every `every`, takes one worker out of the pool, stops it gracefully,
/// checks that it exited cleanly, and starts its replacement: a rolling
/// deploy, one worker at a time. Ends, after the restart under way, when
/// `ended` turns true.
pub(super) async fn restart_workers(
    every: Duration,
    pool: Arc<Mutex<Pool>>,
    counts: Arc<Counts>,
    mut ended: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = ended.changed() => return,
        }
        // Out of the pool while it stops, so that no kill picks it.
        let Some(worker) = pool.lock().await.take_one() else {
            continue;
        };
        match worker.stop().await {
            Ok(took) => {
                counts.restarts.fetch_add(1, Ordering::Relaxed);
                let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                counts.slowest_stop_ms.fetch_max(ms, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("soak: UNCLEAN STOP: {e}");
                counts
                    .unclean_stops
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(e);
            }
        }
        if let Err(e) = pool.lock().await.spawn() {
            eprintln!("soak: could not start a restarted worker again: {e}");
        }
    }
}

/// Jobs in the soak's queues that are not finished: ready, scheduled or in flight.
pub(super) async fn pending(app: &App) -> Option<u64> {
    let stats = app
        .backend()
        .inspect()
        .ok()?
        .stats(&[QUEUE.to_owned(), plan::PROBE_QUEUE.to_owned()])
        .await
        .ok()?;
    if stats.iter().any(|s| s.error.is_some()) {
        return None;
    }
    Some(
        stats
            .iter()
            .map(|s| s.ready + s.scheduled + s.in_flight)
            .sum(),
    )
}

pub(super) async fn wait_below(app: &App, limit: u64) {
    // Each look at SQS is a `GetQueueAttributes` call per SQS queue of the
    // family: look a little less often there. (Not much less: with waves this
    // small, a second between looks would leave the queue empty.)
    let every = if app.backend().name() == "sqs" {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(100)
    };
    loop {
        match pending(app).await {
            Some(n) if n < limit => return,
            _ => tokio::time::sleep(every).await,
        }
    }
}

/// Enqueues every job of a wave, retrying while the broker is away.
pub(super) async fn enqueue_all(app: &App, jobs: Vec<Enqueue>, counts: &Counts) {
    // Envelopes first, so that a retried batch has the same job ids.
    let envs: Vec<jobsmith::Envelope> = jobs
        .into_iter()
        .filter_map(|e| e.into_envelope().ok())
        .collect();
    for chunk in envs.chunks(1_000) {
        loop {
            match app.backend().enqueue(chunk.to_vec()).await {
                Ok(_) => break,
                Err(e) => {
                    counts.enqueue_retries.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: enqueue failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// How long after a broker restart an empty queue is not taken for a
/// drained one: queues recovering from a crash (a quorum queue electing its
/// leader, replaying its log) can answer a count before they hold their
/// messages again.
pub(super) const AFTER_RESTART: Duration = Duration::from_secs(15);

/// How long the queue must count empty before the drain is over: longer
/// than any process holds a job out of every count. A RabbitMQ worker holds
/// a delayed job for its last second out of the other processes' counts
/// (its queue's staging, docs/backends/rabbitmq.md), and an empty count
/// taken twice 500 ms apart missed one such job in a soak of 2026-12-08.
const EMPTY_FOR: Duration = Duration::from_millis(1_500);

/// Waits until the queue is empty (for [`EMPTY_FOR`], after `not_before` and at
/// least [`AFTER_RESTART`] after the last broker restart), or until nothing
/// has moved for two minutes. Returns what is left.
pub(super) async fn drain(
    app: &App,
    pg: &tokio_postgres::Client,
    run: &str,
    not_before: Instant,
    counts: &Counts,
) -> u64 {
    const STALL: Duration = Duration::from_secs(120);
    let rows_sql = format!("SELECT count(*) FROM {}", ledger::attempts_table(run));
    let mut empty_since: Option<Instant> = None;
    let mut last = (None, None);
    let mut moved = Instant::now();
    loop {
        let left = pending(app).await;
        let rows: Option<i64> = pg.query_one(&rows_sql, &[]).await.ok().map(|r| r.get(0));
        if (left, rows) != last {
            moved = Instant::now();
            last = (left, rows);
        }
        let settled = counts
            .restarted_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .is_none_or(|(_, up)| {
                now_ms() > up.saturating_add(u64::try_from(AFTER_RESTART.as_millis()).unwrap_or(0))
            });
        if left == Some(0) && Instant::now() > not_before && settled {
            if empty_since.get_or_insert_with(Instant::now).elapsed() >= EMPTY_FOR {
                return 0;
            }
        } else {
            empty_since = None;
        }
        if moved.elapsed() > STALL {
            eprintln!("soak: nothing moved for {STALL:?}; checking what there is");
            return left.unwrap_or(0);
        }
        tokio::time::sleep(if app.backend().name() == "sqs" {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(500)
        })
        .await;
    }
}
