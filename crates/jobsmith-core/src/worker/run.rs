//! The reserve loop and graceful shutdown.

use super::execute::execute;
use super::settle::settler;
use super::shared::{Counters, Shared};
use super::{heartbeat, Worker, WorkerReport};
use crate::backend::{Backend, Delivery, Lease, LeaseStatus};
use crate::error::{Error, Result};
use crate::lock::LockExt;
use crate::record::{self, REFRESH_EVERY};
use crate::registry::Registry;
use crate::retry::{self, Doubling};
use crate::schedule::scheduler;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

/// A task of the worker's, aborted when the worker's future is dropped: a
/// worker abandoned mid-run must not go on extending leases it will never settle.
struct Task(tokio::task::JoinHandle<()>);

impl Task {
    fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(fut))
    }

    fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGINT or SIGTERM, listened for from this call on: a signal that comes
/// before the worker first waits on it (its first jobs already running)
/// still stops it gracefully, instead of killing the process.
fn os_signal() -> crate::job::BoxFuture<'static, ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        Box::pin(async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                    one.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
    }
    #[cfg(not(unix))]
    {
        Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Tells the backend to stop taking jobs in and to hand back what it took.
async fn stop_reserving(backend: &dyn Backend, queues: &[String]) {
    if let Err(e) = backend.stop_reserving(queues).await {
        tracing::warn!(error = %e.describe(), "could not hand back the jobs the backend had taken in; they return when their leases run out");
    }
}

/// Hands unstarted or unfinished jobs back, without counting an attempt.
async fn release(shared: &Shared, leases: Vec<Lease>) {
    if leases.is_empty() {
        return;
    }
    match crate::SettleExt::release(&*shared.backend, &leases).await {
        Ok(statuses) => {
            for s in statuses {
                if s == LeaseStatus::Held {
                    shared.counters.released.inc();
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e.describe(), "could not release unfinished jobs; they return when their leases run out")
        }
    }
}

pub(super) async fn run(worker: Worker) -> Result<WorkerReport> {
    // Listened for from the start: a deploy's SIGTERM while the worker is
    // still starting (registering its subscriptions can wait a second) stops
    // it cleanly instead of killing the process.
    let mut stop = worker.stop.unwrap_or_else(os_signal);
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
    for q in &queues {
        crate::check_queue_name(q)?;
    }
    // Every schedule is checked, but a worker fires only those whose job goes
    // to a queue it runs: the ticks of another queue would pile up where
    // this worker never looks (a worker of that queue fires them).
    let (scheduled, skipped): (Vec<_>, Vec<_>) = scheduler::collect(&registry, worker.schedules)?
        .into_iter()
        .partition(|s| queues.contains(&s.template.queue));
    for s in &skipped {
        tracing::info!(
            schedule = %s.name,
            job = %s.template.job,
            queue = %s.template.queue,
            "skipping schedule: its job goes to a queue this worker does not run; a worker that runs that queue fires it"
        );
    }
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
    // Before the first reserve, so that a process that does not link the
    // jobs (`jobsmith enqueue`) finds their queues, attempts and parameters.
    // Bounded, so that a broker that hangs delays the start by no more; the
    // refresh task tries again soon after a failure.
    let published = match tokio::time::timeout(
        record::START_WAIT,
        record::publish(&*backend, &registry, REFRESH_EVERY),
    )
    .await
    {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not publish the jobs' records; will try again (until then `jobsmith enqueue` refuses the jobs it has no record of)");
            false
        }
        Err(_) => {
            tracing::warn!(waited_ms = record::START_WAIT.as_millis() as u64, "publishing the jobs' records is taking too long; starting without them, will try again");
            false
        }
    };
    // Before the first reserve and before `run` goes on: from here, every
    // publish reaches the jobs this worker runs.
    tokio::select! {
        registered = super::subscribe::register(&worker.app, &registry, Some(&queues)) => {
            registered?;
        }
        () = &mut stop => {
            tracing::info!("worker stopped while starting, before its first reserve");
            return Ok(WorkerReport::default());
        }
    }
    let _publish_task = Task::spawn(record::refresh(
        Arc::clone(&backend),
        registry.clone(),
        published,
    ));
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
        queues: queues.clone(),
        state: Arc::new(worker.state),
        lease: worker.lease,
        counters: Counters::default(),
        running: Mutex::new(HashMap::new()),
        next_slot: AtomicU64::new(0),
        settle_tx,
        unsettled: AtomicUsize::new(0),
        settling: Mutex::new(HashMap::new()),
        past_grace: AtomicBool::new(false),
        waiting: Mutex::new(HashMap::new()),
        in_hand: AtomicUsize::new(0),
        freed: Notify::new(),
        started: Notify::new(),
        mean_run_us: AtomicU64::new(u64::MAX),
    });
    let settler_task = Task::spawn(settler(Arc::clone(&shared), settle_rx));
    let heartbeat_task = Task::spawn(heartbeat::heartbeat(Arc::clone(&shared)));
    let sampler_task = Task::spawn(heartbeat::sample_depth(
        Arc::clone(&shared),
        queues.clone(),
        worker
            .sample_every
            .unwrap_or_else(|| backend.depth_sample_every()),
    ));
    #[cfg(feature = "prometheus")]
    let endpoint_task = endpoint
        .map(|(exporter, listener)| Task::spawn(super::endpoint::serve(exporter, listener)));

    // A backend that takes jobs in ahead by itself needs no more of it.
    let prefetch = if backend.prefetches() {
        0
    } else {
        worker.prefetch
    };
    let slots = Arc::new(Semaphore::new(worker.concurrency));
    // Set at the stop: jobs waiting for a slot then start no more.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut jobs = JoinSet::new();
    let wait = if worker.until_idle {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(5)
    };
    let mut retry_delay = Doubling::new(Duration::from_millis(50), Duration::from_secs(10));
    // Reserves failed in a row, and when the first of them did.
    let mut failing: Option<(u32, std::time::Instant)> = None;
    // An error no retry can fix, which ends the run.
    let mut fatal: Option<Error> = None;
    // Turned by one queue per reserve, so that no queue is always served last.
    let mut order = queues.clone();
    if let Err(e) = backend.start_reserving(&queues, worker.concurrency).await {
        tracing::warn!(error = %e.describe(), "could not size what the backend takes in to the worker's concurrency");
    }
    // Whether the backend was told to stop taking jobs in (done once, at the stop).
    let mut stopped_reserving = false;
    // Whether a reserve for jobs to take ahead found none since a slot last freed.
    let mut ahead_tried = false;

    'reserve: loop {
        while jobs.try_join_next().is_some() {}
        // Room for the free slots, and for what short jobs may take ahead of
        // them. With no slot free, jobs are taken ahead only if they are
        // ready now: a wait would take whatever comes next ahead, however
        // long the running jobs have yet to run.
        let (room, poll) = loop {
            let freed = shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let started = shared.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            let in_hand = shared.in_hand.load(Ordering::SeqCst);
            let most = worker.concurrency + shared.ahead(worker.concurrency, prefetch);
            // Never more unstarted jobs than slots: a kill -9 charges an
            // attempt to at most `concurrency` jobs that never ran.
            let unstarted = shared.waiting.lock_unpoisoned().len();
            // Jobs just handed out whose slots are free start within a task
            // switch. Asked now, the backend would bring only the room they
            // leave, and short jobs would come in ever smaller batches: wait
            // the moment it takes them to start instead.
            if unstarted.min(slots.available_permits()) > 0 {
                tokio::select! {
                    () = &mut stop => break 'reserve,
                    () = started => {}
                }
                continue;
            }
            let room = most
                .saturating_sub(in_hand)
                .min(worker.concurrency.saturating_sub(unstarted))
                .min(worker.batch);
            if in_hand < worker.concurrency {
                break (room, wait);
            }
            if room > 0 && !ahead_tried {
                break (room, Duration::ZERO);
            }
            tokio::select! {
                () = &mut stop => break 'reserve,
                () = freed => ahead_tried = false,
            }
        };
        if !order.is_empty() {
            order.rotate_left(1);
        }
        // Never dropped half-way: a reserve may have leased jobs before it
        // returns, and a lease dropped unsettled is charged an attempt when
        // it runs out. A stop makes the backend end the reserve early instead.
        let asked = std::time::Instant::now();
        shared.counters.reserves.inc();
        let reserve = backend.reserve(&order, room, worker.lease, poll);
        tokio::pin!(reserve);
        let reserved = tokio::select! {
            r = &mut reserve => r,
            () = &mut stop => {
                let (r, ()) = tokio::join!(&mut reserve, stop_reserving(&*backend, &queues));
                stopped_reserving = true;
                if let Ok(deliveries) = r {
                    release(&shared, deliveries.into_iter().map(|d| d.lease).collect()).await;
                }
                break 'reserve;
            }
        };
        let deliveries = match reserved {
            Ok(d) => {
                retry_delay.reset();
                if let Some((failures, since)) = failing.take() {
                    tracing::info!(
                        backend = backend.name(),
                        server = %backend.server(),
                        failures,
                        down_ms = asked.duration_since(since).as_millis() as u64,
                        "reconnected: the backend answers again"
                    );
                }
                d
            }
            Err(e) if e.is_permanent() => {
                tracing::error!(
                    backend = backend.name(),
                    server = %backend.server(),
                    error = %e.describe(),
                    "the backend refuses this worker's configuration, and retrying cannot change that; stopping"
                );
                fatal = Some(e);
                break 'reserve;
            }
            Err(e) => {
                // The cause names what failed (a call that got no answer
                // within `call_timeout`, a refused connection): a hung
                // broker shows here within that bound and the reserve's wait.
                let (failures, _) = failing.get_or_insert((0, std::time::Instant::now()));
                *failures += 1;
                let delay = retry_delay.next_delay();
                tracing::warn!(
                    backend = backend.name(),
                    server = %backend.server(),
                    error = %e.describe(),
                    retry_in_ms = delay.as_millis() as u64,
                    "reserve failed; reconnecting"
                );
                tokio::select! {
                    () = &mut stop => break 'reserve,
                    () = tokio::time::sleep(delay + retry::jitter(delay)) => {}
                }
                continue;
            }
        };
        if deliveries.is_empty() {
            ahead_tried = poll.is_zero();
            if worker.until_idle && jobs.is_empty() && shared.unsettled.load(Ordering::SeqCst) == 0
            {
                let idle = async { backend.inspect()?.stats(&queues).await }
                    .await
                    .map(|s| {
                        // A queue that could not be read is not known to be idle.
                        s.iter()
                            .all(|q| q.error.is_none() && q.ready + q.scheduled + q.in_flight == 0)
                    })
                    .unwrap_or(false);
                if idle {
                    break 'reserve;
                }
            }
            continue;
        }
        for Delivery { lease, envelope } in deliveries {
            shared.in_hand.fetch_add(1, Ordering::SeqCst);
            let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
            // The lease waits in the map (extended, handed back at a stop),
            // and comes back out to start the job: no copy per job.
            shared.waiting.lock_unpoisoned().insert(slot, lease);
            let (shared, slots, mut stopping) =
                (Arc::clone(&shared), Arc::clone(&slots), stopping_rx.clone());
            jobs.spawn(async move {
                let permit = tokio::select! {
                    biased;
                    p = slots.acquire_owned() => p.ok(),
                    _ = stopping.wait_for(|s| *s) => None,
                };
                if let Some(permit) = permit {
                    let last_slot = permit.semaphore().available_permits() == 0;
                    if let Some(lease) = shared.take_waiting(slot, last_slot) {
                        execute(Arc::clone(&shared), Delivery { lease, envelope }).await;
                    }
                    drop(permit);
                }
                shared.done_with();
            });
        }
    }

    // Nothing more comes in: jobs enqueued or released from here on stay
    // with the broker for the next worker, and what the backend had taken
    // in goes back uncounted.
    if !stopped_reserving {
        stop_reserving(&*backend, &queues).await;
    }
    // Jobs taken ahead that have no slot yet go back uncounted, as the
    // backend's own buffer did.
    stopping_tx.send_replace(true);
    let unstarted: Vec<Lease> = shared
        .waiting
        .lock_unpoisoned()
        .drain()
        .map(|(_, l)| l)
        .collect();
    release(&shared, unstarted).await;
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
        shared.past_grace.store(true, Ordering::SeqCst);
        for slot in shared.running_leases().0 {
            shared.cancel(slot);
        }
        jobs.shutdown().await;
    }
    // Whatever is still tracked never settled: hand it back, uncounted.
    let (_, leftover) = shared.running_leases();
    release(&shared, leftover).await;
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
        tracing::warn!(error = %e.describe(), "could not write out the last outcome counts; the queue's processed and failed totals miss them");
    }
    #[cfg(feature = "prometheus")]
    if let Some(mut task) = endpoint_task {
        // Awaited, so the port is free once `run` returns.
        task.0.abort();
        let _ = (&mut task.0).await;
    }
    let report = report_shared.report();
    if let Some(e) = fatal {
        tracing::error!(?report, "worker stopped on an error");
        return Err(e);
    }
    tracing::info!(?report, "worker stopped");
    Ok(report)
}
