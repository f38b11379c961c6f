//! Cron schedules on every backend: however many workers run, each tick
//! enqueues exactly one job, with the schedule's fixed arguments; a restart
//! of one worker, or of all, neither loses a tick nor doubles one; ticks
//! missed while no worker ran are skipped or caught up once, by policy; the
//! schedule's state is readable through `jobsmith::schedules`.
//!
//! On Redis, RabbitMQ and SQS the workers are three processes (this test
//! binary, re-executed); on memory, which lives in one process, three
//! `Worker`s share one `App`. Each run appends its tick to a file, and the
//! tests judge by ticks, not by wall-clock tolerances.
#![allow(clippy::print_stdout)] // the child reports to the parent on stdout

use jobsmith::prelude::*;
use jobsmith::{Registry, ScheduleInfo, Worker};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CHILD_ENV: &str = "JOBSMITH_SCHEDULE_CHILD";
const QUEUE: &str = "sched_ticks";
const NAME: &str = "ticks";

/// Where runs record their ticks: one line per run, the tick in unix
/// seconds, the job's id (which tells a second enqueue from a redelivery)
/// and, for a job with arguments, the arguments it ran with.
#[derive(Debug)]
struct TickLog(PathBuf);

impl TickLog {
    fn record(
        &self,
        tick: jobsmith::Timestamp,
        id: &jobsmith::JobId,
        args: &str,
    ) -> Result<(), String> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .map_err(|e| e.to_string())?;
        let line = format!("{} {id} {args}", tick.as_millis() / 1000);
        // One short write to a file opened for appending: lines never interleave.
        f.write_all(format!("{}\n", line.trim_end()).as_bytes())
            .map_err(|e| e.to_string())
    }
}

#[job(queue = "sched_ticks")]
async fn record_tick(ctx: JobContext, log: State<TickLog>) -> Result<(), String> {
    log.record(ctx.scheduled_for(), ctx.id(), "")
}

/// A job with arguments, scheduled with fixed ones: records what it got.
#[job(queue = "sched_ticks")]
async fn record_args(
    days: u32,
    region: String,
    ctx: JobContext,
    log: State<TickLog>,
) -> Result<(), String> {
    log.record(ctx.scheduled_for(), ctx.id(), &format!("{days} {region}"))
}

/// The arguments the schedule of `record_args` fixes, as the log records them.
const FIXED_ARGS: &str = "7 eu";

/// The attribute form, run on memory.
#[job(cron = "* * * * * *", queue = "sched_attr")]
async fn every_second(ctx: JobContext, log: State<TickLog>) -> Result<(), String> {
    log.record(ctx.scheduled_for(), ctx.id(), "")
}

/// The attribute form with no tick to come: a worker that has it refuses to start.
#[job(cron = "0 0 0 1 1 * 2020", queue = "sched_attr")]
async fn new_year_2020() {}

/// What a schedule under test enqueues at each tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheduled {
    /// `record_tick`, which takes no arguments.
    Tick,
    /// `record_args` with the fixed arguments [`FIXED_ARGS`].
    FixedArgs,
}

