//! The worker end to end on the memory backend, with real `#[job]` functions:
//! retries and backoff, permanent failures, panics, timeouts, TTL, state,
//! heartbeats, graceful shutdown and bad input.

use jobsmith::prelude::*;
use jobsmith::testing::TestApp;
use jobsmith::{Envelope, JobId};
use jobsmith_core::{Delivery, Lease, LeaseStatus, Outcome};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the test jobs record, shared through `State`.
#[derive(Debug, Default)]
struct Log {
    runs: AtomicU32,
    attempts: Mutex<Vec<(u32, Instant)>>,
}

impl Log {
    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }
}

#[job(queue = "w_flaky", retries = 3, backoff = "fixed(150ms)")]
async fn flaky(fail_times: u32, log: State<Log>, ctx: JobContext) -> Result<(), String> {
    log.attempts
        .lock()
        .unwrap()
        .push((ctx.attempt(), Instant::now()));
    if ctx.attempt() <= fail_times {
        return Err(format!("failure {}", ctx.attempt()));
    }
    log.runs.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[job(queue = "w_perm", retries = 5)]
async fn permanent(log: State<Log>) -> Result<(), Failure> {
    log.runs.fetch_add(1, Ordering::SeqCst);
    Err(Failure::permanent("card declined"))
}

#[job(queue = "w_panic", retries = 1, backoff = "none")]
async fn panics(log: State<Log>) {
    log.runs.fetch_add(1, Ordering::SeqCst);
    panic!("the job blew up");
}

#[job(queue = "w_timeout", retries = 0, timeout = "100ms")]
async fn too_slow(log: State<Log>) {
    log.runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[job(queue = "w_ttl")]
async fn short_lived(log: State<Log>) {
    log.runs.fetch_add(1, Ordering::SeqCst);
}

#[job(queue = "w_long", retries = 0)]
async fn long_running(millis: u64, log: State<Log>) {
    log.runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[job(queue = "w_shutdown", retries = 0)]
async fn waits_for_cancel(log: State<Log>, ctx: JobContext) {
    log.runs.fetch_add(1, Ordering::SeqCst);
    ctx.cancelled().await;
    // Ignores the request and keeps going: the worker must cut it off.
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[job(queue = "w_args")]
async fn typed_args(id: u64, name: String, log: State<Log>) {
    let _ = (id, name);
    log.runs.fetch_add(1, Ordering::SeqCst);
}

fn state(log: &Arc<Log>) -> jobsmith_core::StateMap {
    let mut s = jobsmith_core::StateMap::new();
    s.insert_shared(Arc::clone(log));
    s
}

async fn stats(app: &App, queue: &str) -> jobsmith::QueueStats {
    app.backend()
        .inspect()
        .expect("the backend has it")
        .stats(&[queue.to_owned()])
        .await
        .unwrap()
        .pop()
        .unwrap()
}

#[tokio::test]
async fn failing_job_is_retried_with_its_backoff_then_succeeds() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    flaky.delay(2).on(t.app()).await.unwrap();
    let report = t.drain(state(&log)).await.unwrap();
    assert_eq!(log.runs(), 1);
    assert_eq!((report.retried, report.succeeded, report.dead), (2, 1, 0));
    let attempts = log.attempts.lock().unwrap().clone();
    assert_eq!(
        attempts.iter().map(|a| a.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for pair in attempts.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= Duration::from_millis(140),
            "backoff of 150 ms is respected, got {gap:?}"
        );
    }
}

#[tokio::test]
async fn last_failure_goes_to_the_dead_letter_queue_with_its_error() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    let id = flaky.delay(10).on(t.app()).await.unwrap();
    let report = t.drain(state(&log)).await.unwrap();
    assert_eq!(
        (report.started, report.retried, report.dead),
        (4, 3, 1),
        "retries = 3: four attempts"
    );
    let dead = t
        .app()
        .backend()
        .dead_letters()
        .expect("the backend has it")
        .dead_get("w_flaky", &id)
        .await
        .unwrap()
        .expect("dead");
    assert_eq!(dead.reason, "attempt 4 of 4 failed: failure 4");
    assert_eq!(
        dead.envelope().unwrap().last_error.as_deref(),
        Some("attempt 4 of 4 failed: failure 4")
    );
}

#[tokio::test]
async fn permanent_failure_skips_the_retries() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    let id = permanent.delay().on(t.app()).await.unwrap();
    let report = t.drain(state(&log)).await.unwrap();
    assert_eq!(log.runs(), 1, "no retry after a permanent failure");
    assert_eq!((report.retried, report.dead), (0, 1));
    let dead = t
        .app()
        .backend()
        .dead_letters()
        .expect("the backend has it")
        .dead_get("w_perm", &id)
        .await
        .unwrap()
        .expect("dead");
    assert_eq!(dead.reason, "failed permanently: card declined");
}

#[tokio::test]
async fn a_panic_is_a_failure_and_the_worker_survives() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    let id = panics.delay().on(t.app()).await.unwrap();
    let report = t.drain(state(&log)).await.unwrap();
    assert_eq!(log.runs(), 2, "retried once after the panic");
    assert_eq!((report.retried, report.dead), (1, 1));
    let dead = t
        .app()
        .backend()
        .dead_letters()
        .expect("the backend has it")
        .dead_get("w_panic", &id)
        .await
        .unwrap()
        .expect("dead");
    assert!(
        dead.reason.contains("panicked: the job blew up"),
        "{}",
        dead.reason
    );
}

