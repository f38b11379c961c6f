//! The [`DeadLetters`](jobsmith_core::DeadLetters) capability: listing,
//! requeueing, purging and retention.

use super::common::{
    bury, dead_ids, dead_of, enqueue, env_of, fresh, job, qs, stats, take_one, LONG,
};
use crate::Factory;
use jobsmith_core::{JobId, LeaseStatus, Settings, SettleExt};
use std::time::Duration;

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
    let list = dead_of(b).dead_list("q", 0, 10).await.expect("list");
    assert_eq!(
        list.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![id2.clone(), id1.clone()],
        "newest first"
    );
    assert_eq!(
        dead_of(b).dead_list("q", 1, 10).await.expect("list").len(),
        1,
        "offset skips"
    );
    let one = dead_of(b)
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
    assert!(dead_of(b)
        .dead_get("q", &JobId::from("no-such-id"))
        .await
        .expect("get")
        .is_none());

    assert_eq!(
        dead_of(b)
            .dead_requeue("q", &[id1.clone(), JobId::from("no-such-id")])
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
        dead_of(b)
            .dead_purge("q", Some(Duration::from_secs(3600)))
            .await
            .expect("purge"),
        0,
        "nothing is an hour old"
    );
    assert_eq!(dead_of(b).dead_purge("q", None).await.expect("purge"), 1);
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
    let list = dead_of(b).dead_list("q", 0, 10).await.expect("list");
    assert_eq!(
        list.iter()
            .map(|d| (d.id.clone(), d.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(id.clone(), newest)],
        "one entry per job id, the newer"
    );
    let one = dead_of(b)
        .dead_get("q", &id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(one.reason, newest);
    assert_eq!(
        dead_of(b)
            .dead_requeue("q", std::slice::from_ref(&id))
            .await
            .expect("requeue"),
        1
    );
    assert_eq!(env_of(&take_one(b, "q").await).id, id);
    assert!(dead_ids(b, "q").await.is_empty(), "nothing else was dead");
}

/// Dead-letter retention: at most `dead_max` jobs and none older than
/// `dead_max_age`. Each bound is checked on a backend of its own, with the
/// other out of reach, so that a slow broker (moto takes up to 2 s a burial
/// beside the rest of the suite) cannot age out what the count must keep.
pub async fn dead_letter_retention_by_count_and_age(factory: Factory) {
    let by_count = {
        let mut settings = Settings::default();
        settings.dead_max = 3;
        settings.dead_max_age = Duration::from_secs(3600);
        factory(settings).await
    };
    let b = &*by_count.backend;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(bury(b, job("q", n), "x").await);
    }
    assert_eq!(
        dead_ids(b, "q").await,
        vec![ids[4].clone(), ids[3].clone(), ids[2].clone()],
        "the newest 3 are kept"
    );

    let by_age = {
        let mut settings = Settings::default();
        settings.dead_max = 100;
        settings.dead_max_age = Duration::from_secs(2);
        factory(settings).await
    };
    let b = &*by_age.backend;
    bury(b, job("q", 8), "x").await;
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
    let listed = dead_of(b)
        .dead_list("q", 0, DEAD as usize + 10)
        .await
        .expect("list");
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
        dead_of(b)
            .dead_get("q", &oldest)
            .await
            .expect("get")
            .map(|d| d.id),
        Some(oldest),
        "the oldest is found"
    );
    assert_eq!(
        dead_of(b).dead_purge("q", None).await.expect("purge"),
        DEAD as usize
    );
    assert_eq!(stats(b, "q").await.dead, 0);
}
