//! `jobsmith migrate`: moves ready, scheduled and dead jobs between backends.
//!
//! Page by page: [`Backend::take`] holds a page of waiting jobs in the
//! source, [`Backend::import`] writes them to the destination (at most once
//! per job id), then [`Backend::remove`] deletes them from the source. Dead
//! jobs go the same way with `dead_list` → `import_dead` → `dead_delete`.
//! A run killed at any point leaves each job in the source, in the
//! destination, or in both; the next run's import skips what is already
//! there and deletes it from the source, so nothing is lost or duplicated.
//! Jobs that workers hold (in flight) are left where they are.

use crate::args::MigrateArgs;
use crate::error::{Error, Result};
use crate::table;
use crate::when::parse_age;
use jobsmith_core::{Backend, DeadJob, Envelope, Lease, LeaseStatus, Timestamp};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// How a migration runs.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// The queues to move; all of the source's when empty.
    pub queues: Vec<String>,
    /// Count what would move, change nothing.
    pub dry_run: bool,
    /// Jobs per page.
    pub batch: usize,
    /// How long a page is held in the source before it returns by itself.
    pub hold: Duration,
    /// For tests (feature `test-util`): stop after this many jobs were
    /// copied, before they are deleted from the source, as a crash there would.
    #[cfg(feature = "test-util")]
    pub fault_after: Option<u64>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            dry_run: false,
            batch: 100,
            hold: Duration::from_secs(60),
            #[cfg(feature = "test-util")]
            fault_after: None,
        }
    }
}

/// What a migration moved (or, dry, would move) for one queue.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct QueueMoves {
    /// The queue.
    pub queue: String,
    /// Ready jobs moved.
    pub ready: u64,
    /// Scheduled jobs moved.
    pub scheduled: u64,
    /// Dead jobs moved.
    pub dead: u64,
    /// Payloads that were not envelopes, moved to the destination's dead-letter queue.
    pub malformed: u64,
    /// Jobs an earlier, interrupted run had copied already: deleted from the source only.
    pub already_copied: u64,
    /// Jobs whose hold ran out before their deletion from the source; run
    /// again to delete them there (they are in the destination).
    pub holds_lost: u64,
    /// Jobs reserved by workers, left to finish in the source.
    pub in_flight_left: u64,
    /// Scheduled jobs the source cannot hand over before they are due (SQS delays).
    pub scheduled_left: u64,
}

impl QueueMoves {
    /// Jobs written to the destination.
    pub fn moved(&self) -> u64 {
        self.ready + self.scheduled + self.dead + self.malformed
    }

    fn add(&mut self, o: &QueueMoves) {
        self.ready += o.ready;
        self.scheduled += o.scheduled;
        self.dead += o.dead;
        self.malformed += o.malformed;
        self.already_copied += o.already_copied;
        self.holds_lost += o.holds_lost;
        self.in_flight_left += o.in_flight_left;
        self.scheduled_left += o.scheduled_left;
    }
}

/// What a migration did, per queue.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrateReport {
    /// Whether it only counted.
    pub dry_run: bool,
    /// Per queue.
    pub queues: Vec<QueueMoves>,
}

impl MigrateReport {
    /// The sums over every queue (queue name `total`).
    pub fn total(&self) -> QueueMoves {
        let mut t = QueueMoves {
            queue: "total".into(),
            ..QueueMoves::default()
        };
        for q in &self.queues {
            t.add(q);
        }
        t
    }
}

/// Moves the waiting and dead jobs of `opts.queues` from `from` to `to`,
/// calling `progress` with the number of jobs each page moved.
pub async fn migrate(
    from: &dyn Backend,
    to: &dyn Backend,
    opts: &MigrateOptions,
    mut progress: impl FnMut(u64),
) -> Result<MigrateReport> {
    run(from, to, opts, &mut progress, &mut |n| async move {
        #[cfg(feature = "test-util")]
        return Err::<(), _>(Error::Fault(n));
        #[cfg(not(feature = "test-util"))]
        {
            let _ = n;
            Ok(())
        }
    })
    .await
}

