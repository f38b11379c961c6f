//! `cargo xtask bench`: enqueue rate, drain rate, idle latency, worker CPU and memory.
//!
//! Everything runs in this one process: the enqueuer, and a real
//! [`jobsmith::Worker`] running a no-op `#[job]`. CPU time and peak RSS are
//! the process's own (`getrusage`), read around the drain, when the worker is
//! the only thing running.

mod machine;

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
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The draining worker's concurrency: also the most jobs one reserve takes,
/// since no-op jobs free their slots at once.
const DRAIN_CONCURRENCY: usize = 128;

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
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        backends: vec!["memory".into()],
        jobs: None,
        json: false,
        markdown: false,
        into: None,
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
        "amqp" => with(
            env_or("JOBSMITH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            "prefix",
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
    drain_per_s: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    worker_cpu_ms_per_1k: f64,
    rss_mib: f64,
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
        match rt.block_on(bench_one(backend, &url, jobs)) {
            Ok(f) => all.push(f),
            Err(e) => return Err(format!("{backend}: {e}")),
        }
        if backend == "redis" {
            redis_ceiling();
        }
        if backend == "sqs" {
            sqs_raw_rate(&rt, &url, jobs, all.last());
        }
        if backend == "amqp" {
            amqp_raw_rate(&rt, &url, jobs, all.last());
        }
    }
    if opts.json {
        let objs: Vec<serde_json::Value> = all.iter().map(to_json).collect();
        let out = if objs.len() == 1 {
            objs[0].clone()
        } else {
            serde_json::Value::Array(objs)
        };
        println!("{out}");
    } else {
        print_header();
        for f in &all {
            println!(
                "{:<8} {:>8} {:>12.0} {:>12.0} {:>9.3} {:>9.3} {:>12.1} {:>8.1}",
                f.backend,
                f.jobs,
                f.enqueue_per_s,
                f.drain_per_s,
                f.latency_p50_ms,
                f.latency_p99_ms,
                f.worker_cpu_ms_per_1k,
                f.rss_mib
            );
        }
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

fn print_header() {
    println!("{}", header());
}

fn header() -> String {
    format!(
        "{:<8} {:>8} {:>12} {:>12} {:>9} {:>9} {:>12} {:>8}",
        "backend", "jobs", "enqueue/s", "drain/s", "p50 ms", "p99 ms", "cpu ms/1k", "rss MiB"
    )
}

/// The table of the children's JSON rows.
fn table(rows: &[serde_json::Value]) -> String {
    let mut out = header();
    for v in rows {
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        out.push_str(&format!(
            "\n{:<8} {:>8} {:>12.0} {:>12.0} {:>9.3} {:>9.3} {:>12.1} {:>8.1}",
            v["backend"].as_str().unwrap_or("?"),
            f("jobs"),
            f("enqueue_per_s"),
            f("drain_per_s"),
            f("latency_p50_ms"),
            f("latency_p99_ms"),
            f("worker_cpu_ms_per_1k"),
            f("rss_mib")
        ));
    }
    out
}

/// The docs/benchmarks.md section: date, machine, the command, its table, and the ceilings.
fn markdown(opts: &Options, rows: &[serde_json::Value], beside: &[String]) -> String {
    let mut command = String::from("cargo xtask bench --backend ");
    command.push_str(&if opts.backends.len() == 4 {
        "all".to_owned()
    } else {
        opts.backends.join(",")
    });
    if let Some(n) = opts.jobs {
        command.push_str(&format!(" --jobs {n}"));
    }
    let mut out = format!(
        "## {}, {}\n\nMachine: {}.\n\n```\n$ {command}\n{}\n```\n",
        if opts.backends.len() == 4 {
            "All backends".to_owned()
        } else {
            opts.backends.join(", ")
        },
        machine::today(),
        machine::describe(),
        table(rows)
    );
    if !beside.is_empty() {
        out.push_str(
            "\nPrinted beside it (the brokers' own ceilings on the same machine):\n\n```\n",
        );
        for l in beside {
            out.push_str(l.trim_end());
            out.push('\n');
        }
        out.push_str("```\n");
    }
    out
}

const BEGIN: &str = "<!-- bench:begin: generated by `cargo xtask bench --backend all --into docs/benchmarks.md`; edit the text around it, not in it -->";
const END: &str = "<!-- bench:end -->";

/// Replaces what lies between the markers of `path` with `section`.
fn splice(path: &str, section: &str) -> Result<(), String> {
    let doc = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        return Err(format!(
            "{path} has no `{BEGIN}` ... `{END}` markers: put them where the figures go"
        ));
    };
    if e < b {
        return Err(format!(
            "{path}: the bench:end marker comes before bench:begin"
        ));
    }
    let new = format!("{}{BEGIN}\n{section}{}", &doc[..b], &doc[e..]);
    std::fs::write(path, new).map_err(|e| format!("{path}: {e}"))
}

fn to_json(f: &Figures) -> serde_json::Value {
    serde_json::json!({
        "backend": f.backend,
        "jobs": f.jobs,
        "enqueue_per_s": round(f.enqueue_per_s, 0),
        "drain_per_s": round(f.drain_per_s, 0),
        "latency_p50_ms": round(f.latency_p50_ms, 3),
        "latency_p99_ms": round(f.latency_p99_ms, 3),
        "worker_cpu_ms_per_1k": round(f.worker_cpu_ms_per_1k, 2),
        "rss_mib": round(f.rss_mib, 1),
    })
}

fn round(v: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (v * k).round() / k
}

async fn bench_one(backend: &str, url: &str, jobs: u64) -> Result<Figures, String> {
    let app = jobsmith::connect(url).await.map_err(|e| e.to_string())?;
    let probe = std::sync::Arc::new(Probe {
        count: AtomicU64::new(0),
        target: AtomicU64::new(jobs),
        measuring: AtomicBool::new(false),
        latencies_us: Mutex::new(Vec::new()),
        done: Notify::new(),
    });

    // 1. Enqueue, in batches of 1,000.
    let started = Instant::now();
    let mut sent = 0;
    while sent < jobs {
        let n = (jobs - sent).min(1000);
        app.enqueue_many((0..n).map(|_| bench_noop.delay(0)))
            .await
            .map_err(|e| format!("enqueue: {e}"))?;
        sent += n;
    }
    let enqueue_per_s = jobs as f64 / started.elapsed().as_secs_f64();

    // 2. Drain with one worker; CPU time is read around the drain alone.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = app
        .worker()
        .queues(["bench"])
        .concurrency(DRAIN_CONCURRENCY)
        .batch_size(256)
        .state_shared(std::sync::Arc::clone(&probe))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let cpu0 = cpu_time();
    let started = Instant::now();
    let handle = tokio::spawn(worker.run_report());
    wait_for(&probe, jobs, Duration::from_secs(600)).await?;
    let drain = started.elapsed();
    let cpu = cpu_time() - cpu0;
    let _ = stop_tx.send(());
    handle
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let drain_per_s = jobs as f64 / drain.as_secs_f64();
    let worker_cpu_ms_per_1k = cpu.as_secs_f64() * 1000.0 / (jobs as f64 / 1000.0);

    // 3. Idle latency: one job at a time into an idle worker.
    let samples: u64 = if backend == "sqs" { 50 } else { 1000 };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = app
        .worker()
        .queues(["bench"])
        .concurrency(8)
        .state_shared(std::sync::Arc::clone(&probe))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let handle = tokio::spawn(worker.run_report());
    probe.measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..=samples {
        probe.target.store(jobs + i, Ordering::SeqCst);
        // Let the worker settle into its idle wait.
        tokio::time::sleep(Duration::from_millis(3)).await;
        bench_noop
            .delay(micros_since_epoch())
            .on(&app)
            .await
            .map_err(|e| format!("enqueue: {e}"))?;
        wait_for(&probe, jobs + i, Duration::from_secs(30)).await?;
    }
    let _ = stop_tx.send(());
    handle
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut lat = probe
        .latencies_us
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        let idx = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(idx).copied().unwrap_or(0) as f64 / 1000.0
    };

    Ok(Figures {
        backend: backend.to_owned(),
        jobs,
        enqueue_per_s,
        drain_per_s,
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        worker_cpu_ms_per_1k,
        rss_mib: peak_rss_mib(),
    })
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

fn cpu_time() -> Duration {
    // /proc rather than getrusage: the workspace forbids unsafe code.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 (utime, stime), counted from after the command name.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    100
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Prints Redis's own ceiling beside the figures: `redis-benchmark`'s final
/// line per command, without its progress output.
fn redis_ceiling() {
    for extra in [&[][..], &["-P", "16"][..]] {
        let mut args = vec!["-q", "-t", "lpush,rpop", "-n", "200000"];
        args.extend_from_slice(extra);
        eprintln!(
            "bench: redis ceiling, `redis-benchmark {}`:",
            args.join(" ")
        );
        match std::process::Command::new("redis-benchmark")
            .args(&args)
            .output()
        {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .split(['\r', '\n'])
                .filter(|l| l.contains("requests per second"))
                .for_each(|l| eprintln!("bench:   {}", l.trim())),
            Err(e) => eprintln!("bench:   redis-benchmark could not run: {e}"),
        }
    }
}

/// Prints the raw AWS SDK rate against the same endpoint, and jobsmith's share of it:
/// moto, not jobsmith, is the bottleneck there (moto is not AWS).
fn sqs_raw_rate(rt: &tokio::runtime::Runtime, url: &str, jobs: u64, ours: Option<&Figures>) {
    let n = usize::try_from(jobs).unwrap_or(usize::MAX);
    match rt.block_on(jobsmith::sqs::raw_rate(url, n)) {
        Ok((send, recv)) => {
            eprintln!("bench: sqs raw SDK on the same endpoint: batched send {send:.0}/s, receive+delete {recv:.0}/s");
            if let Some(f) = ours.filter(|f| f.backend == "sqs") {
                eprintln!(
                    "bench: jobsmith reaches {:.0}% of the raw send rate and {:.0}% of the raw receive+delete rate",
                    100.0 * f.enqueue_per_s / send,
                    100.0 * f.drain_per_s / recv
                );
            }
        }
        Err(e) => eprintln!("bench: sqs raw rate could not be measured: {e}"),
    }
}

/// Prints a plain lapin client's rates on the same broker, and jobsmith's
/// share of them: RabbitMQ's own speed differs by machine (a plain client
/// published 26,000/s on the machine `FACTS.md` was measured on, 7,000 to
/// 13,000/s on others of the same kind), so the broker's ceiling is
/// measured beside each run.
fn amqp_raw_rate(rt: &tokio::runtime::Runtime, url: &str, jobs: u64, ours: Option<&Figures>) {
    use jobsmith::amqp::RawQueue;
    let n = usize::try_from(jobs).unwrap_or(usize::MAX);
    let ours = ours.filter(|f| f.backend == "amqp");
    for (queue, what) in [
        (RawQueue::Plain, "a queue with no arguments"),
        (
            RawQueue::AsWorkQueue,
            "a queue with the arguments jobsmith gives a work queue at this URL",
        ),
    ] {
        match rt.block_on(jobsmith::amqp::raw_rate(url, n, queue)) {
            Ok((publish, consume)) => {
                eprintln!(
                    "bench: amqp plain lapin client, {what}: publish {publish:.0}/s (500 confirms in flight), consume {consume:.0}/s (prefetch 100, one ack each)"
                );
                if let Some(f) = ours {
                    eprintln!(
                        "bench:   jobsmith's enqueue is {:.0}% of that publish rate, its drain {:.0}% of that consume rate",
                        100.0 * f.enqueue_per_s / publish,
                        100.0 * f.drain_per_s / consume
                    );
                }
            }
            Err(e) => eprintln!("bench: amqp raw rate could not be measured: {e}"),
        }
    }
}
