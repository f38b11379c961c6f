//! The hot path of [`Backend`]: enqueue, reserve, priority, delays,
//! wake-ups, leases and their expiry, and jobs whose time to live runs out.

use super::common::{
    assert_woken, bury, dead_of, due_bound, enqueue, env_of, fresh, job, migration_of, n_of, qs,
    stats, take, take_one, waiting_reserve, LONG,
};
use crate::{Factory, Harness};
use jobsmith_core::{Backend, Delivery, Envelope, LeaseStatus, SettleExt, Timestamp};
use std::time::{Duration, Instant};

/// Enqueue one job: it comes back whole, with its first attempt counted.
pub async fn enqueue_one_round_trips(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let sent = job("q", 1);
    let id = enqueue(b, sent.clone()).await;
    assert_eq!(id, sent.id, "enqueue returns the envelope's id");
    let d = take_one(b, "q").await;
    let got = env_of(&d);
    assert_eq!(got.id, sent.id);
    assert_eq!(got.job, sent.job);
    assert_eq!(
        got.args.get(),
        sent.args.get(),
        "arguments round-trip byte for byte"
    );
    assert_eq!(got.attempt, 1, "the first delivery is attempt 1");
    assert_eq!(d.lease.id, sent.id, "the lease names the job");
    assert_eq!(d.lease.queue, "q");
    assert!(
        take(b, "q", 10).await.is_empty(),
        "a reserved job is not delivered twice"
    );
}

/// Enqueue many in one call: every id comes back, in order, and the jobs run first-in first-out.
pub async fn enqueue_batch_keeps_order(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let sent: Vec<Envelope> = (0..100).map(|n| job("q", n)).collect();
    let ids = b
        .enqueue(sent.clone())
        .await
        .expect("batch enqueue succeeds");
    assert_eq!(
        ids,
        sent.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        "ids in order"
    );
    let mut seen = Vec::new();
    while seen.len() < 100 {
        let batch = take(b, "q", 10).await;
        assert!(
            !batch.is_empty(),
            "all 100 jobs are reservable; got {}",
            seen.len()
        );
        assert!(batch.len() <= 10);
        seen.extend(batch.iter().map(|d| n_of(env_of(d))));
    }
    assert_eq!(
        seen,
        (0..100).collect::<Vec<_>>(),
        "one priority is first-in first-out"
    );
}

/// Strict priority: higher first, whatever the order of arrival; FIFO within a priority.
pub async fn priority_is_strict_and_fifo_within(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let plan = [(0, 0), (5, 1), (0, 2), (9, 3), (5, 4), (-1, 5), (9, 6)];
    for (prio, n) in plan {
        let mut e = job("q", n);
        e.priority = prio;
        enqueue(b, e).await;
    }
    let mut order = Vec::new();
    for _ in 0..plan.len() {
        if h.approximations.priority_between_batches_only {
            order.push(n_of(env_of(&take_one(b, "q").await)));
        } else {
            let got = take(b, "q", 1).await;
            assert_eq!(got.len(), 1);
            order.push(n_of(env_of(&got[0])));
        }
    }
    assert_eq!(
        order,
        vec![3, 6, 1, 4, 0, 2, 5],
        "priority 9, 5, 0, -1; FIFO within each"
    );
}

/// Queues are reserved from in the order the worker lists them.
pub async fn queues_are_taken_in_the_order_given(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("low", 1)).await;
    enqueue(b, job("high", 2)).await;
    let order = vec!["high".to_owned(), "low".to_owned()];
    let got = b
        .reserve(&order, 2, LONG, Duration::from_secs(5))
        .await
        .expect("reserve");
    let mut ns: Vec<u64> = got.iter().map(|d| n_of(env_of(d))).collect();
    if ns.len() == 1 {
        let more = b
            .reserve(&order, 1, LONG, Duration::from_secs(5))
            .await
            .expect("reserve");
        ns.extend(more.iter().map(|d| n_of(env_of(d))));
    }
    assert_eq!(ns, vec![2, 1], "the first queue listed is served first");
}

/// A job for a future time is scheduled, not ready, until it is due.
pub async fn future_job_waits_until_due(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut e = job("q", 1);
    e.run_at = Timestamp::now().plus(Duration::from_millis(1500));
    enqueue(b, e).await;
    assert!(
        take(b, "q", 1).await.is_empty(),
        "a job due later is not delivered now"
    );
    let s = stats(b, "q").await;
    assert_eq!((s.ready, s.scheduled), (0, 1), "it counts as scheduled");
    let d = take_one(b, "q").await;
    assert_eq!(n_of(env_of(&d)), 1);
}

