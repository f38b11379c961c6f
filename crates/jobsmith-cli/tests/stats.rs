//! `jobsmith stats` run as the binary against Redis, RabbitMQ and SQS: the
//! counts per queue, and processed / failed rates that count exactly the
//! acks and failures made between two refreshes, by another process; and a
//! broken queue printed, marked, beside the healthy ones.

mod support;

use jobsmith_core::SettleExt;
use jobsmith_core::{Envelope, LeaseStatus, Timestamp};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;
use support::{amqp_url, connect, jobsmith, ok, redis_url, sqs_url};

/// What one backend reports that the others need not (docs/backends.md).
struct Expect {
    /// `backend` in the JSON report.
    name: &'static str,
    /// Whether the oldest ready job's age is known to a process that does
    /// not consume the queue: not on RabbitMQ (it comes from the consumer's
    /// buffer), not on SQS (an approximation: `None`).
    oldest_known: bool,
    /// Ready jobs the CLI sees once this test's process has reserved seven of
    /// nine: on RabbitMQ the other two wait in this process's prefetch
    /// buffer, which no other process can see.
    ready_after: u64,
}

/// The refresh interval: the test settles jobs between two refreshes, with room to spare.
const WATCH_SECS: &str = "3";

async fn counts_and_rates(url: String, expect: Expect) {
    let app = connect(&url).await;
    let b = app.backend();
    let mut jobs: Vec<Envelope> = (0..10)
        .map(|i| Envelope::with_args("resize", "images", &json!({ "id": i })).unwrap())
        .collect();
    jobs[9].run_at = Timestamp::now().plus(Duration::from_secs(3600));
    b.enqueue(jobs).await.unwrap();
    let mut child = jobsmith()
        .args([
            "--url", &url, "--json", "stats", "--queue", "images", "--watch", WATCH_SECS,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let row = &first["queues"][0];
    assert_eq!(row["queue"], "images");
    assert_eq!(
        (row["ready"].as_u64(), row["scheduled"].as_u64()),
        (Some(9), Some(1))
    );
    assert_eq!(
        (row["processed"].as_u64(), row["failed"].as_u64()),
        (Some(0), Some(0)),
        "{}: nothing settled yet",
        expect.name
    );
    assert_eq!(
        (
            row["processed_per_sec"].as_f64(),
            row["failed_per_sec"].as_f64()
        ),
        (Some(0.0), Some(0.0)),
        "{}: rates are known, and zero",
        expect.name
    );
    if expect.oldest_known {
        assert!(row["oldest_ready_age_secs"].as_f64().unwrap() >= 0.0);
    } else {
        assert_eq!(row["oldest_ready_age_secs"], Value::Null);
    }
    // Between the first and second refresh: five acks, two failures.
    let mut got = Vec::new();
    while got.len() < 7 {
        let more = b
            .reserve(
                &["images".to_owned()],
                7 - got.len(),
                Duration::from_secs(60),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(
            !more.is_empty(),
            "{}: seven ready jobs are reserved",
            expect.name
        );
        got.extend(more);
    }
    let acks: Vec<_> = got[..5].iter().map(|d| d.lease.clone()).collect();
    assert_eq!(b.ack(&acks).await.unwrap(), vec![LeaseStatus::Held; 5]);
    for d in &got[5..] {
        assert_eq!(
            b.dead_letter(&d.lease, "boom").await.unwrap(),
            LeaseStatus::Held
        );
    }
    // Counted now, not up to a second later (RabbitMQ and SQS count in the process).
    b.flush().await.unwrap();
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let row = &second["queues"][0];
    let secs = second["sampled_over_secs"].as_f64().unwrap();
    assert_eq!(second["backend"], expect.name);
    assert_eq!(
        (
            row["ready"].as_u64(),
            row["dead"].as_u64(),
            row["processed"].as_u64(),
            row["failed"].as_u64()
        ),
        (Some(expect.ready_after), Some(2), Some(5), Some(2)),
        "{}: (ready, dead, processed, failed)",
        expect.name
    );
    let rate = row["processed_per_sec"].as_f64().unwrap();
    assert!(
        (rate - 5.0 / secs).abs() < 1e-6,
        "{}: processed rate {rate} over {secs}s",
        expect.name
    );
    let rate = row["failed_per_sec"].as_f64().unwrap();
    assert!(
        (rate - 2.0 / secs).abs() < 1e-6,
        "{}: failed rate {rate} over {secs}s",
        expect.name
    );

    // The human table: one line per queue, rates to one decimal.
    let table = ok(&["--url", &url, "stats"]);
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "QUEUE",
            "READY",
            "SCHEDULED",
            "IN-FLIGHT",
            "DEAD",
            "OLDEST",
            "PROCESSED/S",
            "FAILED/S"
        ]
    );
    let images: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    let ready = expect.ready_after.to_string();
    assert_eq!(
        &images[..5],
        ["images", ready.as_str(), "1", "0", "2"],
        "{}",
        expect.name
    );
    assert_eq!(&images[6..], ["0.0", "0.0"], "{}", expect.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_counts_and_rates_on_redis() {
    counts_and_rates(
        redis_url(),
        Expect {
            name: "redis",
            oldest_known: true,
            ready_after: 2,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_counts_and_rates_on_rabbitmq() {
    counts_and_rates(
        amqp_url(),
        Expect {
            name: "amqp",
            oldest_known: false,
            ready_after: 0,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_counts_and_rates_on_sqs() {
    counts_and_rates(
        sqs_url(),
        Expect {
            name: "sqs",
            oldest_known: false,
            ready_after: 2,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_print_a_broken_queue_marked_beside_the_healthy_ones_and_fail() {
    let url = redis_url();
    let prefix = url.rsplit_once("prefix=").expect("a prefixed URL").1;
    let app = connect(&url).await;
    let jobs = ["adv", "adv2", "adv2"]
        .into_iter()
        .map(|q| Envelope::with_args("resize", q, &json!({})).unwrap())
        .collect();
    app.backend().enqueue(jobs).await.unwrap();
    // A string where the lease set of `adv` belongs, as a stray command could write.
    let server = url.split_once("/?").expect("a URL with a query").0;
    let mut conn = redis::Client::open(server)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{{{prefix}:adv}}:leases"))
        .arg("oops")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    let out = jobsmith().args(["--url", &url, "stats"]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "a broken queue fails the command");
    let mut lines = stdout.lines().skip(1);
    let adv: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        adv,
        ["adv", "broken", "-", "-", "-", "-", "-", "-"],
        "{stdout}"
    );
    let adv2: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&adv2[..5], ["adv2", "2", "0", "0", "0"], "{stdout}");
    let why = lines.next().unwrap();
    assert!(
        why.starts_with("adv is broken: ") && why.contains("WRONGTYPE"),
        "the reason is printed: {stdout}"
    );
    assert!(
        stderr.contains("could not read the counts of a queue: adv"),
        "{stderr}"
    );

    let out = jobsmith()
        .args(["--url", &url, "--json", "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken queue fails the command");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["queues"].as_array().unwrap();
    assert_eq!(rows[0]["queue"], "adv");
    assert!(rows[0]["error"].as_str().unwrap().contains("WRONGTYPE"));
    assert_eq!(rows[1]["queue"], "adv2");
    assert_eq!(rows[1]["ready"], 2);
    assert!(rows[1].get("error").is_none(), "a healthy row has no error");

    redis::cmd("DEL")
        .arg(format!("{{{prefix}:adv}}:leases"))
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let table = ok(&["--url", &url, "stats"]);
    assert!(!table.contains("broken"), "repaired: {table}");
}
