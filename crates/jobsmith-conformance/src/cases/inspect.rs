//! The [`Inspect`](jobsmith_core::Inspect) capability: what `stats` counts,
//! per instance and across every instance sharing a queue.

use super::common::{enqueue, env_of, fresh, inspect_of, job, qs, stats, take, take_exactly, LONG};
use crate::Factory;
use jobsmith_core::{LeaseStatus, SettleExt, Timestamp};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        inspect_of(b)
            .queues()
            .await
            .expect("queues")
            .contains(&"q".to_owned()),
        "the queue is listed"
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
