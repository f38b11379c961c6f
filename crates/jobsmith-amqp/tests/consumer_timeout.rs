//! Jobs that run longer than the broker's `consumer_timeout` run once, and the
//! broker never closes the worker's channel under them.
//!
//! It runs on a RabbitMQ node of the test's own, started with
//! `consumer_timeout` at 8 s and `channel_tick_interval` (how often a channel
//! checks it) at 1 s: the shared broker's settings are never changed.

mod support;

use jobsmith_conformance::Logs;
use jobsmith_core::lock::LockExt;
use jobsmith_core::{App, Backend, BoxFuture, Envelope, Failure, JobContext, JobDef, Registry};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The broker's `consumer_timeout` during the test. Deliveries are handed
/// over at half of it, which leaves the other half for the handover itself:
/// at 5 s, a node starved by the rest of the suite (its start alone took
/// 16 s) once took longer than that.
const TIMEOUT_MS: u64 = 8_000;

/// How long each long job runs: well past the timeout.
const RUN_FOR: Duration = Duration::from_secs(12);

/// Attempts seen per job, one entry per run.
static RUNS: Mutex<BTreeMap<u64, Vec<u32>>> = Mutex::new(BTreeMap::new());

static LONG_JOB: JobDef = JobDef {
    name: "long_run",
    location: "jobsmith-amqp tests/consumer_timeout.rs",
    options: jobsmith_core::JobOptions::DEFAULT,
    run: run_long,
    params: &[],
    shapes: Vec::new,
};

fn run_long(
    args: &RawValue,
    ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    let n = support::arg_n(args)?;
    Ok(Box::pin(async move {
        RUNS.lock_unpoisoned()
            .entry(n)
            .or_default()
            .push(ctx.attempt());
        tokio::time::sleep(RUN_FOR).await;
        Ok(())
    }))
}

/// A plain consumer that holds a delivery unacknowledged has its channel
/// closed by the broker: the lowered timeout is in force for new channels.
async fn assert_timeout_in_force(url: &str) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to the test's node");
    let ch = conn.create_channel().await.expect("channel");
    let q = format!("{}.timeout_probe", support::fresh_prefix());
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"x",
        lapin::BasicProperties::default(),
    )
    .await
    .expect("publish");
    ch.basic_qos(1, BasicQosOptions::default())
        .await
        .expect("qos");
    let consumer = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let started = Instant::now();
    while ch.status().connected() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !ch.status().connected(),
        "the broker closes a channel holding a delivery past consumer_timeout = {TIMEOUT_MS} ms"
    );
    drop(consumer);
    if let Ok(c2) = conn.create_channel().await {
        let _ = c2
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

fn job(n: u64) -> Envelope {
    Envelope::with_args("long_run", "default", &serde_json::json!({"n": n})).expect("json")
}

// A current-thread runtime, so that the backend's tasks log where `Logs` captures.
#[tokio::test]
async fn jobs_longer_than_consumer_timeout_run_once_on_a_live_channel() {
    let (logs, _capturing) = Logs::capture();
    let node = jobsmith_conformance::tls::TlsRabbit::start_with(&format!(
        "[{{rabbit, [{{consumer_timeout, {TIMEOUT_MS}}}, {{channel_tick_interval, 1000}}]}}].\n"
    ));
    let plain = node.amqp_url("");
    let base = plain.split_once('?').map_or(plain.as_str(), |(b, _)| b);
    assert_timeout_in_force(base).await;

    let backend = jobsmith_amqp::AmqpBackend::connect(
        &node.amqp_url(&format!("&consumer_timeout={TIMEOUT_MS}ms")),
    )
    .await
    .expect("the test's own node is reachable");
    let probe = backend.clone();
    let b: Arc<dyn Backend> = Arc::new(backend);
    // Two jobs, one at a time: each runs past the timeout on its lease; the
    // second waits in the queue meanwhile (the prefetch is the concurrency).
    b.enqueue(vec![job(1), job(2)]).await.expect("enqueue");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = App::from_backend(Arc::clone(&b))
        .worker()
        .registry(Registry::from_defs([&LONG_JOB]).expect("one job"))
        .concurrency(1)
        .lease(Duration::from_secs(2))
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());

    let deadline = Instant::now() + 2 * RUN_FOR + Duration::from_secs(20);
    loop {
        let stats = b
            .inspect()
            .expect("the backend has it")
            .stats(&["default".to_owned()])
            .await
            .expect("stats");
        let s = &stats[0];
        let all_started = RUNS.lock().expect("lock").len() == 2;
        if all_started && s.ready + s.scheduled + s.in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "both jobs finish: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the lease and the timeout again: a parked copy left behind would be back by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _ = stop_tx.send(());
    let report = run.await.expect("worker task").expect("worker runs");

    let runs = RUNS.lock().expect("lock").clone();
    assert_eq!(
        runs,
        BTreeMap::from([(1, vec![1]), (2, vec![1])]),
        "each job ran once, on its first attempt"
    );
    assert_eq!(report.succeeded, 2, "{report:?}");
    assert_eq!(report.lost_leases, 0, "{report:?}");
    assert_eq!(
        probe.connections_opened(),
        1,
        "the broker never closed the worker's channel, so it never reconnected; \
         what the backend warned of:\n{}",
        logs.lines_with(&["WARN"]).join("\n")
    );
    let stats = b
        .inspect()
        .expect("the backend has it")
        .stats(&["default".to_owned()])
        .await
        .expect("stats");
    assert_eq!(stats[0].ready + stats[0].in_flight + stats[0].dead, 0);
}
