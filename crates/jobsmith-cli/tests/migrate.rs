//! `migrate` between real backends, each pair interrupted half-way and then
//! resumed: afterwards every job is in the destination exactly once, with
//! its attempt and run_at, and gone from the source. Also: a job a worker
//! holds stays in the source, and `--queues` moves only the queues named.

mod support;

use jobsmith_cli::{migrate, Error, MigrateOptions};
use jobsmith_core::SettleExt;
use jobsmith_core::{JobId, LeaseStatus, MemoryBackend, Settings, Timestamp};
use serde_json::Value;
use std::time::Duration;
use support::{
    amqp_url, check_moved, connect, fails, migrate_killed_after, ok, queue_stats, redis_url, seed,
    sqs_url, take_all,
};

/// memory → Redis, in-process (a memory backend lives in one process): the
/// first run stops after copying 35 jobs and before deleting them from the
/// source, as a crash there would; the second run finishes the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_redis_interrupted_then_resumed() {
    let source = MemoryBackend::new(Settings::default());
    let due = Timestamp::now().plus(Duration::from_secs(3600));
    let seeded = seed(&source, "mail", 60, 20, 10, due).await;
    source.push_raw("mail", b"\x01 not an envelope".to_vec());
    let dest = connect(&redis_url()).await;
    let dest = &**dest.backend();
    let mut opts = MigrateOptions {
        batch: 10,
        hold: Duration::from_millis(500),
        fault_after: Some(35),
        ..MigrateOptions::default()
    };
    let err = migrate(&source, dest, &opts, |_| {}).await.unwrap_err();
    assert!(matches!(err, Error::Fault(n) if n >= 35), "{err}");
    let mid = queue_stats(dest, "mail").await;
    assert!(
        mid.ready + mid.scheduled + mid.dead >= 35,
        "the first run copied jobs: {mid:?}"
    );
    // The interrupted page is held in the source until its hold runs out.
    tokio::time::sleep(Duration::from_millis(700)).await;
    opts.fault_after = None;
    let mut progressed = 0;
    let report = migrate(&source, dest, &opts, |n| progressed += n)
        .await
        .unwrap();
    let t = report.total();
    assert_eq!(
        mid.ready + mid.scheduled + mid.dead + t.moved(),
        60 + 20 + 10 + 1,
        "the two runs wrote each job once: {t:?}"
    );
    assert!(
        (1..=10).contains(&t.already_copied),
        "the resumed run meets the page the first one copied but did not delete: {t:?}"
    );
    assert_eq!(progressed, t.moved() + t.already_copied);
    assert_eq!((t.holds_lost, t.in_flight_left), (0, 0));
    // The malformed payload is a dead job in the destination too.
    let mut seeded = seeded;
    let raw = dest
        .dead_letters()
        .expect("the backend has it")
        .dead_list("mail", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.envelope().is_none())
        .expect("the malformed payload is dead in the destination");
    assert_eq!(raw.raw, b"\x01 not an envelope");
    seeded.dead.insert(raw.id.clone(), raw.reason.clone());
    check_moved(&source, dest, "mail", &seeded).await;
}

/// Redis → RabbitMQ with the binary, SIGKILLed after its fault point (jobs
/// copied, not yet deleted from Redis), then run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_to_rabbitmq_killed_then_resumed() {
    let (from, to) = (redis_url(), amqp_url());
    let source = connect(&from).await;
    let dest = connect(&to).await;
    let due = Timestamp::now().plus(Duration::from_secs(3600));
    let seeded = seed(&**source.backend(), "mail", 150, 40, 10, due).await;
    let args = [
        "migrate", "--from", &from, "--to", &to, "--batch", "25", "--hold", "2s",
    ];
    let dry = ok(&[
        "--json",
        "migrate",
        "--from",
        &from,
        "--to",
        &to,
        "--dry-run",
    ]);
    let dry: Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry["queues"][0]["ready"], 150);
    assert_eq!(dry["queues"][0]["scheduled"], 40);
    assert_eq!(dry["queues"][0]["dead"], 10);
    migrate_killed_after(&args, 100);
    // Redis gives the killed run's held page back when its hold runs out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut json = vec!["--json"];
    json.extend(args);
    let report: Value = serde_json::from_str(&ok(&json)).unwrap();
    let again = report["queues"][0]["already_copied"].as_u64().unwrap();
    assert!(
        (1..=25).contains(&again),
        "the resumed run meets the page the killed one copied but did not delete: {report}"
    );
    check_moved(&**source.backend(), &**dest.backend(), "mail", &seeded).await;
}

