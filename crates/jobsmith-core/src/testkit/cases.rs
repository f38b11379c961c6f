//! One function per behaviour of the [`Backend`] contract.
//!
//! Each takes a [`Factory`], makes a fresh backend, and panics with a
//! sentence naming the broken rule when the backend breaks it.
#![allow(clippy::missing_panics_doc)]

use super::{Factory, Harness, NoopCounter};
use crate::backend::{Backend, Delivery, LeaseStatus, Settings};
use crate::envelope::{Envelope, JobId};
use crate::error::Error;
use crate::time::Timestamp;
use crate::App;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after a job becomes ready a waiting reserve must return it.
/// Far below any sleep-polling interval a peer uses, far above scheduling noise.
const WAKE_BOUND: Duration = Duration::from_millis(250);
const LONG: Duration = Duration::from_secs(30);

async fn fresh(factory: Factory) -> Harness {
    factory(Settings::default()).await
}

fn job(queue: &str, n: u64) -> Envelope {
    Envelope::with_args("conformance_noop", queue, &json!({"fail_times": 0, "n": n}))
        .expect("plain JSON serializes")
}

fn n_of(env: &Envelope) -> u64 {
    let v: serde_json::Value = serde_json::from_str(env.args.get()).expect("args are JSON");
    v["n"].as_u64().expect("suite jobs carry n")
}

fn env_of(d: &Delivery) -> &Envelope {
    d.envelope
        .as_ref()
        .expect("the suite enqueues only valid envelopes")
}

fn qs(queue: &str) -> Vec<String> {
    vec![queue.to_owned()]
}

async fn enqueue(b: &dyn Backend, env: Envelope) -> JobId {
    let ids = b.enqueue(vec![env]).await.expect("enqueue succeeds");
    assert_eq!(ids.len(), 1, "enqueue of one job returns one id");
    ids.into_iter().next().expect("checked")
}

async fn take(b: &dyn Backend, queue: &str, max: usize) -> Vec<Delivery> {
    b.reserve(&qs(queue), max, LONG, Duration::ZERO)
        .await
        .expect("reserve succeeds")
}

async fn take_one(b: &dyn Backend, queue: &str) -> Delivery {
    let mut got = b
        .reserve(&qs(queue), 1, LONG, Duration::from_secs(5))
        .await
        .expect("reserve succeeds");
    assert_eq!(got.len(), 1, "a ready job is reserved");
    got.pop().expect("checked")
}

/// Enqueues `env`, reserves it and buries it: a dead job, by the usual path.
/// Reserves from `queue` on `b` until `n` jobs came (each reserve waits up to
/// 5 s); `why` is the assertion that each reserve finds one.
async fn take_exactly(b: &dyn Backend, queue: &str, n: usize, why: &str) -> Vec<Delivery> {
    let mut got = Vec::new();
    while got.len() < n {
        let more = b
            .reserve(&qs(queue), n - got.len(), LONG, Duration::from_secs(5))
            .await
            .expect("reserve");
        assert!(!more.is_empty(), "{why}");
        got.extend(more);
    }
    got
}

async fn bury(b: &dyn Backend, env: Envelope, reason: &str) -> JobId {
    let queue = env.queue.clone();
    let id = enqueue(b, env).await;
    let d = take_one(b, &queue).await;
    b.dead_letter(&d.lease, reason).await.expect("dead-letter");
    id
}

/// The ids in `queue`'s dead-letter queue, newest first.
async fn dead_ids(b: &dyn Backend, queue: &str) -> Vec<JobId> {
    let dead = b.dead_list(queue, 0, 10).await.expect("dead list");
    dead.into_iter().map(|d| d.id).collect()
}

async fn stats(b: &dyn Backend, queue: &str) -> crate::QueueStats {
    b.stats(&qs(queue))
        .await
        .expect("stats succeed")
        .pop()
        .expect("one queue asked, one answered")
}

/// Starts a reserve that waits up to 10 s, returning when it got something.
fn waiting_reserve(
    b: &Arc<dyn Backend>,
    queue: &str,
) -> tokio::task::JoinHandle<(Vec<Delivery>, Instant)> {
    let b = Arc::clone(b);
    let q = qs(queue);
    tokio::spawn(async move {
        let got = b
            .reserve(&q, 1, LONG, Duration::from_secs(10))
            .await
            .expect("reserve succeeds");
        (got, Instant::now())
    })
}

async fn assert_woken(
    waiter: tokio::task::JoinHandle<(Vec<Delivery>, Instant)>,
    ready_at: Instant,
    path: &str,
) -> Delivery {
    let (mut got, at) = waiter.await.expect("reserve task runs");
    assert_eq!(got.len(), 1, "an idle reserve must wake for {path}");
    let late = at.saturating_duration_since(ready_at);
    assert!(
        late <= WAKE_BOUND,
        "an idle reserve woke {late:?} after {path}; it must wake within {WAKE_BOUND:?}, without sleep-polling"
    );
    got.pop().expect("checked")
}

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
    assert_eq!(b.dead_requeue("q", &[id]).await.expect("requeue"), 1);
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

