//! What only a real broker can show: a worker killed with SIGKILL, and a
//! broker restarted under a running worker. (Bad payloads reaching the
//! dead-letter queue are a conformance case:
//! `worker_dead_letters_bad_input_and_carries_on`.)
//!
//! The restart test stops the shared local RabbitMQ app for a few seconds: it
//! lives in its own binary (`restart.rs`) so that nextest can run it alone.

mod support;

use jobsmith_core::Inspect;
use jobsmith_core::{
    App, Backend, BoxFuture, Envelope, Failure, JobContext, JobDef, JobOptions, Registry,
};
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

const URL_VAR: &str = "JOBSMITH_FAULT_URL";
const OUT_VAR: &str = "JOBSMITH_FAULT_OUT";

/// Appends its `n` to the file named by `JOBSMITH_FAULT_OUT`: a record of
/// completions that survives the worker process.
static RECORD_JOB: JobDef = JobDef {
    name: "fault_record",
    location: "jobsmith-amqp tests/faults.rs",
    options: JobOptions {
        retries: 5,
        ..JobOptions::DEFAULT
    },
    run: run_record,
    params: &[],
    shapes: Vec::new,
};

fn run_record(
    args: &RawValue,
    _ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    let n = support::arg_n(args)?;
    Ok(Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let path = std::env::var(OUT_VAR).map_err(Failure::permanent)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(Failure::retryable)?;
        // One short line per write, with O_APPEND: lines from two processes never interleave.
        f.write_all(format!("{n}\n").as_bytes())
            .map_err(Failure::retryable)?;
        Ok(())
    }))
}

fn completed(path: &std::path::Path) -> BTreeSet<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

fn spawn_child() -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "child_worker", "--nocapture", "--ignored"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("re-run the test binary as a worker")
}

/// The worker process of `sigkill_mid_run_then_a_new_worker_finishes_every_job`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sigkill_mid_run_then_a_new_worker_finishes_every_job as a child process"]
async fn child_worker() {
    let url = std::env::var(URL_VAR).expect("run by the parent test");
    let backend = jobsmith_amqp::AmqpBackend::connect(&url)
        .await
        .expect("connect");
    App::new(backend)
        .worker()
        .registry(Registry::from_defs([&RECORD_JOB]).expect("one job"))
        .concurrency(16)
        .lease(Duration::from_secs(30))
        .run_report()
        .await
        .expect("worker runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_a_new_worker_finishes_every_job() {
    let prefix = support::fresh_prefix();
    let url = support::url(&prefix, "");
    let out = std::env::temp_dir().join(format!("{prefix}.completions"));
    let _ = std::fs::remove_file(&out);
    let backend = jobsmith_amqp::AmqpBackend::connect(&url)
        .await
        .expect("connect");
    let jobs = 2_000u64;
    let envs: Vec<Envelope> = (0..jobs)
        .map(|n| {
            let mut e =
                Envelope::with_args("fault_record", "default", &serde_json::json!({"n": n}))
                    .expect("json");
            e.max_attempts = 6;
            e
        })
        .collect();
    for chunk in envs.chunks(500) {
        backend.enqueue(chunk.to_vec()).await.expect("enqueue");
    }
    std::env::set_var(URL_VAR, &url);
    std::env::set_var(OUT_VAR, &out);

    let mut first = spawn_child();
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed(&out).len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = completed(&out).len();
    assert!(
        before >= 300,
        "the first worker made progress ({before} jobs)"
    );
    first.kill().expect("SIGKILL the first worker");
    first.wait().expect("reap it");
    assert!(
        (before as u64) < jobs,
        "the kill landed mid-run ({before} of {jobs} done)"
    );

    let mut second = spawn_child();
    let deadline = Instant::now() + Duration::from_secs(90);
    while (completed(&out).len() as u64) < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = completed(&out);
    second.kill().expect("stop the second worker");
    second.wait().expect("reap it");
    let missing: Vec<u64> = (0..jobs).filter(|n| !done.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "every job completes after a SIGKILL; {} missing, such as {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let s = backend.stats(&["default".to_owned()]).await.expect("stats");
    assert_eq!(s[0].dead, 0, "no job died of the kill");
    let _ = std::fs::remove_file(&out);
}
