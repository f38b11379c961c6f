//! Helpers the cases share: a fresh harness, suite jobs, reserving, the
//! capabilities of a backend, and waiting for a wake-up.

use crate::{Factory, Harness, NoopCounter};
use jobsmith_core::{
    Backend, DeadLetters, Delivery, Envelope, Inspect, JobId, MetaStore, Migrate, Settings,
    SettleExt,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after a job becomes ready a waiting reserve must return it.
/// Far below any sleep-polling interval a peer uses, far above scheduling noise.
pub(super) const WAKE_BOUND: Duration = Duration::from_millis(250);
pub(super) const LONG: Duration = Duration::from_secs(30);

/// How late after its due time a delayed or retried job must be handed out
/// to a reserve that was already waiting when the job was stored.
const DUE_BOUND: Duration = Duration::from_millis(100);

/// The due-time bound `h` is held to: the contract's [`DUE_BOUND`], or its
/// documented approximation.
pub(super) fn due_bound(h: &Harness) -> Duration {
    h.approximations.due_wake_bound.unwrap_or(DUE_BOUND)
}

pub(super) async fn fresh(factory: Factory) -> Harness {
    factory(Settings::default()).await
}

pub(super) fn job(queue: &str, n: u64) -> Envelope {
    Envelope::with_args("conformance_noop", queue, &json!({"fail_times": 0, "n": n}))
        .expect("plain JSON serializes")
}

pub(super) fn n_of(env: &Envelope) -> u64 {
    let v: serde_json::Value = serde_json::from_str(env.args.get()).expect("args are JSON");
    v["n"].as_u64().expect("suite jobs carry n")
}

pub(super) fn env_of(d: &Delivery) -> &Envelope {
    d.envelope
        .as_ref()
        .expect("the suite enqueues only valid envelopes")
}

pub(super) fn qs(queue: &str) -> Vec<String> {
    vec![queue.to_owned()]
}

pub(super) async fn enqueue(b: &dyn Backend, env: Envelope) -> JobId {
    let ids = b.enqueue(vec![env]).await.expect("enqueue succeeds");
    assert_eq!(ids.len(), 1, "enqueue of one job returns one id");
    ids.into_iter().next().expect("checked")
}

pub(super) async fn take(b: &dyn Backend, queue: &str, max: usize) -> Vec<Delivery> {
    b.reserve(&qs(queue), max, LONG, Duration::ZERO)
        .await
        .expect("reserve succeeds")
}

pub(super) async fn take_one(b: &dyn Backend, queue: &str) -> Delivery {
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
pub(super) async fn take_exactly(
    b: &dyn Backend,
    queue: &str,
    n: usize,
    why: &str,
) -> Vec<Delivery> {
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

pub(super) async fn bury(b: &dyn Backend, env: Envelope, reason: &str) -> JobId {
    let queue = env.queue.clone();
    let id = enqueue(b, env).await;
    let d = take_one(b, &queue).await;
    b.dead_letter(&d.lease, reason).await.expect("dead-letter");
    id
}

/// The backend's dead-letter queues; every backend under test keeps them.
pub(super) fn dead_of(b: &dyn Backend) -> &dyn DeadLetters {
    b.dead_letters().expect("the backend keeps dead letters")
}

/// The backend's queue inspection; every backend under test has it.
pub(super) fn inspect_of(b: &dyn Backend) -> &dyn Inspect {
    b.inspect().expect("the backend can be inspected")
}

/// The backend's metadata store; every backend under test has it.
pub(super) fn meta_of(b: &dyn Backend) -> &dyn MetaStore {
    b.meta().expect("the backend has a metadata store")
}

/// The backend's migration; every backend under test has it.
pub(super) fn migration_of(b: &dyn Backend) -> &dyn Migrate {
    b.migration().expect("the backend can migrate")
}

/// The ids in `queue`'s dead-letter queue, newest first.
pub(super) async fn dead_ids(b: &dyn Backend, queue: &str) -> Vec<JobId> {
    let dead = dead_of(b).dead_list(queue, 0, 10).await.expect("dead list");
    dead.into_iter().map(|d| d.id).collect()
}

pub(super) async fn stats(b: &dyn Backend, queue: &str) -> jobsmith_core::QueueStats {
    inspect_of(b)
        .stats(&qs(queue))
        .await
        .expect("stats succeed")
        .pop()
        .expect("one queue asked, one answered")
}

/// Starts a reserve that waits up to 10 s, returning when it got something.
pub(super) fn waiting_reserve(
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

pub(super) async fn assert_woken(
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

/// Waits up to 10 s for `counter` to have seen `n` starts.
pub(super) async fn until_started(counter: &NoopCounter, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.started().len() < n {
        assert!(
            Instant::now() < deadline,
            "the worker started {} of {n} jobs within 10 s",
            counter.started().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The suite's job `n`, sleeping `sleep_ms` when it runs.
pub(super) fn sleeping_job(queue: &str, n: u64, sleep_ms: u64) -> Envelope {
    Envelope::with_args(
        "conformance_noop",
        queue,
        &json!({"fail_times": 0, "sleep_ms": sleep_ms, "n": n}),
    )
    .expect("plain JSON serializes")
}
