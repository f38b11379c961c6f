//! `cargo xtask soak --events`: events instead of plain jobs. The driver
//! publishes `--jobs N` events, each reaching three subscriptions (three
//! `#[job(on = SoakEvent)]` handlers, two on the soak's queue and one on the
//! probes' queue), and publishes every tenth event a second time under its
//! id, as a publisher does when the answer to its first publish was lost.
//! The workers run the handlers under the same kills and restarts as the
//! plain soak, and `check` reads the event ledger: every handler ran every
//! event, the idempotent ones took effect once per event, and no event made
//! a second job for one subscription.
//!
//! A handler cannot see its job's event id (`JobContext` does not carry the
//! envelope's event), so the payload carries the event's number, unique in
//! the run, and the idempotent handlers dedupe by it, as a user would by an
//! id of their own.

mod check;

pub(crate) use check::check;

use super::drive::wait_below;
use super::plan::{SoakState, MAX_ATTEMPTS};
use super::Counts;
use jobsmith::prelude::*;
use jobsmith::{EventId, Published};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The soak's event: its number in the run.
#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(name = "soak.thing")]
pub(crate) struct SoakEvent {
    n: u64,
}

/// The three subscriptions of every event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handler {
    /// On the soak's queue; idempotent: its effect is recorded once per event.
    Mail,
    /// On the soak's queue; not idempotent: every success is an effect.
    Audit,
    /// On the probes' queue, so that a publish spans two queues; idempotent.
    Bill,
}

impl Handler {
    pub(crate) const ALL: [Handler; 3] = [Handler::Mail, Handler::Audit, Handler::Bill];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Handler::Mail => "mail",
            Handler::Audit => "audit",
            Handler::Bill => "bill",
        }
    }

    /// The handler's job name, which names its subscription.
    pub(crate) fn job(self) -> &'static str {
        match self {
            Handler::Mail => "soak_on_mail",
            Handler::Audit => "soak_on_audit",
            Handler::Bill => "soak_on_bill",
        }
    }

    pub(crate) fn idempotent(self) -> bool {
        self != Handler::Audit
    }

    fn from_str(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

/// How many first attempts of handler `h` fail for event `n`: about
/// `failure_rate` of them fail once or twice, then succeed (within the
/// handlers' six attempts).
pub(crate) fn planned_failures(seed: u64, failure_rate: f64, n: u64, h: Handler) -> u32 {
    let mut rng = fastrand::Rng::with_seed(
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (h as u64 + 1).wrapping_mul(0xD6E8_FEB8),
    );
    if rng.f64() >= failure_rate {
        0
    } else {
        rng.u32(1..=2)
    }
}

#[job(
    queue = "soak",
    retries = 5,
    backoff = "exponential(100ms, max = 2s)",
    timeout = "1s",
    on = SoakEvent
)]
pub(crate) async fn soak_on_mail(
    e: SoakEvent,
    ctx: JobContext,
    soak: State<SoakState>,
) -> Result<(), Failure> {
    handle(Handler::Mail, &e, &ctx, &soak).await
}

#[job(
    queue = "soak",
    retries = 5,
    backoff = "exponential(100ms, max = 2s)",
    timeout = "1s",
    on = SoakEvent
)]
pub(crate) async fn soak_on_audit(
    e: SoakEvent,
    ctx: JobContext,
    soak: State<SoakState>,
) -> Result<(), Failure> {
    handle(Handler::Audit, &e, &ctx, &soak).await
}

#[job(
    queue = "probes",
    retries = 5,
    backoff = "exponential(100ms, max = 2s)",
    timeout = "1s",
    on = SoakEvent
)]
pub(crate) async fn soak_on_bill(
    e: SoakEvent,
    ctx: JobContext,
    soak: State<SoakState>,
) -> Result<(), Failure> {
    handle(Handler::Bill, &e, &ctx, &soak).await
}

/// One attempt of handler `h` for event `e.n`: its row in the event ledger
/// (with the job's id, so that a second job for one subscription shows),
/// then its planned outcome.
async fn handle(
    h: Handler,
    e: &SoakEvent,
    ctx: &JobContext,
    soak: &SoakState,
) -> Result<(), Failure> {
    let ledger = soak
        .events
        .as_ref()
        .ok_or_else(|| Failure::permanent("soak: an event handler ran outside an events soak"))?;
    let attempt = ctx.attempt();
    let ok = attempt > planned_failures(soak.seed, soak.failure_rate, e.n, h);
    let row = EventRow {
        n: e.n,
        handler: h,
        attempt,
        ok,
        job: ctx.id().to_string(),
    };
    ledger.record(row).await.map_err(Failure::retryable)?;
    if ok {
        Ok(())
    } else {
        Err(Failure::retryable("soak: planned failure"))
    }
}

