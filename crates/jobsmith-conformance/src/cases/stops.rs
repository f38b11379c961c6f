//! Whole workers stopping: a graceful stop (every deploy) and a crash
//! (SIGKILL) charge no attempt to a job that did not start, or, where a
//! backend cannot know, no more than the worker could have been running.

use super::common::{
    due_bound, enqueue, env_of, fresh, n_of, qs, sleeping_job, until_started, LONG,
};
use crate::{Factory, Harness, NoopCounter};
use jobsmith_core::{App, Backend, Envelope, SettleExt, Timestamp, WorkerReport};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reserves and acks `n` jobs of `queue` on `b`, a few at a time (a peer
/// holds little unacknowledged), and returns their envelopes as delivered;
/// `why` is the assertion that each reserve (up to 5 s) finds one.
async fn run_out(b: &dyn Backend, queue: &str, n: usize, why: &str) -> Vec<Envelope> {
    run_out_of(b, &qs(queue), n, why).await
}

/// [`run_out`] from several queues, taken in the order given.
async fn run_out_of(b: &dyn Backend, queues: &[String], n: usize, why: &str) -> Vec<Envelope> {
    let mut got = Vec::new();
    while got.len() < n {
        let more = b
            .reserve(queues, n - got.len(), LONG, Duration::from_secs(5))
            .await
            .expect("reserve");
        assert!(!more.is_empty(), "{why} ({} of {n} came)", got.len());
        let leases: Vec<_> = more.iter().map(|d| d.lease.clone()).collect();
        b.ack(&leases).await.expect("ack");
        got.extend(more.iter().map(|d| env_of(d).clone()));
    }
    got
}

/// Starts a worker of the suite's job on `queue`, counting into `counter`,
/// that stops gracefully (within `grace`) when the returned sender fires.
fn start_stoppable(
    h: &Harness,
    queue: &str,
    counter: &NoopCounter,
    concurrency: usize,
    grace: Duration,
) -> (
    tokio::task::JoinHandle<jobsmith_core::Result<WorkerReport>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = App::from_backend(Arc::clone(&h.backend))
        .worker()
        .queues([queue])
        .registry(crate::noop_registry())
        .state(counter.clone())
        .concurrency(concurrency)
        .grace_period(grace)
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    (tokio::spawn(worker.run_report()), stop_tx)
}

/// A graceful stop (every deploy) charges no attempt: not to the job that
/// runs past the grace period and is released, not to the jobs buffered
/// behind it (all slots busy), not to jobs enqueued while the worker stops
/// (a slot free, its reserve waiting). Another process then gets every one
/// of them as attempt 1, at once, even after the stopped one's connection
/// goes away as it would at exit.
pub async fn worker_stop_charges_no_attempt(factory: Factory) {
    for concurrency in [1, 2] {
        let h = fresh(factory).await;
        stop_charges_no_attempt(&h, &format!("stop{concurrency}"), concurrency).await;
    }
}

async fn stop_charges_no_attempt(h: &Harness, queue: &str, concurrency: usize) {
    let b = &*h.backend;
    b.enqueue(
        (0..6)
            .map(|n| sleeping_job(queue, n, if n == 0 { 10_000 } else { 0 }))
            .collect(),
    )
    .await
    .expect("enqueue");
    let counter = NoopCounter::default();
    let (run, stop_tx) =
        start_stoppable(h, queue, &counter, concurrency, Duration::from_millis(800));
    // With one slot, job 0 holds it and the rest wait behind; with two, the
    // rest run and the free slot's reserve waits for more.
    let started = if concurrency == 1 { 1 } else { 6 };
    until_started(&counter, started).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.enqueue((6..9).map(|n| sleeping_job(queue, n, 0)).collect())
        .await
        .expect("enqueue during the stop");
    let report = run.await.expect("worker task").expect("worker runs");
    assert!(
        counter.started().len() == started && report.released >= 1,
        "concurrency {concurrency}: the worker started {started} jobs, and released job 0 \
         when the grace period ran out: {report:?}"
    );
    // The stopped process exits: its connection closes.
    h.faults.kill().await;
    let peer = (h.peer)().await;
    let left = 9 - (started - 1);
    let got = run_out(
        &*peer,
        queue,
        left,
        "a job the stopped worker held or never took is ready at once for another process",
    )
    .await;
    let mut charged: Vec<(u64, u32)> = got
        .iter()
        .filter(|e| e.attempt != 1)
        .map(|e| (n_of(e), e.attempt))
        .collect();
    charged.sort_unstable();
    assert!(
        charged.is_empty(),
        "concurrency {concurrency}: a graceful stop charged an attempt to jobs (n, attempt now) \
         {charged:?}; job 0 was released at the stop, the others never started"
    );
}

/// Jobs a worker takes ahead of its free slots (it does while jobs are
/// short, to bring them in batches) go back at a graceful stop as the
/// backend's own buffer does: another process gets each one at once, as
/// attempt 1, and nothing the stopped worker started runs again.
pub async fn worker_stop_charges_nothing_to_jobs_taken_ahead(factory: Factory) {
    let h = fresh(factory).await;
    let (queue, jobs) = ("ahead", 100u64);
    h.backend
        .enqueue((0..jobs).map(|n| sleeping_job(queue, n, 3)).collect())
        .await
        .expect("enqueue");
    let counter = NoopCounter::default();
    let (run, stop_tx) = start_stoppable(&h, queue, &counter, 1, Duration::from_secs(5));
    // By then the worker knows its jobs are short, and takes some ahead.
    until_started(&counter, 20).await;
    let _ = stop_tx.send(());
    let report = run.await.expect("worker task").expect("worker runs");
    h.faults.kill().await;
    let (started, done) = (counter.started(), counter.get());
    assert_eq!(
        u64::try_from(started.len()).expect("small"),
        done,
        "every job the worker started finished within the grace period: {report:?}"
    );
    let peer = (h.peer)().await;
    let got = run_out(
        &*peer,
        queue,
        usize::try_from(jobs - done).expect("small"),
        "a job the stopped worker took ahead or never took is ready at once for another process",
    )
    .await;
    let charged: Vec<(u64, u32)> = got
        .iter()
        .filter(|e| e.attempt != 1)
        .map(|e| (n_of(e), e.attempt))
        .collect();
    assert!(
        charged.is_empty(),
        "a graceful stop charged an attempt to jobs it never started (n, attempt now): \
         {charged:?}; {report:?}"
    );
    let again: Vec<u64> = got
        .iter()
        .map(n_of)
        .filter(|n| started.contains(n))
        .collect();
    assert!(again.is_empty(), "jobs that ran came back: {again:?}");
}

/// What a stopping worker's backend takes in after the stop (a receive
/// already on its way to the broker brings a job enqueued meanwhile) is
/// handed back as it comes, not once the worker's last wait on another
/// queue is over: another process gets it within two seconds of its
/// enqueue, as attempt 1, while the stopping worker still waits.
pub async fn worker_stop_hands_back_at_once_what_it_takes_in(factory: Factory) {
    let h = fresh(factory).await;
    let (first, second) = ("handback1", "handback2");
    let counter = NoopCounter::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = App::from_backend(Arc::clone(&h.backend))
        .worker()
        .queues([first, second])
        .registry(crate::noop_registry())
        .state(counter.clone())
        .concurrency(1)
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());
    // The worker's reserve is waiting on both queues.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let enqueued = Instant::now();
    enqueue(&*h.backend, sleeping_job(first, 1, 0)).await;
    // Time for a receive still open at the stop to bring the job in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peer = (h.peer)().await;
    let got = peer
        .reserve(&qs(first), 1, LONG, Duration::from_secs(5))
        .await
        .expect("reserve");
    let waited = enqueued.elapsed();
    assert!(
        got.len() == 1 && waited <= HANDED_BACK,
        "a job enqueued while a worker stops reaches another process within {HANDED_BACK:?}: \
         it came after {waited:?} ({} of 1)",
        got.len()
    );
    assert_eq!(
        env_of(&got[0]).attempt,
        1,
        "the stopping worker never started it"
    );
    peer.ack(&[got[0].lease.clone()]).await.expect("ack");
    let report = run.await.expect("worker task").expect("worker runs");
    assert!(
        counter.started().is_empty(),
        "a stopping worker starts nothing: {report:?}"
    );
}

