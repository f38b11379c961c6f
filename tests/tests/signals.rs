//! `worker.run()` stops on SIGINT and SIGTERM: it stops reserving, lets
//! running jobs finish within the grace period, releases the rest, and returns.
//! The worker runs in a child process (this test binary, re-executed).
#![allow(clippy::print_stdout)] // the child reports to the parent on stdout

use jobsmith::prelude::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "JOBSMITH_SIGNAL_CHILD";

#[job(queue = "sig")]
async fn quick() {}

#[job(queue = "sig")]
async fn stubborn() {
    println!("READY");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// The child: one quick job and one that outlives the grace period.
#[test]
#[ignore = "run by the signal tests as a child process"]
fn child_worker() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let app = App::memory();
        quick.delay().on(&app).await.unwrap();
        stubborn.delay().on(&app).await.unwrap();
        let report = app
            .worker()
            .queues(["sig"])
            .grace_period(Duration::from_millis(500))
            .run_report()
            .await
            .unwrap();
        let left = app.stats().await.unwrap();
        println!(
            "REPORT succeeded={} released={} ready_after={}",
            report.succeeded, report.released, left[0].ready
        );
    });
}

fn stops_gracefully_on(signal: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_worker",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("READY") {
            break;
        }
    }
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // Read to the end, so the child never writes into a closed pipe.
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let report = rest
        .iter()
        .find(|l| l.starts_with("REPORT"))
        .expect("the worker reports")
        .clone();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the worker exits cleanly on SIG{signal}: {status}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the grace period bounds the stop"
    );
    assert_eq!(
        report, "REPORT succeeded=1 released=1 ready_after=1",
        "on SIG{signal}"
    );
}

#[test]
fn sigterm_stops_the_worker_gracefully() {
    stops_gracefully_on("TERM");
}

#[test]
fn sigint_stops_the_worker_gracefully() {
    stops_gracefully_on("INT");
}
