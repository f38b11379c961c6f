//! `jobsmith enqueue` takes a job's defaults from the record its workers
//! publish in the backend (queue, attempts, priority, TTL) and checks
//! `--args` against the record's argument schema; an unknown name is refused
//! unless `--force`. On Redis, RabbitMQ and SQS: the record goes through
//! each backend's metadata store.

mod support;

use jobsmith::prelude::*;
use serde_json::Value;
use std::time::Duration;
use support::{connect, fails, jobsmith, ok, redis_url};

/// A card charge: never retried.
#[job(queue = "billing", retries = 0, backoff = "fixed(100ms)")]
async fn charge_card(card: String, cents: u64) -> Result<(), String> {
    Err(format!("card {card} declined for {cents}"))
}

/// A job with one parameter of each kind the schema tells apart.
#[job(queue = "mail", retries = 2, priority = 5, ttl = "1h")]
async fn send_welcome(
    user_id: u64,
    template: Option<String>,
    tags: Vec<String>,
    ratio: f64,
    urgent: bool,
    level: u8,
) -> Result<(), String> {
    let _ = (user_id, template, tags, ratio, urgent, level);
    Ok(())
}

/// Runs a worker of every job in this binary until the backend is idle: it
/// publishes the jobs' record as it starts, and runs what is queued.
async fn work_until_idle(app: &jobsmith::App) {
    tokio::time::timeout(Duration::from_secs(60), app.worker().until_idle().run())
        .await
        .expect("the worker goes idle within 60 s")
        .expect("the worker runs");
}

/// The envelope of the one job waiting in `queue`, taken out of it, through
/// a connection of its own (SQS sees a priority level that another process
/// created only when it lists the queue's levels again).
async fn only_job(url: &str, queue: &str) -> jobsmith::Envelope {
    let app = connect(url).await;
    let got = app
        .backend()
        .migration()
        .expect("the backend has it")
        .take(queue, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "one job waits in `{queue}`");
    got.into_iter().next().unwrap().envelope.unwrap()
}

/// How many jobs wait ready in `queue`, counted through a connection of its
/// own, for the reason [`only_job`] gives: a job of priority 5 sits in a
/// priority level that the CLI, not this process, created on SQS.
async fn ready_in(url: &str, queue: &str) -> u64 {
    connect(url)
        .await
        .backend()
        .inspect()
        .expect("the backend has it")
        .stats(&[queue.to_owned()])
        .await
        .unwrap()
        .remove(0)
        .ready
}

/// A `retries = 0` job enqueued by name runs once and goes dead; a job
/// enqueued without `--queue` lands in its own queue; the record's
/// priority and TTL apply; `--queue` and `--max-attempts` still override.
async fn enqueue_takes_the_job_s_own_defaults(url: String) {
    let app = connect(&url).await;
    let b = &**app.backend();
    work_until_idle(&app).await;

    // The queue given, the attempts not: it must run once.
    ok(&[
        "--url",
        &url,
        "enqueue",
        "charge_card",
        "--queue",
        "billing",
        "--args",
        r#"{"card": "4242", "cents": 1999}"#,
    ]);
    work_until_idle(&app).await;
    let dead = b
        .dead_letters()
        .expect("the backend has it")
        .dead_list("billing", 0, 10)
        .await
        .unwrap();
    let attempts: Vec<(u32, u32)> = dead
        .iter()
        .filter_map(|d| d.envelope())
        .map(|e| (e.attempt, e.max_attempts))
        .collect();

    // Neither given: it must land in `billing`, where a worker looks.
    let printed = ok(&[
        "--url",
        &url,
        "--json",
        "enqueue",
        "charge_card",
        "--args",
        r#"{"card": "4242", "cents": 2500}"#,
    ]);
    let printed: Value = serde_json::from_str(&printed).unwrap();
    let billing = b
        .inspect()
        .expect("the backend has it")
        .stats(&["billing".to_owned()])
        .await
        .unwrap()
        .remove(0);
    let default = b
        .inspect()
        .expect("the backend has it")
        .stats(&["default".to_owned()])
        .await
        .unwrap()
        .remove(0);
    assert!(
        attempts == [(1, 1)] && billing.ready == 1 && default.ready == 0,
        "a `retries = 0` job enqueued by name runs exactly once (attempt, max_attempts of the dead jobs: {attempts:?}), \
         and lands in its own queue `billing` (billing: {} ready; default: {} ready; printed {printed})",
        billing.ready,
        default.ready
    );
    assert_eq!(printed["queue"], "billing", "{printed}");
    assert_eq!(printed["max_attempts"], 1, "{printed}");
    only_job(&url, "billing").await;

    // Priority and TTL come from the record too.
    let before = jobsmith::Timestamp::now();
    ok(&[
        "--url",
        &url,
        "enqueue",
        "send_welcome",
        "--args",
        r#"{"user_id": 7, "tags": [], "ratio": 0.5, "urgent": false, "level": 3}"#,
    ]);
    let env = only_job(&url, "mail").await;
    assert_eq!((env.priority, env.max_attempts), (5, 3));
    let ttl = env.expires_at.expect("a TTL").since(before);
    assert!(
        ttl > Duration::from_secs(3590) && ttl <= Duration::from_secs(3610),
        "{ttl:?}"
    );

    // Given on the command line, they override the record.
    ok(&[
        "--url",
        &url,
        "enqueue",
        "charge_card",
        "--args",
        r#"{"card": "4242", "cents": 1}"#,
        "--queue",
        "billing_slow",
        "--max-attempts",
        "3",
        "--priority",
        "-1",
    ]);
    let env = only_job(&url, "billing_slow").await;
    assert_eq!((env.max_attempts, env.priority), (3, -1));
}

