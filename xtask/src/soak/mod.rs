//! `cargo xtask soak`: many jobs through real workers that are killed as they
//! run, then a check, job by job, that nothing was lost.
//!
//! ```text
//! cargo xtask soak --backend memory|redis|amqp|sqs --jobs N [--workers W]
//!     [--kill-every S] [--restart-every S] [--restart-broker-every S]
//!     [--failure-rate F] [--seed S] [--settings K=V&..]
//! ```
//!
//! The run: a ledger in PostgreSQL (`ledger.rs`); the broker (a private Redis
//! or RabbitMQ instance that may be restarted, the shared RabbitMQ under a
//! fresh prefix, moto under a fresh prefix, or the in-process memory queue);
//! `W` workers (`workers.rs`), one of which is killed every `S` seconds and
//! replaced, and one of which is stopped gracefully and started again every
//! `S` seconds, as a rolling deploy does; `N` jobs enqueued in waves that keep the queue shallow, each doing
//! what its seeded plan says (`plan.rs`); bad payloads written straight into
//! the broker along the way (`inject.rs`). When the queue is empty, the workers
//! are stopped and `check.rs` compares the ledger and the dead-letter queue
//! with every job's plan, printing one summary line; the exit code says
//! whether it passed. docs/reliability.md says what each check means.

mod broker;
mod check;
mod inject;
mod ledger;
mod plan;
mod workers;

use broker::{Broker, PrivateRabbit, PrivateRedis};
use inject::{Injected, Injector};
use jobsmith::{App, Enqueue, MemoryBackend, Settings};
use plan::{plan, Kind, QUEUE};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use workers::{Pool, WorkerArgs};

pub(crate) use workers::process_main as worker_main;

/// The soak's options.
#[derive(Debug, Clone)]
struct Options {
    backend: String,
    jobs: u64,
    workers: usize,
    kill_every: Option<Duration>,
    /// Graceful restarts of one worker at a time: SIGTERM, wait, start again.
    restart_every: Option<Duration>,
    restart_broker_every: Option<Duration>,
    failure_rate: f64,
    seed: u64,
    /// Keep the ledger tables and worker logs even when the run passes.
    keep: bool,
    /// Backend URL settings added to the run's own, such as `delays=quorum`.
    settings: Option<String>,
}

const USAGE: &str = "usage: cargo xtask soak --backend memory|redis|amqp|sqs --jobs N [--workers W] [--kill-every SECONDS] [--restart-every SECONDS] [--restart-broker-every SECONDS] [--failure-rate F] [--seed S] [--keep] [--settings K=V&..]";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        backend: String::new(),
        jobs: 20_000,
        workers: 4,
        kill_every: None,
        restart_every: None,
        restart_broker_every: None,
        failure_rate: 0.2,
        seed: 1,
        keep: false,
        settings: None,
    };
    let mut it = args.iter();
    let secs = |flag: &str, v: Option<&String>| -> Result<Duration, String> {
        let v = v.ok_or(format!("{flag} needs a number of seconds"))?;
        let s: f64 = v
            .parse()
            .map_err(|_| format!("{flag} {v}: not a number of seconds"))?;
        if !(s > 0.0 && s.is_finite()) {
            return Err(format!("{flag} {v}: must be more than 0 seconds"));
        }
        Ok(Duration::from_secs_f64(s))
    };
    while let Some(a) = it.next() {
        let mut num = |flag: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or(format!("{flag} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--backend" => o.backend = num("--backend")?,
            "--jobs" => {
                let v = num("--jobs")?;
                o.jobs = v.parse().map_err(|_| format!("--jobs {v}: not a number"))?;
            }
            "--workers" => {
                let v = num("--workers")?;
                o.workers = v
                    .parse()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or(format!("--workers {v}: need a number above 0"))?;
            }
            "--failure-rate" => {
                let v = num("--failure-rate")?;
                o.failure_rate = v
                    .parse()
                    .ok()
                    .filter(|f: &f64| (0.0..=1.0).contains(f))
                    .ok_or(format!("--failure-rate {v}: need a share from 0 to 1"))?;
            }
            "--seed" => {
                let v = num("--seed")?;
                o.seed = v.parse().map_err(|_| format!("--seed {v}: not a number"))?;
            }
            "--keep" => o.keep = true,
            "--settings" => {
                let v = num("--settings")?;
                if v.is_empty() || v.starts_with('&') || v.contains("prefix=") {
                    return Err(format!(
                        "--settings {v}: give URL settings as `key=value&key=value`; the soak sets the prefix itself"
                    ));
                }
                o.settings = Some(v);
            }
            "--kill-every" => o.kill_every = Some(secs(a, it.next())?),
            "--restart-every" => o.restart_every = Some(secs(a, it.next())?),
            "--restart-broker-every" => o.restart_broker_every = Some(secs(a, it.next())?),
            other => return Err(format!("unknown soak option `{other}`\n{USAGE}")),
        }
    }
    match o.backend.as_str() {
        "memory" | "redis" | "amqp" | "sqs" => {}
        "" => return Err(format!("--backend is required\n{USAGE}")),
        other => {
            return Err(format!(
                "unknown backend `{other}`: use memory, redis, amqp or sqs"
            ))
        }
    }
    if o.settings.is_some() && o.backend == "memory" {
        return Err("--settings: the memory backend has no URL to add settings to".into());
    }
    if o.restart_broker_every.is_some() {
        match o.backend.as_str() {
            "memory" => return Err("--restart-broker-every: the memory backend has no broker to restart; it lives and dies with the process".into()),
            "sqs" => return Err("--restart-broker-every is not supported on SQS: moto keeps its queues in memory, so a restart would lose them all (that is moto, not SQS)".into()),
            _ => {}
        }
    }
    Ok(o)
}

