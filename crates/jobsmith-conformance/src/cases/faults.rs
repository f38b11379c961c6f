//! A backend under [`Faults`](crate::Faults): a severed connection, a broken
//! queue beside healthy ones, a frozen broker.

use super::common::{dead_of, enqueue, env_of, fresh, inspect_of, job, n_of, qs, take, LONG};
use crate::{Factory, Harness, NoopCounter};
use jobsmith_core::{App, Backend, Envelope, LeaseStatus, Settings, SettleExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connection drops and comes back: nothing acknowledged is lost or run again,
/// everything else is still there.
pub async fn connection_drop_loses_nothing_acknowledged(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    b.enqueue((0..50).map(|n| job("q", n)).collect())
        .await
        .expect("enqueue");
    let got = b
        .reserve(&qs("q"), 20, h.short_lease, Duration::from_secs(5))
        .await
        .expect("reserve");
    let acked: Vec<_> = got.iter().take(10).map(|d| d.lease.clone()).collect();
    b.ack(&acked).await.expect("ack");
    let acked_ns: Vec<u64> = got.iter().take(10).map(|d| n_of(env_of(d))).collect();
    h.faults.sever().await;
    let during = b.enqueue(vec![job("q", 99)]).await;
    assert!(
        matches!(&during, Err(e) if e.is_transient()),
        "a severed backend reports a transient error, got {during:?}"
    );
    h.faults.restore().await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 40 && Instant::now() < deadline {
        match b.reserve(&qs("q"), 50, LONG, Duration::from_secs(1)).await {
            Ok(batch) => {
                let leases: Vec<_> = batch.iter().map(|d| d.lease.clone()).collect();
                seen.extend(batch.iter().map(|d| n_of(env_of(d))));
                b.ack(&leases).await.expect("ack");
            }
            Err(e) => assert!(
                e.is_transient(),
                "after restore, only transient errors: {e}"
            ),
        }
    }
    seen.sort_unstable();
    seen.dedup();
    let expected: Vec<u64> = (0..50).filter(|n| !acked_ns.contains(n)).collect();
    assert_eq!(
        seen, expected,
        "every unacknowledged job comes back, no acknowledged one does"
    );
}

/// Jobs each queue holds in the broken-queue cases.
const EACH: u64 = 4;

/// The queue [`Faults::break_queue`](crate::Faults::break_queue) breaks, and the healthy one beside it.
const BROKEN: &str = "broken";

const HEALTHY: &str = "healthy";

/// A fresh harness whose queue [`BROKEN`] holds jobs `0..EACH` and is
/// broken, beside [`HEALTHY`] with jobs `100..100 + EACH` (each with
/// `max_attempts` 1: a job charged an attempt it did not run is dead);
/// and what was done to break it. `None`, said on stderr, where the backend
/// cannot break one queue on its own.
async fn broken_beside_healthy(factory: Factory, case: &str) -> Option<(Harness, String)> {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let jobs = |queue: &str, first: u64| {
        (first..first + EACH)
            .map(|n| {
                let mut e = job(queue, n);
                e.max_attempts = 1;
                e
            })
            .collect()
    };
    b.enqueue(jobs(BROKEN, 0)).await.expect("enqueue");
    b.enqueue(jobs(HEALTHY, 100)).await.expect("enqueue");
    let Some(how) = h.faults.break_queue(BROKEN).await else {
        eprintln!(
            "{case}: not checked: a queue of the {} backend cannot break on its own",
            b.name()
        );
        return None;
    };
    Some((h, how))
}

fn both(first: &str, second: &str) -> Vec<String> {
    vec![first.to_owned(), second.to_owned()]
}

/// A reserve over a broken queue and a healthy one hands out the healthy
/// queue's jobs, in either order, each once and as its first attempt: a
/// failing queue neither fails the reserve nor makes it drop leases it took
/// from another. Over the broken queue alone, it fails, as over a broker
/// that is down, so that a worker backs off.
pub async fn reserve_over_a_broken_queue_serves_the_others(factory: Factory) {
    let case = "reserve_over_a_broken_queue_serves_the_others";
    let Some((h, how)) = broken_beside_healthy(factory, case).await else {
        return;
    };
    let b = &*h.backend;
    let orders = [both(BROKEN, HEALTHY), both(HEALTHY, BROKEN)];
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + LONG;
    for round in 0.. {
        let order = &orders[round % 2];
        let got = b
            .reserve(order, 2, h.short_lease, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a reserve over {order:?} failed ({e}) while `{HEALTHY}` works and `{BROKEN}` \
                     is broken ({how}): one failing queue must not fail the others"
                )
            });
        for d in got {
            let env = env_of(&d);
            let n = n_of(env);
            assert_eq!(
                d.lease.queue, HEALTHY,
                "job {n} came from `{}`, which is broken ({how})",
                d.lease.queue
            );
            assert_eq!(
                env.attempt, 1,
                "job {n} of `{HEALTHY}` came as attempt {}: a reserve that met the broken queue \
                 dropped a lease it had taken, and the lease ran out",
                env.attempt
            );
            assert!(seen.insert(n), "job {n} was handed out twice");
            assert_eq!(
                b.ack(std::slice::from_ref(&d.lease)).await.expect("ack"),
                vec![LeaseStatus::Held]
            );
        }
        if seen.len() as u64 == EACH {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of the {EACH} jobs of `{HEALTHY}` were handed out in {LONG:?} beside the \
             broken `{BROKEN}` ({how})",
            seen.len()
        );
    }
    let alone = b
        .reserve(&qs(BROKEN), 1, LONG, Duration::from_millis(500))
        .await;
    assert!(
        alone.is_err(),
        "a reserve over the broken `{BROKEN}` alone ({how}) must fail, so that a worker backs \
         off; got {alone:?}"
    );
    // A lease taken and dropped would bring its job back once it ran out.
    tokio::time::sleep(h.short_lease * 2).await;
    assert!(
        take(b, HEALTHY, 10).await.is_empty(),
        "every job of `{HEALTHY}` was acked once; none may come back"
    );
}

