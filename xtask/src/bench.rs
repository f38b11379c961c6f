//! `cargo xtask bench`: enqueue rate, drain rate (at the worker's defaults,
//! tuned, and at the peers' concurrency), idle latency, worker CPU and
//! memory, and on SQS the requests per job; the yardsticks beside them are
//! in `yardsticks.rs`.
//!
//! Everything runs in this one process: the enqueuer, and a real
//! [`jobsmith::Worker`] running a no-op `#[job]`. CPU time and peak RSS are
//! the process's own (`/proc/self`), read around the drain at defaults, when
//! the worker is the only thing running.

mod events;
mod machine;
mod report;
mod usage;

use report::{markdown, splice, table, to_json};
use usage::{cpu_time, peak_rss_mib, reset_peak_rss};
mod yardsticks;

use jobsmith::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What the bench job reports to.
#[derive(Debug)]
pub(crate) struct Probe {
    count: AtomicU64,
    target: AtomicU64,
    measuring: AtomicBool,
    latencies_us: Mutex<Vec<u64>>,
    done: Notify,
    /// How long each job works (awaits a timer), in microseconds: 0 for a no-op.
    work_us: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The tuned drain's concurrency and reserve size, printed beside the
/// drain at defaults (what a user gets without tuning).
const TUNED: (usize, usize) = (128, 256);

/// The concurrency the peers were compared at (`FACTS.md`), other settings
/// at their defaults.
const PEER_CONCURRENCY: usize = 50;

/// The bench's no-op job: counts itself and, while latency is measured,
/// records how long after its enqueue it started.
#[job(queue = "bench", retries = 0)]
async fn bench_noop(sent_us: u64, probe: State<Probe>) {
    if probe.measuring.load(Ordering::Relaxed) {
        let lat = micros_since_epoch().saturating_sub(sent_us);
        probe
            .latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(lat);
    }
    let work = probe.work_us.load(Ordering::Relaxed);
    if work > 0 {
        tokio::time::sleep(Duration::from_micros(work)).await;
    }
    let n = probe.count.fetch_add(1, Ordering::SeqCst) + 1;
    if n >= probe.target.load(Ordering::SeqCst) {
        probe.done.notify_one();
    }
}

struct Options {
    backends: Vec<String>,
    jobs: Option<u64>,
    json: bool,
    /// Print the docs/benchmarks.md section (table, machine, ceilings) instead of the bare table.
    markdown: bool,
    /// Write that section into this file, between its `bench:begin` and `bench:end` markers.
    into: Option<String>,
    /// Publish events beside a plain enqueue (`events.rs`) instead of the whole bench.
    events: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        backends: vec!["memory".into()],
        jobs: None,
        json: false,
        markdown: false,
        into: None,
        events: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => {
                let b = it
                    .next()
                    .ok_or("--backend needs a value: memory, redis, amqp, sqs or all")?;
                opts.backends = if b == "all" {
                    ["memory", "redis", "amqp", "sqs"]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect()
                } else {
                    vec![b.clone()]
                };
            }
            "--jobs" => {
                let n = it.next().ok_or("--jobs needs a number")?;
                opts.jobs = Some(n.parse().map_err(|_| format!("--jobs {n}: not a number"))?);
            }
            "--json" => opts.json = true,
            "--events" => opts.events = true,
            "--markdown" => opts.markdown = true,
            "--into" => {
                opts.into = Some(
                    it.next()
                        .ok_or("--into needs a file, such as docs/benchmarks.md")?
                        .clone(),
                );
                opts.markdown = true;
            }
            other => return Err(format!("unknown bench option `{other}`")),
        }
    }
    Ok(opts)
}

