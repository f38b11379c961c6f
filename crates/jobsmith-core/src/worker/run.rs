//! The reserve loop and graceful shutdown.

use super::execute::execute;
use super::settle::{settler, Settle};
use super::{heartbeat, Worker, WorkerReport};
use crate::backend::{Backend, Lease, LeaseStatus};
use crate::context::StateMap;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::schedule::scheduler;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// A counter in the worker's report.
#[derive(Debug, Default)]
pub(super) struct Counter(AtomicU64);

impl Counter {
    pub(super) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) started: Counter,
    pub(super) succeeded: Counter,
    pub(super) retried: Counter,
    pub(super) dead: Counter,
    pub(super) expired: Counter,
    pub(super) released: Counter,
    pub(super) lost: Counter,
}

/// Locks `m`; a panic elsewhere while it was held leaves plain data behind, still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running job's lease, and the sender that asks it to stop.
type Running = (Arc<Lease>, watch::Sender<bool>);

/// What the worker's tasks share.
pub(super) struct Shared {
    pub(super) backend: Arc<dyn Backend>,
    pub(super) registry: Registry,
    pub(super) state: Arc<StateMap>,
    pub(super) lease: Duration,
    pub(super) counters: Counters,
    /// Running jobs by slot number, with the sender that cancels each.
    running: Mutex<HashMap<u64, Running>>,
    next_slot: AtomicU64,
    settle_tx: mpsc::UnboundedSender<Settle>,
    unsettled: AtomicUsize,
    /// Finished jobs' leases by slot, until the settler has reported them: the
    /// heartbeat keeps extending them, so a slow settlement (a broker slow to
    /// confirm) does not let a finished job's lease run out and run it again.
    settling: Mutex<HashMap<u64, Lease>>,
}

impl Shared {
    /// Records a running job; returns its slot for [`Shared::untrack`].
    pub(super) fn track(&self, lease: Arc<Lease>, cancel: watch::Sender<bool>) -> u64 {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        self.running_map().insert(slot, (lease, cancel));
        slot
    }

    pub(super) fn untrack(&self, slot: u64) {
        self.running_map().remove(&slot);
    }

