//! What the worker logs when something goes wrong, read back as an operator
//! would: each line names the job it is about.
//!
//! Current-thread runtimes: the worker's tasks log on the thread whose
//! subscriber ([`Logs::capture`]) captures them.

use jobsmith::prelude::*;
use jobsmith::testing::TestApp;
use jobsmith::Envelope;
use jobsmith_conformance::Logs;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[job(queue = "logs_args")]
async fn logs_typed(id: u64, name: String) {
    let _ = (id, name);
}

/// Counts the runs of [`logs_slow`] that began.
#[derive(Debug, Default)]
struct Started(AtomicU32);

impl Started {
    fn count(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

#[job(queue = "logs_lost", retries = 0)]
async fn logs_slow(millis: u64, started: State<Started>) {
    started.0 .0.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// A job whose arguments do not fit its signature is dead-lettered with a
/// warning that names the job and its id, not silently.
#[tokio::test]
async fn a_job_dead_lettered_for_mismatched_arguments_is_logged_with_its_name_and_id() {
    let (logs, _guard) = Logs::capture();
    let t = TestApp::new();
    let bad = Envelope::with_args(
        "logs_typed",
        "logs_args",
        &serde_json::json!({"id": "not a number"}),
    )
    .unwrap();
    t.app().backend().enqueue(vec![bad.clone()]).await.unwrap();
    let report = t.drain(jobsmith_core::StateMap::new()).await.unwrap();
    assert_eq!(report.dead, 1);
    let id = bad.id.to_string();
    let lines = logs.lines_with(&["logs_typed", &id, "do not match"]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") || l.contains("ERROR")),
        "no warning names the job `logs_typed` and its id {id} with why it was dead-lettered; \
         the log was:\n{}",
        logs.text()
    );
}

/// An ack refused because the lease ran out names the job, so an operator
/// can look up the job that may have run twice.
#[tokio::test]
async fn an_ack_refused_for_a_lost_lease_is_logged_with_the_job_id() {
    let (logs, _guard) = Logs::capture();
    let t = TestApp::new();
    let started = Arc::new(Started::default());
    let id = logs_slow.delay(1500).on(t.app()).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        t.app()
            .worker()
            .queues(["logs_lost"])
            .concurrency(1)
            .lease(Duration::from_millis(300))
            .state_shared(Arc::clone(&started))
            .stop_on(async move {
                let _ = stop_rx.await;
            })
            .run_report(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.count() == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The heartbeat cannot extend the lease while the backend is away, so it
    // runs out; another worker (here the test) then takes the job.
    t.backend().set_unavailable(true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    t.backend().set_unavailable(false);
    // No await before this reserve's answer: on this one thread, no
    // heartbeat can extend the lapsed lease in between.
    let taken = t
        .app()
        .backend()
        .reserve(
            &["logs_lost".to_owned()],
            1,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "the lapsed lease let another take the job");
    let deadline = Instant::now() + Duration::from_secs(5);
    while logs.lines_with(&["ack refused"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker's ack was never refused; the log was:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.lost_leases, 1);
    let id = id.to_string();
    assert!(
        !logs.lines_with(&["ack refused", &id]).is_empty(),
        "the refused ack does not name job {id}; the log was:\n{}",
        logs.text()
    );
}