/// How soon after its enqueue a job that a stopping worker's backend took in
/// reaches another process ([`worker_stop_hands_back_at_once_what_it_takes_in`]).
const HANDED_BACK: Duration = Duration::from_secs(2);

/// Delayed jobs a worker's backend took in ahead of their due time (a
/// broker that sends delayed jobs early, or counts delays in whole seconds,
/// leaves the last of the wait to the reserving process) go back at a
/// graceful stop, due when they were: while the stopping worker runs out its
/// grace period on a long job, another process gets each one as attempt 1
/// within the backend's due-time bound, and the stopping worker starts none.
pub async fn worker_stop_charges_nothing_to_jobs_coming_due(factory: Factory) {
    let h = fresh(factory).await;
    let queue = "coming";
    enqueue(&*h.backend, sleeping_job(queue, 0, 10_000)).await;
    let counter = NoopCounter::default();
    // One slot runs the long job; the others' reserve waits, and takes the
    // delayed jobs in as its backend brings them, ahead of their time.
    let (run, stop_tx) = start_stoppable(
        &h,
        queue,
        &counter,
        COMING_DUE_MS.len() + 1,
        Duration::from_secs(1),
    );
    until_started(&counter, 1).await;
    let peer = (h.peer)().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let jobs: Vec<Envelope> = (1..)
        .zip(COMING_DUE_MS)
        .map(|(n, ms)| {
            let mut e = sleeping_job(queue, n, 0);
            e.max_attempts = 1;
            e.run_at = Timestamp::now().plus(Duration::from_millis(ms));
            e
        })
        .collect();
    let due_of = |n: u64| {
        let i = usize::try_from(n - 1).expect("small");
        sent + Duration::from_millis(COMING_DUE_MS[i])
    };
    h.backend.enqueue(jobs).await.expect("enqueue");
    tokio::time::sleep_until((sent + STOP_BEFORE_DUE).into()).await;
    let _ = stop_tx.send(());
    // Another process reserves from the stop on, until each job came or
    // well after the stopping worker is gone.
    let bound = due_bound(&h);
    let collect = tokio::spawn(async move {
        let want = COMING_DUE_MS.len();
        let until = Instant::now() + Duration::from_secs(4);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < until {
            let more = peer
                .reserve(&qs(queue), want - got.len(), LONG, until - Instant::now())
                .await
                .expect("reserve");
            let at = Instant::now();
            let leases: Vec<_> = more.iter().map(|d| d.lease.clone()).collect();
            peer.ack(&leases).await.expect("ack");
            // Job 0, released at the end of the grace period, is not one of them.
            got.extend(
                more.iter()
                    .map(|d| (env_of(d).clone(), at))
                    .filter(|(e, _)| n_of(e) != 0),
            );
        }
        got
    });
    let report = run.await.expect("worker task").expect("worker runs");
    // The stopped process exits: its connection closes.
    h.faults.kill().await;
    let got = collect.await.expect("peer task");
    assert_eq!(
        counter.started(),
        [0].into(),
        "a stopping worker starts no job that comes due during its grace period: {report:?}"
    );
    let came: Vec<(u64, u32, Option<Duration>)> = got
        .iter()
        .map(|(e, at)| {
            let n = n_of(e);
            (n, e.attempt, at.checked_duration_since(due_of(n)))
        })
        .collect();
    let missing: Vec<u64> = (1..=COMING_DUE_MS.len() as u64)
        .filter(|n| !came.iter().any(|c| c.0 == *n))
        .collect();
    let wrong = came
        .iter()
        .any(|(_, attempt, late)| *attempt != 1 || late.is_some_and(|l| l > bound));
    assert!(
        missing.is_empty() && !wrong,
        "jobs coming due while a worker stopped must reach another process as attempt 1, \
         within {bound:?} of their due time; (n, attempt, late by) {came:?}, never came \
         {missing:?}; the stopping worker's {report:?}"
    );
}

