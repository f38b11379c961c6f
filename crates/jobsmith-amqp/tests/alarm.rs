//! A broker under a resource alarm: RabbitMQ blocks every connection that
//! publishes (`connection.blocked`) and reads nothing more from it until the
//! alarm clears, while its heartbeats keep the connection alive. Enqueue
//! fails within `call_timeout` with an error that says so, a running worker
//! warns naming the server within that time, and once the alarm clears
//! everything goes on: no confirmed job is lost, none runs twice.
//!
//! It runs on a RabbitMQ node of the test's own, whose memory alarm the test
//! raises with `set_vm_memory_high_watermark 0`: the shared broker's settings
//! are never changed.

mod support;

use jobsmith_conformance::tls::TlsRabbit;
use jobsmith_conformance::Logs;
use jobsmith_core::lock::LockExt;
use jobsmith_core::{App, Backend, BoxFuture, Envelope, Failure, JobContext, JobDef, Registry};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `call_timeout` both backends of the test are given.
const LIMIT: Duration = Duration::from_secs(2);

/// How much longer than [`LIMIT`] a call may take to fail (as the
/// conformance suite's frozen-broker cases allow).
const SLACK: Duration = Duration::from_secs(1);

/// How long each job runs: the worker is still busy, acking and counting,
/// when the alarm goes off.
const RUN_FOR: Duration = Duration::from_millis(200);

/// Runs per job.
static RUNS: Mutex<BTreeMap<u64, u32>> = Mutex::new(BTreeMap::new());

static COUNT_JOB: JobDef = JobDef {
    name: "alarm_count",
    location: "jobsmith-amqp tests/alarm.rs",
    options: jobsmith_core::JobOptions::DEFAULT,
    run: run_count,
    params: &[],
    shapes: Vec::new,
};

fn run_count(
    args: &RawValue,
    _ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    let n = support::arg_n(args)?;
    Ok(Box::pin(async move {
        tokio::time::sleep(RUN_FOR).await;
        *RUNS.lock_unpoisoned().entry(n).or_default() += 1;
        Ok(())
    }))
}

fn job(n: u64) -> Envelope {
    Envelope::with_args("alarm_count", "default", &serde_json::json!({"n": n})).expect("json")
}

/// Runs `rabbitmqctl args` on the test's node, off the runtime's thread.
async fn ctl(node: &Arc<TlsRabbit>, args: &'static [&'static str]) -> Option<String> {
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || node.rabbitmqctl(args))
        .await
        .expect("rabbitmqctl runs")
}