/// Reserve never hands out more than asked.
pub async fn reserve_takes_at_most_n(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    b.enqueue((0..20).map(|n| job("q", n)).collect())
        .await
        .expect("enqueue");
    let got = b
        .reserve(&qs("q"), 7, LONG, Duration::from_secs(5))
        .await
        .expect("reserve");
    assert!(
        !got.is_empty() && got.len() <= 7,
        "asked for 7, got {}",
        got.len()
    );
    assert_eq!(stats(b, "q").await.in_flight, got.len() as u64);
}

/// A reserve that finds `queue` empty: whatever the backend sets up for a
/// queue it has never reserved from (consumers, topology) is in place after it,
/// so the wake cases time the wake and not that one-time set-up.
async fn set_up_reserving(b: &dyn Backend, queue: &str) {
    assert!(
        take(b, queue, 1).await.is_empty(),
        "{queue} was meant to be empty"
    );
}

/// An idle reserve wakes for a new job at once.
pub async fn idle_reserve_wakes_on_enqueue(factory: Factory) {
    let h = fresh(factory).await;
    set_up_reserving(&*h.backend, "q").await;
    let waiter = waiting_reserve(&h.backend, "q");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = Instant::now();
    enqueue(&*h.backend, job("q", 1)).await;
    assert_woken(waiter, at, "an enqueue").await;
}

/// An idle reserve wakes when a scheduled job comes due.
pub async fn idle_reserve_wakes_when_schedule_comes_due(factory: Factory) {
    let h = fresh(factory).await;
    let mut e = job("q", 1);
    let delay = Duration::from_millis(1200);
    set_up_reserving(&*h.backend, "q").await;
    e.run_at = Timestamp::now().plus(delay);
    let due = Instant::now() + delay;
    enqueue(&*h.backend, e).await;
    let waiter = waiting_reserve(&h.backend, "q");
    assert_woken(waiter, due, "a scheduled job coming due").await;
}

/// An idle reserve wakes when a retry's backoff ends.
pub async fn idle_reserve_wakes_when_retry_comes_due(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let d = take_one(b, "q").await;
    let mut e = env_of(&d).clone();
    let delay = Duration::from_millis(1200);
    e.run_at = Timestamp::now().plus(delay);
    let due = Instant::now() + delay;
    assert_eq!(
        b.retry(&d.lease, &e).await.expect("retry"),
        LeaseStatus::Held
    );
    let waiter = waiting_reserve(&h.backend, "q");
    assert_woken(waiter, due, "a retry coming due").await;
}

/// An idle reserve wakes when another worker releases a job.
pub async fn idle_reserve_wakes_on_release(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let d = take_one(b, "q").await;
    let waiter = waiting_reserve(&h.backend, "q");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = Instant::now();
    b.release(std::slice::from_ref(&d.lease))
        .await
        .expect("release");
    assert_woken(waiter, at, "a release").await;
}

/// An idle reserve wakes when a dead job is requeued.
pub async fn idle_reserve_wakes_on_dead_requeue(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let id = bury(b, job("q", 1), "boom").await;
    let waiter = waiting_reserve(&h.backend, "q");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = Instant::now();
    assert_eq!(
        dead_of(b).dead_requeue("q", &[id]).await.expect("requeue"),
        1
    );
    assert_woken(waiter, at, "a requeue from the dead-letter queue").await;
}

/// With nothing to do, a reserve waits about as long as asked and returns empty.
pub async fn idle_reserve_returns_empty_after_wait(factory: Factory) {
    let h = fresh(factory).await;
    let started = Instant::now();
    let got = h
        .backend
        .reserve(&qs("q"), 5, LONG, Duration::from_secs(1))
        .await
        .expect("reserve");
    let took = started.elapsed();
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_millis(900),
        "an idle reserve waits for work (returned after {took:?})"
    );
    assert!(
        took < Duration::from_secs(5),
        "an idle reserve returns when its wait is over (took {took:?})"
    );
}

