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
mod drive;
mod events;
mod inject;
mod ledger;
mod options;
mod plan;
mod reads;
mod workers;

use broker::{Broker, PrivateRabbit, PrivateRedis};
use drive::{drain, enqueue_all, pace_probes, restart_workers, wait_below};
use inject::{Injected, Injector};
use jobsmith::{App, Enqueue, MemoryBackend, Settings};
use options::{parse, Options};
use plan::{plan, Kind};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use workers::{Pool, WorkerArgs};

pub(crate) use workers::process_main as worker_main;

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
    if o.events {
        events::create(&pg, &run).await?;
    }

    let pool = Arc::new(Mutex::new(Pool::new(
        WorkerArgs {
            url: url.clone(),
            run: run.clone(),
            seed: o.seed,
            failure_rate: o.failure_rate,
            dsn: dsn.clone(),
            worker: 0,
            events: o.events,
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

    let (wave, depth_limit) = waves(&o.backend);
    if o.events {
        return events::run(events::Run {
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
        })
        .await;
    }

    // Enqueue in waves, with bad payloads mixed in.
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
    let (pool, elapsed) = wind_down(&ending, restarter, chaos, pool, started).await?;

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
    let unclean = take_unclean(&counts);
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
    stop_own_broker(&broker).await?;
    Ok(pass)
}

/// Ends a run's chaos once its jobs are done: a graceful restart under way
/// finishes (its stop is checked), the chaos tasks stop, and then every
/// worker. Returns the pool, with what it saw, and the run's time up to the
/// workers' stop.
async fn wind_down(
    ending: &tokio::sync::watch::Sender<bool>,
    restarter: Option<tokio::task::JoinHandle<()>>,
    chaos: Vec<tokio::task::JoinHandle<()>>,
    pool: Arc<Mutex<Pool>>,
    started: Instant,
) -> Result<(Pool, Duration), String> {
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
    Ok((pool, elapsed))
}

/// The workers' stops that were not clean, taken out of the counts.
fn take_unclean(counts: &Counts) -> Vec<String> {
    std::mem::take(
        &mut *counts
            .unclean_stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Stops the private broker the run started, if it started one.
async fn stop_own_broker(broker: &std::sync::Mutex<Option<Broker>>) -> Result<(), String> {
    let own = broker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut b) = own {
        tokio::task::spawn_blocking(move || b.stop())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
