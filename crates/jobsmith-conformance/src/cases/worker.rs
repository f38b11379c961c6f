//! Whole workers ([`App`] and its worker) end to end: reconnecting,
//! retrying and dead-lettering, stopping, crashing, and sharing a backend.

use super::common::{dead_of, enqueue, fresh, job, sleeping_job, stats, until_started};
use crate::{Factory, Harness, NoopCounter};
use jobsmith_core::{App, Envelope, WorkerReport};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker rides out a dropped connection with backoff and finishes every job.
pub async fn worker_reconnects_and_finishes_every_job(factory: Factory) {
    let h = fresh(factory).await;
    let jobs = 300;
    // A reservation whose reply the cut connection swallowed still counts an
    // attempt (a lost delivery always does): give the jobs a retry policy, as
    // real jobs have, so such a job runs on its next delivery.
    let with_retries = |n| {
        let mut e = job("default", n);
        e.max_attempts = 5;
        e
    };
    h.backend
        .enqueue((0..jobs).map(with_retries).collect())
        .await
        .expect("enqueue");
    let counter = NoopCounter::default();
    let app = App::from_backend(Arc::clone(&h.backend));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = app
        .worker()
        .registry(crate::noop_registry())
        .state(counter.clone())
        .lease(h.short_lease.max(Duration::from_secs(2)))
        .concurrency(8)
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.faults.sever().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.faults.restore().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter_value(&counter) < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    let report = run.await.expect("worker task").expect("worker runs");
    assert!(
        counter_value(&counter) >= jobs,
        "every job ran at least once after the reconnect: {} of {jobs}",
        counter_value(&counter)
    );
    let s = stats(&*h.backend, "default").await;
    assert_eq!(
        (s.ready, s.in_flight, s.dead),
        (0, 0, 0),
        "nothing is left behind; report {report:?}"
    );
}

fn counter_value(c: &NoopCounter) -> u64 {
    c.get()
}

/// The worker retries a failing job with its backoff, and dead-letters it after its last attempt.
pub async fn worker_retries_then_dead_letters(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let make = |fail_times: u32, n: u64| {
        Envelope::with_args(
            "conformance_noop",
            "default",
            &json!({"fail_times": fail_times, "n": n}),
        )
        .map(|mut e| {
            e.max_attempts = 3;
            e
        })
    };
    let ok_late = make(2, 1).expect("json");
    let doomed = make(5, 2).expect("json");
    let doomed_id = doomed.id.clone();
    b.enqueue(vec![ok_late, doomed]).await.expect("enqueue");
    h.faults.push_raw("default", b"garbage").await;
    let mut unknown = job("default", 3);
    unknown.job = "no_such_job".into();
    let unknown_id = enqueue(b, unknown).await;
    let (counter, report) = run_until_idle(&h, "worker runs").await;
    assert_eq!(
        counter.get(),
        1,
        "the job that fails twice succeeds on its third attempt"
    );
    assert_eq!(report.succeeded, 1);
    assert_eq!(
        report.retried, 4,
        "two retries each for the two failing jobs"
    );
    assert_eq!(
        report.dead, 3,
        "the doomed job, the garbage and the unknown job are dead"
    );
    let doomed = dead_of(b)
        .dead_get("default", &doomed_id)
        .await
        .expect("get")
        .expect("doomed job is dead");
    assert!(
        doomed.reason.contains("attempt 3 of 3"),
        "reason names the attempts: {}",
        doomed.reason
    );
    let unknown = dead_of(b)
        .dead_get("default", &unknown_id)
        .await
        .expect("get")
        .expect("unknown job is dead");
    assert!(
        unknown.reason.contains("no_such_job"),
        "reason names the unknown job: {}",
        unknown.reason
    );
    let all = dead_of(b).dead_list("default", 0, 10).await.expect("list");
    assert!(
        all.iter().any(|d| d.raw == b"garbage"),
        "garbage is dead-lettered as it was"
    );
}

/// Garbage bytes and a valid envelope naming an unknown job, written straight
/// into the queue by a foreign producer, reach the dead-letter queue with
/// their reasons; the worker carries on and runs the next job.
pub async fn worker_dead_letters_bad_input_and_carries_on(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let garbage: &[u8] = b"\xff\xfe{{ not an envelope";
    h.faults.push_raw("default", garbage).await;
    let unknown = Envelope::with_args("no_such_job", "default", &json!({"x": 1})).expect("json");
    h.faults.push_raw("default", &unknown.to_bytes()).await;
    enqueue(b, job("default", 7)).await;
    let (counter, report) = run_until_idle(&h, "the worker carries on").await;
    assert_eq!(counter.get(), 1, "the normal job ran after the bad ones");
    assert_eq!((report.dead, report.succeeded), (2, 1), "{report:?}");
    let dead = dead_of(b).dead_list("default", 0, 10).await.expect("list");
    assert_eq!(dead.len(), 2, "both bad payloads are dead: {dead:?}");
    let g = dead
        .iter()
        .find(|d| d.raw == garbage)
        .expect("the garbage is kept byte for byte");
    assert!(!g.reason.is_empty(), "the garbage's reason is given");
    let u = dead
        .iter()
        .find(|d| d.envelope().is_some_and(|e| e.job == "no_such_job"))
        .expect("the unknown job is dead, still an envelope");
    assert!(
        u.reason.contains("no_such_job"),
        "reason names the job: {}",
        u.reason
    );
}