/// When the jobs of [`worker_stop_charges_nothing_to_jobs_coming_due`] are
/// due, in ms after their enqueue: under a second (SQS counts delays in
/// whole seconds and holds the rest), and with delays whose bits make
/// RabbitMQ send them 100 ms or more ahead of their time, so that each is
/// held by the reserving process when the stop comes, [`STOP_BEFORE_DUE`].
const COMING_DUE_MS: [u64; 3] = [970, 980, 990];

/// When the worker of [`worker_stop_charges_nothing_to_jobs_coming_due`] is
/// stopped, after the jobs' enqueue: shortly before the first is due.
const STOP_BEFORE_DUE: Duration = Duration::from_millis(940);

/// A worker that dies (kill -9) charges an attempt at most to the jobs it
/// could have been running: its concurrency, however many jobs its backend
/// took in ahead, and however many the worker took ahead of its free slots
/// (it does while jobs are short). Every job comes back to another process.
pub async fn worker_crash_charges_at_most_its_concurrency(factory: Factory) {
    // Long jobs, the worker killed while its first ones run; then short ones,
    // killed once it has seen enough of them to take jobs ahead.
    for (jobs, sleep_ms, before_kill) in [(20, 500, 2), (100, 3, 20)] {
        let h = fresh(factory).await;
        crash_charges_at_most_concurrency(&h, jobs, sleep_ms, before_kill).await;
    }
}