impl Scheduled {
    fn as_str(self) -> &'static str {
        match self {
            Scheduled::Tick => "tick",
            Scheduled::FixedArgs => "fixed_args",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "fixed_args" {
            Scheduled::FixedArgs
        } else {
            Scheduled::Tick
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn fresh_log() -> PathBuf {
    std::env::temp_dir().join(format!(
        "jobsmith-sched-{}-{:x}.log",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// The ticks recorded so far, in order of recording.
fn ticks(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// How many jobs ran for each tick: distinct job ids, so that a job run
/// twice because its worker was killed before its ack landed (the queue's
/// at-least-once delivery, the same job) counts once, while a second job
/// enqueued for one tick (the schedule's fault) counts twice.
/// Jobs per tick from the first tick in the log up to `last`, and what one
/// job per tick over that span would be.
fn runs_up_to(log: &Path, last: u64) -> (BTreeMap<u64, usize>, BTreeMap<u64, usize>) {
    let runs: BTreeMap<u64, usize> = runs_per_tick(log)
        .into_iter()
        .filter(|(t, _)| *t <= last)
        .collect();
    let first = *runs.keys().next().unwrap();
    let expected = (first..=last).map(|t| (t, 1)).collect();
    (runs, expected)
}

fn runs_per_tick(log: &Path) -> BTreeMap<u64, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let jobs: std::collections::BTreeSet<(u64, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.parse().ok()?, parts.next()?))
        })
        .collect();
    let mut runs = BTreeMap::new();
    for (t, _) in jobs {
        *runs.entry(t).or_default() += 1;
    }
    runs
}

/// Waits until `done` holds for the recorded ticks; panics after `limit`.
async fn wait_ticks(log: &Path, limit: Duration, what: &str, done: impl Fn(&[u64]) -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done(&ticks(log)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {limit:?} for {what}; recorded ticks: {:?}",
            ticks(log)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Gives the worker that ran the last tick time to acknowledge it before
/// the workers are killed: a job killed unacknowledged is delivered again
/// (at least once), which would be the queue's doing, not the schedule's.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

/// Sleeps until the wall clock reaches `at_ms`.
async fn sleep_until_ms(at_ms: u64) {
    let now = now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// A backend to run the schedule on.
#[derive(Clone, Debug)]
enum Target {
    /// One in-process app, shared by every worker and kept across restarts.
    Memory(App),
    /// A broker URL with a fresh namespace; workers are child processes.
    Url(String),
}

impl Target {
    fn memory() -> Self {
        Target::Memory(App::memory())
    }

    fn redis() -> Self {
        let base = std::env::var("JOBSMITH_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        Target::Url(format!("{base}?prefix={}", fresh_prefix()))
    }

    fn amqp() -> Self {
        let base = std::env::var("JOBSMITH_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        // Every queue of the prefix goes away once unused for a minute.
        Target::Url(format!("{base}?prefix={}&expires=60s", fresh_prefix()))
    }

    fn sqs() -> Self {
        let endpoint = std::env::var("JOBSMITH_SQS_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
        Target::Url(format!(
            "sqs://us-east-1?prefix={}&endpoint={endpoint}",
            fresh_prefix()
        ))
    }

    async fn app(&self) -> App {
        match self {
            Target::Memory(app) => app.clone(),
            Target::Url(url) => connect(url).await,
        }
    }

    /// Starts three workers running the schedule `expr` of `record_tick`
    /// with policy `missed`.
    fn start(&self, log: &Path, expr: &str, missed: Missed) -> Workers {
        self.start_job(log, expr, missed, Scheduled::Tick)
    }

    /// Starts three workers running the schedule `expr` of `job`.
    fn start_job(&self, log: &Path, expr: &str, missed: Missed, job: Scheduled) -> Workers {
        match self {
            Target::Memory(app) => Workers::Tasks(
                (0..3)
                    .map(|_| memory_worker(app, log, expr, missed, job))
                    .collect(),
            ),
            Target::Url(url) => {
                // Start all three, then wait for each: starts overlap.
                let started: Vec<Child> = (0..3)
                    .map(|_| spawn_child(url, log, expr, missed, job))
                    .collect();
                let children = started.into_iter().map(wait_ready).collect::<Vec<_>>();
                Workers::Procs(Procs(children))
            }
        }
    }

    /// Deletes what the test left on the broker.
    async fn clean_up(&self) {
        let Target::Url(url) = self else { return };
        if url.starts_with("redis") {
            let prefix = url.split("prefix=").nth(1).unwrap_or_default();
            let base = url.split('?').next().unwrap_or_default();
            let client = ::redis::Client::open(base).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            for pattern in [format!("{prefix}:*"), format!("{{{prefix}:*")] {
                let keys: Vec<String> = ::redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    let _: () = ::redis::cmd("DEL")
                        .arg(keys)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            }
        } else if url.starts_with("sqs") {
            let b = jobsmith_sqs::SqsBackend::connect(url).await.unwrap();
            let _ = b.delete_all_queues().await;
            let _ = b.delete_key_table().await;
        }
        // RabbitMQ: the queues expire on their own (`expires=60s`).
    }
}

fn fresh_prefix() -> String {
    format!("sched{:010x}", fastrand::u64(..) >> 24)
}

async fn connect(url: &str) -> App {
    if url.starts_with("redis") {
        App::new(jobsmith_redis::RedisBackend::connect(url).await.unwrap())
    } else if url.starts_with("amqp") {
        App::new(jobsmith_amqp::AmqpBackend::connect(url).await.unwrap())
    } else {
        App::new(jobsmith_sqs::SqsBackend::connect(url).await.unwrap())
    }
}

/// A worker that enqueues `job` every tick of `expr`, and runs it.
fn worker(app: &App, log: &Path, expr: &str, missed: Missed, job: Scheduled) -> Worker {
    let cron = Cron::new(expr).unwrap().missed(missed);
    let registry = Registry::from_defs([
        <record_tick as jobsmith::Job>::DEF,
        <record_args as jobsmith::Job>::DEF,
    ])
    .unwrap();
    let enqueue = match job {
        Scheduled::Tick => record_tick.delay(),
        Scheduled::FixedArgs => record_args.delay(7, "eu".into()),
    };
    // A short lease: on SQS, a receive that a killed worker left waiting on
    // the server can still take a message, which then comes back only when
    // its lease (visibility) runs out.
    app.worker()
        .registry(registry)
        .queues([QUEUE])
        .lease(Duration::from_secs(5))
        .state(TickLog(log.to_owned()))
        .schedule_cron(NAME, cron, enqueue)
}

/// A worker on the in-process app, with a stop signal of its own.
fn memory_worker(app: &App, log: &Path, expr: &str, missed: Missed, job: Scheduled) -> Task {
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let worker = worker(app, log, expr, missed, job).stop_on(async move {
        let _ = rx.wait_for(|s| *s).await;
    });
    (stop, tokio::spawn(async move { worker.run().await }))
}

/// A worker running in this process: its stop signal and its task.
type Task = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<jobsmith::Result<()>>,
);

/// Three workers.
enum Workers {
    Tasks(Vec<Task>),
    Procs(Procs),
}

impl Workers {
    /// Stops every worker: a stop signal in process, a kill (no grace) for processes.
    async fn stop(self) {
        match self {
            Workers::Tasks(tasks) => {
                for (stop, _) in &tasks {
                    stop.send_replace(true);
                }
                for (_, t) in tasks {
                    t.await.unwrap().unwrap();
                }
            }
            Workers::Procs(children) => drop(children),
        }
    }

    /// Stops the oldest worker (SIGKILL for a process: no grace, no goodbye;
    /// a stop signal in process) and starts another in its place, while the
    /// other two keep running.
    async fn restart_one(&mut self, target: &Target, log: &Path, expr: &str, missed: Missed) {
        match (self, target) {
            (Workers::Tasks(tasks), Target::Memory(app)) => {
                let (stop, task) = tasks.remove(0);
                stop.send_replace(true);
                task.await.unwrap().unwrap();
                tasks.push(memory_worker(app, log, expr, missed, Scheduled::Tick));
            }
            (Workers::Procs(procs), Target::Url(url)) => {
                let mut child = procs.0.remove(0);
                child.kill().unwrap();
                child.wait().unwrap();
                let child = spawn_child(url, log, expr, missed, Scheduled::Tick);
                procs.0.push(wait_ready(child));
            }
            _ => unreachable!("workers run where their target is"),
        }
    }
}

/// Child workers, killed when dropped: also when a test fails half-way.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The child: a worker on the URL, until it is killed.
#[test]
#[ignore = "run by the schedule tests as a child process"]
fn schedule_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: Vec<String> = serde_json::from_str(&spec).unwrap();
    let [url, log, expr, missed, job] = &spec[..] else {
        panic!("bad child spec {spec:?}");
    };
    let missed = if missed == "catch_up" {
        Missed::CatchUp
    } else {
        Missed::Skip
    };
    // Warnings (a tick that could not be enqueued) go to the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("jobsmith=info,jobsmith_core=info")
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let app = connect(url).await;
        let w = worker(&app, Path::new(log), expr, missed, Scheduled::parse(job));
        println!("READY");
        w.run().await.unwrap();
    });
}

/// Starts a child worker.
fn spawn_child(url: &str, log: &Path, expr: &str, missed: Missed, job: Scheduled) -> Child {
    let spec = serde_json::to_string(&[
        url,
        &log.display().to_string(),
        expr,
        missed.as_str(),
        job.as_str(),
    ])
    .unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "schedule_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a child worker is connected.
fn wait_ready(mut child: Child) -> Child {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.by_ref().any(|l| l.is_ok_and(|l| l.contains("READY")));
    assert!(ready, "the child worker did not start");
    // Keep draining, so that the child never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

// --- The scenarios, each run on every backend ---

/// Three workers over at least six one-second ticks: every tick between the
/// first and the last recorded ran exactly once, and the stored state
/// names the last tick and its job.
async fn three_workers_one_run_per_tick(target: Target) {
    let log = fresh_log();
    let workers = target.start(&log, "* * * * * *", Missed::Skip);
    wait_ticks(&log, Duration::from_secs(20), "six ticks", |t| {
        runs_per_tick_of(t).len() >= 6
    })
    .await;
    // A tick's job can run before its worker has recorded the tick (on a
    // slow backend, a few calls later): stop once the state has it.
    let last_run = *ticks(&log).iter().max().unwrap();
    wait_fired(&target.app().await, last_run).await;
    workers.stop().await;
    let runs = runs_per_tick(&log);
    let doubled: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "ticks that ran more than once (tick, runs): {doubled:?}"
    );
    let (first, last) = (*runs.keys().next().unwrap(), *runs.keys().last().unwrap());
    let missing: Vec<u64> = (first..=last).filter(|t| !runs.contains_key(t)).collect();
    assert!(
        missing.is_empty(),
        "ticks that never ran: {missing:?} (runs: {runs:?})"
    );

    let app = target.app().await;
    let state = jobsmith::schedules(&app).await.unwrap();
    let info = state
        .iter()
        .find(|s| s.name == NAME)
        .unwrap_or_else(|| panic!("the schedule's state is stored: {state:?}"));
    let prev = info
        .prev
        .expect("a fired schedule has a previous tick")
        .as_millis()
        / 1000;
    assert!(
        prev >= last,
        "the state's previous tick {prev} is the last fired (last run {last})"
    );
    assert_eq!(info.next.map(|t| t.as_millis() / 1000), Some(prev + 1));
    assert!(
        info.last_job.is_some(),
        "the state names the last job enqueued"
    );
    assert_eq!(
        (info.job.as_str(), info.expr.as_str(), info.missed),
        ("record_tick", "* * * * * *", Missed::Skip)
    );
    let table = ScheduleInfo::table(&state);
    assert!(
        table.contains(NAME) && table.contains("record_tick"),
        "{table}"
    );
    target.clean_up().await;
    let _ = std::fs::remove_file(&log);
}

fn runs_per_tick_of(ticks: &[u64]) -> BTreeMap<u64, usize> {
    let mut runs = BTreeMap::new();
    for t in ticks {
        *runs.entry(*t).or_default() += 1;
    }
    runs
}

/// Every worker is killed just after a tick and three start again before
/// the next: no tick is lost and none runs twice.
async fn restart_between_ticks(target: Target) {
    let log = fresh_log();
    let expr = "*/3 * * * * *";
    let workers = target.start(&log, expr, Missed::Skip);
    wait_ticks(&log, Duration::from_secs(15), "two ticks", |t| {
        runs_per_tick_of(t).len() >= 2
    })
    .await;
    let before = *ticks(&log).iter().max().unwrap();
    let app = target.app().await;
    wait_fired(&app, before).await;
    settle().await;
    workers.stop().await;
    let before = fired(&app).await.expect("a tick was fired");
    let workers = target.start(&log, expr, Missed::Skip);
    let restarted = now_ms();
    assert!(
        restarted < (before + 3) * 1000,
        "the workers took {} ms to start again, past the next tick: too loaded a machine to judge",
        restarted - before * 1000
    );
    // Waits for every tick up to the last, too: on SQS a receive that a
    // killed worker left waiting on the server can take the first tick after
    // the restart, which then runs when its lease (5 s) runs out.
    wait_ticks(
        &log,
        Duration::from_secs(20),
        "two ticks after the restart, and every tick before them",
        |t| {
            let (Some(first), Some(last)) = (t.iter().min(), t.iter().max()) else {
                return false;
            };
            t.iter().filter(|&&x| x > before).count() >= 2
                && (*first..=*last).step_by(3).all(|x| t.contains(&x))
        },
    )
    .await;
    workers.stop().await;
    let runs = runs_per_tick(&log);
    let (first, last) = (*runs.keys().next().unwrap(), *runs.keys().last().unwrap());
    let expected: BTreeMap<u64, usize> = (first..=last).step_by(3).map(|t| (t, 1)).collect();
    assert_eq!(runs, expected, "across a restart every tick runs exactly once (tick -> runs), restarted after tick {before}");
    target.clean_up().await;
    let _ = std::fs::remove_file(&log);
}

/// Whether `ticks` holds at least `n` ticks, with none missing between the
/// first and the last.
fn unbroken(ticks: &[u64], n: usize) -> bool {
    let (Some(&first), Some(&last)) = (ticks.iter().min(), ticks.iter().max()) else {
        return false;
    };
    (first..=last).all(|t| ticks.contains(&t)) && runs_per_tick_of(ticks).len() >= n
}

/// A schedule of a job with fixed arguments, as the `#[job]` guide shows it
/// (`record_args.delay(7, "eu".into())`), run by three workers on a
/// one-second schedule: every tick runs exactly once, with exactly those
/// arguments.
async fn fixed_arguments_on_every_tick(target: Target) {
    let log = fresh_log();
    let workers = target.start_job(&log, "* * * * * *", Missed::Skip, Scheduled::FixedArgs);
    wait_ticks(&log, Duration::from_secs(30), "four unbroken ticks", |t| {
        unbroken(t, 4)
    })
    .await;
    let last = *ticks(&log).iter().max().unwrap();
    workers.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let mut fields = line.splitn(3, ' ');
        let (tick, _id, args) = (fields.next(), fields.next(), fields.next());
        assert_eq!(
            args,
            Some(FIXED_ARGS),
            "the run for tick {tick:?} got the schedule's arguments; log:\n{text}"
        );
    }
    // Judge the ticks up to the last seen running: a later one may have been
    // taken, and not yet run, by a worker killed at the end.
    let (runs, expected) = runs_up_to(&log, last);
    assert_eq!(runs, expected, "each tick ran once (tick -> runs)");
    target.clean_up().await;
    let _ = std::fs::remove_file(&log);
}

/// Three workers on a one-second schedule; one of them is killed (SIGKILL;
/// on memory, stopped) just after a tick and started again while the other
/// two keep running. Over the first tick recorded to the fifth and more
/// after the restart, every tick runs exactly once: the restart neither
/// loses a tick nor doubles one.
async fn one_of_three_restarted(target: Target) {
    let log = fresh_log();
    let expr = "* * * * * *";
    let mut workers = target.start(&log, expr, Missed::Skip);
    wait_ticks(&log, Duration::from_secs(30), "two unbroken ticks", |t| {
        unbroken(t, 2)
    })
    .await;
    let app = target.app().await;
    let before = *ticks(&log).iter().max().unwrap();
    wait_fired(&app, before).await;
    workers.restart_one(&target, &log, expr, Missed::Skip).await;
    // Ticks after this second ran with the restarted worker up.
    let restarted = now_ms() / 1000;
    // Waits for every tick up to the last, too: on SQS a receive that the
    // killed worker left waiting on the server can take a tick after the
    // kill, which then runs when its lease (5 s) runs out.
    wait_ticks(
        &log,
        Duration::from_secs(60),
        "five ticks after the restart, and every tick before them",
        |t| unbroken(t, 2) && runs_per_tick_of(t).range(restarted + 1..).count() >= 5,
    )
    .await;
    let last = *ticks(&log).iter().max().unwrap();
    // The state records the last tick, so no worker is killed half-way
    // through firing one that has already run.
    wait_fired(&app, last).await;
    workers.stop().await;
    // Judge the ticks up to the last seen running: a later one may have been
    // taken, and not yet run, by a worker killed at the end.
    let (runs, expected) = runs_up_to(&log, last);
    assert_eq!(
        runs,
        expected,
        "with one worker of three killed after tick {before} and restarted by {restarted}, every tick runs exactly once (tick -> runs); log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    target.clean_up().await;
    let _ = std::fs::remove_file(&log);
}

/// Every worker is killed just after a tick P and none runs over the next
/// two ticks; then three start again before the third. With `skip`, the
/// two missed ticks never run; with `catch_up`, the later of them runs
/// once; the ticks after the restart run once each.
async fn missed_ticks(target: Target, missed: Missed) {
    let log = fresh_log();
    let expr = "*/3 * * * * *";
    let workers = target.start(&log, expr, missed);
    wait_ticks(&log, Duration::from_secs(15), "a first tick", |t| {
        !t.is_empty()
    })
    .await;
    let t0 = ticks(&log)[0];
    let app = target.app().await;
    wait_fired(&app, t0).await;
    settle().await;
    workers.stop().await;
    // The last tick fired before every worker was gone.
    let p = fired(&app).await.expect("a tick was fired");
    // Down over the next two ticks.
    sleep_until_ms((p + 6) * 1000 + 300).await;
    let workers = target.start(&log, expr, missed);
    let restarted = now_ms();
    assert!(
        restarted < (p + 9) * 1000,
        "the workers took until {restarted} ms to start again, past the next tick: too loaded a machine to judge"
    );
    wait_ticks(
        &log,
        Duration::from_secs(15),
        "two ticks after the restart",
        |t| t.contains(&(p + 12)),
    )
    .await;
    if matches!(&target, Target::Url(url) if url.starts_with("sqs")) {
        // A message taken by a receive that a killed worker left waiting on
        // the server comes back when its lease runs out.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    workers.stop().await;
    let runs: BTreeMap<u64, usize> = runs_per_tick(&log)
        .into_iter()
        .filter(|(t, _)| *t <= p + 12)
        .collect();
    // The first tick's job may run after the second's: count from the earliest.
    let first = runs.keys().next().copied().unwrap_or(t0).min(t0);
    let mut expected: Vec<u64> = (first..=p).step_by(3).collect();
    if missed == Missed::CatchUp {
        expected.push(p + 6);
    }
    expected.extend([p + 9, p + 12]);
    let expected: BTreeMap<u64, usize> = expected.into_iter().map(|t| (t, 1)).collect();
    assert_eq!(
        runs,
        expected,
        "with `{missed}`, down over ticks {} and {} (tick -> runs); log:\n{}",
        p + 3,
        p + 6,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    target.clean_up().await;
    let _ = std::fs::remove_file(&log);
}

/// The last tick the stored state says was fired, in unix seconds.
async fn fired(app: &App) -> Option<u64> {
    let state = jobsmith::schedules(app).await.unwrap();
    state
        .iter()
        .find(|s| s.name == NAME)
        .and_then(|s| s.prev)
        .map(|t| t.as_millis() / 1000)
}

/// Waits until the stored state records tick `tick` as fired.
async fn wait_fired(app: &App, tick: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fired(app).await.is_none_or(|p| p < tick) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stored state never recorded tick {tick}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! on_every_backend {
    ($($backend:ident),*) => {
        $(
            mod $backend {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn three_workers_run_each_tick_exactly_once() {
                    three_workers_one_run_per_tick(Target::$backend()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn fixed_arguments_arrive_on_every_tick() {
                    fixed_arguments_on_every_tick(Target::$backend()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_restart_between_ticks_loses_and_doubles_nothing() {
                    restart_between_ticks(Target::$backend()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn one_worker_restarted_among_three_loses_and_doubles_nothing() {
                    one_of_three_restarted(Target::$backend()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn missed_ticks_are_skipped() {
                    missed_ticks(Target::$backend(), Missed::Skip).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn the_last_missed_tick_is_caught_up_once() {
                    missed_ticks(Target::$backend(), Missed::CatchUp).await;
                }
            }
        )*
    };
}

on_every_backend!(memory, redis, amqp, sqs);

/// The attribute form: `#[job(cron = ..)]` is picked up by every worker
/// whose registry holds the job, and runs once per tick among three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_schedule_runs_once_per_tick() {
    let log = Arc::new(fresh_log());
    let app = App::memory();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let mut rx = rx.clone();
            let worker = app
                .worker()
                .registry(Registry::from_defs([<every_second as jobsmith::Job>::DEF]).unwrap())
                .state(TickLog(log.to_path_buf()))
                .stop_on(async move {
                    let _ = rx.wait_for(|s| *s).await;
                });
            tokio::spawn(worker.run())
        })
        .collect();
    wait_ticks(&log, Duration::from_secs(15), "four ticks", |t| {
        runs_per_tick_of(t).len() >= 4
    })
    .await;
    stop.send_replace(true);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let runs = runs_per_tick(&log);
    let (first, last) = (*runs.keys().next().unwrap(), *runs.keys().last().unwrap());
    let expected: BTreeMap<u64, usize> = (first..=last).map(|t| (t, 1)).collect();
    assert_eq!(runs, expected, "each tick ran once (tick -> runs)");
    let state = jobsmith::schedules(&app).await.unwrap();
    let info = state
        .iter()
        .find(|s| s.name == "every_second")
        .expect("stored");
    assert_eq!((info.tz.as_str(), info.missed), ("UTC", Missed::Skip));
    let _ = std::fs::remove_file(&*log);
}

/// A malformed runtime expression stops the worker at once, saying how to write it.
#[tokio::test]
async fn a_bad_runtime_expression_is_a_clear_error() {
    let app = App::memory();
    let err = app
        .worker()
        .registry(Registry::from_defs([<record_tick as jobsmith::Job>::DEF]).unwrap())
        .schedule("*/5 * * * *", record_tick.delay())
        .run()
        .await
        .expect_err("a five-field expression is refused");
    let message = err.to_string();
    assert!(matches!(err, jobsmith::Error::Schedule(_)), "{err:?}");
    assert!(
        message.contains("record_tick") && message.contains("write \"0 */5 * * * *\""),
        "{message}"
    );
    let err = Cron::new("0 0 3 * * *")
        .and_then(|c| c.tz("Europe/Atlantis"))
        .expect_err("an unknown zone is refused");
    assert!(err.to_string().contains("IANA time zone"), "{err}");
}

/// An expression with no tick to come (a year in the past) would never
/// fire: the worker refuses to start, naming the schedule and saying what
/// to do, for a runtime schedule and for the attribute form alike.
#[tokio::test]
async fn an_expression_with_no_tick_to_come_is_a_clear_error() {
    let app = App::memory();
    let registry = || Registry::from_defs([<record_tick as jobsmith::Job>::DEF]).unwrap();
    let err = app
        .worker()
        .registry(registry())
        .schedule("0 0 0 1 1 * 2020", record_tick.delay())
        .run()
        .await
        .expect_err("a schedule that never fires is refused");
    assert!(matches!(err, jobsmith::Error::Schedule(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("schedule `record_tick`")
            && message.contains("has no tick after now")
            && message.contains("fix the expression"),
        "{message}"
    );

    let err = app
        .worker()
        .registry(registry())
        .schedule_cron(
            "new-year-2020",
            Cron::new("0 0 0 1 1 * 2020").unwrap(),
            record_tick.delay(),
        )
        .run()
        .await
        .expect_err("a named schedule that never fires is refused");
    assert!(err.to_string().contains("`new-year-2020`"), "{err}");

    let err = app
        .worker()
        .registry(Registry::from_defs([<new_year_2020 as jobsmith::Job>::DEF]).unwrap())
        .run()
        .await
        .expect_err("an attribute schedule that never fires is refused");
    let message = err.to_string();
    assert!(
        message.contains("job `new_year_2020`") && message.contains("#[job(cron = ..)]"),
        "{message}"
    );
}

/// A stored state that cannot be read (written by a later version, say)
/// does not fail the listing: that schedule is listed with its state
/// unknown, and with its configuration when the binary links it; a worker
/// running the schedule rewrites the state (when it starts, and at each tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_is_listed_as_unknown_until_a_tick_rewrites_it() {
    let app = App::memory();
    for name in ["from_the_future", "every_second", NAME] {
        app.backend()
            .meta()
            .expect("the backend has it")
            .put_meta(&format!("schedule:{name}"), b"{\"format\": 2}")
            .await
            .unwrap();
    }
    let listed = jobsmith::schedules(&app)
        .await
        .expect("the listing succeeds");
    let find = |name: &str| {
        listed
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is listed: {listed:?}"))
    };
    let unknown = find("from_the_future");
    assert!(unknown.unreadable.is_some(), "{unknown:?}");
    assert_eq!(
        (
            unknown.job.as_str(),
            unknown.prev,
            unknown.last_job.as_ref()
        ),
        ("?", None, None)
    );
    // Linked into this binary: its configuration is known, its state is not.
    let linked = find("every_second");
    assert!(linked.unreadable.is_some(), "{linked:?}");
    assert_eq!(
        (
            linked.job.as_str(),
            linked.expr.as_str(),
            linked.tz.as_str()
        ),
        ("every_second", "* * * * * *", "UTC")
    );
    let table = ScheduleInfo::table(&listed);
    let row = table
        .lines()
        .find(|l| l.starts_with("from_the_future"))
        .unwrap_or_else(|| panic!("a row:\n{table}"));
    assert!(row.contains('?'), "{table}");

    // A worker running the schedule rewrites its state, and records its ticks.
    let log = fresh_log();
    let (stop, task) = memory_worker(&app, &log, "* * * * * *", Missed::Skip, Scheduled::Tick);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let rewritten = loop {
        let state = jobsmith::schedules(&app).await.unwrap();
        let info = state.into_iter().find(|s| s.name == NAME).unwrap();
        let done = info.unreadable.is_none() && info.prev.is_some();
        if done || tokio::time::Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    assert!(
        rewritten.unreadable.is_none() && rewritten.prev.is_some(),
        "a tick rewrote the state: {rewritten:?}"
    );
    let _ = std::fs::remove_file(&log);
}

/// Log lines written while a test runs, for the assertions on what a worker logs.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A worker fires only the schedules whose job goes to a queue it runs: a
/// worker told `.queues(["other"])` fires neither the `#[job(cron)]` of a
/// job on another queue nor a `.schedule_cron(..)` of one, so no ticks pile
/// up where it does not look. It says at start which it skips, and why.
/// (Current-thread runtime: the worker's tasks log on the thread whose
/// subscriber captures them.)
#[tokio::test]
async fn a_worker_fires_only_the_schedules_of_the_queues_it_runs() {
    let log = fresh_log();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = App::memory();
    let each_second = || Cron::new("* * * * * *").unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let worker = app
        .worker()
        .registry(
            Registry::from_defs([
                <every_second as jobsmith::Job>::DEF,
                <record_tick as jobsmith::Job>::DEF,
            ])
            .unwrap(),
        )
        .queues(["other"])
        .state(TickLog(log.clone()))
        .schedule_cron("elsewhere", each_second(), record_tick.delay())
        .schedule_cron("here", each_second(), record_tick.delay().queue("other"))
        .stop_on(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
    let task = tokio::spawn(worker.run());
    wait_ticks(&log, Duration::from_secs(15), "two ticks of `here`", |t| {
        runs_per_tick_of(t).len() >= 2
    })
    .await;
    // A tick of the skipped schedules would have been enqueued by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    let stats = app.stats().await.unwrap();
    for queue in ["sched_attr", QUEUE] {
        let piled: u64 = stats
            .iter()
            .filter(|s| s.queue == queue)
            .map(|s| s.ready + s.scheduled + s.in_flight + s.dead)
            .sum();
        assert_eq!(
            piled, 0,
            "no tick is enqueued on `{queue}`, which the worker does not run: {stats:?}"
        );
    }
    let state = jobsmith::schedules(&app).await.unwrap();
    for name in ["every_second", "elsewhere"] {
        assert!(
            state
                .iter()
                .all(|s| s.name != name || s.updated_at.is_none()),
            "the skipped schedule `{name}` was not run: {state:?}"
        );
    }
    let text = captured.text();
    for (name, queue) in [("every_second", "sched_attr"), ("elsewhere", QUEUE)] {
        assert!(
            text.lines().any(|l| l.contains("skipping schedule")
                && l.contains(&format!("schedule={name}"))
                && l.contains(&format!("queue={queue}"))),
            "the worker says it skips `{name}` and why:\n{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.contains("skipping schedule") && l.contains("schedule=here")),
        "the schedule of a queue it runs is not skipped:\n{text}"
    );
    let _ = std::fs::remove_file(&log);
}
