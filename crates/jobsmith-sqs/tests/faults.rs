//! Faults a worker on SQS must survive, against the real endpoint:
//! a worker process killed with SIGKILL mid-run. (Payloads that cannot run are
//! a conformance case: `worker_dead_letters_bad_input_and_carries_on`.)

mod support;

use jobsmith_core::Inspect;
use jobsmith_core::{
    App, Backend, BoxFuture, Envelope, Failure, JobContext, JobDef, JobOptions, Registry,
};
use jobsmith_sqs::{SqsBackend, SqsConfig};
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

const PREFIX_VAR: &str = "JOBSMITH_SQS_CHILD_PREFIX";
const FILE_VAR: &str = "JOBSMITH_SQS_CHILD_FILE";

/// `record`: appends its `n` to the file named by `JOBSMITH_SQS_CHILD_FILE`
/// (given to the worker as state), after a short pause, so that a kill
/// lands while jobs run.
static RECORD_JOB: JobDef = JobDef {
    name: "record",
    location: "jobsmith_sqs::tests::faults",
    options: JobOptions {
        retries: 3,
        ..JobOptions::DEFAULT
    },
    run: run_record,
    params: &[],
    shapes: Vec::new,
};

#[derive(Clone, Debug)]
struct Record(std::path::PathBuf);

fn run_record(
    args: &RawValue,
    ctx: JobContext,
) -> Result<BoxFuture<'static, Result<(), Failure>>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Args {
        n: u64,
    }
    let args: Args = serde_json::from_str(args.get())?;
    Ok(Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let path = ctx
            .state::<Record>()
            .ok_or_else(|| Failure::permanent("no Record state"))?;
        let path = path.0 .0.clone();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Failure::retryable(e.to_string()))?;
        // One write per line: with O_APPEND, lines from concurrent jobs never interleave.
        f.write_all(format!("{}\n", args.n).as_bytes())
            .map_err(|e| Failure::retryable(e.to_string()))?;
        Ok(())
    }))
}

fn registry() -> Registry {
    Registry::from_defs([&RECORD_JOB]).expect("one job")
}

fn record(n: u64) -> Envelope {
    let mut e =
        Envelope::with_args("record", "default", &serde_json::json!({ "n": n })).expect("JSON");
    e.max_attempts = 4;
    e
}

fn done(path: &std::path::Path) -> BTreeSet<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

async fn backend_on(prefix: &str) -> SqsBackend {
    SqsBackend::connect_with(
        SqsConfig::new("us-east-1")
            .with_prefix(prefix)
            .with_endpoint(support::endpoint()),
    )
    .await
    .expect("SQS endpoint")
}

/// The worker process the kill test starts: runs until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sigkill_mid_run_jobs_come_back_and_complete as a child process"]
async fn child_worker() {
    let (Ok(prefix), Ok(file)) = (std::env::var(PREFIX_VAR), std::env::var(FILE_VAR)) else {
        return;
    };
    let app = App::new(backend_on(&prefix).await);
    let _ = app
        .worker()
        .registry(registry())
        .state(Record(file.into()))
        .lease(Duration::from_secs(2))
        .concurrency(16)
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_jobs_come_back_and_complete() {
    let jobs = 200;
    let prefix = support::fresh_prefix();
    let file = std::env::temp_dir().join(format!("jobsmith-sqs-kill-{prefix}.txt"));
    let backend = backend_on(&prefix).await;
    backend
        .enqueue((0..jobs).map(record).collect())
        .await
        .expect("enqueue");

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_worker", "--nocapture", "--ignored"])
        .env(PREFIX_VAR, &prefix)
        .env(FILE_VAR, &file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("child worker starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while done(&file).len() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let before = done(&file).len() as u64;
    assert!(
        (40..jobs).contains(&before),
        "the child was killed mid-run ({before} of {jobs} done)"
    );
    let s = backend
        .stats(&["default".to_owned()])
        .await
        .expect("stats")
        .remove(0);
    assert!(
        s.in_flight > 0,
        "the killed worker held jobs when it died: {s:?}"
    );

    let app = App::new(backend.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(
        app.worker()
            .registry(registry())
            .state(Record(file.clone()))
            .lease(Duration::from_secs(2))
            .concurrency(16)
            .stop_on(async move {
                let _ = stop_rx.await;
            })
            .run_report(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while (done(&file).len() as u64) < jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let report = run.await.expect("worker task").expect("worker runs");
    let finished = done(&file);
    let missing: Vec<u64> = (0..jobs).filter(|n| !finished.contains(n)).collect();
    let left = backend.stats(&["default".to_owned()]).await.expect("stats");
    assert!(
        missing.is_empty(),
        "jobs the killed worker held come back after the visibility timeout and complete; missing {missing:?}; report {report:?}; left {left:?}"
    );
    assert_eq!(report.dead, 0, "no job is dead-lettered: {report:?}");
    let s = backend
        .stats(&["default".to_owned()])
        .await
        .expect("stats")
        .remove(0);
    assert_eq!(
        (s.ready, s.in_flight, s.dead),
        (0, 0, 0),
        "nothing left: {s:?}"
    );
    let _ = std::fs::remove_file(&file);
    let _ = backend.delete_all_queues().await;
}
