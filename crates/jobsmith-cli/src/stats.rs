//! `jobsmith stats`: counts per queue, and processed / failed rates from two samples.

use crate::args::StatsArgs;
use crate::error::{Error, Result};
use crate::table;
use crate::terminal::Terminal;
use crate::when::human;
use jobsmith::{App, QueueStats};
use jobsmith_core::printable;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// One queue's line of `jobsmith stats`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatsRow {
    /// The queue.
    pub queue: String,
    /// Ready to run now.
    pub ready: u64,
    /// Waiting for a later time.
    pub scheduled: u64,
    /// Reserved by workers.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
    /// Dropped unrun because their TTL passed (since the queue was created).
    pub expired: u64,
    /// How long the oldest ready job has waited, in seconds; `null` if none or unknown.
    pub oldest_ready_age_secs: Option<f64>,
    /// Jobs completed in all, where the backend counts them.
    pub processed: Option<u64>,
    /// Failed attempts in all, where the backend counts them.
    pub failed: Option<u64>,
    /// Jobs completed per second between the two samples.
    pub processed_per_sec: Option<f64>,
    /// Failed attempts per second between the two samples.
    pub failed_per_sec: Option<f64>,
    /// Why this queue's counts could not be read (its counts are then zero
    /// and mean nothing); left out of the JSON when they were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Rows from two samples `elapsed` apart: counts from the later, rates from the difference.
pub fn sample_rates(
    before: &[QueueStats],
    after: &[QueueStats],
    elapsed: Duration,
) -> Vec<StatsRow> {
    let secs = elapsed.as_secs_f64();
    let rate = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if secs > 0.0 => Some(b.saturating_sub(a) as f64 / secs),
        _ => None,
    };
    after
        .iter()
        .map(|s| {
            let prev = before.iter().find(|p| p.queue == s.queue);
            StatsRow {
                queue: s.queue.clone(),
                ready: s.ready,
                scheduled: s.scheduled,
                in_flight: s.in_flight,
                dead: s.dead,
                expired: s.expired,
                oldest_ready_age_secs: s.oldest_ready_age.map(|d| d.as_secs_f64()),
                processed: s.processed,
                failed: s.failed,
                processed_per_sec: rate(prev.and_then(|p| p.processed), s.processed),
                failed_per_sec: rate(prev.and_then(|p| p.failed), s.failed),
                error: s.error.clone(),
            }
        })
        .collect()
}

#[derive(Serialize)]
struct Report<'a> {
    backend: &'a str,
    sampled_over_secs: f64,
    queues: &'a [StatsRow],
}

pub(crate) async fn command(
    app: &App,
    args: StatsArgs,
    json: bool,
    out: &mut Terminal<'_>,
) -> Result<()> {
    let backend = app.backend();
    let queues = if args.queues.is_empty() {
        backend.inspect()?.queues().await?
    } else {
        args.queues
    };
    let every = match args.watch {
        Some(s) if !(s.is_finite() && (0.1..=86_400.0).contains(&s)) => {
            return Err(Error::Usage(format!(
                "bad --watch `{s}`: give a refresh interval in seconds, from 0.1 to 86400 (a day)"
            )))
        }
        Some(s) => Duration::from_secs_f64(s),
        None => Duration::from_secs(1),
    };
    let clear = args.watch.is_some() && !json && std::io::stdout().is_terminal();
    let mut before = backend.inspect()?.stats(&queues).await?;
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let after = backend.inspect()?.stats(&queues).await?;
        let now = Instant::now();
        let rows = sample_rates(&before, &after, now - at);
        if clear {
            out.clear_screen()?;
        }
        if json {
            let report = Report {
                backend: backend.name(),
                sampled_over_secs: (now - at).as_secs_f64(),
                queues: &rows,
            };
            let text = serde_json::to_string(&report).map_err(jobsmith::Error::Serialize)?;
            writeln!(out, "{text}")?;
        } else {
            print_table(out, &rows)?;
        }
        out.flush()?;
        if args.watch.is_none() {
            // Every row is printed first; then the exit status says some are broken.
            let broken: Vec<String> = rows
                .iter()
                .filter(|r| r.error.is_some())
                .map(|r| r.queue.clone())
                .collect();
            if !broken.is_empty() {
                return Err(Error::BrokenQueues(broken));
            }
            return Ok(());
        }
        if !json {
            writeln!(out)?;
        }
        before = after;
        at = now;
    }
}

fn print_table(out: &mut dyn Write, rows: &[StatsRow]) -> std::io::Result<()> {
    let dash = || "-".to_owned();
    let rate = |r: Option<f64>| r.map_or_else(dash, |r| format!("{r:.1}"));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            if r.error.is_some() {
                let mut cells = vec![r.queue.clone(), "broken".to_owned()];
                cells.resize(8, dash());
                return cells;
            }
            vec![
                r.queue.clone(),
                r.ready.to_string(),
                r.scheduled.to_string(),
                r.in_flight.to_string(),
                r.dead.to_string(),
                r.oldest_ready_age_secs
                    .map_or_else(dash, |s| human(Duration::from_secs_f64(s))),
                rate(r.processed_per_sec),
                rate(r.failed_per_sec),
            ]
        })
        .collect();
    if body.is_empty() {
        return writeln!(
            out,
            "no queues yet: nothing has been enqueued on this backend"
        );
    }
    table::write(
        out,
        &[
            "QUEUE",
            "READY",
            "SCHEDULED",
            "IN-FLIGHT",
            "DEAD",
            "OLDEST",
            "PROCESSED/S",
            "FAILED/S",
        ],
        &body,
    )?;
    for r in rows {
        if let Some(why) = &r.error {
            writeln!(out, "{} is broken: {why}", printable(&r.queue))?;
        }
    }
    Ok(())
}