/// Stats over a broken queue and a healthy one answer: the broken queue's
/// row says it is broken and why, the healthy one is counted as it is.
pub async fn stats_mark_a_broken_queue_and_count_the_others(factory: Factory) {
    let case = "stats_mark_a_broken_queue_and_count_the_others";
    let Some((h, how)) = broken_beside_healthy(factory, case).await else {
        return;
    };
    let rows = inspect_of(&*h.backend)
        .stats(&both(BROKEN, HEALTHY))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "stats over `{BROKEN}` (broken: {how}) and `{HEALTHY}` failed ({e}); the healthy \
                 queue must be counted and the broken one marked"
            )
        });
    assert_eq!(
        rows.iter().map(|s| s.queue.as_str()).collect::<Vec<_>>(),
        vec![BROKEN, HEALTHY],
        "one row per queue asked, in order"
    );
    let (broken, healthy) = (&rows[0], &rows[1]);
    assert!(
        broken.error.as_deref().is_some_and(|e| !e.is_empty()),
        "the row of `{BROKEN}` ({how}) must say it is broken and why: {broken:?}"
    );
    assert_eq!(healthy.error, None, "`{HEALTHY}` is not broken");
    assert_eq!(
        (
            healthy.ready,
            healthy.scheduled,
            healthy.in_flight,
            healthy.dead
        ),
        (EACH, 0, 0, 0),
        "`{HEALTHY}` is counted as it is beside the broken `{BROKEN}`"
    );
}

/// A worker given a broken queue and a healthy one runs the healthy queue's
/// jobs while the other is broken, and the broken queue's jobs once it is
/// repaired: none is dead-lettered without running (each allows one
/// attempt, so an attempt charged while its queue was broken would bury it).
pub async fn worker_runs_the_others_beside_a_broken_queue_and_its_jobs_once_repaired(
    factory: Factory,
) {
    let case = "worker_runs_the_others_beside_a_broken_queue_and_its_jobs_once_repaired";
    let Some((h, how)) = broken_beside_healthy(factory, case).await else {
        return;
    };
    let counter = NoopCounter::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = App::from_backend(Arc::clone(&h.backend))
        .worker()
        .registry(crate::noop_registry())
        .queues([BROKEN, HEALTHY])
        .state(counter.clone())
        .lease(h.short_lease.max(Duration::from_secs(2)))
        // Room for more jobs than a queue holds, so that every reserve goes
        // on to the next queue after taking all of the first's.
        .concurrency(2 * EACH as usize)
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());
    let until = |n: u64, within: Duration| {
        let counter = counter.clone();
        async move {
            let deadline = Instant::now() + within;
            while counter.get() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            counter.get()
        }
    };
    let ran = until(EACH, LONG).await;
    if ran != EACH {
        let dead = dead_of_both(&*h.backend).await;
        panic!(
            "the worker ran {ran} of the {EACH} jobs of `{HEALTHY}` beside the broken \
             `{BROKEN}` ({how}) in {LONG:?}; dead: {dead:?}"
        );
    }
    h.faults.repair_queue(BROKEN).await;
    let ran = until(2 * EACH, LONG).await;
    let _ = stop_tx.send(());
    let report = run.await.expect("worker task").expect("worker runs");
    let dead = dead_of_both(&*h.backend).await;
    assert_eq!(
        ran,
        2 * EACH,
        "once `{BROKEN}` was repaired, the worker must run its {EACH} jobs too; it ran {} of \
         them; dead: {dead:?}; report {report:?}",
        ran - EACH
    );
    assert!(dead.is_empty(), "no job may die unrun: {dead:?}");
}