    /// Hands a finished job's outcome to the settler; its lease stays extended until then.
    pub(super) fn send(&self, settle: Settle) {
        self.unsettled.fetch_add(1, Ordering::SeqCst);
        lock(&self.settling).insert(settle.slot, settle.lease.clone());
        if let Err(unsent) = self.settle_tx.send(settle) {
            lock(&self.settling).remove(&unsent.0.slot);
            self.unsettled.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The settler has reported the outcomes of `slots`.
    pub(super) fn settled(&self, slots: &[u64]) {
        let mut settling = lock(&self.settling);
        for slot in slots {
            settling.remove(slot);
        }
        drop(settling);
        self.unsettled.fetch_sub(slots.len(), Ordering::SeqCst);
    }

    /// The running jobs' slots and leases.
    pub(super) fn running_leases(&self) -> (Vec<u64>, Vec<Lease>) {
        self.running_map()
            .iter()
            .map(|(slot, (lease, _))| (*slot, Lease::clone(lease)))
            .unzip()
    }

    /// The leases to keep alive, by slot: running jobs', and finished jobs'
    /// whose outcomes are not reported yet.
    pub(super) fn live_leases(&self) -> (Vec<u64>, Vec<Lease>) {
        let mut out = self.running_leases();
        for (slot, lease) in lock(&self.settling).iter() {
            out.0.push(*slot);
            out.1.push(lease.clone());
        }
        out
    }

    /// Asks the job in `slot`, if it still runs, to stop; false when it does not run.
    pub(super) fn cancel(&self, slot: u64) -> bool {
        match self.running_map().get(&slot) {
            Some((_, tx)) => {
                tx.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Counts a settlement's lease status; true when it took effect.
    pub(super) fn count(&self, status: LeaseStatus, what: &str) -> bool {
        if status == LeaseStatus::Lost {
            tracing::warn!("{what} refused: the lease was lost and the job may run elsewhere");
            metrics::counter!("jobsmith_leases_lost_total").increment(1);
            self.counters.lost.inc();
            return false;
        }
        true
    }

    fn running_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        lock(&self.running)
    }

    fn report(&self) -> WorkerReport {
        let c = &self.counters;
        WorkerReport {
            started: c.started.get(),
            succeeded: c.succeeded.get(),
            retried: c.retried.get(),
            dead: c.dead.get(),
            expired: c.expired.get(),
            released: c.released.get(),
            lost_leases: c.lost.get(),
        }
    }
}

/// Waits for SIGINT or SIGTERM.
async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(super) async fn run(worker: Worker) -> Result<WorkerReport> {
    let registry = match worker.registry {
        Some(r) => r,
        None => Registry::global()?.clone(),
    };
    if registry.is_empty() {
        return Err(Error::NoJobs);
    }
    let queues: Vec<String> = match worker.queues {
        Some(q) => q,
        None => {
            let mut q: Vec<String> = registry
                .defs()
                .map(|d| d.options.queue.to_owned())
                .collect();
            q.sort();
            q.dedup();
            q
        }
    };
    let scheduled = scheduler::collect(&registry, worker.schedules)?;
    let backend = Arc::clone(worker.app.backend());
    // Bound before anything is reserved, so a taken port fails the start, not a job.
    #[cfg(feature = "prometheus")]
    let endpoint = match worker.metrics_addr {
        Some(addr) => Some(super::endpoint::bind(addr).await?),
        None => None,
    };
    tracing::info!(
        backend = backend.name(),
        jobs = %registry.names().collect::<Vec<_>>().join(", "),
        queues = %queues.join(", "),
        concurrency = worker.concurrency,
        schedules = %scheduled.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        "worker starting"
    );
    let (schedules_stop, schedules_rx) = watch::channel(false);
    let mut schedule_tasks = JoinSet::new();
    for s in scheduled {
        schedule_tasks.spawn(scheduler::run(
            Arc::clone(&backend),
            s,
            schedules_rx.clone(),
        ));
    }

    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        backend: Arc::clone(&backend),
        registry,
        state: Arc::new(worker.state),
        lease: worker.lease,
        counters: Counters::default(),
        running: Mutex::new(HashMap::new()),
        next_slot: AtomicU64::new(0),
        settle_tx,
        unsettled: AtomicUsize::new(0),
        settling: Mutex::new(HashMap::new()),
    });
    let settler_task = tokio::spawn(settler(Arc::clone(&shared), settle_rx));
    let heartbeat_task = tokio::spawn(heartbeat::heartbeat(Arc::clone(&shared)));
    let sampler_task = tokio::spawn(heartbeat::sample_depth(
        Arc::clone(&shared),
        queues.clone(),
        worker.sample_every,
    ));
    #[cfg(feature = "prometheus")]
    let endpoint_task = endpoint
        .map(|(exporter, listener)| tokio::spawn(super::endpoint::serve(exporter, listener)));

    let mut stop = worker.stop.unwrap_or_else(|| Box::pin(os_signal()));
    let semaphore = Arc::new(Semaphore::new(worker.concurrency));
    let mut jobs = JoinSet::new();
    let wait = if worker.until_idle {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(5)
    };
    let mut retry_delay = Duration::from_millis(50);
    // Turned by one queue per reserve, so that no queue is always served last.
    let mut order = queues.clone();

    'reserve: loop {
        while jobs.try_join_next().is_some() {}
        let first = tokio::select! {
            () = &mut stop => break 'reserve,
            permit = Arc::clone(&semaphore).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break 'reserve,
            },
        };
        let mut permits = vec![first];
        while permits.len() < worker.batch {
            match Arc::clone(&semaphore).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        if !order.is_empty() {
            order.rotate_left(1);
        }
        let reserved = tokio::select! {
            () = &mut stop => break 'reserve,
            r = backend.reserve(&order, permits.len(), worker.lease, wait) => r,
        };
        let deliveries = match reserved {
            Ok(d) => {
                retry_delay = Duration::from_millis(50);
                d
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = retry_delay.as_millis() as u64, "reserve failed; reconnecting");
                let jitter =
                    Duration::from_millis(fastrand::u64(0..=retry_delay.as_millis() as u64 / 2));
                tokio::select! {
                    () = &mut stop => break 'reserve,
                    () = tokio::time::sleep(retry_delay + jitter) => {}
                }
                retry_delay = (retry_delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if deliveries.is_empty() {
            if worker.until_idle && jobs.is_empty() && shared.unsettled.load(Ordering::SeqCst) == 0
            {
                let idle = backend
                    .stats(&queues)
                    .await
                    .map(|s| s.iter().all(|q| q.ready + q.scheduled + q.in_flight == 0))
                    .unwrap_or(false);
                if idle {
                    break 'reserve;
                }
            }
            continue;
        }
        for (delivery, permit) in deliveries.into_iter().zip(permits) {
            let shared = Arc::clone(&shared);
            jobs.spawn(async move {
                execute(shared, delivery).await;
                drop(permit);
            });
        }
    }

    // Stop: no more reserves and no more ticks. A scheduler in the middle of
    // a tick gets a moment to record it.
    schedules_stop.send_replace(true);
    let ticks_done = tokio::time::timeout(Duration::from_secs(2), async {
        while schedule_tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !ticks_done {
        schedule_tasks.shutdown().await;
    }
    // Running jobs get the grace period.
    tracing::info!(
        running = jobs.len(),
        grace_ms = worker.grace.as_millis() as u64,
        "worker stopping"
    );
    let finished = tokio::time::timeout(worker.grace, async {
        while jobs.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !finished {
        for slot in shared.running_leases().0 {
            shared.cancel(slot);
        }
        jobs.shutdown().await;
    }
    // Whatever is still tracked never settled: hand it back, uncounted.
    let (_, leftover) = shared.running_leases();
    if !leftover.is_empty() {
        match backend.release(&leftover).await {
            Ok(statuses) => {
                for s in statuses {
                    if s == LeaseStatus::Held {
                        shared.counters.released.inc();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release unfinished jobs; they return when their leases run out")
            }
        }
    }
    heartbeat_task.abort();
    sampler_task.abort();
    // Let the settler flush what is queued, within the grace period.
    let report_shared = Arc::clone(&shared);
    drop(shared);
    let flushed = tokio::time::timeout(worker.grace.max(Duration::from_secs(1)), async {
        while report_shared.unsettled.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_ok();
    settler_task.abort();
    if !flushed {
        tracing::warn!(
            "some outcomes were not reported before the grace period ended; those jobs run again"
        );
    }
    // What the backend keeps back (outcome counts on RabbitMQ and SQS) goes
    // out now, not a second later from a process that is gone by then.
    if let Err(e) = backend.flush().await {
        tracing::warn!(error = %e, "could not write out the last outcome counts; the queue's processed and failed totals miss them");
    }
    #[cfg(feature = "prometheus")]
    if let Some(task) = endpoint_task {
        // Awaited, so the port is free once `run` returns.
        task.abort();
        let _ = task.await;
    }
    let report = report_shared.report();
    tracing::info!(?report, "worker stopped");
    Ok(report)
}