/// Connects, runs, prints. With `JOBSMITH_MIGRATE_FAULT_AFTER=N` in the
/// environment (for crash tests), the process stops dead after `N` jobs
/// were copied and before they are deleted from the source, printing
/// `fault point reached` to stderr, and waits there to be killed.
pub(crate) async fn command(
    args: MigrateArgs,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let hold = parse_age("--hold", &args.hold)?;
    if args.batch == 0 {
        return Err(Error::Usage(
            "--batch 0 would move nothing: give 1 or more".into(),
        ));
    }
    for (flag, url) in [("--from", &args.from), ("--to", &args.to)] {
        if url.trim_start().to_ascii_lowercase().starts_with("memory:") {
            return Err(Error::Usage(format!(
                "{flag} {}: a memory backend lives only inside one process, so this command would start with it empty{}; migrate between servers, or call `jobsmith_cli::migrate` in the process that holds the memory backend",
                jobsmith_core::redact_url(url),
                if flag == "--to" { " and take every job it moved with it when it exits" } else { "" }
            )));
        }
    }
    #[cfg(feature = "test-util")]
    let fault_after = match std::env::var("JOBSMITH_MIGRATE_FAULT_AFTER") {
        Ok(v) => Some(v.parse().map_err(|_| {
            Error::Usage(format!(
                "bad JOBSMITH_MIGRATE_FAULT_AFTER `{v}`: give a number of jobs"
            ))
        })?),
        Err(_) => None,
    };
    let from = crate::connect(&args.from).await?;
    let to = crate::connect(&args.to).await?;
    let (from, to) = (&**from.backend(), &**to.backend());
    let mut opts = MigrateOptions {
        queues: args.queues,
        dry_run: args.dry_run,
        batch: args.batch,
        hold,
        #[cfg(feature = "test-util")]
        fault_after,
    };
    if opts.queues.is_empty() {
        opts.queues = from.inspect()?.queues().await?;
    }
    let bar = if json || args.dry_run || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let plan = count(from, &opts.queues).await?.total();
        let bar = indicatif::ProgressBar::new(plan.ready + plan.scheduled + plan.dead);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} moving jobs [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
            )
            .map_err(|e| Error::Usage(e.to_string()))?
            .progress_chars("=> "),
        );
        bar
    };
    let report = run(from, to, &opts, &mut |n| bar.inc(n), &mut |n| async move {
        eprintln!("jobsmith: fault point reached after {n} jobs were copied; waiting to be killed");
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    print(out, &report, json)?;
    let t = report.total();
    if t.holds_lost > 0 {
        eprintln!(
            "jobsmith: {} jobs were held longer than --hold {} and went back to the source after being copied; run the same command again to delete them there, and raise --hold",
            t.holds_lost, args.hold
        );
    }
    Ok(())
}

/// What is there to move.
async fn count(from: &dyn Backend, queues: &[String]) -> Result<MigrateReport> {
    let stats = from.inspect()?.stats(queues).await?;
    Ok(MigrateReport {
        dry_run: true,
        queues: stats
            .into_iter()
            .map(|s| QueueMoves {
                queue: s.queue,
                ready: s.ready,
                scheduled: s.scheduled,
                dead: s.dead,
                in_flight_left: s.in_flight,
                ..QueueMoves::default()
            })
            .collect(),
    })
}

/// The metadata key [`refuse_one_namespace`] writes in the source.
const PROBE_KEY: &str = "migrate.probe";

/// Refuses a destination that is the source under another spelling (another
/// host name for the same server, a default port or database written out):
/// moving a namespace onto itself would copy each job onto itself and then
/// delete it. A random token written to the source's metadata store and read
/// back from the destination's tells, whatever the URLs look like.
async fn refuse_one_namespace(from: &dyn Backend, to: &dyn Backend) -> Result<()> {
    for _ in 0..3 {
        // A UUIDv7: its random part keeps two runs' tokens apart.
        let token = jobsmith_core::JobId::new().0;
        from.meta()?.put_meta(PROBE_KEY, token.as_bytes()).await?;
        let seen = to.meta()?.get_meta(PROBE_KEY).await?;
        if seen.as_deref() == Some(token.as_bytes()) {
            return Err(Error::Usage(
                "--from and --to are the same namespace (the same server and prefix, spelled two ways): a migration onto itself would delete every job it moves. Give a destination with another prefix, vhost or server".into(),
            ));
        }
        // Another migration from this source may have written its token
        // between the two calls: only our own token read back proves anything.
        if from.meta()?.get_meta(PROBE_KEY).await?.as_deref() == Some(token.as_bytes()) {
            return Ok(());
        }
    }
    Err(Error::Usage(
        "cannot tell whether --from and --to are one namespace: other migrations from this source are running; run again when they are done".into(),
    ))
}

async fn run<F, Fut>(
    from: &dyn Backend,
    to: &dyn Backend,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(u64),
    fault: &mut F,
) -> Result<MigrateReport>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let queues = crate::chosen_queues(
        opts.queues.clone(),
        from.inspect()?.queues().await?,
        "the source",
    )?;
    refuse_one_namespace(from, to).await?;
    if opts.dry_run {
        return count(from, &queues).await;
    }
    let batch = opts.batch.max(1);
    let mut copied = 0u64;
    let mut report = MigrateReport::default();
    for q in &queues {
        let mut m = QueueMoves {
            queue: q.clone(),
            ..QueueMoves::default()
        };
        // Dead jobs: no worker touches them, so they need no hold.
        loop {
            let page = from.dead_letters()?.dead_list(q, 0, batch).await?;
            if page.is_empty() {
                break;
            }
            let ids: Vec<_> = page.iter().map(|d| d.id.clone()).collect();
            let written = to.migration()?.import_dead(page).await?;
            let new = written.iter().filter(|w| **w).count() as u64;
            m.dead += new;
            m.already_copied += written.len() as u64 - new;
            copied += written.len() as u64;
            check_fault(opts, copied, fault).await?;
            let deleted = from.dead_letters()?.dead_delete(q, &ids).await?;
            if deleted == 0 {
                return Err(Error::Backend(jobsmith::Error::backend(format!(
                    "the source listed dead jobs of `{q}` but deleted none of them; nothing more is moved from this queue"
                ))));
            }
            progress(ids.len() as u64);
        }
        // Waiting jobs: held while they are copied, deleted after.
        loop {
            let page = from.migration()?.take(q, batch, opts.hold).await?;
            if page.is_empty() {
                break;
            }
            let now = Timestamp::now();
            let mut leases: Vec<Lease> = Vec::with_capacity(page.len());
            let mut jobs: Vec<Envelope> = Vec::new();
            let mut bad: Vec<DeadJob> = Vec::new();
            for d in page {
                match d.envelope {
                    Ok(env) => jobs.push(env),
                    Err(m) => bad.push(DeadJob::new(
                        d.lease.id.clone(),
                        q.clone(),
                        m.reason,
                        now,
                        m.raw,
                    )),
                }
                leases.push(d.lease);
            }
            let later: Vec<bool> = jobs.iter().map(|e| e.run_at > now).collect();
            let written = to.migration()?.import(jobs).await?;
            for (w, later) in written.iter().zip(later) {
                match (w, later) {
                    (true, true) => m.scheduled += 1,
                    (true, false) => m.ready += 1,
                    (false, _) => m.already_copied += 1,
                }
            }
            if !bad.is_empty() {
                for w in to.migration()?.import_dead(bad).await? {
                    if w {
                        m.malformed += 1;
                    } else {
                        m.already_copied += 1;
                    }
                }
            }
            copied += leases.len() as u64;
            check_fault(opts, copied, fault).await?;
            let removed = from.migration()?.remove(&leases).await?;
            m.holds_lost += removed.iter().filter(|s| **s == LeaseStatus::Lost).count() as u64;
            progress(leases.len() as u64);
        }
        if let Some(s) = from.inspect()?.stats(std::slice::from_ref(q)).await?.pop() {
            m.in_flight_left = s.in_flight;
            m.scheduled_left = s.scheduled;
        }
        report.queues.push(m);
    }
    Ok(report)
}