/// Ack completes a job once; a second ack of the same lease is refused.
pub async fn ack_completes_once(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    b.enqueue((0..3).map(|n| job("q", n)).collect())
        .await
        .expect("enqueue");
    let got = take(b, "q", 3).await;
    let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
    assert_eq!(
        b.ack(&leases).await.expect("ack"),
        vec![LeaseStatus::Held; 3],
        "batched ack"
    );
    let s = stats(b, "q").await;
    assert_eq!(
        (s.ready, s.scheduled, s.in_flight, s.dead),
        (0, 0, 0, 0),
        "acked jobs are gone"
    );
    assert_eq!(
        b.ack(&leases[..1]).await.expect("ack"),
        vec![LeaseStatus::Lost],
        "an ack counts once"
    );
    assert!(take(b, "q", 10).await.is_empty());
}

/// Retry stores the error, waits for the backoff, and counts the attempt.
pub async fn retry_counts_the_attempt_and_waits(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let d = take_one(b, "q").await;
    let mut e = env_of(&d).clone();
    e.last_error = Some("smtp said no".into());
    e.run_at = Timestamp::now().plus(Duration::from_millis(800));
    assert_eq!(
        b.retry(&d.lease, &e).await.expect("retry"),
        LeaseStatus::Held
    );
    assert!(
        take(b, "q", 1).await.is_empty(),
        "a retry waits for its backoff"
    );
    assert_eq!(
        stats(b, "q").await.scheduled,
        1,
        "a retry in backoff counts as scheduled"
    );
    let d2 = take_one(b, "q").await;
    let e2 = env_of(&d2);
    assert_eq!(e2.attempt, 2, "the second delivery is attempt 2");
    assert_eq!(e2.last_error.as_deref(), Some("smtp said no"));
    assert_ne!(
        d2.lease.token, d.lease.token,
        "each reservation has its own lease"
    );
}