/// The URL to bench a backend at, with a fresh namespace.
fn url_for(backend: &str) -> Result<String, String> {
    let tag = format!("jsbench{:x}", fastrand::u64(..));
    let with = |base: String, key: &str| {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}{key}={tag}")
    };
    Ok(match backend {
        "memory" => "memory://".into(),
        "redis" => with(
            env_or("JOBSMITH_REDIS_URL", "redis://127.0.0.1:6379"),
            "prefix",
        ),
        // Every run's namespace is new: its queues and exchanges go away
        // ten minutes after the run, instead of staying on the broker (each
        // queue costs the broker file handles, and it has about 1,000).
        "amqp" => format!(
            "{}&expires=10m",
            with(
                env_or("JOBSMITH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                "prefix",
            )
        ),
        "sqs" => with(
            env_or(
                "JOBSMITH_SQS_URL",
                "sqs://us-east-1?endpoint=http://127.0.0.1:5000",
            ),
            "prefix",
        ),
        other => {
            return Err(format!(
                "unknown backend `{other}`: use memory, redis, amqp, sqs or all"
            ))
        }
    })
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn default_jobs(backend: &str) -> u64 {
    match backend {
        "sqs" => 500,
        "amqp" => 50_000,
        _ => 100_000,
    }
}

/// One backend's figures.
#[derive(Debug)]
struct Figures {
    backend: String,
    jobs: u64,
    enqueue_per_s: f64,
    /// One worker at its default settings.
    drain_per_s: f64,
    /// One worker at [`TUNED`].
    drain_tuned_per_s: f64,
    /// One worker at [`PEER_CONCURRENCY`] (not on SQS).
    drain_c50_per_s: Option<f64>,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    /// The p50 of one awaited enqueue of one job.
    enqueue_one_p50_ms: f64,
    /// Redis: the p50 of one awaited `EVALSHA` of `return 1` from the redis
    /// crate in this process, timed beside each of those enqueues.
    evalsha_p50_ms: Option<f64>,
    /// Redis: the p50 of one awaited enqueue with no worker in the process.
    enqueue_alone_p50_ms: Option<f64>,
    /// Redis: the p50 of the bare `EVALSHA` timed beside each of those.
    evalsha_alone_p50_ms: Option<f64>,
    /// During the drain at defaults.
    worker_cpu_ms_per_1k: f64,
    /// Peak resident memory during the drain at defaults.
    rss_mib: f64,
    /// Peak resident memory over the whole run.
    rss_run_mib: f64,
    /// SQS: requests per job over the enqueue and the drain at defaults.
    requests_per_job: Option<f64>,
    /// SQS: of those, the requests that found or created the queues (once
    /// per process and queue, in the first enqueue): all the enqueue sent
    /// but its `SendMessageBatch` calls.
    setup_requests: Option<u64>,
    /// SQS: requests an idle worker at defaults makes per minute.
    idle_requests_per_min: Option<f64>,
}

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    if cfg!(debug_assertions) {
        // Figures from a debug build mean nothing: rerun this command optimised.
        return crate::run(
            crate::cargo()
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "--package",
                    "xtask",
                    "--",
                    "bench",
                ])
                .args(args),
        );
    }
    let opts = parse(args)?;
    if opts.json && opts.markdown {
        return Err("--json and --markdown (or --into) exclude each other".into());
    }
    if opts.events {
        if opts.markdown {
            return Err("--events prints a table or --json, not --markdown".into());
        }
        return events::main(&opts.backends, opts.jobs, opts.json);
    }
    if opts.backends.len() > 1 || opts.markdown {
        return several(&opts);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut all = Vec::new();
    for backend in &opts.backends {
        let jobs = opts.jobs.unwrap_or_else(|| default_jobs(backend));
        let url = url_for(backend)?;
        eprintln!(
            "bench: {backend}: {jobs} jobs at {}",
            jobsmith::redact_url(&url)
        );
        let measured = rt.block_on(bench_one(backend, &url, jobs));
        if backend == "redis" {
            rt.block_on(forget_redis_namespace(&url));
        }
        match measured {
            Ok(f) => all.push(f),
            Err(e) => return Err(format!("{backend}: {e}")),
        }
        match backend.as_str() {
            "redis" => yardsticks::redis(all.last()),
            "sqs" => yardsticks::sqs(&rt, &url, jobs, all.last()),
            "amqp" => yardsticks::amqp(&rt, &url, jobs, all.last()),
            _ => {}
        }
    }
    let rows: Vec<serde_json::Value> = all.iter().map(to_json).collect();
    if opts.json {
        let out = if rows.len() == 1 {
            rows[0].clone()
        } else {
            serde_json::Value::Array(rows)
        };
        println!("{out}");
    } else {
        println!("{}", table(&rows));
    }
    Ok(())
}