#[tokio::test]
async fn a_timeout_is_a_failure() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    let id = too_slow.delay().on(t.app()).await.unwrap();
    let started = Instant::now();
    let report = t.drain(state(&log)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout cut the job off"
    );
    assert_eq!(report.dead, 1);
    let dead = t
        .app()
        .backend()
        .dead_letters()
        .expect("the backend has it")
        .dead_get("w_timeout", &id)
        .await
        .unwrap()
        .expect("dead");
    assert!(
        dead.reason.contains("timed out after 100ms"),
        "{}",
        dead.reason
    );
}

#[tokio::test]
async fn an_expired_job_never_runs_and_is_counted() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    short_lived
        .delay()
        .ttl(Duration::from_millis(100))
        .on(t.app())
        .await
        .unwrap();
    short_lived
        .delay()
        .ttl(Duration::from_secs(3600))
        .on(t.app())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    t.drain(state(&log)).await.unwrap();
    assert_eq!(log.runs(), 1, "only the live job ran");
    assert_eq!(stats(t.app(), "w_ttl").await.expired, 1);
}

#[tokio::test]
async fn a_long_job_keeps_its_lease_and_runs_once_across_two_workers() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    long_running.delay(1500).on(t.app()).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut rx = stop_rx.clone();
        let w = t
            .app()
            .worker()
            .queues(["w_long"])
            .lease(Duration::from_millis(400))
            .state_shared(Arc::clone(&log))
            .stop_on(async move {
                let _ = rx.wait_for(|s| *s).await;
            });
        workers.push(tokio::spawn(w.run_report()));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop_tx.send(true).unwrap();
    let mut succeeded = 0;
    for w in workers {
        let r = w.await.unwrap().unwrap();
        succeeded += r.succeeded;
        assert_eq!(r.lost_leases, 0, "the heartbeat kept the lease");
    }
    assert_eq!(
        log.runs(),
        1,
        "a job longer than its lease runs once when its worker heartbeats"
    );
    assert_eq!(succeeded, 1);
}

#[tokio::test]
async fn shutdown_finishes_quick_jobs_and_releases_the_rest_uncounted() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    let id = waits_for_cancel.delay().on(t.app()).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = t
        .app()
        .worker()
        .queues(["w_shutdown"])
        .grace_period(Duration::from_millis(300))
        .state_shared(Arc::clone(&log))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let handle = tokio::spawn(w.run_report());
    while log.runs() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    stop_tx.send(()).unwrap();
    let report = handle.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the grace period bounds the stop"
    );
    assert_eq!(report.released, 1);
    let waiting = t.enqueued("w_shutdown");
    assert_eq!(waiting.len(), 1, "the unfinished job is back in its queue");
    assert_eq!(waiting[0].id, id);
    assert_eq!(waiting[0].attempt, 0, "its attempt was not counted");
}

