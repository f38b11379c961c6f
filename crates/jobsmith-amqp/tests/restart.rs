//! The broker restarts under a running worker (`rabbitmqctl stop_app` /
//! `start_app`): every confirmed job completes and the worker resumes by
//! itself. The broker is a RabbitMQ node of the test's own (its own name,
//! ports, data and cookie, removed afterwards): the shared broker is never
//! stopped. (It once was, and with thousands of test queues left on it, its
//! `start_app` hung in recovery and left it down.)

mod support;

use jobsmith_core::lock::LockExt;
use jobsmith_core::{
    App, Backend, BoxFuture, Envelope, Failure, JobContext, JobDef, JobOptions, Registry,
};
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static DONE: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

static MARK_JOB: JobDef = JobDef {
    name: "restart_mark",
    location: "jobsmith-amqp tests/restart.rs",
    options: JobOptions {
        retries: 10,
        ..JobOptions::DEFAULT
    },
    run: run_mark,
    params: &[],
    shapes: Vec::new,
};

fn run_mark(
    args: &RawValue,
    _ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    let n = support::arg_n(args)?;
    Ok(Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        DONE.lock_unpoisoned().insert(n);
        Ok(())
    }))
}

fn job(n: u64) -> Envelope {
    let mut e =
        Envelope::with_args("restart_mark", "default", &serde_json::json!({"n": n})).expect("json");
    e.max_attempts = 11;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_every_confirmed_job_completes() {
    // A node of the test's own: the shared broker is never stopped.
    let node = Arc::new(jobsmith_conformance::tls::TlsRabbit::start());
    let backend = jobsmith_amqp::AmqpBackend::connect(&node.amqp_url(""))
        .await
        .expect("the test's own node is reachable");
    let b: Arc<dyn Backend> = Arc::new(backend);
    let mut confirmed: BTreeSet<u64> = BTreeSet::new();
    let first: Vec<Envelope> = (0..1_000).map(job).collect();
    b.enqueue(first).await.expect("enqueue");
    confirmed.extend(0..1_000);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = App::from_backend(Arc::clone(&b))
        .worker()
        .registry(Registry::from_defs([&MARK_JOB]).expect("one job"))
        .concurrency(8)
        .lease(Duration::from_secs(5))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());
    let started = Instant::now();
    while DONE.lock().expect("lock").len() < 100 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The restart runs on its own clock: an enqueue that waits for the broker
    // to come back must not keep it from coming back.
    let ctl = Arc::clone(&node);
    let stopper = tokio::task::spawn_blocking(move || {
        let stopped = ctl.rabbitmqctl(&["stop_app"]).is_some();
        std::thread::sleep(Duration::from_secs(5));
        let started = ctl.rabbitmqctl(&["start_app"]).is_some();
        stopped && started
    });
    // Keep enqueueing through the restart: what is confirmed must complete.
    let mut n = 1_000;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let batch: Vec<Envelope> = (n..n + 20).map(job).collect();
        if b.enqueue(batch).await.is_ok() {
            confirmed.extend(n..n + 20);
        }
        n += 20;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopper.await.expect("stop_app runs"),
        "rabbitmqctl stop_app and start_app work on the test's node"
    );
    let restarted = Instant::now();
    // And after it.
    loop {
        let batch: Vec<Envelope> = (n..n + 20).map(job).collect();
        if b.enqueue(batch).await.is_ok() {
            confirmed.extend(n..n + 20);
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "enqueue works again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let missing = confirmed.difference(&DONE.lock().expect("lock")).count();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let _ = run.await;
    let done = DONE.lock().expect("lock").clone();
    let missing: Vec<&u64> = confirmed.difference(&done).collect();
    assert!(
        missing.is_empty(),
        "every confirmed job completes and the worker resumes by itself; {} missing, such as {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