/// The dead jobs of both broken-queue cases' queues: (queue, reason).
async fn dead_of_both(b: &dyn Backend) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for q in [BROKEN, HEALTHY] {
        let dead = dead_of(b).dead_list(q, 0, 100).await.unwrap_or_default();
        out.extend(dead.into_iter().map(|d| (d.queue, d.reason)));
    }
    out
}

/// The `call_timeout` the frozen-broker case sets in the URL.
const FROZEN_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How much longer than its limit a call on a frozen broker may take to fail.
const FROZEN_SLACK: Duration = Duration::from_secs(1);

/// A broker that hangs (its connections open, nothing answered: a stopped
/// process, a proxy that stops forwarding) fails enqueue, reserve and stats
/// with a transient error within the URL's `call_timeout` (a reserve's own
/// wait on top; a reserve may end empty at its wait, and the next one then
/// fails), rather than holding the caller for as long as the broker hangs;
/// once the broker answers again, the same backend works again.
pub async fn frozen_broker_fails_each_call_within_call_timeout(factory: Factory) {
    let case = "frozen_broker_fails_each_call_within_call_timeout";
    let limit = FROZEN_CALL_TIMEOUT;
    let settings = {
        let mut settings = Settings::default();
        settings.call_timeout = Some(limit);
        settings
    };
    let h = factory(settings).await;
    let b = &*h.backend;
    // Every path the calls below take is open and warm before the freeze,
    // and nothing is left that a reserve could hand out without the broker.
    enqueue(b, job("q", 1)).await;
    let got = take(b, "q", 1).await;
    b.ack(&[got[0].lease.clone()]).await.expect("ack");
    inspect_of(b).stats(&qs("q")).await.expect("stats");
    let Some(how) = h.faults.freeze().await else {
        eprintln!(
            "{case}: not checked: the {} backend has no connection to freeze",
            b.name()
        );
        return;
    };
    let wait = Duration::from_secs(1);
    fails_in_time("enqueue", &how, limit, b.enqueue(vec![job("q", 2)])).await;
    // A reserve may end empty at its wait while its receive runs on (a long
    // poll in the background); the worker's next reserve then reports what
    // became of it. Reserving again and again, as a worker does, the
    // failure comes within the wait and the limit of the first reserve.
    let q = qs("q");
    let reserves = async {
        loop {
            match b.reserve(&q, 10, h.short_lease, wait).await {
                Ok(got) if got.is_empty() => continue,
                other => break other,
            }
        }
    };
    fails_in_time("reserve, again and again,", &how, limit + wait, reserves).await;
    fails_in_time("stats", &how, limit, inspect_of(b).stats(&qs("q"))).await;
    h.faults.thaw().await;

    // What the frozen calls sent reaches the broker now, late: the second
    // job may be stored, and leased to the reserve that gave up until its
    // short lease runs out. A job enqueued now is reserved, whatever came first.
    let deadline = Instant::now() + LONG;
    let until = |what: &str| {
        assert!(
            Instant::now() < deadline,
            "{what} did not work again within {LONG:?} after the broker answered again \
             ({how}, then undone)"
        );
    };
    let third = loop {
        until("enqueue");
        match b.enqueue(vec![job("q", 3)]).await {
            Ok(ids) => break ids[0].clone(),
            Err(e) => assert!(e.is_transient(), "after a thaw, only transient errors: {e}"),
        }
    };
    let mut seen = Vec::new();
    while !seen.contains(&third) {
        until("reserve");
        match b.reserve(&qs("q"), 10, LONG, Duration::from_secs(1)).await {
            Ok(batch) => {
                let leases: Vec<_> = batch.iter().map(|d| d.lease.clone()).collect();
                seen.extend(batch.iter().map(|d| env_of(d).id.clone()));
                if !leases.is_empty() {
                    b.ack(&leases).await.expect("ack once the broker answers");
                }
            }
            Err(e) => assert!(e.is_transient(), "after a thaw, only transient errors: {e}"),
        }
    }
    let row = &inspect_of(b)
        .stats(&qs("q"))
        .await
        .expect("stats once the broker answers")[0];
    assert!(
        row.error.is_none(),
        "the queue reads again once the broker answers: {row:?}"
    );
}