/// `cargo xtask soak ...`: re-runs itself optimised, then soaks.
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    if cfg!(debug_assertions) {
        return crate::run(
            crate::cargo()
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "--package",
                    "xtask",
                    "--",
                    "soak",
                ])
                .args(args),
        );
    }
    let opts = parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let pass = rt.block_on(soak(opts))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    if pass {
        Ok(())
    } else {
        Err("soak: FAIL".into())
    }
}

/// Sizes that keep each broker's queue shallow: (jobs per wave, most jobs queued before the next wave).
fn waves(backend: &str) -> (u64, u64) {
    match backend {
        // moto is the bottleneck on SQS, and each message it sends or hands
        // out costs it time in proportion to the queue's depth (in flight
        // and delayed messages included): about 14 ms of moto's CPU per soak
        // job at these sizes, 30 ms at the (100, 300) used before
        // (docs/reliability.md).
        "sqs" => (40, 60),
        "amqp" => (2_000, 10_000),
        _ => (5_000, 30_000),
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// The run's backend: the app, the raw writer, and the worker processes' URL.
async fn connect(
    o: &Options,
    run: &str,
    broker: Option<&Broker>,
) -> Result<(App, Injector, String, Option<App>), String> {
    // Keep every dead job: the checker reads them all.
    let mut settings = format!("prefix={run}&dead_max=100000000");
    if let Some(extra) = &o.settings {
        settings = format!("{settings}&{extra}");
    }
    let err = |e: jobsmith::Error| format!("{}: connect: {e}", o.backend);
    match o.backend.as_str() {
        "memory" => {
            let m =
                MemoryBackend::new(Settings::from_query([("dead_max", "100000000")]).map_err(err)?);
            let app = App::new(m.clone());
            Ok((
                app.clone(),
                Injector::Memory(m),
                "memory://".into(),
                Some(app),
            ))
        }
        "redis" => {
            let base = broker
                .map(Broker::url)
                .ok_or("redis runs on its own server")?;
            let url = format!("{base}?{settings}");
            let app = jobsmith::connect(&url).await.map_err(err)?;
            let inj = Injector::Redis {
                url: base,
                prefix: run.to_owned(),
            };
            Ok((app, inj, url, None))
        }
        "amqp" => {
            let base = match broker {
                Some(b) => b.url(),
                None => env_or("JOBSMITH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            };
            let sep = if base.contains('?') { '&' } else { '?' };
            // Unused queues delete themselves, should the run be cut short.
            let url = format!("{base}{sep}{settings}&expires=30m");
            let b = jobsmith::amqp::AmqpBackend::connect(&url)
                .await
                .map_err(err)?;
            Ok((App::new(b.clone()), Injector::Amqp(b), url, None))
        }
        _ => {
            let base = env_or(
                "JOBSMITH_SQS_URL",
                "sqs://us-east-1?endpoint=http://127.0.0.1:5000",
            );
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}{settings}");
            let b = jobsmith::sqs::SqsBackend::connect(&url)
                .await
                .map_err(err)?;
            Ok((App::new(b.clone()), Injector::Sqs(b), url, None))
        }
    }
}

/// The gaps between the idle phase's probes, in milliseconds: long enough
/// for the workers to be waiting when each arrives.
const IDLE_GAP_MS: std::ops::Range<u64> = 50..250;

/// The least time between two probes under load. The enqueuer's waves put
/// thousands of jobs in at once; probes that came in such bursts would come
/// due in bursts, and measure the queue of their own burst.
const PROBE_GAP: Duration = Duration::from_millis(10);

/// What the background tasks count.
#[derive(Debug, Default)]
struct Counts {
    kills: AtomicU64,
    /// Graceful worker restarts that ended cleanly.
    restarts: AtomicU64,
    /// The longest a gracefully stopped worker took to exit, in milliseconds.
    slowest_stop_ms: AtomicU64,
    /// Graceful stops that did not end in a clean exit within the grace period.
    unclean_stops: std::sync::Mutex<Vec<String>>,
    broker_restarts: AtomicU64,
    enqueue_retries: AtomicU64,
    /// When the broker went down for each restart, in milliseconds since the epoch.
    restarted_at: std::sync::Mutex<Vec<(u64, u64)>>,
}

/// Milliseconds since the epoch, as the ledger's `at` column reads.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn soak(o: Options) -> Result<bool, String> {
    let run = format!("soak{:08x}", fastrand::u32(..));
    let started = Instant::now();
    let log_dir = std::env::temp_dir().join(format!("jobsmith-{run}"));
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    eprintln!(
        "soak: run {run}: backend {}, {} jobs, {} workers, kill every {:?}, restart every {:?}, restart broker every {:?}, failure rate {}, seed {}; worker logs in {}",
        o.backend, o.jobs, o.workers, o.kill_every, o.restart_every, o.restart_broker_every, o.failure_rate, o.seed,
        log_dir.display()
    );

    // The broker the soak may hurt, when it has one of its own.
    let broker = match (o.backend.as_str(), o.restart_broker_every) {
        ("redis", _) => Some(
            tokio::task::spawn_blocking(PrivateRedis::start)
                .await
                .map_err(|e| e.to_string())??,
        ),
        ("amqp", Some(_)) => {
            eprintln!("soak: starting a private RabbitMQ node (about 20 s)");
            Some(
                tokio::task::spawn_blocking(PrivateRabbit::start)
                    .await
                    .map_err(|e| e.to_string())??,
            )
        }
        _ => None,
    };
    let (app, injector, url, memory) = connect(&o, &run, broker.as_ref()).await?;
    let broker = Arc::new(std::sync::Mutex::new(broker));

    let dsn = ledger::default_dsn();
    let pg = ledger::connect(&dsn).await?;
    ledger::create(&pg, &run).await?;

    let pool = Arc::new(Mutex::new(Pool::new(
        WorkerArgs {
            url: url.clone(),
            run: run.clone(),
            seed: o.seed,
            failure_rate: o.failure_rate,
            dsn: dsn.clone(),
            worker: 0,
        },
        memory,
        log_dir.clone(),
    )));
    for _ in 0..o.workers {
        pool.lock().await.spawn()?;
    }

    let counts = Arc::new(Counts::default());
    let mut chaos = Vec::new();
    if let Some(every) = o.kill_every {
        let (pool, counts) = (Arc::clone(&pool), Arc::clone(&counts));
        chaos.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match pool.lock().await.kill_one() {
                    Ok(()) => {
                        counts.kills.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("soak: could not replace a killed worker: {e}"),
                }
            }
        }));
    }
    let (ending, ended) = tokio::sync::watch::channel(false);
    let restarter = o.restart_every.map(|every| {
        tokio::spawn(restart_workers(
            every,
            Arc::clone(&pool),
            Arc::clone(&counts),
            ended,
        ))
    });
    if let Some(every) = o.restart_broker_every {
        let (broker, counts) = (Arc::clone(&broker), Arc::clone(&counts));
        chaos.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let b = Arc::clone(&broker);
                let from = now_ms();
                let done = tokio::task::spawn_blocking(move || {
                    let mut guard = b.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    guard.as_mut().map(Broker::restart)
                })
                .await;
                counts
                    .restarted_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((from, now_ms()));
                match done {
                    Ok(Some(Ok(()))) => {
                        counts.broker_restarts.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: broker restarted");
                    }
                    other => eprintln!("soak: broker restart failed: {other:?}"),
                }
            }
        }));
    }
    {
        // Notice, as they happen, workers that die of anything but a kill.
        let pool = Arc::clone(&pool);
        chaos.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                pool.lock().await.reap();
            }
        }));
    }

    // Enqueue in waves, with bad payloads mixed in.
    let (wave, depth_limit) = waves(&o.backend);
    let bad_each = 10.min(o.jobs as usize / 2 + 1);
    let mut injected = Vec::new();
    let waves_total = o.jobs.div_ceil(wave).max(1);
    let mut last_expire_due = Instant::now();
    let mut next = 0u64;
    let mut wave_no = 0u64;
    let mut last_report = Instant::now();
    let idle = plan::idle_probes(o.seed, o.failure_rate, o.jobs);
    let held: HashSet<u64> = idle.iter().copied().collect();
    let (to_pacer, probes) = tokio::sync::mpsc::unbounded_channel();
    let pacer = tokio::spawn(pace_probes(
        app.clone(),
        o.seed,
        o.failure_rate,
        probes,
        Arc::clone(&counts),
    ));
    while next < o.jobs {
        wait_below(&app, depth_limit).await;
        let end = (next + wave).min(o.jobs);
        let mut batch: Vec<Enqueue> = Vec::with_capacity((end - next) as usize);
        for n in (next..end).filter(|n| !held.contains(n)) {
            let p = plan(o.seed, o.failure_rate, n);
            if p.kind == Kind::Expire {
                last_expire_due = Instant::now() + plan::EXPIRE_DELAY;
            }
            if p.kind.measured_attempt().is_some() {
                let _ = to_pacer.send(n);
            } else {
                batch.push(plan::enqueue(n, p));
            }
        }
        enqueue_all(&app, batch, &counts).await;
        next = end;
        wave_no += 1;
        // Spread the bad payloads over the run.
        let due = (wave_no * 2 * bad_each as u64).div_ceil(waves_total) as usize;
        while injected.len() < due.min(2 * bad_each) {
            let i = injected.len();
            let bad = if i % 2 == 0 {
                Injected::garbage(&run, i)
            } else {
                Injected::unknown(i)
            };
            loop {
                match injector.push(&bad.raw).await {
                    Ok(()) => break,
                    Err(e) => {
                        eprintln!("soak: injecting bad input failed ({e}); retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            injected.push(bad);
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "soak: {next} of {} enqueued after {:.0} s, {} kills, {} restarts, {} broker restarts",
                o.jobs,
                started.elapsed().as_secs_f64(),
                counts.kills.load(Ordering::Relaxed),
                counts.restarts.load(Ordering::Relaxed),
                counts.broker_restarts.load(Ordering::Relaxed)
            );
        }
    }
    drop(to_pacer);
    let _ = pacer.await;
    eprintln!(
        "soak: all {} jobs enqueued after {:.0} s; waiting for the queue to drain",
        o.jobs,
        started.elapsed().as_secs_f64()
    );

    // Drain: until the queue holds nothing, after the last expiring job came due.
    let mut left = drain(&app, &pg, &run, last_expire_due, &counts).await;
    if !idle.is_empty() {
        eprintln!(
            "soak: drained after {:.0} s; sending {} probes one at a time to idle workers",
            started.elapsed().as_secs_f64(),
            idle.len()
        );
        for &n in &idle {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(IDLE_GAP_MS))).await;
            enqueue_all(
                &app,
                vec![plan::enqueue(n, plan(o.seed, o.failure_rate, n))],
                &counts,
            )
            .await;
        }
        // What is left now includes whatever the first drain left.
        left = drain(&app, &pg, &run, Instant::now(), &counts).await;
    }
    // A graceful restart under way finishes (its stop is checked) before the end.
    let _ = ending.send(true);
    if let Some(t) = restarter {
        let _ = t.await;
    }
    for t in &chaos {
        t.abort();
    }
    for t in chaos {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let mut pool = Arc::try_unwrap(pool)
        .map_err(|_| "the worker pool is still shared".to_owned())?
        .into_inner();
    pool.stop_all().await;

    let mut outages: Vec<check::Outage> = pool
        .killed
        .iter()
        .map(|&(worker, at_ms)| check::Outage {
            worker: Some(worker),
            from_ms: at_ms,
            to_ms: at_ms,
        })
        .collect();
    outages.extend(
        counts
            .restarted_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|&(from_ms, to_ms)| check::Outage {
                worker: None,
                from_ms,
                to_ms,
            }),
    );
    let f = check::check(
        &app,
        &pg,
        &check::Run {
            run: &run,
            seed: o.seed,
            failure_rate: o.failure_rate,
            jobs: o.jobs,
            idle: &held,
            workers: o.workers as u64,
            injected: &injected,
            left_in_queue: left,
            outages: &outages,
        },
    )
    .await?;
    let deaths = pool.unexpected.len();
    let unclean = std::mem::take(
        &mut *counts
            .unclean_stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let pass = f.pass() && deaths == 0 && unclean.is_empty();
    for e in &f.examples {
        eprintln!("soak: problem: {e}");
    }
    for d in pool.unexpected.iter().chain(&unclean) {
        eprintln!("soak: problem: {d}");
    }
    println!(
        "soak backend={} jobs={} workers={} kills={} restarts={} (slowest stop {:.1} s, unclean: {}) broker_restarts={} duplicates={} (absorbed by idempotency: {}; not explained by a kill or restart: {}) lost={} dead={}/{} bad_input_dead={}/{} dead_unrun={} (bound {}; no kill in between: {}) attempts_unrun={} late_ms delayed {} retried {} idle {} (bounds p50 {} p99 {}; left out after a kill: {}) expired_ran={} attempts_over_policy={} unexpected_dead={} idempotency_broken={} unexpected_worker_deaths={} seconds={:.0} jobs_per_s={:.0} {}",
        o.backend,
        o.jobs,
        o.workers,
        counts.kills.load(Ordering::Relaxed),
        counts.restarts.load(Ordering::Relaxed),
        counts.slowest_stop_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        unclean.len(),
        counts.broker_restarts.load(Ordering::Relaxed),
        f.duplicates,
        f.absorbed,
        f.unexplained,
        f.lost,
        f.dead_found,
        f.dead_expected,
        f.bad_found,
        f.bad_injected,
        f.dead_unrun,
        f.dead_unrun_bound,
        f.dead_unrun_unexplained,
        f.attempts_unrun,
        f.delayed.summary(),
        f.retried.summary(),
        f.idle.summary(),
        f.lateness_bound.p50,
        f.lateness_bound.p99,
        f.delayed.after_outage + f.retried.after_outage + f.idle.after_outage,
        f.expired_ran,
        f.attempts_wrong,
        f.unexpected_dead,
        f.idempotency_broken,
        deaths,
        elapsed.as_secs_f64(),
        o.jobs as f64 / elapsed.as_secs_f64(),
        if pass { "PASS" } else { "FAIL" }
    );

    // Clean up what the run made; a failed run keeps its ledger for a look.
    if pass && !o.keep {
        let _ = ledger::drop_tables(&pg, &run).await;
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        eprintln!(
            "soak: kept the ledger tables {} and {}, and the worker logs in {}",
            ledger::attempts_table(&run),
            ledger::effects_table(&run),
            log_dir.display()
        );
    }
    if let Injector::Sqs(b) = &injector {
        let _ = b.delete_all_queues().await;
    }
    drop(app);
    drop(injector);
    let own = broker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut b) = own {
        tokio::task::spawn_blocking(move || b.stop())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(pass)
}

/// Enqueues the probes handed over by the enqueuer's waves, one at a time,
/// [`PROBE_GAP`] apart at least, until the enqueuer is done.
async fn pace_probes(
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
async fn restart_workers(
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
async fn pending(app: &App) -> Option<u64> {
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

async fn wait_below(app: &App, limit: u64) {
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
async fn enqueue_all(app: &App, jobs: Vec<Enqueue>, counts: &Counts) {
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
const AFTER_RESTART: Duration = Duration::from_secs(15);

/// Waits until the queue is empty (twice in a row, after `not_before` and at
/// least [`AFTER_RESTART`] after the last broker restart), or until nothing
/// has moved for two minutes. Returns what is left.
async fn drain(
    app: &App,
    pg: &tokio_postgres::Client,
    run: &str,
    not_before: Instant,
    counts: &Counts,
) -> u64 {
    const STALL: Duration = Duration::from_secs(120);
    let rows_sql = format!("SELECT count(*) FROM {}", ledger::attempts_table(run));
    let mut empty_polls = 0;
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
            empty_polls += 1;
            if empty_polls >= 2 {
                return 0;
            }
        } else {
            empty_polls = 0;
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