/// Waits until the node's alarms do (`raised`) or do not list the memory alarm.
async fn memory_alarm(node: &Arc<TlsRabbit>, raised: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alarms = ctl(node, &["eval", "rabbit_alarm:get_alarms()."])
            .await
            .unwrap_or_default();
        if alarms.contains("memory") == raised {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node's memory alarm is {} within 30 s; its alarms: {alarms}",
            if raised { "raised" } else { "cleared" }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// A current-thread runtime, so that the backends' tasks log where `Logs` captures.
#[tokio::test]
async fn a_memory_alarm_fails_enqueue_within_call_timeout_and_loses_nothing() {
    let (logs, _capturing) = Logs::capture();
    let node = Arc::new(TlsRabbit::start());
    let url = node.amqp_url(&format!("&call_timeout={}s", LIMIT.as_secs()));
    let enqueuer = jobsmith_amqp::AmqpBackend::connect(&url)
        .await
        .expect("the test's own node is reachable");
    // The worker's URL differs by a client setting, so that the server its
    // log lines name is told apart from the enqueuer's.
    let worker_backend =
        jobsmith_amqp::AmqpBackend::connect(&format!("{url}&connection_timeout=2000"))
            .await
            .expect("the test's own node is reachable");
    let worker_server = worker_backend.server();
    let b: Arc<dyn Backend> = Arc::new(worker_backend);

    let mut confirmed: Vec<u64> = (0..100).collect();
    enqueuer
        .enqueue(confirmed.iter().copied().map(job).collect())
        .await
        .expect("enqueue before the alarm");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = App::from_backend(Arc::clone(&b))
        .worker()
        .registry(Registry::from_defs([&COUNT_JOB]).expect("one job"))
        .concurrency(2)
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());
    let started = Instant::now();
    while RUNS.lock_unpoisoned().len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker runs jobs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The worker's warning is looked for from the moment the alarm is set,
    // while the enqueues below wait on the broker.
    let warning = {
        let (logs, server) = (logs.clone(), worker_server.clone());
        tokio::spawn(async move {
            loop {
                if let Some(line) = logs.lines_with(&["WARN", &server]).into_iter().next() {
                    return (Instant::now(), line);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    assert!(
        ctl(&node, &["set_vm_memory_high_watermark", "0"])
            .await
            .is_some(),
        "rabbitmqctl set_vm_memory_high_watermark works on the test's node"
    );
    let alarm_at = Instant::now();
    memory_alarm(&node, true).await;
    assert!(
        RUNS.lock_unpoisoned().len() < confirmed.len(),
        "the worker still has jobs to run when the alarm goes off"
    );

    // An enqueue under the alarm fails within call_timeout. The first may
    // have been sent before the broker blocked the connection, and be
    // stored once the alarm clears; the ones after it are not sent at all.
    let mut failed = Vec::new();
    for n in 1_000..1_005 {
        let asked = Instant::now();
        let result = enqueuer.enqueue(vec![job(n)]).await;
        let took = asked.elapsed();
        assert!(
            took <= LIMIT + SLACK,
            "an enqueue under a memory alarm answered after {took:?}, beyond call_timeout = \
             {LIMIT:?} and {SLACK:?}: {result:?}"
        );
        match result {
            Ok(_) if failed.is_empty() => confirmed.push(n),
            Ok(_) => panic!("an enqueue on a connection the broker blocks succeeded"),
            Err(e) => {
                let text = e.describe();
                eprintln!("enqueue {n} under the alarm failed after {took:?}: {text}");
                assert!(e.is_transient(), "a transient error: {text}");
                for words in ["call_timeout", "resource alarm"] {
                    assert!(text.contains(words), "the error says `{words}`: {text}");
                }
                failed.push((n, text));
                if failed.len() == 2 {
                    break;
                }
            }
        }
    }
    assert_eq!(
        failed.len(),
        2,
        "enqueues under a memory alarm fail; confirmed: {confirmed:?}"
    );
    let unsent = failed[1].0;
    assert!(
        failed[1].1.contains("nothing was sent"),
        "an enqueue on a connection known to be blocked sends nothing: {}",
        failed[1].1
    );

    let bound = LIMIT + SLACK;
    let (warned_at, line) = tokio::time::timeout(bound.saturating_sub(alarm_at.elapsed()), warning)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the worker logged no warning naming {worker_server} within {bound:?} of a memory \
             alarm; what was logged:\n{}",
                logs.lines_with(&["WARN"]).join("\n")
            )
        })
        .expect("the log watcher runs");
    let after = warned_at.duration_since(alarm_at);
    eprintln!("the worker warned {after:?} after the alarm: {line}");
    assert!(
        after <= bound,
        "the worker warned {after:?} after the alarm"
    );

    assert!(
        ctl(&node, &["set_vm_memory_high_watermark", "0.4"])
            .await
            .is_some(),
        "rabbitmqctl set_vm_memory_high_watermark works on the test's node"
    );
    memory_alarm(&node, false).await;
    let cleared = Instant::now();
    let mut n = 2_000;
    loop {
        match enqueuer.enqueue(vec![job(n)]).await {
            Ok(_) => {
                confirmed.push(n);
                break;
            }
            Err(e) => assert!(e.is_transient(), "only transient errors: {e}"),
        }
        assert!(
            cleared.elapsed() < Duration::from_secs(30),
            "enqueue works again once the alarm clears"
        );
        n += 1;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = RUNS.lock_unpoisoned().clone();
        if confirmed.iter().all(|n| runs.contains_key(n)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every confirmed job runs once the alarm clears; missing: {:?}",
            confirmed
                .iter()
                .filter(|n| !runs.contains_key(n))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for a copy left behind to come round again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(());
    let report = run.await.expect("worker task").expect("worker runs");
    let runs = RUNS.lock_unpoisoned().clone();
    let twice: Vec<_> = runs.iter().filter(|(_, r)| **r > 1).collect();
    assert!(twice.is_empty(), "no job runs twice: {twice:?}; {report:?}");
    assert!(
        !runs.contains_key(&unsent),
        "the job of an enqueue that sent nothing never runs"
    );
    // The first failed enqueue may have been stored after all: then it ran
    // once, as checked above.
    eprintln!(
        "failed enqueues that ran all the same: {:?}",
        failed
            .iter()
            .map(|(n, _)| n)
            .filter(|n| runs.contains_key(n))
            .collect::<Vec<_>>()
    );
}