/// A job whose worker vanished comes back when its lease runs out, with the attempt counted.
pub async fn expired_lease_is_delivered_again(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let got = b
        .reserve(&qs("q"), 1, h.short_lease, Duration::from_secs(5))
        .await
        .expect("reserve");
    assert_eq!(got.len(), 1);
    assert!(
        take(b, "q", 1).await.is_empty(),
        "a leased job is not delivered while its lease holds"
    );
    let again = b
        .reserve(&qs("q"), 1, LONG, h.short_lease * 10)
        .await
        .expect("reserve");
    assert_eq!(again.len(), 1, "the job returns when its lease runs out");
    assert_eq!(env_of(&again[0]).attempt, 2, "the lost attempt counts");
}

/// A running job whose worker heartbeats keeps its lease well past the lease time.
pub async fn heartbeat_keeps_the_lease(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let lease = h.short_lease;
    let got = b
        .reserve(&qs("q"), 1, lease, Duration::from_secs(5))
        .await
        .expect("reserve");
    let l = got[0].lease.clone();
    let until = Instant::now() + lease * 4;
    while Instant::now() < until {
        tokio::time::sleep(lease / 3).await;
        assert_eq!(
            b.extend(std::slice::from_ref(&l), lease)
                .await
                .expect("extend"),
            vec![LeaseStatus::Held]
        );
        assert!(
            take(b, "q", 1).await.is_empty(),
            "a heartbeating job is not delivered to anyone else"
        );
    }
    assert_eq!(
        b.ack(&[l]).await.expect("ack"),
        vec![LeaseStatus::Held],
        "the holder can still ack"
    );
}

/// How long a job stored while a reserve waits is due after it is stored:
/// far below the 10 s the reserve waits, so a reserve that does not look
/// again until its wait ends fails the bound by seconds.
const DUE_IN: Duration = Duration::from_millis(1200);

/// A `run_at` [`DUE_IN`] from now, and the instant it stands for.
fn due_soon() -> (Timestamp, Instant) {
    (Timestamp::now().plus(DUE_IN), Instant::now() + DUE_IN)
}

async fn assert_woken_by_due(
    h: &Harness,
    waiter: tokio::task::JoinHandle<(Vec<Delivery>, Instant)>,
    due: Instant,
    path: &str,
) -> Delivery {
    let bound = due_bound(h);
    let (mut got, at) = waiter.await.expect("reserve task runs");
    assert_eq!(
        got.len(),
        1,
        "a reserve waiting 10 s must be handed {path} when it comes due, {DUE_IN:?} after it \
         was stored; it returned empty at the end of its wait"
    );
    let late = at.saturating_duration_since(due);
    assert!(
        late <= bound,
        "{path} was handed out {late:?} after its due time; a reserve that was already \
         waiting when it was stored must have it within {bound:?}"
    );
    got.pop().expect("checked")
}

/// A job scheduled while a reserve waits is handed to that reserve when it
/// comes due, though the reserve began waiting when only a later job (or
/// none) was scheduled.
pub async fn waiting_reserve_gets_a_schedule_stored_while_it_waits(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    set_up_reserving(b, "q").await;
    let mut far = job("q", 1);
    far.run_at = Timestamp::now().plus(LONG);
    enqueue(b, far).await;
    let waiter = waiting_reserve(&h.backend, "q");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut soon = job("q", 2);
    let due;
    (soon.run_at, due) = due_soon();
    enqueue(b, soon).await;
    let d = assert_woken_by_due(&h, waiter, due, "a job scheduled while it waited").await;
    assert_eq!(n_of(env_of(&d)), 2, "the job due sooner comes first");
}

/// A retry stored while a reserve waits is handed to that reserve when its
/// backoff ends (a timed-out job's next attempt takes this path too).
pub async fn waiting_reserve_gets_a_retry_stored_while_it_waits(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let d = take_one(b, "q").await;
    let waiter = waiting_reserve(&h.backend, "q");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut e = env_of(&d).clone();
    let due;
    (e.run_at, due) = due_soon();
    assert_eq!(
        b.retry(&d.lease, &e).await.expect("retry"),
        LeaseStatus::Held
    );
    let d = assert_woken_by_due(&h, waiter, due, "a retry stored while it waited").await;
    assert_eq!(env_of(&d).attempt, 2, "the retry is the second attempt");
}