/// One attempt of an event handler, as it reports it.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    n: u64,
    handler: Handler,
    attempt: u32,
    /// Succeeds (`ok`, or `dup` for an idempotent handler whose effect was there already).
    ok: bool,
    /// The job's id: one per event and subscription, however often delivered.
    job: String,
}

/// A worker's handle on the event ledger: the plain soak's group writer,
/// writing event rows.
pub(crate) type EventLedger = super::ledger::Writer<EventRow>;

/// The event attempts table of `run`: one row per handler attempt.
pub(crate) fn attempts_table(run: &str) -> String {
    format!("{run}_ev_attempts")
}

/// The event effects table of `run`: the effects of the idempotent handlers, keyed by event and handler.
pub(crate) fn effects_table(run: &str) -> String {
    format!("{run}_ev_effects")
}

/// Creates the run's event tables.
pub(crate) async fn create(client: &Client, run: &str) -> Result<(), String> {
    let sql = format!(
        "CREATE TABLE {a} (n bigint NOT NULL, handler text NOT NULL, attempt int NOT NULL, \
         outcome text NOT NULL, job text NOT NULL, worker int NOT NULL, pid int NOT NULL, \
         at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE {e} (n bigint NOT NULL, handler text NOT NULL, pid int NOT NULL, \
         at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (n, handler));",
        a = attempts_table(run),
        e = effects_table(run)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| format!("creating the event ledger tables: {e}"))
}

/// Drops the run's event tables.
pub(crate) async fn drop_tables(client: &Client, run: &str) -> Result<(), String> {
    let sql = format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
        attempts_table(run),
        effects_table(run)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| format!("dropping the event ledger tables: {e}"))
}

impl super::ledger::Rows for EventRow {
    const WHAT: &'static str = "event ledger";

    /// One statement for a group, as the plain ledger's: an idempotent handler's
    /// success claims its effect (event, handler), and every attempt gets its
    /// row, `dup` where the effect was already claimed.
    fn statement(
        run: &str,
        worker: usize,
        pid: u32,
        group: &[super::ledger::Pending<Self>],
    ) -> String {
        let mut values = String::new();
        for (i, (r, _)) in group.iter().enumerate() {
            if i > 0 {
                values.push(',');
            }
            // A job id is a UUID; keep anything else out of the SQL.
            let job: String = r
                .job
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let _ = write!(
                values,
                "({i},{},'{}',{},'{}',{},'{job}')",
                r.n,
                r.handler.as_str(),
                r.attempt,
                if r.ok { "ok" } else { "fail" },
                r.handler.idempotent(),
            );
        }
        format!(
        "WITH v0(i, n, h, attempt, outcome, idem, job) AS (VALUES {values}), \
         v AS (SELECT *, row_number() OVER (PARTITION BY n, h, idem AND outcome = 'ok' ORDER BY i) = 1 AS first FROM v0), \
         e AS (INSERT INTO {eff} (n, handler, pid) SELECT n, h, {pid} FROM v \
               WHERE idem AND outcome = 'ok' AND first ON CONFLICT DO NOTHING RETURNING n, handler) \
         INSERT INTO {att} (n, handler, attempt, outcome, job, worker, pid) \
         SELECT v.n, v.h, v.attempt, \
           CASE WHEN v.idem AND v.outcome = 'ok' AND (NOT v.first OR (v.n, v.h) NOT IN (SELECT n, handler FROM e)) \
             THEN 'dup' ELSE v.outcome END, v.job, {worker}, {pid} FROM v",
        eff = effects_table(run),
        att = attempts_table(run),
    )
    }
}

/// What the driver did.
#[derive(Debug, Default)]
pub(crate) struct Driven {
    /// Events published.
    pub(crate) events: u64,
    /// Events published a second time under their id.
    pub(crate) republished: u64,
    /// Publishes (first or again) that did not reach all three subscriptions.
    pub(crate) reached_wrong: u64,
    /// Publishes that failed (the run has no broker restarts: none should).
    pub(crate) failed: u64,
    /// Examples of each problem, for the log.
    pub(crate) examples: Vec<String>,
}

