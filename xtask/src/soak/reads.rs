//! What the checker reads back: the dead-letter queues, and the ledger's
//! tallies, attempts, first starts and effects per job.

use super::ledger::{attempts_table, effects_table};
use super::plan::{PROBE_QUEUE, QUEUE};
use jobsmith::{App, DeadJob};
use std::collections::{HashMap, HashSet};

/// The ledger's totals for one job.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    pub(super) rows: i64,
    pub(super) ok: i64,
    pub(super) dup: i64,
    pub(super) ran_expired: i64,
    pub(super) max_attempt: i32,
    pub(super) first_ok: Option<i32>,
    /// Attempt numbers below `max_attempt` with no row.
    pub(super) skipped: i64,
    /// The worker that made the latest attempt, and when (ms since the epoch).
    pub(super) last: Option<(usize, u64)>,
}

/// Every dead-letter entry of the soak's queues.
pub(super) async fn dead_letters(app: &App) -> Result<Vec<DeadJob>, String> {
    let mut all = Vec::new();
    for queue in [QUEUE, PROBE_QUEUE] {
        all.extend(dead_letters_of(app, queue).await?);
    }
    Ok(all)
}

pub(super) async fn dead_letters_of(app: &App, queue: &str) -> Result<Vec<DeadJob>, String> {
    let backend = app
        .backend()
        .dead_letters()
        .map_err(|e| format!("listing dead letters of {queue}: {e}"))?;
    if backend.name() == "sqs" {
        // SQS lists by scanning the whole queue: one scan.
        return backend
            .dead_list(queue, 0, usize::MAX)
            .await
            .map_err(|e| format!("listing dead letters of {queue}: {e}"));
    }
    let mut all = Vec::new();
    loop {
        let page = backend
            .dead_list(queue, all.len(), 10_000)
            .await
            .map_err(|e| format!("listing dead letters of {queue}: {e}"))?;
        let done = page.len() < 10_000;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

pub(super) async fn tallies(
    pg: &tokio_postgres::Client,
    run: &str,
    from: u64,
    to: u64,
) -> Result<HashMap<u64, Tally>, String> {
    let sql = format!(
        "SELECT n, count(*), count(*) FILTER (WHERE outcome = 'ok'), \
         count(*) FILTER (WHERE outcome = 'dup'), count(*) FILTER (WHERE outcome = 'ran-expired'), \
         max(attempt), min(attempt) FILTER (WHERE outcome IN ('ok', 'dup')), \
         (array_agg(worker ORDER BY at DESC))[1], max(attempt) - count(DISTINCT attempt), \
         (array_agg((extract(epoch FROM at) * 1000)::bigint ORDER BY at DESC))[1] \
         FROM {} WHERE n >= {from} AND n < {to} GROUP BY n",
        attempts_table(run)
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the ledger: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(0);
            (
                n as u64,
                Tally {
                    rows: r.get(1),
                    ok: r.get(2),
                    dup: r.get(3),
                    ran_expired: r.get(4),
                    max_attempt: r.get(5),
                    first_ok: r.get(6),
                    last: Some((r.get::<_, i32>(7) as usize, r.get::<_, i64>(9) as u64)),
                    skipped: r.get(8),
                },
            )
        })
        .collect())
}

/// Jobs that succeeded more than once: each success's worker and time (ms since the epoch), in order.
/// One attempt of a job, as the ledger has it.
pub(super) struct Attempt {
    pub(super) worker: usize,
    pub(super) attempt: i32,
    pub(super) at_ms: u64,
    pub(super) ok: bool,
}

/// Every attempt of each job in `from..to` that succeeded more than once, in order.
pub(super) async fn repeated_successes(
    pg: &tokio_postgres::Client,
    run: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Vec<Attempt>)>, String> {
    let table = attempts_table(run);
    let sql = format!(
        "SELECT n, array_agg(worker ORDER BY at), array_agg(attempt ORDER BY at), \
         array_agg((extract(epoch FROM at) * 1000)::bigint ORDER BY at), \
         array_agg(outcome IN ('ok', 'dup') ORDER BY at) \
         FROM {table} WHERE n IN (SELECT n FROM {table} WHERE n >= {from} AND n < {to} \
         AND outcome IN ('ok', 'dup') GROUP BY n HAVING count(*) > 1) \
         GROUP BY n"
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the ledger: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(0);
            let workers: Vec<i32> = r.get(1);
            let attempts: Vec<i32> = r.get(2);
            let ats: Vec<i64> = r.get(3);
            let oks: Vec<bool> = r.get(4);
            let runs = workers
                .into_iter()
                .zip(attempts)
                .zip(ats.into_iter().zip(oks))
                .map(|((w, attempt), (at, ok))| Attempt {
                    worker: w as usize,
                    attempt,
                    at_ms: at as u64,
                    ok,
                })
                .collect();
            (n as u64, runs)
        })
        .collect())
}

/// The first start of attempts 1 and 2 of each job in `from..to`: (its due
/// time, when it started), in milliseconds since the epoch.
pub(super) async fn first_starts(
    pg: &tokio_postgres::Client,
    run: &str,
    from: u64,
    to: u64,
) -> Result<HashMap<(u64, u32), (u64, u64)>, String> {
    let sql = format!(
        "SELECT DISTINCT ON (n, attempt) n, attempt, due, started FROM {} \
         WHERE n >= {from} AND n < {to} AND attempt <= 2 ORDER BY n, attempt, started",
        attempts_table(run)
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the ledger's start times: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(0);
            let attempt: i32 = r.get(1);
            let due: i64 = r.get(2);
            let started: i64 = r.get(3);
            ((n as u64, attempt as u32), (due as u64, started as u64))
        })
        .collect())
}

pub(super) async fn effects(
    pg: &tokio_postgres::Client,
    run: &str,
    from: u64,
    to: u64,
) -> Result<HashSet<u64>, String> {
    let sql = format!(
        "SELECT n FROM {} WHERE n >= {from} AND n < {to}",
        effects_table(run)
    );
    let rows = pg
        .query(&sql, &[])
        .await
        .map_err(|e| format!("reading the ledger's effects: {e}"))?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}