/// A job imported for a later time while a reserve waits (a migration
/// running beside the workers) is handed to that reserve when it comes due.
pub async fn waiting_reserve_gets_an_import_stored_while_it_waits(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    set_up_reserving(b, "q").await;
    let waiter = waiting_reserve(&h.backend, "q");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut e = job("q", 1);
    let due;
    (e.run_at, due) = due_soon();
    assert_eq!(
        migration_of(b).import(vec![e]).await.expect("import"),
        vec![true]
    );
    assert_woken_by_due(&h, waiter, due, "a job imported while it waited").await;
}

/// An expired job is never delivered, and is counted.
pub async fn ttl_expired_job_is_never_delivered_and_counted(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut e = job("q", 1);
    e.expires_at = Some(Timestamp::now().plus(Duration::from_millis(300)));
    enqueue(b, e).await;
    let mut live = job("q", 2);
    live.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    enqueue(b, live).await;
    let got = b
        .reserve(&qs("q"), 10, LONG, Duration::from_secs(2))
        .await
        .expect("reserve");
    assert_eq!(
        got.iter().map(|d| n_of(env_of(d))).collect::<Vec<_>>(),
        vec![2],
        "only the live job is delivered"
    );
    assert_eq!(
        b.expire(&got[0].lease).await.expect("expire"),
        LeaseStatus::Held,
        "a worker can expire a job it holds"
    );
    let s = stats(b, "q").await;
    assert_eq!(s.expired, 2, "both expirations are counted");
    assert_eq!((s.ready, s.in_flight, s.dead), (0, 0, 0));
}

/// Jobs the backend drops unrun because their TTL passed, whether they
/// expired waiting in line or while scheduled, are counted in
/// `jobsmith_jobs_expired_total{queue, job}`, the series a worker counts the
/// jobs it drops itself in; a job the worker expires (`Backend::expire`) is
/// counted by the worker, not again by the backend.
///
/// Where the broker drops jobs that expire in line without the process
/// seeing them ([`Approximations::expired_in_line_dropped_by_broker`]), the
/// metric counts only those the process dropped, at most once each, and
/// `stats` counts both.
///
/// [`Approximations::expired_in_line_dropped_by_broker`]: crate::Approximations::expired_in_line_dropped_by_broker
pub async fn expired_jobs_are_counted_in_the_expired_metric(factory: Factory) {
    const SERIES: &str = "jobsmith_jobs_expired_total";
    let counters = crate::recorder::counters();
    let h = fresh(factory).await;
    let b = &*h.backend;
    // A queue of this case's own: cases sharing a process share the recorder.
    let queue = format!("xm{:08x}", fastrand::u32(..));
    let now = Timestamp::now();
    let mut in_line = job(&queue, 1);
    in_line.expires_at = Some(now.plus(Duration::from_millis(300)));
    let mut scheduled = job(&queue, 2);
    scheduled.run_at = now.plus(Duration::from_millis(200));
    scheduled.expires_at = Some(now.plus(Duration::from_millis(300)));
    b.enqueue(vec![in_line, scheduled])
        .await
        .expect("enqueue succeeds");
    // Past both expiries, and past the whole second a broker may round a delay up to.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = b
        .reserve(&qs(&queue), 10, LONG, Duration::from_secs(1))
        .await
        .expect("reserve");
    assert!(got.is_empty(), "an expired job is never delivered");
    assert_eq!(
        stats(b, &queue).await.expired,
        2,
        "both are counted in stats"
    );
    let counted = counters.sum(SERIES, "queue", &queue);
    let series = counters.series(SERIES, "queue", &queue);
    if h.approximations.expired_in_line_dropped_by_broker {
        // Which of the two the broker drops unseen depends on timing; a job
        // the process drops is counted, and none twice.
        assert!(
            counted <= 2,
            "each job the backend dropped is counted in {SERIES} at most once: {series:?}"
        );
    } else {
        assert_eq!(
            counted, 2,
            "both jobs the backend dropped are counted in {SERIES}: {series:?}"
        );
    }
    assert!(
        series
            .iter()
            .all(|(labels, _)| labels.iter().any(|(k, _)| k == "job")),
        "each series has its job label: {series:?}"
    );

    let mut live = job(&queue, 3);
    live.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    enqueue(b, live).await;
    let d = take_one(b, &queue).await;
    assert_eq!(b.expire(&d.lease).await.expect("expire"), LeaseStatus::Held);
    assert_eq!(stats(b, &queue).await.expired, 3);
    assert_eq!(
        counters.sum(SERIES, "queue", &queue),
        counted,
        "a job the worker expires is counted by the worker, not a second time by the backend"
    );
}