/// RabbitMQ → SQS with the binary, SIGKILLed after its fault point, then
/// run again. Kept shallow: moto slows down with depth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_to_sqs_killed_then_resumed() {
    let (from, to) = (amqp_url(), sqs_url());
    let source = connect(&from).await;
    let dest = connect(&to).await;
    // Scheduled jobs due soon after the move: SQS hides a job within its
    // delay, so the check waits until they are due to read them back.
    let due = Timestamp::now().plus(Duration::from_secs(60));
    let seeded = seed(&**source.backend(), "mail", 60, 15, 5, due).await;
    let args = [
        "migrate", "--from", &from, "--to", &to, "--batch", "10", "--hold", "30s",
    ];
    migrate_killed_after(&args, 35);
    // RabbitMQ gives the killed run's page back when its connection closes.
    let mut json = vec!["--json"];
    json.extend(args);
    let report: Value = serde_json::from_str(&ok(&json)).unwrap();
    let again = report["queues"][0]["already_copied"].as_u64().unwrap();
    assert!(
        (1..=10).contains(&again),
        "the resumed run meets the page the killed one copied but did not delete: {report}"
    );
    assert!(
        Timestamp::now() < due,
        "the move finished before the scheduled jobs came due"
    );
    let left = queue_stats(&**dest.backend(), "mail").await;
    assert_eq!(
        left.scheduled, 15,
        "the scheduled jobs wait in SQS: {left:?}"
    );
    tokio::time::sleep(due.since(Timestamp::now()) + Duration::from_secs(2)).await;
    check_moved(&**source.backend(), &**dest.backend(), "mail", &seeded).await;
}

/// Redis → RabbitMQ with the binary while a worker holds one job of the
/// source: that job stays in Redis, reported as left in flight, and its
/// worker can still acknowledge it there; everything else moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_jobs_stay_in_the_source() {
    let (from, to) = (redis_url(), amqp_url());
    let source = connect(&from).await;
    let dest = connect(&to).await;
    let (src, dst) = (&**source.backend(), &**dest.backend());
    let due = Timestamp::now().plus(Duration::from_secs(3600));
    let mut seeded = seed(src, "mail", 20, 5, 3, due).await;
    let held = src
        .reserve(
            &["mail".to_owned()],
            1,
            Duration::from_secs(300),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1, "a worker holds one job");
    let lease = held[0].lease.clone();
    seeded
        .waiting
        .remove(&lease.id)
        .expect("the held job is a seeded one");

    let report: Value = serde_json::from_str(&ok(&[
        "--json", "migrate", "--from", &from, "--to", &to, "--batch", "10",
    ]))
    .unwrap();
    let row = &report["queues"][0];
    assert_eq!(row["queue"], "mail", "{report}");
    assert_eq!(
        (
            row["ready"].as_u64(),
            row["scheduled"].as_u64(),
            row["dead"].as_u64(),
            row["in_flight_left"].as_u64()
        ),
        (Some(19), Some(5), Some(3), Some(1)),
        "{report}"
    );
    let left = queue_stats(src, "mail").await;
    assert_eq!(
        (left.ready, left.scheduled, left.in_flight, left.dead),
        (0, 0, 1, 0),
        "only the held job is left in the source: {left:?}"
    );
    assert_eq!(
        src.ack(std::slice::from_ref(&lease)).await.unwrap(),
        [LeaseStatus::Held],
        "the worker still holds its job after the migration"
    );
    // Now the source is empty, and the destination has every other job once.
    check_moved(src, dst, "mail", &seeded).await;
}