/// Benches each backend in a process of its own, so that each one's peak
/// memory and CPU are its own, and prints one table (or a JSON array).
fn several(opts: &Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    // What the children print beside their figures: the brokers' own ceilings.
    let mut beside = Vec::new();
    for backend in &opts.backends {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "--backend", backend, "--json"]);
        if let Some(n) = opts.jobs {
            cmd.args(["--jobs", &n.to_string()]);
        }
        let out = cmd
            .stderr(if opts.markdown {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::inherit()
            })
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        eprint!("{err}");
        beside.extend(
            err.lines()
                .filter_map(|l| l.strip_prefix("bench: "))
                .filter(|l| !l.starts_with(&format!("{backend}: ")))
                .map(str::to_owned),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<serde_json::Value>(text.trim()) {
            Ok(v) if out.status.success() => rows.push(v),
            _ => eprintln!("bench: {backend} skipped (it failed; see above)"),
        }
    }
    if opts.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if !opts.markdown {
        println!("{}", table(&rows));
        return Ok(());
    }
    let section = markdown(opts, &rows, &beside);
    match &opts.into {
        None => println!("{section}"),
        Some(path) => {
            splice(path, &section)?;
            eprintln!("bench: wrote the figures into {path}");
        }
    }
    Ok(())
}

async fn bench_one(backend: &str, url: &str, jobs: u64) -> Result<Figures, String> {
    let app = jobsmith::connect(url).await.map_err(|e| e.to_string())?;
    let probe = std::sync::Arc::new(Probe {
        count: AtomicU64::new(0),
        target: AtomicU64::new(jobs),
        measuring: AtomicBool::new(false),
        latencies_us: Mutex::new(Vec::new()),
        done: Notify::new(),
        work_us: AtomicU64::new(0),
    });
    let sqs = backend == "sqs";
    let requests0 = jobsmith::sqs::requests_sent();
    let ops0 = jobsmith::sqs::requests_sent_by_operation();

    // 1. Enqueue, in batches of 1,000.
    let started = Instant::now();
    enqueue(&app, jobs).await?;
    let enqueue_per_s = jobs as f64 / started.elapsed().as_secs_f64();
    let setup_requests = sqs.then(|| {
        let sends = |ops: &[(String, u64)]| {
            ops.iter()
                .find(|(op, _)| op == "SendMessageBatch")
                .map_or(0, |(_, n)| *n)
        };
        let now = jobsmith::sqs::requests_sent_by_operation();
        (jobsmith::sqs::requests_sent() - requests0) - (sends(&now) - sends(&ops0))
    });

    // 2. Drain with one worker at its defaults; CPU time and peak memory
    // are read around the drain alone (the whole run's peak also counts the
    // tuned drains, which hold many more jobs at once).
    let run_peak_before = peak_rss_mib();
    let drain_peak_alone = reset_peak_rss();
    let cpu0 = cpu_time();
    let defaults = drain(&app, &probe, jobs, None, None).await?;
    let cpu = cpu_time() - cpu0;
    let drain_rss_mib = peak_rss_mib();
    if !drain_peak_alone {
        eprintln!("bench: the kernel refused to reset the peak resident memory; rss MiB counts the enqueue too");
    }
    let requests_per_job =
        sqs.then(|| (jobsmith::sqs::requests_sent() - requests0) as f64 / jobs as f64);
    if sqs {
        eprintln!(
            "bench: sqs requests by operation over the enqueue and the drain at defaults, per job:"
        );
        print_requests(&ops0, jobs as f64, "job");
        if let (Some(setup), Some(per_job)) = (setup_requests, requests_per_job) {
            eprintln!(
                "bench:   of which set-up (finding or creating the queues, once per process and queue): {setup} requests, {:.3} per job",
                setup as f64 / jobs as f64
            );
            eprintln!(
                "bench:   steady state without the set-up: {:.3} per job",
                per_job - setup as f64 / jobs as f64
            );
        }
    }
    let drain_per_s = jobs as f64 / defaults.as_secs_f64();
    let worker_cpu_ms_per_1k = cpu.as_secs_f64() * 1000.0 / (jobs as f64 / 1000.0);

    // 3. The same again, tuned; and at the peers' concurrency.
    enqueue(&app, jobs).await?;
    let tuned = drain(&app, &probe, jobs, Some(TUNED), None).await?;
    let drain_tuned_per_s = jobs as f64 / tuned.as_secs_f64();
    let drain_c50_per_s = if sqs {
        None
    } else {
        enqueue(&app, jobs).await?;
        let c50 = drain(
            &app,
            &probe,
            jobs,
            Some((PEER_CONCURRENCY, usize::MAX)),
            None,
        )
        .await?;
        Some(jobs as f64 / c50.as_secs_f64())
    };
    short_jobs(backend, &app, &probe, jobs).await?;

    // 4. Idle latency: one job at a time into an idle worker at its defaults,
    // each enqueue awaited alone.
    let samples: u64 = if sqs { 50 } else { 1000 };
    let mut bare = match backend {
        "redis" => Some(BareRedis::connect(url).await?),
        _ => None,
    };
    // First the same awaited enqueues with no worker in the process, each
    // beside a bare EVALSHA: what an enqueue costs a web process that does
    // not also run the jobs. The worker below runs these jobs unmeasured.
    let mut alone_us = Vec::new();
    let mut alone_evalsha_us = Vec::new();
    if let Some(bare) = &mut bare {
        for _ in 0..samples {
            tokio::time::sleep(Duration::from_millis(1)).await;
            alone_us.push(timed_enqueue(&app, 0).await?);
            tokio::time::sleep(Duration::from_millis(1)).await;
            alone_evalsha_us.push(bare.round_trip_us().await?);
        }
    }
    let queued_alone = alone_us.len() as u64;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = app
        .worker()
        .queues(["bench"])
        .state_shared(std::sync::Arc::clone(&probe))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let before = probe.count.load(Ordering::SeqCst);
    let handle = tokio::spawn(worker.run_report());
    wait_for(&probe, before + queued_alone, Duration::from_secs(60)).await?;
    probe.measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = probe.count.load(Ordering::SeqCst);
    let mut enqueue_us = Vec::with_capacity(samples as usize);
    let mut evalsha_us = Vec::with_capacity(samples as usize);
    for i in 1..=samples {
        probe.target.store(base + i, Ordering::SeqCst);
        // Let the worker settle into its idle wait.
        tokio::time::sleep(Duration::from_millis(3)).await;
        enqueue_us.push(timed_enqueue(&app, micros_since_epoch()).await?);
        wait_for(&probe, base + i, Duration::from_secs(30)).await?;
        if let Some(bare) = &mut bare {
            tokio::time::sleep(Duration::from_millis(3)).await;
            evalsha_us.push(bare.round_trip_us().await?);
        }
    }
    probe.measuring.store(false, Ordering::SeqCst);

    // 5. SQS: the requests of the idle worker, over 30 s.
    let idle_requests_per_min = if sqs {
        let before = jobsmith::sqs::requests_sent();
        let ops = jobsmith::sqs::requests_sent_by_operation();
        tokio::time::sleep(IDLE_WATCH).await;
        let n = jobsmith::sqs::requests_sent() - before;
        eprintln!("bench: sqs requests by operation of an idle worker at defaults, per minute:");
        print_requests(&ops, IDLE_WATCH.as_secs_f64() / 60.0, "minute");
        Some(n as f64 * 60.0 / IDLE_WATCH.as_secs_f64())
    } else {
        None
    };
    let _ = stop_tx.send(());
    handle
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut lat = std::mem::take(
        &mut *probe
            .latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    lat.sort_unstable();
    enqueue_us.sort_unstable();
    evalsha_us.sort_unstable();
    alone_us.sort_unstable();
    alone_evalsha_us.sort_unstable();

    // The peak was restarted before the drain at defaults, so it counts
    // that drain and what came after; what came before is read separately.
    let rss_run_mib = peak_rss_mib().max(run_peak_before);
    eprintln!(
        "bench: {backend} peak resident memory: {drain_rss_mib:.1} MiB during the drain at defaults (rss MiB), {rss_run_mib:.1} MiB over the whole run, whose tuned drains hold more jobs at once"
    );
    Ok(Figures {
        backend: backend.to_owned(),
        jobs,
        enqueue_per_s,
        drain_per_s,
        drain_tuned_per_s,
        drain_c50_per_s,
        latency_p50_ms: percentile_ms(&lat, 0.50),
        latency_p99_ms: percentile_ms(&lat, 0.99),
        enqueue_one_p50_ms: percentile_ms(&enqueue_us, 0.50),
        evalsha_p50_ms: bare.as_ref().map(|_| percentile_ms(&evalsha_us, 0.50)),
        enqueue_alone_p50_ms: bare.as_ref().map(|_| percentile_ms(&alone_us, 0.50)),
        evalsha_alone_p50_ms: bare.map(|_| percentile_ms(&alone_evalsha_us, 0.50)),
        worker_cpu_ms_per_1k,
        rss_mib: drain_rss_mib,
        rss_run_mib,
        requests_per_job,
        setup_requests,
        idle_requests_per_min,
    })
}

/// One awaited enqueue of the bench's job with `sent_us`, in microseconds.
async fn timed_enqueue(app: &App, sent_us: u64) -> Result<u64, String> {
    let sent = Instant::now();
    bench_noop
        .delay(sent_us)
        .on(app)
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
    Ok(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// Deletes the keys of a Redis run's namespace (`{tag:queue}:…` and
/// `tag:…`), so that benches leave nothing behind on a shared server.
pub(crate) async fn forget_redis_namespace(url: &str) {
    let Some(tag) = url
        .split("prefix=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
    else {
        return;
    };
    let forget = async {
        let client = redis::Client::open(url.split('?').next().unwrap_or(url))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut keys: Vec<String> = Vec::new();
        for pattern in [format!("{{{tag}:*"), format!("{tag}:*")] {
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        for chunk in keys.chunks(500) {
            redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok::<usize, redis::RedisError>(keys.len())
    };
    if let Err(e) = forget.await {
        eprintln!("bench: could not delete the run's keys (prefix {tag}): {e}");
    }
}

/// Deletes every RabbitMQ queue of prefix `tag` on the broker at `url`,
/// listed by `rabbitmqctl`: idempotency keys are queues named by hash
/// (`jobsmith-amqp/src/unique.rs`), so only the broker knows them. Without
/// `rabbitmqctl`, they expire on their own (the run's `expires`).
pub(crate) async fn forget_amqp_namespace(url: &str, tag: &str) {
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "--quiet", "--no-table-headers", "name"])
        .output();
    let names: Vec<String> = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with(&format!("{tag}.")) || *n == tag)
            .map(str::to_owned)
            .collect(),
        _ => {
            eprintln!(
                "xtask: rabbitmqctl could not list the queues; the run's (prefix {tag}) expire on their own"
            );
            return;
        }
    };
    let bare = url.split('?').next().unwrap_or(url);
    let deleted = async {
        let conn = lapin::Connection::connect(bare, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        for name in &names {
            ch.queue_delete(
                name.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await?;
        }
        conn.close(0, "done".into()).await?;
        Ok::<usize, lapin::Error>(names.len())
    };
    match deleted.await {
        Ok(n) => eprintln!("xtask: deleted the run's {n} RabbitMQ queues (prefix {tag})"),
        Err(e) => eprintln!("xtask: could not delete the run's queues (prefix {tag}): {e}"),
    }
}

/// A bare redis-crate connection, for the round trip an enqueue is compared with.
struct BareRedis {
    conn: redis::aio::MultiplexedConnection,
    script: redis::Script,
}

impl BareRedis {
    async fn connect(url: &str) -> Result<Self, String> {
        // The redis crate takes the URL without jobsmith's settings.
        let bare = url.split('?').next().unwrap_or(url);
        let client = redis::Client::open(bare).map_err(|e| e.to_string())?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            conn,
            script: redis::Script::new("return 1"),
        })
    }

    /// One awaited `EVALSHA` (loaded the first time), in microseconds.
    async fn round_trip_us(&mut self) -> Result<u64, String> {
        let started = Instant::now();
        let _: i64 = self
            .script
            .invoke_async(&mut self.conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// Prints the SQS requests made by operation since `before`, divided by `per`.
fn print_requests(before: &[(String, u64)], per: f64, unit: &str) {
    for (op, n) in jobsmith::sqs::requests_sent_by_operation() {
        let was = before.iter().find(|(o, _)| *o == op).map_or(0, |(_, n)| *n);
        if n > was {
            eprintln!("bench:   {op}: {:.3} per {unit}", (n - was) as f64 / per);
        }
    }
}

/// How long the bench watches an idle worker's SQS requests.
const IDLE_WATCH: Duration = Duration::from_secs(30);

/// Enqueues `jobs` no-op jobs in batches of 1,000.
async fn enqueue(app: &App, jobs: u64) -> Result<(), String> {
    let mut sent = 0;
    while sent < jobs {
        let n = (jobs - sent).min(1000);
        app.enqueue_many((0..n).map(|_| bench_noop.delay(0)))
            .await
            .map_err(|e| format!("enqueue: {e}"))?;
        sent += n;
    }
    Ok(())
}

/// Jobs that each await a 1 ms timer, drained at defaults, then with
/// `.prefetch(0)` (the worker taking no job ahead of its free slots), then at
/// defaults again: what taking jobs ahead gives when jobs do some work.
/// Printed beside the table.
async fn short_jobs(
    backend: &str,
    app: &App,
    probe: &std::sync::Arc<Probe>,
    jobs: u64,
) -> Result<(), String> {
    let n = (jobs / 5).max(100);
    probe.work_us.store(SHORT_WORK_US, Ordering::SeqCst);
    let mut rates = Vec::new();
    for prefetch in [None, Some(0), None] {
        enqueue(app, n).await?;
        let took = drain(app, probe, n, None, prefetch).await?;
        rates.push(n as f64 / took.as_secs_f64());
    }
    probe.work_us.store(0, Ordering::SeqCst);
    let ahead = (rates[0] + rates[2]) / 2.0;
    eprintln!(
        "bench: {backend} jobs of {} ms ({n}) at defaults: {:.0}/s and {:.0}/s; with .prefetch(0): {:.0}/s, so taking jobs ahead gives {:.2}×",
        SHORT_WORK_US / 1000,
        rates[0],
        rates[2],
        rates[1],
        ahead / rates[1]
    );
    Ok(())
}

/// How long each of [`short_jobs`]'s jobs works.
const SHORT_WORK_US: u64 = 1_000;

/// Runs `jobs` queued jobs to completion with one worker, at its defaults
/// or at (concurrency, most jobs per reserve), and at its default prefetch
/// or the one given; how long it took.
async fn drain(
    app: &App,
    probe: &std::sync::Arc<Probe>,
    jobs: u64,
    settings: Option<(usize, usize)>,
    prefetch: Option<usize>,
) -> Result<Duration, String> {
    let target = probe.count.load(Ordering::SeqCst) + jobs;
    probe.target.store(target, Ordering::SeqCst);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut worker = app
        .worker()
        .queues(["bench"])
        .state_shared(std::sync::Arc::clone(probe))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    if let Some((concurrency, batch)) = settings {
        worker = worker.concurrency(concurrency).batch_size(batch);
    }
    if let Some(n) = prefetch {
        worker = worker.prefetch(n);
    }
    let started = Instant::now();
    let handle = tokio::spawn(worker.run_report());
    wait_for(probe, target, Duration::from_secs(600)).await?;
    let took = started.elapsed();
    let _ = stop_tx.send(());
    handle
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(took)
}

/// The `p` quantile (nearest rank) of sorted microsecond samples, in ms.
fn percentile_ms(us: &[u64], p: f64) -> f64 {
    let idx = ((us.len() as f64 * p).ceil() as usize).clamp(1, us.len().max(1)) - 1;
    us.get(idx).copied().unwrap_or(0) as f64 / 1000.0
}

async fn wait_for(probe: &Probe, n: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while probe.count.load(Ordering::SeqCst) < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "only {} of {n} jobs ran within {limit:?}",
                probe.count.load(Ordering::SeqCst)
            ));
        }
        let _ =
            tokio::time::timeout(left.min(Duration::from_millis(100)), probe.done.notified()).await;
    }
    Ok(())
}
