//! Settling a lease ([`Backend::settle`](jobsmith_core::Backend::settle)
//! through [`SettleExt`]): ack, retry, release, and the fencing of a lease
//! that is no longer held.

use super::common::{enqueue, env_of, fresh, job, qs, stats, take, take_one, LONG};
use crate::Factory;
use jobsmith_core::{LeaseStatus, SettleExt, Timestamp};
use std::time::Duration;

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