/// Runs `call` on a frozen broker (`how`): it must fail with a transient
/// error within `limit` and [`FROZEN_SLACK`].
async fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    how: &str,
    limit: Duration,
    call: impl std::future::Future<Output = jobsmith_core::Result<T>>,
) {
    let started = Instant::now();
    // Far beyond the limit: only so that a backend that hangs fails the case
    // rather than hanging the suite.
    let giving_up = limit + LONG;
    let r = tokio::time::timeout(giving_up, call).await;
    let took = started.elapsed();
    let r = r.unwrap_or_else(|_| {
        panic!(
            "{what} on a frozen broker ({how}) had no answer after {took:?}: with \
             call_timeout={FROZEN_CALL_TIMEOUT:?} it must fail within {limit:?}"
        )
    });
    match r {
        Ok(v) => panic!("{what} on a frozen broker ({how}) succeeded after {took:?}: {v:?}"),
        Err(e) => {
            let e_text = jobsmith_core::__conformance::with_causes(&e);
            eprintln!("{what} on a frozen broker failed after {took:?}: {e_text}");
            assert!(
                e.is_transient(),
                "{what} on a frozen broker fails with a transient error, got: {e_text}"
            );
            assert!(
                took <= limit + FROZEN_SLACK,
                "{what} on a frozen broker ({how}) failed after {took:?}, beyond its limit of \
                 {limit:?} (call_timeout={FROZEN_CALL_TIMEOUT:?}): {e_text}"
            );
        }
    }
}

/// How long the worker's idle reserve waits for work before it asks again.
const WORKER_IDLE_WAIT: Duration = Duration::from_secs(5);

/// A worker whose broker hangs says so in its log, at `WARN`, naming the
/// backend, its server (the `host:port` it connects to, and SQS's region:
/// [`Faults::server_words`](crate::Faults::server_words)) and the cause,
/// within its idle reserve's wait and the URL's
/// `call_timeout` (plus a little): an operator sees a hung broker rather
/// than a quiet worker. Once the broker answers again, it runs jobs again.
pub async fn frozen_broker_shows_in_the_worker_log_within_call_timeout(factory: Factory) {
    let case = "frozen_broker_shows_in_the_worker_log_within_call_timeout";
    if !crate::logs::capture() {
        eprintln!("{case}: not checked: another tracing subscriber was installed first");
        return;
    }
    let settings = {
        let mut settings = Settings::default();
        settings.call_timeout = Some(FROZEN_CALL_TIMEOUT);
        settings
    };
    let h = factory(settings).await;
    let name = h.backend.name();
    let counter = NoopCounter::default();
    let app = App::from_backend(Arc::clone(&h.backend));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = app
        .worker()
        .registry(crate::noop_registry())
        .state(counter.clone())
        .concurrency(2)
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());
    let ran = |n: u64, why: &'static str| {
        let counter = counter.clone();
        async move {
            let deadline = Instant::now() + LONG;
            while counter.get() < n {
                assert!(Instant::now() < deadline, "{why}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    enqueue(&*h.backend, job("default", 1)).await;
    ran(1, "the worker runs a job before the freeze").await;
    // The worker is idle now, waiting in a reserve.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Some(how) = h.faults.freeze().await else {
        eprintln!("{case}: not checked: the {name} backend has no connection to freeze");
        let _ = stop_tx.send(());
        let _ = run.await;
        return;
    };
    let frozen_at = Instant::now();
    let seen_before = crate::logs::lines().len();
    let bound = WORKER_IDLE_WAIT + FROZEN_CALL_TIMEOUT + FROZEN_SLACK;
    let warned = loop {
        let fresh: Vec<String> = crate::logs::lines().split_off(seen_before);
        if let Some(line) = fresh.into_iter().find(|l| {
            l.starts_with("WARN")
                && (l.contains(&format!("backend={name}"))
                    || l.contains(&format!("backend=\"{name}\"")))
        }) {
            break line;
        }
        assert!(
            frozen_at.elapsed() < bound,
            "the worker logged no warning naming the {name} backend within {bound:?} of a \
             freeze ({how}), with call_timeout={FROZEN_CALL_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("{case}: after {:?}: {warned}", frozen_at.elapsed());
    let server = warned
        .split_whitespace()
        .find_map(|f| f.strip_prefix("server="))
        .unwrap_or_else(|| panic!("the warning names the {name} backend's server: {warned}"));
    for word in h.faults.server_words() {
        assert!(
            server.contains(&word),
            "the warning names where the {name} backend connects, `{word}`, \
             not `server={server}`: {warned}"
        );
    }
    h.faults.thaw().await;
    enqueue_when_back(&*h.backend, job("default", 2)).await;
    ran(2, "the worker runs jobs again once the broker answers").await;
    let _ = stop_tx.send(());
    let _ = run.await;
}

/// Enqueues `env` once the broker answers again, riding out transient errors.
async fn enqueue_when_back(b: &dyn Backend, env: Envelope) {
    let deadline = Instant::now() + LONG;
    loop {
        match b.enqueue(vec![env.clone()]).await {
            Ok(_) => return,
            Err(e) => {
                assert!(e.is_transient(), "after a thaw, only transient errors: {e}");
                assert!(
                    Instant::now() < deadline,
                    "enqueue did not work again within {LONG:?} after a thaw: {e}"
                );
            }
        }
    }
}