impl Driven {
    fn note(&mut self, what: String) {
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }

    fn answer(&mut self, what: &str, n: u64, p: &Published) {
        if p.reached != Handler::ALL.len() {
            self.reached_wrong += 1;
            self.note(format!(
                "{what} of event {n} ({}) reached {} subscriptions, not {}",
                p.id,
                p.reached,
                Handler::ALL.len()
            ));
        }
    }
}

/// Every tenth event is published again under its id: half right after
/// their wave, half a wave later, when their jobs may have completed.
fn republished(n: u64) -> bool {
    n % 10 == 3
}

/// Waits until the workers have registered the three subscriptions.
pub(crate) async fn wait_for_subscriptions(app: &App) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let subs = app.subscriptions().await.unwrap_or_default();
        if Handler::ALL
            .iter()
            .all(|h| subs.iter().any(|s| s.job == h.job()))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                "the workers had not registered the three subscriptions after 120 s".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `events` events in waves of `wave` (with `publish_all`),
/// keeping the queues below `depth_limit` jobs, and the republished ones
/// again under their ids.
pub(crate) async fn drive(
    app: &App,
    events: u64,
    wave: u64,
    depth_limit: u64,
    counts: &Counts,
    started: Instant,
) -> Driven {
    let mut done = Driven::default();
    let mut later: Vec<(u64, EventId)> = Vec::new();
    let mut next = 0;
    let mut last_report = Instant::now();
    while next < events {
        wait_below(app, depth_limit).await;
        let end = (next + wave).min(events);
        match app.publish_all((next..end).map(|n| SoakEvent { n })).await {
            Ok(answers) => {
                // The last wave's held-back events: their jobs may have run by now.
                let previous = std::mem::take(&mut later);
                let mut now = Vec::new();
                for (n, p) in (next..end).zip(&answers) {
                    done.answer("the publish", n, p);
                    if republished(n) {
                        if n % 20 == 3 {
                            now.push((n, p.id.clone()));
                        } else {
                            later.push((n, p.id.clone()));
                        }
                    }
                }
                done.events += end - next;
                for (n, id) in now.into_iter().chain(previous) {
                    republish(app, &mut done, n, id).await;
                }
            }
            Err(e) => {
                done.failed += 1;
                done.note(format!("publishing events {next}..{end} failed: {e}"));
                counts.enqueue_retries.fetch_add(1, Ordering::Relaxed);
            }
        }
        next = end;
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "soak: {next} of {events} events published after {:.0} s, {} kills, {} restarts",
                started.elapsed().as_secs_f64(),
                counts.kills.load(Ordering::Relaxed),
                counts.restarts.load(Ordering::Relaxed),
            );
        }
    }
    for (n, id) in std::mem::take(&mut later) {
        republish(app, &mut done, n, id).await;
    }
    done
}

/// Publishes event `n` again under `id`, as after a lost answer.
async fn republish(app: &App, done: &mut Driven, n: u64, id: EventId) {
    match app.publish(SoakEvent { n }).id(id).await {
        Ok(p) => {
            done.republished += 1;
            done.answer("the second publish", n, &p);
        }
        Err(e) => {
            done.failed += 1;
            done.note(format!("publishing event {n} again failed: {e}"));
        }
    }
}

/// Removes the three subscriptions, so that nothing of the run reaches later ones.
pub(crate) async fn unsubscribe(app: &App) {
    for h in Handler::ALL {
        let _ = app.unsubscribe(h.job()).await;
    }
}

/// The attempts a handler's policy allows in all.
pub(crate) const HANDLER_ATTEMPTS: u32 = MAX_ATTEMPTS;

/// What an events soak takes over from [`super::soak`] once its workers,
/// chaos and ledger are up.
pub(super) struct Run {
    pub(super) o: super::options::Options,
    pub(super) run: String,
    pub(super) started: Instant,
    pub(super) app: App,
    pub(super) injector: super::inject::Injector,
    pub(super) pg: Client,
    pub(super) pool: std::sync::Arc<tokio::sync::Mutex<super::workers::Pool>>,
    pub(super) counts: std::sync::Arc<Counts>,
    pub(super) chaos: Vec<tokio::task::JoinHandle<()>>,
    pub(super) ending: tokio::sync::watch::Sender<bool>,
    pub(super) restarter: Option<tokio::task::JoinHandle<()>>,
    pub(super) broker: std::sync::Arc<std::sync::Mutex<Option<super::broker::Broker>>>,
    pub(super) log_dir: std::path::PathBuf,
    pub(super) wave: u64,
    pub(super) depth_limit: u64,
}