/// Release hands a job back, ready at once, without counting an attempt.
pub async fn release_does_not_count_an_attempt(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let d = take_one(b, "q").await;
    assert_eq!(
        b.release(std::slice::from_ref(&d.lease))
            .await
            .expect("release"),
        vec![LeaseStatus::Held]
    );
    let d2 = take_one(b, "q").await;
    assert_eq!(
        env_of(&d2).attempt,
        1,
        "a released job's attempt is not counted"
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

/// Once a lease expired and the job was reserved again, the old holder is refused everything.
pub async fn stale_lease_is_fenced(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    enqueue(b, job("q", 1)).await;
    let first = b
        .reserve(&qs("q"), 1, h.short_lease, Duration::from_secs(5))
        .await
        .expect("reserve");
    let stale = first[0].lease.clone();
    let second = b
        .reserve(&qs("q"), 1, LONG, h.short_lease * 10)
        .await
        .expect("reserve");
    assert_eq!(
        second.len(),
        1,
        "the job is delivered again after the lease ran out"
    );
    let fresh_lease = second[0].lease.clone();
    let mut e = env_of(&second[0]).clone();
    e.run_at = Timestamp::now();
    assert_eq!(
        b.ack(std::slice::from_ref(&stale)).await.expect("ack"),
        vec![LeaseStatus::Lost],
        "stale ack refused"
    );
    assert_eq!(
        b.retry(&stale, &e).await.expect("retry"),
        LeaseStatus::Lost,
        "stale retry refused"
    );
    assert_eq!(
        b.dead_letter(&stale, "x").await.expect("dead"),
        LeaseStatus::Lost,
        "stale dead-letter refused"
    );
    assert_eq!(
        b.expire(&stale).await.expect("expire"),
        LeaseStatus::Lost,
        "stale expire refused"
    );
    assert_eq!(
        b.release(std::slice::from_ref(&stale))
            .await
            .expect("release"),
        vec![LeaseStatus::Lost],
        "stale release refused"
    );
    assert_eq!(
        b.extend(std::slice::from_ref(&stale), LONG)
            .await
            .expect("extend"),
        vec![LeaseStatus::Lost],
        "stale heartbeat refused"
    );
    let s = stats(b, "q").await;
    assert_eq!(
        (s.in_flight, s.dead),
        (1, 0),
        "the new holder still has the job"
    );
    assert_eq!(
        b.ack(&[fresh_lease]).await.expect("ack"),
        vec![LeaseStatus::Held]
    );
}

/// Dead letters: moved with a reason, listed, inspected, requeued and purged.
pub async fn dead_letter_list_inspect_requeue_purge(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let id1 = enqueue(b, job("q", 1)).await;
    let id2 = enqueue(b, job("q", 2)).await;
    for reason in ["first reason", "second reason"] {
        let d = take_one(b, "q").await;
        assert_eq!(
            b.dead_letter(&d.lease, reason).await.expect("dead"),
            LeaseStatus::Held
        );
    }
    assert_eq!(stats(b, "q").await.dead, 2);
    let list = b.dead_list("q", 0, 10).await.expect("list");
    assert_eq!(
        list.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![id2.clone(), id1.clone()],
        "newest first"
    );
    assert_eq!(
        b.dead_list("q", 1, 10).await.expect("list").len(),
        1,
        "offset skips"
    );
    let one = b
        .dead_get("q", &id1)
        .await
        .expect("get")
        .expect("dead job is found");
    assert_eq!(one.reason, "first reason");
    let env = one.envelope().expect("a dead envelope parses");
    assert_eq!(env.id, id1);
    assert_eq!(
        env.last_error.as_deref(),
        Some("first reason"),
        "the reason is kept in the envelope too"
    );
    assert!(b
        .dead_get("q", &JobId::from("no-such-id"))
        .await
        .expect("get")
        .is_none());

    assert_eq!(
        b.dead_requeue("q", &[id1.clone(), JobId::from("no-such-id")])
            .await
            .expect("requeue"),
        1
    );
    let d = take_one(b, "q").await;
    assert_eq!(env_of(&d).id, id1);
    assert_eq!(
        env_of(&d).attempt,
        1,
        "a requeued job starts its attempts again"
    );
    b.ack(&[d.lease]).await.expect("ack");
    assert_eq!(stats(b, "q").await.dead, 1);
    assert_eq!(
        b.dead_purge("q", Some(Duration::from_secs(3600)))
            .await
            .expect("purge"),
        0,
        "nothing is an hour old"
    );
    assert_eq!(b.dead_purge("q", None).await.expect("purge"), 1);
    assert_eq!(stats(b, "q").await.dead, 0);
}

/// A job buried twice under one id is one dead job, the newer: its worker died
/// after burying it and before settling its delivery, so it ran and died again.
/// The second run is made by enqueueing the same envelope again; a backend that
/// queues an id it already holds once (Redis) leaves the first death standing.
pub async fn dead_letter_keeps_one_entry_per_job(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let env = job("q", 1);
    let id = bury(b, env.clone(), "first death").await;
    assert_eq!(enqueue(b, env).await, id);
    let again = b
        .reserve(&qs("q"), 1, LONG, Duration::from_secs(2))
        .await
        .expect("reserve");
    let newest = match again.into_iter().next() {
        Some(d) => {
            assert_eq!(env_of(&d).id, id);
            b.dead_letter(&d.lease, "second death")
                .await
                .expect("dead-letter");
            "second death"
        }
        None => "first death",
    };
    let list = b.dead_list("q", 0, 10).await.expect("list");
    assert_eq!(
        list.iter()
            .map(|d| (d.id.clone(), d.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(id.clone(), newest)],
        "one entry per job id, the newer"
    );
    let one = b.dead_get("q", &id).await.expect("get").expect("found");
    assert_eq!(one.reason, newest);
    assert_eq!(
        b.dead_requeue("q", std::slice::from_ref(&id))
            .await
            .expect("requeue"),
        1
    );
    assert_eq!(env_of(&take_one(b, "q").await).id, id);
    assert!(dead_ids(b, "q").await.is_empty(), "nothing else was dead");
}

/// Dead-letter retention: at most `dead_max` jobs and none older than `dead_max_age`.
pub async fn dead_letter_retention_by_count_and_age(factory: Factory) {
    let settings = Settings {
        dead_max: 3,
        dead_max_age: Duration::from_secs(2),
        ..Settings::default()
    };
    let h = factory(settings).await;
    let b = &*h.backend;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(bury(b, job("q", n), "x").await);
    }
    assert_eq!(
        dead_ids(b, "q").await,
        vec![ids[4].clone(), ids[3].clone(), ids[2].clone()],
        "the newest 3 are kept"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let id = bury(b, job("q", 9), "x").await;
    assert_eq!(
        dead_ids(b, "q").await,
        vec![id],
        "dead jobs older than dead_max_age are dropped"
    );
}

/// A deep dead-letter queue is read whole: each dead job listed once, found,
/// and purged. A backend that reads its dead letters by receiving them (SQS)
/// must read past the time it hides each one for; the harness makes that
/// time short (SQS: a 1 s scan window, which 300 jobs outlast several times
/// over on moto).
pub async fn dead_letter_list_of_a_deep_queue_finds_each_job_once(factory: Factory) {
    const DEAD: u64 = 300;
    let h = fresh(factory).await;
    let b = &*h.backend;
    for first in (0..DEAD).step_by(100) {
        let batch = (first..(first + 100).min(DEAD))
            .map(|n| job("q", n))
            .collect();
        b.enqueue(batch).await.expect("enqueue succeeds");
    }
    let mut buried = std::collections::HashSet::new();
    while (buried.len() as u64) < DEAD {
        let got = b
            .reserve(&qs("q"), 10, LONG, Duration::from_secs(5))
            .await
            .expect("reserve succeeds");
        assert!(
            !got.is_empty(),
            "{} of {DEAD} buried, then none ready",
            buried.len()
        );
        let burials = got.iter().map(|d| b.dead_letter(&d.lease, "deep"));
        for status in futures_util::future::join_all(burials).await {
            assert_eq!(status.expect("dead-letter"), LeaseStatus::Held);
        }
        buried.extend(got.iter().map(|d| env_of(d).id.clone()));
    }
    let listed = b.dead_list("q", 0, DEAD as usize + 10).await.expect("list");
    let distinct: std::collections::HashSet<JobId> = listed.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        (listed.len(), distinct.len()),
        (DEAD as usize, DEAD as usize),
        "each dead job listed once"
    );
    assert_eq!(distinct, buried, "the dead jobs listed are the ones buried");
    assert!(
        listed.windows(2).all(|w| w[0].died_at >= w[1].died_at),
        "newest first"
    );
    let oldest = listed.last().expect("listed").id.clone();
    assert_eq!(
        b.dead_get("q", &oldest).await.expect("get").map(|d| d.id),
        Some(oldest),
        "the oldest is found"
    );
    assert_eq!(b.dead_purge("q", None).await.expect("purge"), DEAD as usize);
    assert_eq!(stats(b, "q").await.dead, 0);
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

/// Enqueue with a key that is queued is a no-op that returns the existing id.
pub async fn idempotent_enqueue_while_queued_returns_existing_id(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut a = job("q", 1);
    a.idempotency_key = Some("order-42".into());
    let mut dup = job("q", 2);
    dup.idempotency_key = Some("order-42".into());
    let id = enqueue(b, a).await;
    assert_eq!(
        enqueue(b, dup.clone()).await,
        id,
        "a queued key returns the existing id"
    );
    let ids = b
        .enqueue(vec![dup.clone(), job("q", 3)])
        .await
        .expect("batch");
    assert_eq!(ids[0], id, "also within a batch");
    assert_eq!(stats(b, "q").await.ready, 2);
    let d = take_one(b, "q").await;
    assert_eq!(n_of(env_of(&d)), 1);
    assert_eq!(
        enqueue(b, dup).await,
        id,
        "a running key returns the existing id"
    );
}

/// Enqueues racing for one key take it once: every racer gets the one id,
/// and one job is queued per key (periodic schedules rely on this when every
/// worker enqueues the same tick).
pub async fn idempotent_racing_enqueues_take_a_key_once(factory: Factory) {
    let h = fresh(factory).await;
    let b = &h.backend;
    const KEYS: usize = 10;
    const RACERS: u64 = 6;
    for k in 0..KEYS {
        let racers = (0..RACERS).map(|n| {
            let b = Arc::clone(b);
            let mut env = job("q", n);
            env.idempotency_key = Some(format!("race-{k}"));
            tokio::spawn(async move { b.enqueue(vec![env]).await.expect("enqueue")[0].clone() })
        });
        let mut ids = Vec::new();
        for r in racers.collect::<Vec<_>>() {
            ids.push(r.await.expect("racer"));
        }
        ids.dedup();
        assert_eq!(
            ids.len(),
            1,
            "key race-{k}: racers got different ids {ids:?}"
        );
    }
    assert_eq!(
        stats(&**b, "q").await.ready,
        KEYS as u64,
        "one job per key, however many enqueues raced for it"
    );
}

/// A key whose job completed is not run again.
pub async fn idempotent_key_completed_is_not_run_again(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut a = job("q", 1);
    a.idempotency_key = Some("once".into());
    let id = enqueue(b, a.clone()).await;
    let d = take_one(b, "q").await;
    b.ack(&[d.lease]).await.expect("ack");
    let mut again = job("q", 2);
    again.idempotency_key = Some("once".into());
    assert_eq!(
        enqueue(b, again).await,
        id,
        "a completed key returns the completed job's id"
    );
    assert!(take(b, "q", 1).await.is_empty(), "and nothing runs again");
}

/// A key whose job died is free again: the job may be enqueued anew.
pub async fn idempotent_key_freed_by_dead_letter(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut a = job("q", 1);
    a.idempotency_key = Some("retryable".into());
    let id = bury(b, a, "x").await;
    let mut again = job("q", 2);
    again.idempotency_key = Some("retryable".into());
    let id2 = enqueue(b, again).await;
    assert_ne!(id2, id, "a dead job's key does not block a new one");
    assert_eq!(n_of(env_of(&take_one(b, "q").await)), 2);
}

/// Stats count ready, scheduled, in flight and dead, and the oldest ready job's age.
pub async fn stats_count_every_state(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let empty = stats(b, "q").await;
    assert_eq!(
        (empty.ready, empty.oldest_ready_age),
        (0, None),
        "an empty queue has no oldest job"
    );
    b.enqueue((0..4).map(|n| job("q", n)).collect())
        .await
        .expect("enqueue");
    let mut later = job("q", 9);
    later.run_at = Timestamp::now().plus(LONG);
    enqueue(b, later).await;
    let got = take(b, "q", 2).await;
    b.dead_letter(&got[0].lease, "x").await.expect("dead");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = stats(b, "q").await;
    assert_eq!(s.queue, "q");
    assert_eq!((s.ready, s.scheduled, s.in_flight, s.dead), (2, 1, 1, 1));
    if h.approximations.oldest_ready_age_unknown {
        assert_eq!(
            s.oldest_ready_age, None,
            "a backend that cannot see its oldest ready job's age reports none, never a guess"
        );
    } else {
        let age = s.oldest_ready_age.expect("ready jobs have an age");
        assert!(
            age >= Duration::from_millis(250) && age < Duration::from_secs(10),
            "oldest ready age {age:?}"
        );
    }
    assert!(
        b.queues().await.expect("queues").contains(&"q".to_owned()),
        "the queue is listed"
    );
}

/// Every envelope field round-trips, arguments byte for byte, unicode and escapes included.
pub async fn payload_round_trips_byte_for_byte(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let args = r#"{"text":"Grüße, 世界! 🚀 \u0000\n\t\"q\" \\ \ud83d\ude00","n":1, "nested":{"a":[1,2.5,-3e10,null,true]}}"#;
    let mut e = Envelope::new(
        "conformance_noop",
        "q",
        serde_json::value::RawValue::from_string(args.to_owned()).expect("valid JSON"),
    );
    e.priority = 3;
    e.max_attempts = 7;
    e.expires_at = Some(Timestamp::now().plus(LONG));
    e.idempotency_key = Some("ключ-🔑".into());
    e.trace = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    enqueue(b, e.clone()).await;
    let d = take_one(b, "q").await;
    let got = env_of(&d);
    assert_eq!(got.args.get(), args, "arguments round-trip byte for byte");
    assert_eq!(
        (got.v, &got.job, &got.queue, got.priority, got.max_attempts),
        (e.v, &e.job, &e.queue, e.priority, e.max_attempts)
    );
    assert_eq!(
        (got.enqueued_at, got.run_at, got.expires_at),
        (e.enqueued_at, e.run_at, e.expires_at)
    );
    assert_eq!(
        (&got.idempotency_key, &got.trace),
        (&e.idempotency_key, &e.trace)
    );
}

/// A payload exactly at the backend's limit round-trips; one byte over is a clear error and nothing is written.
pub async fn payload_at_limit_round_trips_and_over_limit_is_rejected(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let limit = b.max_payload();
    let sized = |size: usize| {
        let mut e = Envelope::new(
            "conformance_noop",
            "q",
            serde_json::value::RawValue::from_string("\"\"".into()).expect("json"),
        );
        let base = e.to_bytes().len();
        let pad = "é".repeat((size - base) / 2) + &"x".repeat((size - base) % 2);
        e.args = serde_json::value::to_raw_value(&pad).expect("json");
        assert_eq!(
            e.to_bytes().len(),
            size,
            "the suite sizes envelopes exactly"
        );
        e
    };
    let at = sized(limit);
    enqueue(b, at.clone()).await;
    let d = take_one(b, "q").await;
    assert_eq!(
        env_of(&d).args.get(),
        at.args.get(),
        "a payload at the limit round-trips"
    );
    b.ack(&[d.lease]).await.expect("ack");

    let over = sized(limit + 1);
    match b.enqueue(vec![job("q", 1), over]).await {
        Err(Error::PayloadTooLarge { size, limit: l }) => assert_eq!((size, l), (limit + 1, limit)),
        other => panic!("one byte over the limit must be PayloadTooLarge, got {other:?}"),
    }
    let s = stats(b, "q").await;
    assert_eq!(
        (s.ready, s.scheduled),
        (0, 0),
        "a rejected batch writes nothing"
    );
}

/// Bytes that are not an envelope are delivered as malformed, so the worker can dead-letter them.
pub async fn malformed_payload_is_delivered_for_dead_lettering(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let garbage = b"\x00\xffnot json at all{";
    h.faults.push_raw("q", garbage).await;
    let d = take_one(b, "q").await;
    let bad = d.envelope.as_ref().expect_err("garbage is not an envelope");
    assert_eq!(bad.raw, garbage, "the raw bytes are handed over as found");
    assert!(!bad.reason.is_empty());
    assert_eq!(
        b.dead_letter(&d.lease, &bad.reason).await.expect("dead"),
        LeaseStatus::Held
    );
    let dead = b.dead_list("q", 0, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].raw, garbage,
        "the dead-letter queue keeps the bytes"
    );
    assert_eq!(dead[0].reason, bad.reason);
    assert_eq!(
        b.dead_requeue("q", &[dead[0].id.clone()])
            .await
            .expect("requeue"),
        0,
        "garbage is not requeued"
    );
}

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
        .registry(super::noop_registry())
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
    let counter = NoopCounter::default();
    let report = App::from_backend(Arc::clone(&h.backend))
        .worker()
        .registry(super::noop_registry())
        .state(counter.clone())
        .until_idle()
        .run_report()
        .await
        .expect("worker runs");
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
    let doomed = b
        .dead_get("default", &doomed_id)
        .await
        .expect("get")
        .expect("doomed job is dead");
    assert!(
        doomed.reason.contains("attempt 3 of 3"),
        "reason names the attempts: {}",
        doomed.reason
    );
    let unknown = b
        .dead_get("default", &unknown_id)
        .await
        .expect("get")
        .expect("unknown job is dead");
    assert!(
        unknown.reason.contains("no_such_job"),
        "reason names the unknown job: {}",
        unknown.reason
    );
    let all = b.dead_list("default", 0, 10).await.expect("list");
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
    let counter = NoopCounter::default();
    let report = App::from_backend(Arc::clone(&h.backend))
        .worker()
        .registry(super::noop_registry())
        .state(counter.clone())
        .until_idle()
        .run_report()
        .await
        .expect("the worker carries on");
    assert_eq!(counter.get(), 1, "the normal job ran after the bad ones");
    assert_eq!((report.dead, report.succeeded), (2, 1), "{report:?}");
    let dead = b.dead_list("default", 0, 10).await.expect("list");
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

/// The metadata store: an entry reads back byte for byte, a second put
/// replaces it (last writer wins), and a listing by prefix finds exactly the
/// entries under that prefix, sorted by key.
pub async fn metadata_store_puts_gets_and_lists(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    assert_eq!(
        b.get_meta("schedule:a").await.expect("get succeeds"),
        None,
        "a key never written has no value"
    );
    b.put_meta("schedule:b", b"two")
        .await
        .expect("put succeeds");
    b.put_meta("schedule:a", b"one")
        .await
        .expect("put succeeds");
    b.put_meta("other:a", b"elsewhere")
        .await
        .expect("put succeeds");
    let value = "{\"tick\":1,\"text\":\"\u{e9}t\u{e9} \u{2713}\"}".as_bytes();
    b.put_meta("schedule:a", value).await.expect("put succeeds");
    assert_eq!(
        b.get_meta("schedule:a")
            .await
            .expect("get succeeds")
            .as_deref(),
        Some(value),
        "a second put replaces the value, byte for byte"
    );
    let listed = b.list_meta("schedule:").await.expect("list succeeds");
    assert_eq!(
        listed,
        vec![
            ("schedule:a".to_owned(), value.to_vec()),
            ("schedule:b".to_owned(), b"two".to_vec()),
        ],
        "a listing holds the prefix's entries only, sorted by key, each once with its latest value"
    );
    assert!(
        b.list_meta("nothing:")
            .await
            .expect("list succeeds")
            .is_empty(),
        "a prefix with no entries lists nothing"
    );
}

/// Reads of one metadata entry racing each other and a writer: once the
/// entry is written, every read finds a value, and one that was written. A
/// read never answers "none" for an entry that exists, however many
/// processes read it at once (a scheduler that read "none" would write a
/// fresh state over the stored one, losing its last tick).
pub async fn metadata_reads_racing_a_writer_always_find_a_value(factory: Factory) {
    const KEY: &str = "schedule:raced";
    const WRITES: u64 = 40;
    const MIN_READS: usize = 50;
    let h = fresh(factory).await;
    let b = Arc::clone(&h.backend);
    b.put_meta(KEY, b"0").await.expect("put succeeds");
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = tokio::spawn({
        let (b, writing) = (Arc::clone(&b), Arc::clone(&writing));
        async move {
            for n in 1..=WRITES {
                b.put_meta(KEY, n.to_string().as_bytes())
                    .await
                    .expect("put succeeds");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            writing.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (b, writing) = (Arc::clone(&b), Arc::clone(&writing));
            tokio::spawn(async move {
                let mut reads = 0;
                while reads < MIN_READS || writing.load(std::sync::atomic::Ordering::SeqCst) {
                    let got = b.get_meta(KEY).await.expect("get succeeds");
                    let value = got.unwrap_or_else(|| {
                        panic!(
                            "reader {reader}'s read {reads} found no value while other reads \
                             and a writer raced it: a read must never answer none for an \
                             entry that exists"
                        )
                    });
                    let n: u64 = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(u64::MAX);
                    assert!(
                        n <= WRITES,
                        "reader {reader} read {value:?}, which was never written"
                    );
                    reads += 1;
                    // A backend that answers without awaiting (memory) must
                    // not starve the writer.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    writer.await.expect("the writer finishes");
    for r in readers {
        r.await.expect("every read found a written value");
    }
    assert_eq!(
        b.get_meta(KEY).await.expect("get succeeds").as_deref(),
        Some(WRITES.to_string().as_bytes()),
        "after the race the last value written is read"
    );
}

/// `processed` counts acks and `failed` counts retries and dead letters, and
/// a process's stats show its own at once.
pub async fn stats_count_processed_and_failed(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    b.enqueue((0..3).map(|n| job("q", n)).collect())
        .await
        .expect("enqueue");
    let got = take_exactly(b, "q", 3, "three ready jobs are reserved").await;
    b.ack(&[got[0].lease.clone()]).await.expect("ack");
    let mut again = env_of(&got[1]).clone();
    again.run_at = Timestamp::now().plus(LONG);
    b.retry(&got[1].lease, &again).await.expect("retry");
    b.dead_letter(&got[2].lease, "x").await.expect("dead");
    let s = stats(b, "q").await;
    assert_eq!(
        (s.processed, s.failed),
        (Some(1), Some(2)),
        "one ack is one processed; a retry and a dead letter are two failed"
    );
}

/// How soon one instance's stats must show another instance's outcomes:
/// RabbitMQ and SQS add their counts to the shared counters once a second.
const SHARED_COUNTS_BOUND: Duration = Duration::from_secs(5);

/// `processed` and `failed` are totals of every process using the queue:
/// the stats of each of two instances show the outcomes settled by both.
pub async fn stats_count_outcomes_of_every_instance(factory: Factory) {
    let h = fresh(factory).await;
    let first = Arc::clone(&h.backend);
    let second = (h.peer)().await;
    first
        .enqueue((0..3).map(|n| job("q", n)).collect())
        .await
        .expect("enqueue");
    // The second instance reserves one job; the first, the other two.
    let mut theirs = second
        .reserve(&qs("q"), 1, LONG, Duration::from_secs(5))
        .await
        .expect("reserve");
    assert_eq!(theirs.len(), 1, "the second instance reserves a ready job");
    let ours = take_exactly(
        &*first,
        "q",
        2,
        "the first instance reserves the two jobs the second left",
    )
    .await;
    let d = theirs.pop().expect("checked");
    assert_eq!(
        second.ack(&[d.lease]).await.expect("ack"),
        vec![LeaseStatus::Held]
    );
    let mut again = env_of(&ours[0]).clone();
    again.run_at = Timestamp::now().plus(LONG);
    assert_eq!(
        first.retry(&ours[0].lease, &again).await.expect("retry"),
        LeaseStatus::Held
    );
    assert_eq!(
        first
            .dead_letter(&ours[1].lease, "x")
            .await
            .expect("dead letter"),
        LeaseStatus::Held
    );
    for (who, b) in [("first", &first), ("second", &second)] {
        let deadline = Instant::now() + SHARED_COUNTS_BOUND;
        loop {
            let s = stats(&**b, "q").await;
            let seen = (s.processed, s.failed);
            if seen == (Some(1), Some(2)) {
                break;
            }
            assert!(
                Instant::now() < deadline && seen.0 <= Some(1) && seen.1 <= Some(2),
                "the {who} instance's stats show (processed, failed) = {seen:?}; they must \
                 show (Some(1), Some(2)), one ack by the second instance and a retry and a \
                 dead letter by the first, within {SHARED_COUNTS_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `take` holds ready and scheduled jobs away from workers, as stored (the
/// attempt not counted), and `remove` deletes them for good.
pub async fn migrate_take_holds_ready_and_scheduled(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let ready = enqueue(b, job("q", 1)).await;
    let mut later = job("q", 2);
    later.run_at = Timestamp::now().plus(Duration::from_secs(3600));
    let later_at = later.run_at;
    let scheduled = enqueue(b, later).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(b.take("q", 10, LONG).await.expect("take"));
        let want = if h.approximations.scheduled_hidden_until_due {
            1
        } else {
            2
        };
        if got.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids: Vec<JobId> = got.iter().map(|d| env_of(d).id.clone()).collect();
    ids.sort();
    let mut want = vec![ready.clone()];
    if !h.approximations.scheduled_hidden_until_due {
        want.push(scheduled.clone());
    }
    want.sort();
    assert_eq!(ids, want, "take returns the ready and the scheduled job");
    for d in &got {
        assert_eq!(env_of(d).attempt, 0, "take does not count an attempt");
        if env_of(d).id == scheduled {
            assert_eq!(
                env_of(d).run_at.as_millis() / 1000,
                later_at.as_millis() / 1000,
                "a taken job keeps its run_at"
            );
        }
    }
    assert!(
        take(b, "q", 10).await.is_empty(),
        "a held job is not reserved by workers"
    );
    assert!(
        b.take("q", 10, LONG).await.expect("take").is_empty(),
        "a held job is not taken twice"
    );
    let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
    assert_eq!(
        b.remove(&leases).await.expect("remove"),
        vec![LeaseStatus::Held; leases.len()]
    );
    assert_eq!(
        b.remove(&leases).await.expect("remove"),
        vec![LeaseStatus::Lost; leases.len()],
        "a removed job cannot be removed again"
    );
    let s = stats(b, "q").await;
    assert_eq!(s.ready, 0, "removed jobs are gone");
    assert_eq!(s.in_flight, 0, "removed jobs hold nothing");
}

/// A job whose hold runs out goes back where it was: a ready job is ready
/// again, a scheduled job waits for its time again; the old hold is refused.
pub async fn migrate_hold_that_runs_out_gives_the_job_back(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let ready = enqueue(b, job("q", 1)).await;
    let mut later = job("q", 2);
    later.run_at = Timestamp::now().plus(Duration::from_secs(3600));
    enqueue(b, later).await;
    let want = if h.approximations.scheduled_hidden_until_due {
        1
    } else {
        2
    };
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(b.take("q", 10, h.short_lease).await.expect("take"));
        if got.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), want, "take holds the waiting jobs");
    tokio::time::sleep(h.short_lease * 2 + Duration::from_millis(500)).await;
    let d = take_one(b, "q").await;
    assert_eq!(env_of(&d).id, ready, "the ready job is ready again");
    assert_eq!(
        env_of(&d).attempt,
        1,
        "the hold did not count an attempt; this reserve does"
    );
    assert!(
        take(b, "q", 10).await.is_empty(),
        "the scheduled job is not run before its time"
    );
    let s = stats(b, "q").await;
    assert_eq!(
        s.scheduled + s.ready + s.in_flight,
        2,
        "both jobs are still in the queue"
    );
    let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
    assert!(
        b.remove(&leases[..1])
            .await
            .expect("remove")
            .iter()
            .all(|s| *s == LeaseStatus::Lost),
        "a hold that ran out is refused"
    );
}

/// `import` keeps a job's id, attempt, run_at and priority, and writes each
/// id once however often it is imported, even after the job ran.
pub async fn migrate_import_keeps_fields_once_per_id(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let mut a = job("q", 1);
    a.attempt = 3;
    let mut c = job("q", 2);
    c.priority = 5;
    c.attempt = 1;
    let mut later = job("q", 3);
    later.run_at = Timestamp::now().plus(Duration::from_secs(3600));
    later.attempt = 2;
    let jobs = vec![a.clone(), c.clone(), later.clone()];
    assert_eq!(b.import(jobs.clone()).await.expect("import"), vec![true; 3]);
    assert_eq!(
        b.import(jobs.clone()).await.expect("import"),
        vec![false; 3],
        "a second import of the same ids writes nothing"
    );
    let got = take(b, "q", 10).await;
    assert_eq!(got.len(), 2, "the two ready jobs, once each");
    assert_eq!(env_of(&got[0]).id, c.id, "priority is kept");
    assert_eq!(env_of(&got[0]).attempt, 2, "attempts carry on");
    assert_eq!(env_of(&got[1]).id, a.id);
    assert_eq!(env_of(&got[1]).attempt, 4, "attempts carry on");
    let s = stats(b, "q").await;
    assert_eq!(s.scheduled, 1, "the future job is scheduled");
    b.ack(&got.iter().map(|d| d.lease.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    assert_eq!(
        b.import(jobs).await.expect("import"),
        vec![false; 3],
        "an imported id stays imported after its job ran"
    );
    assert!(take(b, "q", 10).await.is_empty(), "nothing ran twice");
}

/// `import_dead` writes dead jobs (reason, payload, malformed ones too) once
/// per id, and `dead_delete` deletes dead jobs by id.
pub async fn migrate_dead_import_and_delete(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let env = job("q", 1);
    let good = crate::DeadJob {
        id: env.id.clone(),
        queue: "q".into(),
        reason: "boom".into(),
        died_at: Timestamp(Timestamp::now().0 - 60_000),
        raw: env.to_bytes(),
    };
    let bad = crate::DeadJob {
        id: JobId::new(),
        queue: "q".into(),
        reason: "payload is not a job envelope".into(),
        died_at: Timestamp::now(),
        raw: b"\xff not json".to_vec(),
    };
    let both = vec![good.clone(), bad.clone()];
    assert_eq!(
        b.import_dead(both.clone()).await.expect("import"),
        vec![true; 2]
    );
    assert_eq!(
        b.import_dead(both).await.expect("import"),
        vec![false; 2],
        "a dead job is imported once"
    );
    assert_eq!(stats(b, "q").await.dead, 2);
    let got = b
        .dead_get("q", &good.id)
        .await
        .expect("get")
        .expect("the imported dead job is found");
    assert_eq!(got.reason, "boom");
    assert_eq!(got.envelope().map(|e| e.id), Some(good.id.clone()));
    let raw = b
        .dead_get("q", &bad.id)
        .await
        .expect("get")
        .expect("the malformed dead job is found");
    assert_eq!(
        raw.raw, bad.raw,
        "a malformed payload is kept byte for byte"
    );
    assert_eq!(
        b.dead_delete("q", &[good.id.clone(), JobId::from("no-such-id")])
            .await
            .expect("delete"),
        1
    );
    assert_eq!(dead_ids(b, "q").await, vec![bad.id.clone()]);
}
