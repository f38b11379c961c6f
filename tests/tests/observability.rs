//! The worker's metrics series, read back through a recorder; the
//! `traceparent` captured at enqueue reaching the job it starts; and the
//! Prometheus endpoint refusing to start beside another recorder.
//! Its own test binary: a metrics recorder is global to a process.

use jobsmith::prelude::*;
use jobsmith::testing::TestApp;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::sync::{Mutex, OnceLock};

#[job(queue = "obs", retries = 1, backoff = "none")]
async fn obs_ok() {}

#[job(queue = "obs", retries = 1, backoff = "none")]
async fn obs_fails() -> Result<(), String> {
    Err("nope".into())
}

static SEEN_TRACE: Mutex<Vec<Option<String>>> = Mutex::new(Vec::new());

#[job(queue = "obs_trace")]
async fn obs_parent() {
    // A job enqueued from inside a job carries its parent's trace.
    obs_child.delay().await.expect("enqueue child");
    SEEN_TRACE
        .lock()
        .unwrap()
        .push(jobsmith::trace::current_traceparent());
}

#[job(queue = "obs_trace")]
async fn obs_child() {
    SEEN_TRACE
        .lock()
        .unwrap()
        .push(jobsmith::trace::current_traceparent());
}

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        recorder.install().expect("first recorder in this binary");
        snap
    })
}

type Entries = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

fn counter(all: &Entries, name: &str, label: (&str, &str)) -> u64 {
    all.iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == label.0 && l.value() == label.1)
        })
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(c) => *c,
            _ => 0,
        })
        .sum()
}

fn histogram_len(all: &Entries, name: &str) -> usize {
    all.iter()
        .filter(|(key, _, _, _)| key.key().name() == name)
        .map(|(_, _, _, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn every_outcome_is_a_metrics_series() {
    let _ = snapshotter();
    let t = TestApp::new();
    t.app()
        .enqueue_many([obs_ok.delay(), obs_ok.delay(), obs_fails.delay()])
        .await
        .unwrap();
    t.drain(jobsmith::StateMap::new()).await.unwrap();
    // One snapshot: taking one drains the recorder's histograms.
    let all: Entries = snapshotter().snapshot().into_vec();
    assert_eq!(
        counter(&all, "jobsmith_jobs_enqueued_total", ("queue", "obs")),
        3
    );
    assert_eq!(
        counter(&all, "jobsmith_jobs_started_total", ("job", "obs_ok")),
        2
    );
    assert_eq!(
        counter(&all, "jobsmith_jobs_succeeded_total", ("job", "obs_ok")),
        2
    );
    assert_eq!(
        counter(&all, "jobsmith_jobs_started_total", ("job", "obs_fails")),
        2
    );
    assert_eq!(
        counter(&all, "jobsmith_jobs_retried_total", ("job", "obs_fails")),
        1
    );
    assert_eq!(
        counter(&all, "jobsmith_jobs_dead_total", ("queue", "obs")),
        1
    );
    assert!(
        histogram_len(&all, "jobsmith_job_duration_seconds") >= 4,
        "run time is recorded per attempt"
    );
    assert!(
        histogram_len(&all, "jobsmith_job_queue_wait_seconds") >= 4,
        "queue wait is recorded per attempt"
    );
}

#[tokio::test]
async fn the_trace_captured_at_enqueue_reaches_the_job_and_its_children() {
    let t = TestApp::new();
    t.app().set_default();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
    jobsmith::trace::with_traceparent(Some(parent.clone()), async {
        obs_parent.delay().on(t.app()).await.unwrap();
    })
    .await;
    let queued = t.enqueued("obs_trace");
    assert_eq!(
        queued[0].trace.as_deref(),
        Some(parent.as_str()),
        "enqueue captures the trace"
    );
    t.drain(jobsmith::StateMap::new()).await.unwrap();
    let seen = SEEN_TRACE.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Some(parent.clone()), Some(parent)],
        "parent and child ran in the trace"
    );
}

#[tokio::test]
async fn prometheus_beside_another_recorder_is_a_clear_error() {
    let _ = snapshotter();
    let t = TestApp::new();
    obs_ok.delay().on(t.app()).await.unwrap();
    let err = t
        .app()
        .worker()
        .queues(["obs"])
        .prometheus(0)
        .run()
        .await
        .expect_err("a recorder is installed already");
    assert!(matches!(err, jobsmith::Error::MetricsRecorder), "{err:?}");
    assert!(
        err.to_string()
            .contains("another global `metrics` recorder is already installed"),
        "{err}"
    );
    assert_eq!(t.enqueued("obs").len(), 1, "nothing was reserved");
}