#[tokio::test]
async fn bad_arguments_and_unknown_jobs_are_dead_lettered_and_the_worker_goes_on() {
    let t = TestApp::new();
    let log = Arc::new(Log::default());
    let b = t.app().backend();
    let bad = Envelope::with_args(
        "typed_args",
        "w_args",
        &serde_json::json!({"id": "not a number"}),
    )
    .unwrap();
    let unknown = Envelope::with_args("no_such_job", "w_args", &serde_json::json!({})).unwrap();
    b.enqueue(vec![bad.clone(), unknown.clone()]).await.unwrap();
    t.backend()
        .push_raw("w_args", b"\xde\xad not an envelope".to_vec());
    typed_args.delay(1, "ok".into()).on(t.app()).await.unwrap();
    let report = t.drain(state(&log)).await.unwrap();
    assert_eq!(log.runs(), 1, "the good job still ran");
    assert_eq!(report.dead, 3);
    let reason = b
        .dead_letters()
        .expect("the backend has it")
        .dead_get("w_args", &bad.id)
        .await
        .unwrap()
        .unwrap()
        .reason;
    assert!(
        reason.contains("arguments of job `typed_args` do not match its signature"),
        "{reason}"
    );
    let reason = b
        .dead_letters()
        .expect("the backend has it")
        .dead_get("w_args", &unknown.id)
        .await
        .unwrap()
        .unwrap()
        .reason;
    assert!(
        reason.contains("no job named `no_such_job`") && reason.contains("typed_args"),
        "{reason}"
    );
    let dead = b
        .dead_letters()
        .expect("the backend has it")
        .dead_list("w_args", 0, 10)
        .await
        .unwrap();
    assert!(dead.iter().any(|d| d.raw == b"\xde\xad not an envelope"));
}

#[tokio::test]
async fn typed_enqueue_applies_per_call_overrides() {
    let t = TestApp::new();
    typed_args
        .delay(1, "a".into())
        .priority(7)
        .key("k-1")
        .on(t.app())
        .await
        .unwrap();
    let again = typed_args
        .delay(2, "b".into())
        .key("k-1")
        .on(t.app())
        .await
        .unwrap();
    let elsewhere = typed_args
        .delay(3, "c".into())
        .queue("w_other")
        .on(t.app())
        .await
        .unwrap();
    let later = typed_args
        .schedule(in_seconds(60), 4, "d".into())
        .on(t.app())
        .await
        .unwrap();
    let queued = t.enqueued("w_args");
    assert_eq!(queued.len(), 2, "the duplicate key was a no-op");
    assert_eq!(queued[0].priority, 7);
    assert_eq!(
        queued[0].id, again,
        "the duplicate returned the first job's id"
    );
    assert_eq!(queued[1].id, later);
    assert!(queued[1].run_at.as_millis() > jobsmith::Timestamp::now().as_millis() + 50_000);
    assert_eq!(t.enqueued("w_other")[0].id, elsewhere);
    assert_eq!(
        queued[0].args.get(),
        r#"{"id":1,"name":"a"}"#,
        "arguments travel by name"
    );
}

#[tokio::test]
async fn jobs_run_inline_and_directly_without_a_queue() {
    let log = Arc::new(Log::default());
    let out = jobsmith::testing::run_inline(flaky.delay(0), &state(&log))
        .await
        .unwrap();
    assert_eq!(out, Ok(()));
    let failed = jobsmith::testing::run_inline(permanent.delay(), &state(&log))
        .await
        .unwrap();
    assert!(failed.unwrap_err().is_permanent());
    typed_args(5, "direct".into(), State(Arc::clone(&log))).await;
    assert_eq!(log.runs(), 3);
}

#[tokio::test]
async fn an_enqueue_without_an_app_says_how_to_get_one() {
    // No default app is set in this test binary.
    let err = short_lived.delay().await.unwrap_err();
    assert!(err.to_string().contains("`.on(&app)`"), "{err}");
}

/// The memory backend with acks that take `ack_delay`: a broker slow to
/// confirm. Everything else goes straight through.
#[derive(Debug)]
struct SlowAcks {
    inner: jobsmith::MemoryBackend,
    ack_delay: Duration,
}

#[async_trait::async_trait]
impl jobsmith::Backend for SlowAcks {
    fn name(&self) -> &'static str {
        "slow-acks"
    }
    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }
    async fn enqueue(&self, jobs: Vec<Envelope>) -> jobsmith::Result<Vec<JobId>> {
        self.inner.enqueue(jobs).await
    }
    async fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> jobsmith::Result<Vec<Delivery>> {
        self.inner.reserve(queues, max, lease, wait).await
    }
    async fn stop_reserving(&self, queues: &[String]) -> jobsmith::Result<()> {
        self.inner.stop_reserving(queues).await
    }
    async fn settle(&self, outcomes: &[Outcome]) -> Vec<jobsmith::Result<LeaseStatus>> {
        if outcomes.iter().any(|o| matches!(o, Outcome::Ack(_))) {
            tokio::time::sleep(self.ack_delay).await;
        }
        self.inner.settle(outcomes).await
    }
    async fn extend(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> jobsmith::Result<Vec<LeaseStatus>> {
        self.inner.extend(leases, lease).await
    }
    async fn key_holder(&self, queue: &str, key: &str) -> jobsmith::Result<Option<JobId>> {
        self.inner.key_holder(queue, key).await
    }
    fn as_dead_letters(&self) -> Option<&dyn jobsmith::DeadLetters> {
        self.inner.as_dead_letters()
    }
    fn as_inspect(&self) -> Option<&dyn jobsmith::Inspect> {
        self.inner.as_inspect()
    }
    fn as_meta_store(&self) -> Option<&dyn jobsmith::MetaStore> {
        self.inner.as_meta_store()
    }
    fn as_migrate(&self) -> Option<&dyn jobsmith::Migrate> {
        self.inner.as_migrate()
    }
}

