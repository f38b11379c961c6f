//! Fault tests, each on a `redis-server` of its own: a worker process killed
//! mid-run, and Redis restarted mid-run. (Payloads no worker can run are a
//! conformance case: `worker_dead_letters_bad_input_and_carries_on`.)

mod support;

use jobsmith_core::Inspect;
use jobsmith_core::{App, Backend, Envelope};
use jobsmith_redis::{RedisBackend, RedisConfig};
use std::time::{Duration, Instant};
use support::record::{self, Recorder};
use support::server::Server;

const CHILD_URL: &str = "JOBSMITH_FAULT_CHILD_URL";
const CHILD_PREFIX: &str = "JOBSMITH_FAULT_CHILD_PREFIX";

async fn backend(url: &str, prefix: &str) -> RedisBackend {
    let config = RedisConfig::from_url(url)
        .expect("a redis URL")
        .with_prefix(prefix);
    RedisBackend::connect_with(config).await.expect("connect")
}

async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Not a test on its own: the worker process that `sigkill_a_worker_mid_run_loses_nothing` starts and kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sigkill_a_worker_mid_run_loses_nothing as a child process"]
async fn child_worker() {
    let (Ok(url), Ok(prefix)) = (std::env::var(CHILD_URL), std::env::var(CHILD_PREFIX)) else {
        return;
    };
    let b = backend(&url, &prefix).await;
    let recorder = Recorder::connect(&url, &prefix).await;
    App::new(b)
        .worker()
        .registry(record::registry())
        .state(recorder)
        .concurrency(8)
        .lease(Duration::from_millis(1000))
        .stop_on(std::future::pending())
        .run()
        .await
        .expect("worker runs");
}

fn spawn_child(url: &str, prefix: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "child_worker", "--nocapture", "--ignored"])
        .env(CHILD_URL, url)
        .env(CHILD_PREFIX, prefix)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a worker process")
}

/// 1. A worker process is SIGKILLed in the middle of 2,000 jobs; another one
///    starts; every job completes (its leases ran out and were reclaimed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_a_worker_mid_run_loses_nothing() {
    let server = Server::start(false).await;
    let url = server.url();
    let prefix = support::fresh_prefix();
    let b = backend(&url, &prefix).await;
    let recorder = Recorder::connect(&url, &prefix).await;
    let jobs = 2000u64;
    b.enqueue((0..jobs).map(|n| record::envelope(n, 2)).collect())
        .await
        .expect("enqueue");

    let mut first = spawn_child(&url, &prefix);
    wait_for(
        "the first worker to finish some jobs",
        Duration::from_secs(30),
        async || recorder.done().await.len() >= 300,
    )
    .await;
    first.kill().expect("SIGKILL the worker");
    first.wait().expect("reap the worker");
    let at_kill = recorder.done().await.len() as u64;
    let stats = b
        .stats(&["default".to_owned()])
        .await
        .expect("stats")
        .remove(0);
    assert!(
        at_kill < jobs,
        "the worker was killed mid-run ({at_kill} of {jobs} done)"
    );
    assert!(
        stats.in_flight > 0,
        "the killed worker held leases: {stats:?}"
    );

    let mut second = spawn_child(&url, &prefix);
    wait_for(
        "every job to complete",
        Duration::from_secs(60),
        async || recorder.done().await.len() as u64 >= jobs,
    )
    .await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(
        recorder.done().await,
        (0..jobs).collect::<Vec<_>>(),
        "every job completed"
    );
    let s = b
        .stats(&["default".to_owned()])
        .await
        .expect("stats")
        .remove(0);
    assert_eq!(
        (s.ready, s.scheduled, s.dead),
        (0, 0, 0),
        "nothing left but what the second worker held: {s:?}"
    );
    eprintln!(
        "killed after {at_kill} of {jobs}; {} runs in all (re-runs of jobs the killed worker held)",
        recorder.runs().await
    );
}

/// 2. Redis (AOF, appendfsync always) is killed and restarted mid-run: the
///    worker reconnects with backoff, and every job whose enqueue returned Ok completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_loses_no_acknowledged_job() {
    let mut server = Server::start(true).await;
    let url = server.url();
    let prefix = support::fresh_prefix();
    let b = backend(&url, &prefix).await;
    let recorder = Recorder::connect(&url, &prefix).await;
    let app = App::new(b.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        app.worker()
            .registry(record::registry())
            .state(recorder.clone())
            .concurrency(8)
            .lease(Duration::from_secs(2))
            .stop_on(async move {
                let _ = stop_rx.await;
            })
            .run_report(),
    );
    let producer = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut failed = 0;
            for batch in 0..40u64 {
                let envs: Vec<Envelope> = (0..25)
                    .map(|i| record::envelope(batch * 25 + i, 1))
                    .collect();
                match b.enqueue(envs).await {
                    Ok(_) => accepted.extend((0..25).map(|i| batch * 25 + i)),
                    Err(e) => {
                        assert!(e.is_transient(), "a down server is a transient error: {e}");
                        failed += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (accepted, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.restart().await;
    let (accepted, failed) = producer.await.expect("producer");
    assert!(!accepted.is_empty());
    wait_for(
        "every accepted job to complete",
        Duration::from_secs(60),
        async || {
            let done = recorder.done().await;
            accepted.iter().all(|n| done.binary_search(n).is_ok())
        },
    )
    .await;
    let _ = stop_tx.send(());
    let report = worker.await.expect("worker task").expect("worker");
    eprintln!(
        "{} jobs accepted, {failed} enqueue batches refused while Redis was down; {report:?}",
        accepted.len()
    );
}