async fn check_fault<F, Fut>(opts: &MigrateOptions, copied: u64, fault: &mut F) -> Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    #[cfg(feature = "test-util")]
    if let Some(n) = opts.fault_after {
        if copied >= n {
            return fault(copied).await;
        }
    }
    let _ = (opts, copied, fault);
    Ok(())
}

fn print(out: &mut dyn Write, report: &MigrateReport, json: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(report).map_err(jobsmith::Error::Serialize)?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut all = report.queues.clone();
    if all.len() > 1 {
        all.push(report.total());
    }
    for m in &all {
        rows.push(vec![
            m.queue.clone(),
            m.ready.to_string(),
            m.scheduled.to_string(),
            m.dead.to_string(),
            m.malformed.to_string(),
            m.already_copied.to_string(),
            m.in_flight_left.to_string(),
            m.scheduled_left.to_string(),
        ]);
    }
    if report.dry_run {
        writeln!(out, "dry run: nothing changed; these would move")?;
        table::write(
            out,
            &["QUEUE", "READY", "SCHEDULED", "DEAD", "IN-FLIGHT (STAYS)"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r[0].clone(),
                        r[1].clone(),
                        r[2].clone(),
                        r[3].clone(),
                        r[6].clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        )?;
    } else {
        table::write(
            out,
            &[
                "QUEUE",
                "READY",
                "SCHEDULED",
                "DEAD",
                "MALFORMED",
                "ALREADY-COPIED",
                "IN-FLIGHT-LEFT",
                "SCHEDULED-LEFT",
            ],
            &rows,
        )?;
    }
    Ok(())
}
