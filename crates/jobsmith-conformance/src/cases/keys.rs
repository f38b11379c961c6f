//! Idempotency keys: [`Backend::enqueue`](jobsmith_core::Backend::enqueue)
//! of a keyed job and [`Backend::key_holder`](jobsmith_core::Backend::key_holder),
//! including `unique` keys of the earlier form.

use super::common::{bury, enqueue, env_of, fresh, job, n_of, stats, take, take_exactly, take_one};
use crate::Factory;
use jobsmith_core::{App, Envelope, SettleExt};
use serde_json::json;
use std::sync::Arc;

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

/// `key_holder` names the job holding a key while it is queued, running and
/// completed (within `unique_for`), and nothing once a dead letter freed it;
/// keys are scoped to their queue, and a lookup takes nothing.
pub async fn idempotent_key_holder_names_the_job_holding_a_key(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    let holder = |key: &'static str| async move { b.key_holder("q", key).await.expect("lookup") };
    assert_eq!(holder("k1").await, None, "a key never taken is free");
    let mut a = job("q", 1);
    a.idempotency_key = Some("k1".into());
    let id = enqueue(b, a).await;
    assert_eq!(holder("k1").await, Some(id.clone()), "held while queued");
    assert_eq!(
        b.key_holder("elsewhere", "k1").await.expect("lookup"),
        None,
        "keys are scoped to their queue"
    );
    let d = take_one(b, "q").await;
    assert_eq!(holder("k1").await, Some(id.clone()), "held while running");
    b.ack(&[d.lease]).await.expect("ack");
    assert_eq!(
        holder("k1").await,
        Some(id),
        "held once completed, within unique_for"
    );
    let mut c = job("q", 2);
    c.idempotency_key = Some("k2".into());
    bury(b, c, "x").await;
    assert_eq!(holder("k2").await, None, "a dead job's key is free");
    let mut fresh_key = job("q", 3);
    fresh_key.idempotency_key = Some("k2".into());
    let id3 = fresh_key.id.clone();
    assert_eq!(
        enqueue(b, fresh_key).await,
        id3,
        "a lookup took nothing: the key is still free to take"
    );
}

/// An upgrade mid-flight: a `unique` job that an earlier version enqueued,
/// keyed `<job>:<FNV-1a 64 of the arguments>`, still keeps equal jobs out
/// while it is queued, running, and completed within `unique_for`, though
/// keys are now SHA-256; a dead letter frees its key as before, and the
/// equal job then enqueued holds a key of the new form.
pub async fn unique_key_of_the_earlier_form_is_honoured_until_released(factory: Factory) {
    use crate::UNIQUE_NOOP_JOB as UNIQUE;
    use jobsmith_core::__conformance::{legacy_unique_key, unique_key};
    use jobsmith_core::Enqueue;
    let h = fresh(factory).await;
    let b = &*h.backend;
    let app = App::from_backend(Arc::clone(&h.backend));
    let args = |n: u64| json!({"fail_times": 0, "n": n});
    // What the earlier version wrote for these arguments.
    let earlier = |n: u64| {
        let mut env = Envelope::with_args(UNIQUE.name, "q", &args(n)).expect("json");
        env.idempotency_key = Some(legacy_unique_key(UNIQUE.name, &env.args));
        env
    };
    let now = |n: u64| Enqueue::new(&UNIQUE, &args(n)).queue("q");

    let old = enqueue(b, earlier(1)).await;
    let same = |why: &'static str| {
        let (app, old) = (app.clone(), old.clone());
        async move {
            assert_eq!(now(1).on(&app).await.expect("enqueue"), old, "{why}");
        }
    };
    same("queued under the earlier key: an equal job is a no-op").await;
    let d = take_one(b, "q").await;
    same("running under the earlier key: an equal job is a no-op").await;
    b.ack(&[d.lease]).await.expect("ack");
    same("completed under the earlier key, within unique_for: an equal job is a no-op").await;
    assert!(take(b, "q", 1).await.is_empty(), "nothing runs twice");

    let dead = bury(b, earlier(2), "x").await;
    let again = now(2).on(&app).await.expect("enqueue");
    assert_ne!(again, dead, "a dead job frees its earlier key as before");

    let old3 = enqueue(b, earlier(3)).await;
    let ids = app
        .enqueue_many([now(3), now(4)])
        .await
        .expect("enqueue many");
    assert_eq!(ids[0], old3, "a batch honours the earlier key too");
    assert_ne!(ids[1], old3);
    let mut queued: Vec<Envelope> = take_exactly(b, "q", 3, "three jobs are ready")
        .await
        .iter()
        .map(|d| env_of(d).clone())
        .collect();
    queued.sort_by_key(n_of);
    assert_eq!(queued.iter().map(n_of).collect::<Vec<_>>(), [2, 3, 4]);
    let new = &queued[0];
    assert_eq!(new.id, again);
    assert_eq!(
        new.idempotency_key,
        Some(unique_key(UNIQUE.name, &new.args)),
        "the new job holds a key of the new form"
    );
}
