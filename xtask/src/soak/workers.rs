//! The soak's workers: killing them, and restarting them gracefully.
//!
//! On Redis, RabbitMQ and SQS each worker is a process of its own (this
//! program, `xtask soak-worker ...`), killed with SIGKILL and stopped with
//! SIGTERM. The memory backend lives inside one process, so its workers are
//! tasks on runtimes of their own in the soak's process, "killed" by shutting
//! their runtime down at once (`Runtime::shutdown_background`): every task of
//! that worker is dropped at its next await, nothing is settled or released,
//! and its jobs come back only when their leases run out. Such a worker is
//! stopped gracefully by its stop signal, as SIGTERM stops a process.

use super::events::{soak_on_audit, soak_on_bill, soak_on_mail, EventLedger};
use super::ledger::Ledger;
use super::plan::{soak_job, soak_once, SoakState, PROBE_QUEUE, QUEUE};
use jobsmith::{App, Job, Registry};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a worker's reservation lasts without a heartbeat: short, so that a
/// killed worker's jobs come back soon.
pub(crate) const LEASE: Duration = Duration::from_secs(5);

/// The lease on SQS: moto answers slowly under load (tens to hundreds of ms
/// per call on a busy 2-core machine), and a heartbeat that arrives after a
/// 5 s visibility timeout ran out means a duplicate run, so SQS gets longer
/// leases; but not much longer, as a killed worker's jobs stay invisible for
/// the lease (plus a second), and the soak's enqueuer counts them as queued.
pub(crate) const SQS_LEASE: Duration = Duration::from_secs(15);

/// The lease for a backend URL.
pub(crate) fn lease_for(url: &str) -> Duration {
    if url.starts_with("sqs") {
        SQS_LEASE
    } else {
        LEASE
    }
}

/// Jobs one worker process runs at once from the main queue.
pub(crate) const CONCURRENCY: usize = 32;

/// Jobs one worker process runs at once from the probes' queue
/// ([`PROBE_QUEUE`]), beside its main queue's: enough to leave slots free.
pub(crate) const PROBE_CONCURRENCY: usize = 16;

/// How long a stopping worker lets its running jobs finish. Far longer than
/// any soak job runs (its `timeout` is 1 s), so a graceful stop cancels none.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// How long a worker runs before it may be restarted gracefully. A process
/// that gets SIGTERM before its worker has installed its signal handler (it
/// is still connecting) dies of the signal, holding nothing; the soak
/// restarts workers that are at work.
const SETTLED: Duration = Duration::from_secs(3);

/// How long a stopping worker may take, beyond its grace period, to release
/// what it holds, flush its settlements and exit.
pub(crate) const EXIT_AFTER_GRACE: Duration = Duration::from_secs(5);

/// What a worker needs to know, passed on its command line.
#[derive(Clone, Debug)]
pub(crate) struct WorkerArgs {
    pub(crate) url: String,
    pub(crate) run: String,
    pub(crate) seed: u64,
    pub(crate) failure_rate: f64,
    pub(crate) dsn: String,
    /// This worker's number, from 1, in the order the soak started them.
    pub(crate) worker: usize,
    /// Whether the run publishes events: the workers run the event handlers.
    pub(crate) events: bool,
}

impl WorkerArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            "soak-worker".into(),
            self.url.clone(),
            self.run.clone(),
            self.seed.to_string(),
            self.failure_rate.to_string(),
            self.dsn.clone(),
            self.worker.to_string(),
            if self.events { "events" } else { "jobs" }.into(),
        ]
    }

    fn from_args(args: &[String]) -> Result<Self, String> {
        let [url, run, seed, rate, dsn, worker, mode] = args else {
            return Err("soak-worker is started by `cargo xtask soak`, not by hand".into());
        };
        Ok(Self {
            url: url.clone(),
            run: run.clone(),
            seed: seed.parse().map_err(|_| "bad seed")?,
            failure_rate: rate.parse().map_err(|_| "bad failure rate")?,
            dsn: dsn.clone(),
            worker: worker.parse().map_err(|_| "bad worker number")?,
            events: mode == "events",
        })
    }
}

/// Soak panics are planned: keep them out of the worker's log, report any other.
fn quiet_planned_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.starts_with("soak:"));
        if !planned {
            default(info);
        }
    }));
}