/// An envelope of a format version this build does not know (`v: 99`,
/// written by a newer or foreign producer) is never run: it is delivered as
/// a payload that cannot be read, and the worker dead-letters it with a
/// reason naming the version, its bytes kept as they were (a reader of
/// version 1 would drop what it does not understand), and carries on.
pub async fn worker_dead_letters_an_unknown_envelope_version(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut future = serde_json::to_value(job("default", 1)).expect("an envelope is JSON");
    future["v"] = json!(99);
    future["shiny_new_field"] = json!({"only": "version 99 knows this"});
    let raw = serde_json::to_vec(&future).expect("JSON");
    h.faults.push_raw("default", &raw).await;
    enqueue(b, job("default", 2)).await;
    let (counter, report) = run_until_idle(&h, "the worker carries on").await;
    assert_eq!(
        counter.started(),
        [2].into(),
        "only the version 1 job ran; the version 99 one never started"
    );
    assert_eq!((report.dead, report.succeeded), (1, 1), "{report:?}");
    let dead = dead_of(b).dead_list("default", 0, 10).await.expect("list");
    assert_eq!(dead.len(), 1, "the version 99 envelope is dead: {dead:?}");
    assert_eq!(dead[0].raw, raw, "its bytes are kept as they were");
    assert!(
        dead[0].reason.contains("version 99"),
        "the reason names the version: {}",
        dead[0].reason
    );
    assert_eq!(
        dead_of(b)
            .dead_requeue("default", &[dead[0].id.clone()])
            .await
            .expect("requeue"),
        0,
        "a version this build cannot read is not requeued by it"
    );
}

/// Two workers of one process, on one backend and different queues: one's
/// backlog never holds up the other's jobs, however what the backend takes
/// in ahead is sized to what the workers run.
pub async fn workers_sharing_a_backend_do_not_starve_each_other(factory: Factory) {
    let h = fresh(factory).await;
    h.backend
        .enqueue((0..40).map(|n| sleeping_job("busy", n, 300)).collect())
        .await
        .expect("enqueue the backlog");
    let counter = NoopCounter::default();
    let app = App::from_backend(Arc::clone(&h.backend));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = |queue: &str| {
        let mut stop = stop_rx.clone();
        app.worker()
            .queues([queue])
            .registry(crate::noop_registry())
            .state(counter.clone())
            .concurrency(2)
            .stop_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
    };
    let busy = tokio::spawn(worker("busy").run_report());
    // The busy worker's slots are taken and its backlog waits.
    until_started(&counter, 2).await;
    let other = tokio::spawn(worker("other").run_report());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    h.backend
        .enqueue((100..103).map(|n| sleeping_job("other", n, 0)).collect())
        .await
        .expect("enqueue");
    let deadline = sent + Duration::from_secs(3);
    let mine = |c: &NoopCounter| c.started().iter().filter(|n| **n >= 100).count();
    while mine(&counter) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (started, waited) = (mine(&counter), sent.elapsed());
    let _ = stop_tx.send(true);
    let _ = busy.await;
    let _ = other.await;
    assert_eq!(
        started, 3,
        "the idle worker started {started} of its 3 jobs in {waited:?} while the other worker \
         of its process had a backlog: one worker's jobs must not wait for another's"
    );
}

/// A worker draining short jobs asks the backend for as many as its
/// concurrency allows at each reserve, not for the few slots left while the
/// jobs it has just taken are starting: a reserve is a round trip, and
/// batches that shrink to half the concurrency halve the drain rate. On a
/// backend that takes jobs in ahead by itself (RabbitMQ, SQS) the batches are
/// what the broker has delivered, so there only every job's run is checked.
pub async fn worker_takes_short_jobs_in_batches_of_its_concurrency(factory: Factory) {
    let h = fresh(factory).await;
    let jobs: u64 = 800;
    h.backend
        .enqueue((0..jobs).map(|n| job("default", n)).collect())
        .await
        .expect("enqueue");
    let (counter, report) = run_until_idle(&h, "the worker drains").await;
    assert_eq!(counter.started().len() as u64, jobs, "every job ran");
    assert_eq!(report.started, jobs, "{report:?}");
    if h.backend.prefetches() {
        return;
    }
    // At the default concurrency of 16: 50 full reserves, and a few that find
    // the queue empty at the end. Batches of 12 on average are the least let by.
    let most = jobs / 12 + 10;
    assert!(
        report.reserves <= most,
        "{} reserves for {jobs} jobs of no time ({:.1} jobs a reserve): at most {most} were \
         expected at concurrency 16 ({report:?})",
        report.reserves,
        jobs as f64 / report.reserves.max(1) as f64
    );
}

/// Runs a worker with the suite's job over `h` until its queues are idle;
/// the counter of its runs and the worker's report. `what` names the run in
/// the failure message.
async fn run_until_idle(h: &Harness, what: &str) -> (NoopCounter, WorkerReport) {
    let counter = NoopCounter::default();
    let report = App::from_backend(Arc::clone(&h.backend))
        .worker()
        .registry(crate::noop_registry())
        .state(counter.clone())
        .until_idle()
        .run_report()
        .await
        .expect(what);
    (counter, report)
}
