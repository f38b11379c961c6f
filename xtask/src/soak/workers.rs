//! The soak's workers, and killing them.
//!
//! On Redis, RabbitMQ and SQS each worker is a process of its own (this
//! program, `xtask soak-worker ...`), killed with SIGKILL. The memory backend
//! lives inside one process, so its workers are tasks on runtimes of their
//! own in the soak's process, "killed" by shutting their runtime down at once
//! (`Runtime::shutdown_background`): every task of that worker is dropped at
//! its next await, nothing is settled or released, and its jobs come back
//! only when their leases run out.

use super::ledger::Ledger;
use super::plan::{soak_job, SoakState, QUEUE};
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

/// Jobs one worker runs at once.
pub(crate) const CONCURRENCY: usize = 32;

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
        ]
    }

    fn from_args(args: &[String]) -> Result<Self, String> {
        let [url, run, seed, rate, dsn, worker] = args else {
            return Err("soak-worker is started by `cargo xtask soak`, not by hand".into());
        };
        Ok(Self {
            url: url.clone(),
            run: run.clone(),
            seed: seed.parse().map_err(|_| "bad seed")?,
            failure_rate: rate.parse().map_err(|_| "bad failure rate")?,
            dsn: dsn.clone(),
            worker: worker.parse().map_err(|_| "bad worker number")?,
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

fn registry() -> Result<Registry, String> {
    Registry::from_defs([<soak_job as Job>::DEF]).map_err(|e| e.to_string())
}

/// A worker's whole life, on `app`, until `stop` (or SIGTERM when `None`).
async fn work(
    app: App,
    args: WorkerArgs,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<(), String> {
    let ledger = Ledger::start(&args.dsn, &args.run, args.worker).await?;
    let state = SoakState {
        seed: args.seed,
        failure_rate: args.failure_rate,
        ledger,
    };
    let mut worker = app
        .worker()
        .registry(registry()?)
        .queues([QUEUE])
        .concurrency(CONCURRENCY)
        .batch_size(CONCURRENCY)
        .lease(lease_for(&args.url))
        .grace_period(Duration::from_secs(10))
        .state(state);
    if let Some(stop) = stop {
        worker = worker.stop_on(async move {
            let _ = stop.await;
        });
    }
    worker.run().await.map_err(|e| e.to_string())
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
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        work(app, args, None).await
    })
}

/// One running worker, by number.
struct Worker {
    number: usize,
    running: Running,
}

enum Running {
    Process(Child),
    Task {
        rt: tokio::runtime::Runtime,
        handle: tokio::task::JoinHandle<Result<(), String>>,
        stop: tokio::sync::oneshot::Sender<()>,
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
                let (stop, rx) = tokio::sync::oneshot::channel();
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

    /// Stops every worker gracefully (SIGTERM, or the stop signal) and notes
    /// any that did not stop cleanly.
    pub(crate) async fn stop_all(&mut self) {
        self.reap();
        for w in self.workers.drain(..) {
            match w.running {
                Running::Process(mut c) => {
                    let _ = Command::new("kill")
                        .args(["-TERM", &c.id().to_string()])
                        .status();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let status = loop {
                        match c.try_wait() {
                            Ok(Some(s)) => break Some(s),
                            Ok(None) if Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            _ => break None,
                        }
                    };
                    match status {
                        Some(s) if s.success() => {}
                        other => {
                            let _ = c.kill();
                            let _ = c.wait();
                            self.unexpected.push(format!(
                                "worker pid {} did not stop cleanly on SIGTERM: {other:?}",
                                c.id()
                            ));
                        }
                    }
                }
                Running::Task { rt, handle, stop } => {
                    let _ = stop.send(());
                    match tokio::time::timeout(Duration::from_secs(30), handle).await {
                        Ok(Ok(Ok(()))) => {}
                        other => self.unexpected.push(format!(
                            "an in-process worker did not stop cleanly: {other:?}"
                        )),
                    }
                    rt.shutdown_background();
                }
            }
        }
    }
}