async fn crash_charges_at_most_concurrency(
    h: &Harness,
    jobs: u64,
    sleep_ms: u64,
    before_kill: usize,
) {
    h.backend
        .enqueue(
            (0..jobs)
                .map(|n| sleeping_job("default", n, sleep_ms))
                .collect(),
        )
        .await
        .expect("enqueue");
    let counter = NoopCounter::default();
    let run = start_crashing(h, &["default"], &counter);
    until_started(&counter, before_kill).await;
    if sleep_ms > 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_crash_charged_at_most_concurrency(h, run, &counter, &["default"], jobs).await;
}

/// [`worker_crash_charges_at_most_its_concurrency`] where the worker runs two
/// queues of three priority levels each, and the jobs come while it waits
/// idle on all of them: however many places a backend watches for the
/// worker, it takes in no more than the worker can run.
pub async fn worker_crash_on_many_queues_and_levels_charges_at_most_its_concurrency(
    factory: Factory,
) {
    let h = fresh(factory).await;
    let queues = ["crash1", "crash2"];
    let spread = |first: u64, per_place: u64, sleep_ms: u64| {
        let mut jobs = Vec::new();
        for queue in queues {
            for priority in [0, 1, 2] {
                for _ in 0..per_place {
                    let mut e = sleeping_job(queue, first + jobs.len() as u64, sleep_ms);
                    e.priority = priority;
                    jobs.push(e);
                }
            }
        }
        jobs
    };
    // A job in each place first, so that every level is in use when the
    // worker waits (SQS creates a level's queue for its first job).
    let warm_up = spread(1000, 1, 0);
    let places = warm_up.len();
    h.backend.enqueue(warm_up).await.expect("enqueue");
    let counter = NoopCounter::default();
    let run = start_crashing(&h, &queues, &counter);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.get() < places as u64 {
        assert!(Instant::now() < deadline, "the worker ran the first jobs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The worker waits on every place; then the jobs come, long ones.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let burst = spread(0, 4, 500);
    let jobs = (places + burst.len()) as u64;
    h.backend.enqueue(burst).await.expect("enqueue");
    until_started(&counter, places + CRASH_CONCURRENCY).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_crash_charged_at_most_concurrency(&h, run, &counter, &queues, jobs).await;
}

/// The concurrency of the workers that the crash cases kill.
const CRASH_CONCURRENCY: usize = 2;

/// Starts a worker of [`CRASH_CONCURRENCY`] on `queues` with the harness's
/// short lease, that runs until it is killed.
fn start_crashing(
    h: &Harness,
    queues: &[&str],
    counter: &NoopCounter,
) -> tokio::task::JoinHandle<jobsmith_core::Result<WorkerReport>> {
    let worker = App::from_backend(Arc::clone(&h.backend))
        .worker()
        .queues(queues.iter().copied())
        .registry(crate::noop_registry())
        .state(counter.clone())
        .concurrency(CRASH_CONCURRENCY)
        .lease(h.short_lease)
        .stop_on(std::future::pending());
    tokio::spawn(worker.run_report())
}

/// Kills the worker `run` as a process dies, then has another process run
/// out what is left of the `jobs` enqueued on `queues`: no more of them than
/// the worker's concurrency may come back charged an attempt without ever
/// having started.
async fn assert_crash_charged_at_most_concurrency(
    h: &Harness,
    run: tokio::task::JoinHandle<jobsmith_core::Result<WorkerReport>>,
    counter: &NoopCounter,
    queues: &[&str],
    jobs: u64,
) {
    // The process dies: nothing of it runs on, its connection goes.
    run.abort();
    let _ = run.await;
    h.faults.kill().await;
    let started = counter.started();
    let done = counter.get();
    let peer = (h.peer)().await;
    let left = usize::try_from(jobs - done).expect("small");
    let queues: Vec<String> = queues.iter().map(|q| (*q).to_owned()).collect();
    let got = run_out_of(
        &*peer,
        &queues,
        left,
        "every job not completed comes back to another process once its lease runs out",
    )
    .await;
    let charged_unstarted: Vec<(u64, u32)> = got
        .iter()
        .filter(|e| e.attempt > 1 && !started.contains(&n_of(e)))
        .map(|e| (n_of(e), e.attempt))
        .collect();
    assert!(
        charged_unstarted.len() <= CRASH_CONCURRENCY,
        "a dead worker of concurrency {CRASH_CONCURRENCY} charged an attempt to {} jobs that \
         never started (n, attempt now): {charged_unstarted:?}",
        charged_unstarted.len()
    );
}