/// The jobs a worker runs: the plain soak's, or the event handlers (which
/// the worker subscribes before its first reserve).
fn registry(events: bool) -> Result<Registry, String> {
    let defs = if events {
        vec![
            <soak_on_mail as Job>::DEF,
            <soak_on_audit as Job>::DEF,
            <soak_on_bill as Job>::DEF,
        ]
    } else {
        vec![<soak_job as Job>::DEF, <soak_once as Job>::DEF]
    };
    Registry::from_defs(defs).map_err(|e| e.to_string())
}

/// A worker's whole life, on `app`, until `stop` turns true (or SIGTERM
/// when `None`): a worker on the main queue and one on the probes' queue,
/// sharing the process's ledger writer, stopped together.
async fn work(
    app: App,
    args: WorkerArgs,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<(), String> {
    let ledger = Ledger::start(&args.dsn, &args.run, args.worker).await?;
    let events = if args.events {
        Some(EventLedger::start(&args.dsn, &args.run, args.worker).await?)
    } else {
        None
    };
    let worker = |queue: &str, concurrency: usize| -> Result<_, String> {
        let state = SoakState {
            seed: args.seed,
            failure_rate: args.failure_rate,
            ledger: ledger.clone(),
            events: events.clone(),
        };
        let mut w = app
            .worker()
            .registry(registry(args.events)?)
            .queues([queue])
            .concurrency(concurrency)
            .batch_size(concurrency)
            .lease(lease_for(&args.url))
            .grace_period(GRACE)
            .state(state);
        if let Some(mut stop) = stop.clone() {
            w = w.stop_on(async move {
                // An error means the pool dropped the sender: stop then too.
                let _ = stop.wait_for(|s| *s).await;
            });
        }
        Ok(w)
    };
    let (main, probes) = (
        worker(QUEUE, CONCURRENCY)?,
        worker(PROBE_QUEUE, PROBE_CONCURRENCY)?,
    );
    let (main, probes) = tokio::join!(main.run(), probes.run());
    main.and(probes).map_err(|e| e.to_string())
}

/// `xtask soak-worker ...`: one worker process, until SIGTERM.
pub(crate) fn process_main(args: &[String]) -> Result<(), String> {
    let args = WorkerArgs::from_args(args)?;
    quiet_planned_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        // A worker started while the soak restarts the broker waits for it.
        let deadline = Instant::now() + Duration::from_secs(120);
        let app = loop {
            match jobsmith::connect(&args.url).await {
                Ok(app) => break app,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("soak worker: connect: {e}"));
                }
                Err(e) => {
                    // In the worker's log: a worker that cannot start says why.
                    eprintln!("soak worker: connect failed, trying again: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        work(app, args, None).await
    })
}

/// One running worker, by number.
pub(crate) struct Worker {
    number: usize,
    running: Running,
    started: Instant,
}

impl Worker {
    /// Stops the worker gracefully (SIGTERM, or the stop signal) and waits
    /// for it to end. Returns how long it took, or how it failed: it must
    /// end cleanly (exit 0) within its grace period and
    /// [`EXIT_AFTER_GRACE`]; one that does not is killed.
    pub(crate) async fn stop(self) -> Result<Duration, String> {
        let asked = Instant::now();
        let limit = GRACE + EXIT_AFTER_GRACE;
        match self.running {
            Running::Process(mut c) => {
                let pid = c.id();
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                let status = loop {
                    match c.try_wait() {
                        Ok(Some(s)) => break Some(s),
                        Ok(None) if asked.elapsed() < limit => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => break None,
                    }
                };
                match status {
                    Some(s) if s.success() => Ok(asked.elapsed()),
                    Some(s) => Err(format!(
                        "worker {} (pid {pid}) stopped on SIGTERM with {s}",
                        self.number
                    )),
                    None => {
                        let _ = c.kill();
                        let _ = c.wait();
                        Err(format!(
                            "worker {} (pid {pid}) had not exited {limit:?} after SIGTERM",
                            self.number
                        ))
                    }
                }
            }
            Running::Task { rt, handle, stop } => {
                let _ = stop.send(true);
                let ended = tokio::time::timeout(limit, handle).await;
                rt.shutdown_background();
                match ended {
                    Ok(Ok(Ok(()))) => Ok(asked.elapsed()),
                    Ok(Ok(Err(e))) => Err(format!(
                        "in-process worker {} stopped with an error: {e}",
                        self.number
                    )),
                    Ok(Err(e)) => Err(format!(
                        "in-process worker {} did not stop cleanly: {e}",
                        self.number
                    )),
                    Err(_) => Err(format!(
                        "in-process worker {} had not stopped {limit:?} after its stop signal",
                        self.number
                    )),
                }
            }
        }
    }
}

enum Running {
    Process(Child),
    Task {
        rt: tokio::runtime::Runtime,
        handle: tokio::task::JoinHandle<Result<(), String>>,
        stop: tokio::sync::watch::Sender<bool>,
    },
}

/// The soak's workers.
pub(crate) struct Pool {
    args: WorkerArgs,
    /// The memory backend's app, shared by in-process workers; `None` for worker processes.
    memory: Option<App>,
    log_dir: std::path::PathBuf,
    workers: Vec<Worker>,
    started: usize,
    /// Deaths the soak did not cause: (worker, how it ended).
    pub(crate) unexpected: Vec<String>,
    /// The workers the soak killed, and when (milliseconds since the epoch).
    pub(crate) killed: Vec<(usize, u64)>,
}

impl Pool {
    pub(crate) fn new(args: WorkerArgs, memory: Option<App>, log_dir: std::path::PathBuf) -> Self {
        if memory.is_some() {
            quiet_planned_panics();
        }
        Self {
            args,
            memory,
            log_dir,
            workers: Vec::new(),
            started: 0,
            unexpected: Vec::new(),
            killed: Vec::new(),
        }
    }

    /// Starts one more worker.
    pub(crate) fn spawn(&mut self) -> Result<(), String> {
        self.started += 1;
        let args = WorkerArgs {
            worker: self.started,
            ..self.args.clone()
        };
        let running = match &self.memory {
            Some(app) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .thread_name(format!("soak-worker-{}", self.started))
                    .build()
                    .map_err(|e| format!("tokio runtime: {e}"))?;
                let (stop, rx) = tokio::sync::watch::channel(false);
                let handle = rt.spawn(work(app.clone(), args, Some(rx)));
                Running::Task { rt, handle, stop }
            }
            None => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let log = self.log_dir.join(format!("worker-{}.log", self.started));
                let log =
                    std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
                let child = Command::new(exe)
                    .args(args.to_args())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(|e| format!("cannot start a soak worker: {e}"))?;
                Running::Process(child)
            }
        };
        self.workers.push(Worker {
            number: self.started,
            running,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Notes workers that ended without being killed.
    pub(crate) fn reap(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            let ended = match &mut self.workers[i].running {
                Running::Process(c) => match c.try_wait() {
                    Ok(Some(status)) => Some(format!("worker pid {} exited: {status}", c.id())),
                    _ => None,
                },
                Running::Task { handle, .. } => handle
                    .is_finished()
                    .then(|| "an in-process worker stopped by itself".to_owned()),
            };
            match ended {
                Some(how) => {
                    eprintln!("soak: UNEXPECTED: {how}");
                    self.unexpected.push(how);
                    self.workers.swap_remove(i);
                }
                None => i += 1,
            }
        }
    }

    /// Kills a worker at random, abruptly, and starts a replacement.
    pub(crate) fn kill_one(&mut self) -> Result<(), String> {
        self.reap();
        if !self.workers.is_empty() {
            let victim = self
                .workers
                .swap_remove(fastrand::usize(..self.workers.len()));
            self.killed.push((victim.number, super::now_ms()));
            match victim.running {
                Running::Process(mut c) => {
                    let _ = c.kill(); // SIGKILL
                    let _ = c.wait();
                }
                Running::Task { rt, .. } => rt.shutdown_background(),
            }
        }
        self.spawn()
    }

    /// Takes a worker that has run for [`SETTLED`], at random, out of the
    /// pool, for a graceful restart: the soak stops it ([`Worker::stop`]) and
    /// then [`spawn`](Self::spawn)s its replacement.
    pub(crate) fn take_one(&mut self) -> Option<Worker> {
        self.reap();
        let old: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].started.elapsed() >= SETTLED)
            .collect();
        if old.is_empty() {
            return None;
        }
        Some(self.workers.swap_remove(old[fastrand::usize(..old.len())]))
    }

    /// Stops every worker gracefully (SIGTERM, or the stop signal) and notes
    /// any that did not stop cleanly.
    pub(crate) async fn stop_all(&mut self) {
        self.reap();
        for w in std::mem::take(&mut self.workers) {
            if let Err(e) = w.stop().await {
                self.unexpected.push(e);
            }
        }
    }
}
