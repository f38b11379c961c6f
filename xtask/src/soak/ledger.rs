//! The ledger: every attempt a soak job makes, in PostgreSQL, outside the queue.
//!
//! Two tables per run: `<run>_attempts`, one row per attempt (job number,
//! attempt, outcome, worker number and pid, when it was due, when its
//! handler started, when its row was written), and `<run>_effects`, keyed by job
//! number, holding the effect of idempotent jobs. An idempotent success
//! inserts its effect and its attempt row in one statement; when the effect is
//! already there (a re-delivery of a job that had succeeded), its row says
//! `dup` instead of `ok` and nothing else changes.
//!
//! Rows are written in groups: each handler hands its row to one writer task
//! per worker and waits until the group holding it has committed.

use std::fmt::Write as _;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

/// What an attempt did, as the handler decided before doing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Succeeded (`dup` in the table for an idempotent job whose effect was there already).
    Ok,
    /// Failed, to be retried.
    Fail,
    /// Failed permanently.
    Permanent,
    /// Panicked.
    Panic,
    /// Slept past its timeout.
    Sleep,
    /// Ran although its TTL had passed: must never happen.
    RanExpired,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Permanent => "permanent",
            Outcome::Panic => "panic",
            Outcome::Sleep => "sleep",
            Outcome::RanExpired => "ran-expired",
        }
    }
}

/// One attempt, as its handler reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    /// The job's number.
    pub(crate) n: u64,
    /// The attempt's number, from 1, as the worker counted it.
    pub(crate) attempt: u32,
    /// What the attempt does.
    pub(crate) outcome: Outcome,
    /// Whether the job's effect is recorded once per job.
    pub(crate) idempotent: bool,
    /// When the attempt was due (the job's `run_at`), in milliseconds since the epoch.
    pub(crate) due_ms: u64,
    /// When the handler started, in milliseconds since the epoch.
    pub(crate) started_ms: u64,
}

/// A row waiting for its group, with where to say that the group committed.
pub(crate) type Pending<R> = (R, oneshot::Sender<Result<(), String>>);

/// Rows a [`Writer`] writes: how one group of them becomes one statement.
pub(crate) trait Rows: std::fmt::Debug + Send + Sized + 'static {
    /// The ledger's name in errors (`ledger`, `event ledger`).
    const WHAT: &'static str;

    /// One statement writing `group`, attempts of worker number `worker`
    /// (process `pid`) in run `run`.
    fn statement(run: &str, worker: usize, pid: u32, group: &[Pending<Self>]) -> String;
}

/// A worker's handle on a ledger. Cheap to share; one writer task behind
/// it, which writes the rows handed to it in groups.
#[derive(Debug)]
pub(crate) struct Writer<R> {
    tx: mpsc::UnboundedSender<Pending<R>>,
}

impl<R> Clone for Writer<R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// The plain soak's ledger.
pub(crate) type Ledger = Writer<Row>;