#[tokio::test]
async fn a_finished_job_keeps_its_lease_until_its_slow_ack_lands() {
    let app = App::new(SlowAcks {
        inner: jobsmith::MemoryBackend::new(jobsmith::Settings::default()),
        ack_delay: Duration::from_millis(1200),
    });
    let log = Arc::new(Log::default());
    short_lived.delay().on(&app).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = app
        .worker()
        .queues(["w_ttl"])
        .lease(Duration::from_millis(300))
        .state_shared(Arc::clone(&log))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let handle = tokio::spawn(w.run_report());
    // The ack takes four leases' time; the heartbeat keeps the finished job's lease.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop_tx.send(()).unwrap();
    let report = handle.await.unwrap().unwrap();
    assert_eq!(
        log.runs(),
        1,
        "the job ran once, not again when its lease ran out"
    );
    assert_eq!(report.succeeded, 1);
    assert_eq!(report.lost_leases, 0, "the ack found its lease held");
    assert_eq!(stats(&app, "w_ttl").await.in_flight, 0);
}

/// A queue name no backend can hold as it is (a Redis hash tag, an empty
/// name, a terminal escape) is refused at the enqueue and at worker start,
/// with what to give instead; nothing is enqueued.
#[tokio::test]
async fn bad_queue_names_are_refused_at_enqueue_and_at_worker_start() {
    let t = TestApp::new();
    for bad in ["", "a}b:c{d", "mail\u{1b}[2J", "two words"] {
        let err = typed_args
            .delay(1, "a".into())
            .queue(bad)
            .on(t.app())
            .await
            .expect_err(bad)
            .to_string();
        assert!(
            err.contains("queue name") && !err.contains('\u{1b}'),
            "{err}"
        );
        let err = t
            .app()
            .worker()
            .queues([bad])
            .run()
            .await
            .expect_err(bad)
            .to_string();
        assert!(err.contains("queue name"), "{err}");
    }
    assert!(
        t.app().stats().await.unwrap().is_empty(),
        "nothing was enqueued"
    );
}

#[job(queue = "w_hostile")]
async fn plain_hostile_target() {}

/// Every field value of every event and span, as a subscriber formats it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl tracing::field::Visit for Captured {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}={value}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        event.record(&mut self.clone());
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        attrs.record(&mut self.clone());
    }
}

/// Job names, queue names, ids and trace headers come from whoever can write
/// to the broker: the worker's logs show them with control characters
/// escaped, whatever subscriber (a file, JSON, a terminal) writes them out.
#[tokio::test]
async fn names_from_the_queue_reach_the_logs_escaped() {
    use tracing_subscriber::layer::SubscriberExt;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let t = TestApp::new();
    let q = "w_hostile";
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m";
    let unknown = Envelope::with_args(format!("evil{evil}"), q, &serde_json::json!({})).unwrap();
    t.backend().push_raw(q, unknown.to_bytes());
    let mut foreign =
        Envelope::with_args("plain_hostile_target", q, &serde_json::json!({})).unwrap();
    foreign.queue = format!("queue{evil}");
    foreign.id = JobId(format!("id{evil}"));
    foreign.trace = Some(format!("trace{evil}"));
    t.backend().push_raw(q, foreign.to_bytes());
    let report = t
        .app()
        .worker()
        .queues([q])
        .until_idle()
        .run_report()
        .await
        .unwrap();
    assert_eq!((report.dead, report.succeeded), (1, 1), "{report:?}");

    let lines = captured.0.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("evil")),
        "the unknown job's name is logged: {lines:#?}"
    );
    let raw: Vec<&String> = lines
        .iter()
        .filter(|l| l.chars().any(|c| c.is_control()))
        .collect();
    assert!(
        raw.is_empty(),
        "log fields carry raw control characters: {raw:#?}"
    );
}