/// Redis → RabbitMQ with the binary and `--queues mail`: the named queue
/// moves, the other stays in the source untouched, and the destination
/// never hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_queues_named_move() {
    let (from, to) = (redis_url(), amqp_url());
    let source = connect(&from).await;
    let dest = connect(&to).await;
    let (src, dst) = (&**source.backend(), &**dest.backend());
    let due = Timestamp::now().plus(Duration::from_secs(3600));
    let mail = seed(src, "mail", 12, 4, 2, due).await;
    let images = seed(src, "images", 9, 3, 2, due).await;
    let run = |extra: &[&str]| -> Value {
        let mut args = vec!["--json", "migrate", "--from", &from, "--to", &to];
        args.extend(extra);
        args.extend(["--queues", "mail"]);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let dry = run(&["--dry-run"]);
    let queues: Vec<&str> = dry["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["mail"], "the dry run counts only mail: {dry}");
    let report = run(&[]);
    assert_eq!(report["queues"].as_array().unwrap().len(), 1, "{report}");
    let row = &report["queues"][0];
    assert_eq!(
        (
            row["queue"].as_str(),
            row["ready"].as_u64(),
            row["scheduled"].as_u64(),
            row["dead"].as_u64()
        ),
        (Some("mail"), Some(12), Some(4), Some(2)),
        "{report}"
    );
    assert_eq!(
        dst.inspect()
            .expect("the backend has it")
            .queues()
            .await
            .unwrap(),
        ["mail"],
        "the destination never heard of images"
    );
    check_moved(src, dst, "mail", &mail).await;

    // images is where it was, every job of it.
    let kept = queue_stats(src, "images").await;
    assert_eq!(
        (kept.ready, kept.scheduled, kept.in_flight, kept.dead),
        (9, 3, 0, 2),
        "{kept:?}"
    );
    let mut waiting: Vec<JobId> = take_all(src, "images")
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    waiting.sort();
    let want: Vec<JobId> = images.waiting.keys().cloned().collect();
    assert_eq!(waiting, want, "images' waiting jobs stay in the source");
    let mut dead: Vec<JobId> = src
        .dead_letters()
        .expect("the backend has it")
        .dead_list("images", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    dead.sort();
    let want: Vec<JobId> = images.dead.keys().cloned().collect();
    assert_eq!(dead, want, "images' dead jobs stay in the source");
}

/// `--from` and `--to` naming one namespace, spelled two ways: refused
/// before anything moves, on every backend. (Before the check, Redis lost
/// its scheduled and dead jobs and RabbitMQ its ready ones, and the run
/// exited 0.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_onto_its_own_source_is_refused_and_changes_nothing() {
    type Respell = fn(&str) -> String;
    let spellings: [(String, Respell); 3] = [
        (redis_url(), |u: &str| {
            u.replace("127.0.0.1:6379/", "localhost:6379/0")
        }),
        (amqp_url(), |u: &str| {
            u.replace("@127.0.0.1:5672/", "@localhost/")
        }),
        (sqs_url(), |u: &str| {
            u.replace("127.0.0.1:5000", "localhost:5000/")
        }),
    ];
    for (from, respell) in spellings {
        let to = respell(&from);
        assert_ne!(from, to, "the test spells the URL another way");
        let app = connect(&from).await;
        let b = &**app.backend();
        let due = Timestamp::now().plus(Duration::from_secs(3600));
        seed(b, "mail", 10, 5, 1, due).await;
        let before = queue_stats(b, "mail").await;
        for dry in [false, true] {
            let mut args = vec!["migrate", "--from", &from, "--to", &to];
            if dry {
                args.push("--dry-run");
            }
            let err = fails(&args);
            assert!(
                err.contains("the same namespace"),
                "{from} → {to}: says why: {err}"
            );
        }
        let after = queue_stats(b, "mail").await;
        assert_eq!(
            (after.ready, after.scheduled, after.dead),
            (before.ready, before.scheduled, before.dead),
            "{from}: nothing moved or went"
        );
    }
}

/// A destination that lives only in the migrating process (`memory://`)
/// would take every job with it when the command exits: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_into_memory_is_refused() {
    let from = redis_url();
    let app = connect(&from).await;
    let b = &**app.backend();
    seed(b, "mail", 3, 0, 0, Timestamp::now()).await;
    let err = fails(&["migrate", "--from", &from, "--to", "memory://"]);
    assert!(err.contains("memory://"), "{err}");
    let after = queue_stats(b, "mail").await;
    assert_eq!(after.ready, 3, "the jobs are still in the source");
}

/// A queue named with `--queues` that the source does not have is a typo:
/// refused, naming the source's queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_of_an_unknown_queue_is_refused() {
    let (from, to) = (redis_url(), redis_url());
    let app = connect(&from).await;
    seed(&**app.backend(), "mail", 3, 0, 0, Timestamp::now()).await;
    let err = fails(&["migrate", "--from", &from, "--to", &to, "--queues", "mial"]);
    assert!(err.contains("mial") && err.contains("mail"), "{err}");
}