/// The default ledger: the local PostgreSQL, database `test`.
pub(crate) fn default_dsn() -> String {
    std::env::var("JOBSMITH_SOAK_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned())
}

/// Connects, handing the connection to a task of the current runtime.
pub(crate) async fn connect(dsn: &str) -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await.map_err(|e| {
        format!("cannot reach the ledger's PostgreSQL at `{dsn}`: {e} (start PostgreSQL, or set JOBSMITH_SOAK_PG to a libpq connection string)")
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The attempts table of `run`.
pub(crate) fn attempts_table(run: &str) -> String {
    format!("{run}_attempts")
}

/// The effects table of `run`.
pub(crate) fn effects_table(run: &str) -> String {
    format!("{run}_effects")
}

/// Creates the run's tables.
pub(crate) async fn create(client: &Client, run: &str) -> Result<(), String> {
    let sql = format!(
        "CREATE TABLE {a} (n bigint NOT NULL, attempt int NOT NULL, outcome text NOT NULL, \
         worker int NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), \
         due bigint NOT NULL, started bigint NOT NULL);
         CREATE TABLE {e} (n bigint PRIMARY KEY, pid int NOT NULL, \
         at timestamptz NOT NULL DEFAULT clock_timestamp());",
        a = attempts_table(run),
        e = effects_table(run)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| format!("creating the ledger tables: {e}"))
}

/// Drops the run's tables.
pub(crate) async fn drop_tables(client: &Client, run: &str) -> Result<(), String> {
    let sql = format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        attempts_table(run),
        effects_table(run)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| format!("dropping the ledger tables: {e}"))
}

impl<R: Rows> Writer<R> {
    /// Starts the writer task of worker number `worker` on the current runtime.
    pub(crate) async fn start(dsn: &str, run: &str, worker: usize) -> Result<Self, String> {
        let client = connect(dsn).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(client, dsn.to_owned(), run.to_owned(), worker, rx));
        Ok(Self { tx })
    }

    /// Records one attempt; returns once it is committed.
    pub(crate) async fn record(&self, row: R) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        let stopped = || format!("the {} writer has stopped", R::WHAT);
        self.tx.send((row, done)).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

/// The most rows one statement writes.
const GROUP: usize = 1000;

async fn writer<R: Rows>(
    mut client: Client,
    dsn: String,
    run: String,
    worker: usize,
    mut rx: mpsc::UnboundedReceiver<Pending<R>>,
) {
    let pid = std::process::id();
    let mut group: Vec<Pending<R>> = Vec::with_capacity(GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let sql = R::statement(&run, worker, pid, &group);
        let mut result = client.batch_execute(&sql).await.map_err(|e| e.to_string());
        if result.is_err() && client.is_closed() {
            // Reconnect once; the handlers retry their attempts if this fails too.
            if let Ok(c) = connect(&dsn).await {
                client = c;
                result = client.batch_execute(&sql).await.map_err(|e| e.to_string());
            }
        }
        for (_, done) in group.drain(..) {
            let _ = done.send(
                result
                    .clone()
                    .map_err(|e| format!("{} write: {e}", R::WHAT)),
            );
        }
    }
}

impl Rows for Row {
    const WHAT: &'static str = "ledger";

    /// One statement for a group: idempotent successes claim their effect, and
    /// every attempt gets its row, `dup` where the effect was already claimed.
    fn statement(run: &str, worker: usize, pid: u32, group: &[Pending<Self>]) -> String {
        let mut values = String::new();
        for (i, (r, _)) in group.iter().enumerate() {
            if i > 0 {
                values.push(',');
            }
            let _ = write!(
                values,
                "({i},{},{},'{}',{},{},{})",
                r.n,
                r.attempt,
                r.outcome.as_str(),
                r.idempotent,
                r.due_ms,
                r.started_ms
            );
        }
        // Two deliveries of one job can meet in one group: only the first may
        // claim the effect (`first`), the other is a `dup` like any re-delivery.
        format!(
        "WITH v0(i, n, attempt, outcome, idem, due, started) AS (VALUES {values}), \
         v AS (SELECT *, row_number() OVER (PARTITION BY n, idem AND outcome = 'ok' ORDER BY i) = 1 AS first FROM v0), \
         e AS (INSERT INTO {eff} (n, pid) SELECT n, {pid} FROM v \
               WHERE idem AND outcome = 'ok' AND first ON CONFLICT DO NOTHING RETURNING n) \
         INSERT INTO {att} (n, attempt, outcome, worker, pid, due, started) \
         SELECT v.n, v.attempt, \
           CASE WHEN v.idem AND v.outcome = 'ok' AND (NOT v.first OR v.n NOT IN (SELECT n FROM e)) \
             THEN 'dup' ELSE v.outcome END, {worker}, {pid}, v.due, v.started FROM v",
        eff = effects_table(run),
        att = attempts_table(run),
    )
    }
}