/// A name no worker published is refused, with the known names, closest
/// first; `--force` enqueues it with the command's defaults, and says so.
async fn unknown_job_is_refused_unless_forced(url: String) {
    let app = connect(&url).await;
    let b = &**app.backend();
    work_until_idle(&app).await;

    let err = fails(&["--url", &url, "enqueue", "chrage_card"]);
    let (close, far) = (err.find("charge_card"), err.find("send_welcome"));
    assert!(
        err.contains("chrage_card") && close.is_some() && far.is_some() && close < far,
        "refused, naming the known jobs closest first: {err}"
    );
    assert!(err.contains("--force"), "says how to enqueue anyway: {err}");
    let stats = b
        .inspect()
        .expect("the backend has it")
        .stats(&["default".to_owned()])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stats.ready, 0, "nothing was enqueued");

    let out = jobsmith()
        .args(["--url", &url, "enqueue", "chrage_card", "--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--force") && stderr.contains("`default`"),
        "a forced enqueue says which defaults it used: {stderr}"
    );
    let env = only_job(&url, "default").await;
    assert_eq!((env.job.as_str(), env.max_attempts), ("chrage_card", 4));
}

/// `--args` that do not fit the published schema are refused, naming the
/// parameter and what it takes; nothing is enqueued.
async fn args_that_do_not_fit_are_refused(url: String) {
    let app = connect(&url).await;
    work_until_idle(&app).await;

    let refused = |job: &str, args: &str, says: &[&str]| {
        let err = fails(&["--url", &url, "enqueue", job, "--args", args]);
        for s in says {
            assert!(err.contains(s), "{args}: the message says `{s}`: {err}");
        }
    };
    refused(
        "charge_card",
        r#"{"card": 4242, "cents": 1999}"#,
        &["`card`", "string", "String"],
    );
    refused(
        "charge_card",
        r#"{"card": "4242", "cents": -5}"#,
        &["`cents`", "u64", "-5"],
    );
    refused(
        "charge_card",
        r#"{"card": "4242", "cents": 19.99}"#,
        &["`cents`", "integer"],
    );
    refused(
        "charge_card",
        r#"{"card": "4242"}"#,
        &["`cents`", "missing"],
    );
    refused(
        "charge_card",
        r#"{"card": "4242", "cents": 1, "cent": 2}"#,
        &["`cent`", "card, cents"],
    );
    let welcome = |extra: &str| {
        format!(r#"{{"user_id": 7, "tags": ["a"], "ratio": 1, "urgent": true, "level": 3{extra}}}"#)
    };
    refused(
        "send_welcome",
        r#"{"user_id": 7, "tags": [], "ratio": 1, "urgent": true, "level": 300}"#,
        &["`level`", "u8", "255"],
    );
    refused(
        "send_welcome",
        r#"{"user_id": 7, "tags": [1], "ratio": 1, "urgent": true, "level": 3}"#,
        &["`tags[0]`", "string"],
    );
    refused(
        "send_welcome",
        r#"{"user_id": 7, "tags": [], "ratio": 1, "urgent": "yes", "level": 3}"#,
        &["`urgent`", "boolean"],
    );
    for q in ["billing", "mail"] {
        assert_eq!(ready_in(&url, q).await, 0, "nothing was enqueued in {q}");
    }

    // What fits goes in: an omitted or null Option, an integer as a float.
    ok(&[
        "--url",
        &url,
        "enqueue",
        "send_welcome",
        "--args",
        &welcome(""),
    ]);
    ok(&[
        "--url",
        &url,
        "enqueue",
        "send_welcome",
        "--args",
        &welcome(r#", "template": null"#),
    ]);
    assert_eq!(ready_in(&url, "mail").await, 2);
    // And `--force` takes arguments that do not fit.
    ok(&[
        "--url",
        &url,
        "enqueue",
        "charge_card",
        "--force",
        "--args",
        r#"{"card": 4242}"#,
    ]);
    let env = only_job(&url, "billing").await;
    assert_eq!(env.max_attempts, 1, "the record's attempts, forced or not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_takes_the_job_s_own_defaults_on_redis() {
    enqueue_takes_the_job_s_own_defaults(redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_takes_the_job_s_own_defaults_on_rabbitmq() {
    enqueue_takes_the_job_s_own_defaults(support::amqp_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_takes_the_job_s_own_defaults_on_sqs() {
    enqueue_takes_the_job_s_own_defaults(support::sqs_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_job_is_refused_unless_forced_on_redis() {
    unknown_job_is_refused_unless_forced(redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_job_is_refused_unless_forced_on_rabbitmq() {
    unknown_job_is_refused_unless_forced(support::amqp_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_job_is_refused_unless_forced_on_sqs() {
    unknown_job_is_refused_unless_forced(support::sqs_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_that_do_not_fit_are_refused_on_redis() {
    args_that_do_not_fit_are_refused(redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_that_do_not_fit_are_refused_on_rabbitmq() {
    args_that_do_not_fit_are_refused(support::amqp_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_that_do_not_fit_are_refused_on_sqs() {
    args_that_do_not_fit_are_refused(support::sqs_url()).await;
}