/// The rest of an events soak: publish, drain, stop, check, print its line, clean up.
pub(super) async fn run(r: Run) -> Result<bool, String> {
    let Run {
        o,
        run,
        started,
        app,
        injector,
        pg,
        pool,
        counts,
        chaos,
        ending,
        restarter,
        broker,
        log_dir,
        wave,
        depth_limit,
    } = r;
    // Three jobs per event: waves of a third as many events keep the queues
    // as shallow.
    let wave = (wave / 3).max(1);
    let ready = wait_for_subscriptions(&app).await;
    let driven = match &ready {
        Ok(()) => drive(&app, o.jobs, wave, depth_limit, &counts, started).await,
        Err(e) => Driven {
            failed: 1,
            examples: vec![e.clone()],
            ..Driven::default()
        },
    };
    eprintln!(
        "soak: all {} events published after {:.0} s; waiting for the queues to drain",
        driven.events,
        started.elapsed().as_secs_f64()
    );
    let left = super::drive::drain(&app, &pg, &run, Instant::now(), &counts).await;
    let (pool, elapsed) = super::wind_down(&ending, restarter, chaos, pool, started).await?;
    let f = check(&app, &pg, &run, o.seed, o.failure_rate, o.jobs, left).await?;
    let deaths = pool.unexpected.len();
    let unclean = super::take_unclean(&counts);
    let pass = f.pass(&driven) && deaths == 0 && unclean.is_empty();
    for e in driven.examples.iter().chain(&f.examples) {
        eprintln!("soak: problem: {e}");
    }
    for d in pool.unexpected.iter().chain(&unclean) {
        eprintln!("soak: problem: {d}");
    }
    let jobs = driven.events * Handler::ALL.len() as u64;
    println!(
        "soak events backend={} events={} jobs={} workers={} kills={} restarts={} (slowest stop {:.1} s, unclean: {}) republished={} reached_wrong={} publish_failed={} lost={} second_jobs={} (unkeyed, republished: {}) idempotency_broken={} duplicates={} (absorbed by idempotency: {}) attempts={} attempts_over_policy={} dead={} unexpected_worker_deaths={} seconds={:.0} events_per_s={:.0} jobs_per_s={:.0} {}",
        o.backend,
        driven.events,
        jobs,
        o.workers,
        counts.kills.load(Ordering::Relaxed),
        counts.restarts.load(Ordering::Relaxed),
        counts.slowest_stop_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        unclean.len(),
        driven.republished,
        driven.reached_wrong,
        driven.failed,
        f.lost,
        f.second_jobs,
        f.second_jobs_unkeyed,
        f.idempotency_broken,
        f.duplicates,
        f.absorbed,
        f.attempts,
        f.attempts_wrong,
        f.dead,
        deaths,
        elapsed.as_secs_f64(),
        driven.events as f64 / elapsed.as_secs_f64(),
        jobs as f64 / elapsed.as_secs_f64(),
        if pass { "PASS" } else { "FAIL" }
    );

    unsubscribe(&app).await;
    if pass && !o.keep {
        let _ = super::ledger::drop_tables(&pg, &run).await;
        let _ = drop_tables(&pg, &run).await;
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        eprintln!(
            "soak: kept the event ledger tables {} and {}, and the worker logs in {}",
            attempts_table(&run),
            effects_table(&run),
            log_dir.display()
        );
    }
    match &injector {
        super::inject::Injector::Sqs(b) => {
            let _ = b.delete_all_queues().await;
            let _ = b.delete_key_table().await;
        }
        super::inject::Injector::Amqp(_) if broker.lock().is_ok_and(|b| b.is_none()) => {
            let url = super::env_or("JOBSMITH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
            crate::bench::forget_amqp_namespace(&url, &run).await;
        }
        _ => {}
    }
    drop(app);
    drop(injector);
    super::stop_own_broker(&broker).await?;
    Ok(pass)
}
