//! The `jobsmith` binary against a real Redis: stats, dead, enqueue, bad input.

mod support;

use jobsmith_core::{Backend, DeadJob, Envelope, JobId, Timestamp};
use serde_json::{json, Value};
use std::time::Duration;
use support::{connect, fails, ok, redis_url};

fn q(name: &str) -> Vec<String> {
    vec![name.to_owned()]
}

async fn bury(b: &dyn Backend, queue: &str, job: &str, reason: &str, died_ago: Duration) -> JobId {
    let env = Envelope::with_args(job, queue, &json!({"x": 1})).unwrap();
    let id = env.id.clone();
    let dead = DeadJob {
        id: id.clone(),
        queue: queue.to_owned(),
        reason: reason.to_owned(),
        died_at: Timestamp(Timestamp::now().0 - u64::try_from(died_ago.as_millis()).unwrap()),
        raw: env.to_bytes(),
    };
    assert_eq!(b.import_dead(vec![dead]).await.unwrap(), vec![true]);
    id
}

fn ids_of(json: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json).unwrap();
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<&JobId>) -> Vec<String> {
    ids.sort();
    ids.into_iter().map(|i| i.0.clone()).collect()
}

/// `dead list|show|retry|purge` with queue, job-name and age filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_list_show_retry_purge_with_filters() {
    let url = redis_url();
    let app = connect(&url).await;
    let b = &**app.backend();
    let hour = Duration::from_secs(3600);
    let a_old = bury(b, "mail", "send_welcome", "smtp said 550", 2 * hour).await;
    let a_new = bury(b, "mail", "send_welcome", "smtp timeout", Duration::ZERO).await;
    let other = bury(b, "mail", "send_digest", "template missing", Duration::ZERO).await;
    let img = bury(b, "images", "resize", "bad image", Duration::ZERO).await;
    let raw = JobId::new();
    b.import_dead(vec![DeadJob {
        id: raw.clone(),
        queue: "images".into(),
        reason: "payload is not a job envelope".into(),
        died_at: Timestamp::now(),
        raw: b"\x00not json\xff".to_vec(),
    }])
    .await
    .unwrap();

    let all = ok(&["--url", &url, "--json", "dead", "list"]);
    assert_eq!(
        ids_of(&all),
        sorted(vec![&a_old, &a_new, &other, &img, &raw])
    );
    let mail = ok(&["--url", &url, "--json", "dead", "list", "--queue", "mail"]);
    assert_eq!(ids_of(&mail), sorted(vec![&a_old, &a_new, &other]));
    let welcome = ok(&[
        "--url",
        &url,
        "--json",
        "dead",
        "list",
        "--job",
        "send_welcome",
    ]);
    assert_eq!(ids_of(&welcome), sorted(vec![&a_old, &a_new]));
    let old = ok(&[
        "--url",
        &url,
        "--json",
        "dead",
        "list",
        "--older-than",
        "1h",
    ]);
    assert_eq!(ids_of(&old), sorted(vec![&a_old]));
    let new = ok(&[
        "--url",
        &url,
        "--json",
        "dead",
        "list",
        "--queue",
        "mail",
        "--newer-than",
        "30m",
    ]);
    assert_eq!(ids_of(&new), sorted(vec![&a_new, &other]));
    let table = ok(&["--url", &url, "dead", "list", "--queue", "mail"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("smtp said 550") && table.contains("2h00m ago"),
        "{table}"
    );

    // show: the reason and the whole envelope; raw bytes escaped when not an envelope.
    let shown = ok(&["--url", &url, "dead", "show", &a_old.0]);
    assert!(shown.contains("reason: smtp said 550"), "{shown}");
    assert!(shown.contains("\"job\": \"send_welcome\""), "{shown}");
    assert!(shown.contains("\"queue\": \"mail\""), "{shown}");
    let shown: Value =
        serde_json::from_str(&ok(&["--url", &url, "--json", "dead", "show", &raw.0])).unwrap();
    assert_eq!(shown["envelope"], Value::Null);
    assert_eq!(shown["raw"], "\\x00not json\\xff");
    let err = fails(&["--url", &url, "dead", "show", "no-such-id"]);
    assert!(
        err.contains("no dead job with id no-such-id") && err.contains("jobsmith dead list"),
        "{err}"
    );

    // retry: by filter, then by id; an unknown id changes nothing.
    let err = fails(&["--url", &url, "dead", "retry", &other.0, "no-such-id"]);
    assert!(err.contains("no dead job with id no-such-id"), "{err}");
    assert_eq!(
        ok(&[
            "--url",
            &url,
            "dead",
            "retry",
            "--all",
            "--job",
            "send_welcome",
            "--older-than",
            "1h"
        ]),
        "retried 1 dead job\n"
    );
    assert_eq!(
        ok(&["--url", &url, "--json", "dead", "retry", &other.0]).trim(),
        r#"{"retried":1}"#
    );
    let got = b
        .reserve(
            &q("mail"),
            10,
            Duration::from_secs(60),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let mut back: Vec<&JobId> = got.iter().map(|d| &d.lease.id).collect();
    back.sort();
    assert_eq!(
        sorted(back),
        sorted(vec![&a_old, &other]),
        "retried jobs are ready again"
    );
    assert!(
        got.iter()
            .all(|d| d.envelope.as_ref().unwrap().attempt == 1),
        "attempts reset"
    );

    // purge: refuses without a choice, then by filter.
    let err = fails(&["--url", &url, "dead", "purge"]);
    assert!(err.contains("--all"), "{err}");
    assert_eq!(
        ok(&["--url", &url, "dead", "purge", "--all", "--queue", "images"]),
        "purged 2 dead jobs\n"
    );
    let left = ok(&["--url", &url, "--json", "dead", "list"]);
    assert_eq!(ids_of(&left), sorted(vec![&a_new]));
}

/// `enqueue` writes an envelope by name: ready or scheduled, with priority and key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_then_the_job_is_there() {
    let url = redis_url();
    let app = connect(&url).await;
    let b = app.backend();
    let id = ok(&[
        "--url",
        &url,
        "enqueue",
        "send_welcome",
        "--args",
        r#"{"user_id": 7, "template": "welcome"}"#,
        "--queue",
        "mail",
        "--priority",
        "3",
        "--max-attempts",
        "6",
    ]);
    let id = id.trim();
    let before = Timestamp::now();
    let later = ok(&[
        "--url",
        &url,
        "--json",
        "enqueue",
        "send_welcome",
        "--args",
        r#"{"user_id": 8}"#,
        "--queue",
        "mail",
        "--at",
        "+10m",
    ]);
    let later: Value = serde_json::from_str(&later).unwrap();
    let at = ok(&[
        "--url",
        &url,
        "enqueue",
        "nightly",
        "--queue",
        "mail",
        "--at",
        "2099-01-01T00:00:00+01:00",
    ]);
    let keyed = ok(&[
        "--url", &url, "enqueue", "sync", "--queue", "mail", "--key", "sync-42",
    ]);
    let again = ok(&[
        "--url", &url, "enqueue", "sync", "--queue", "mail", "--key", "sync-42",
    ]);
    assert_eq!(keyed, again, "an equal key returns the queued job's id");

    let got = b
        .reserve(
            &q("mail"),
            10,
            Duration::from_secs(60),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        2,
        "two ready jobs: the plain one and the keyed one"
    );
    let env = got[0].envelope.as_ref().unwrap();
    assert_eq!(env.id.as_str(), id, "priority 3 comes first");
    assert_eq!(
        (env.job.as_str(), env.priority, env.max_attempts),
        ("send_welcome", 3, 6)
    );
    assert_eq!(env.args.get(), r#"{"user_id": 7, "template": "welcome"}"#);
    assert_eq!(got[1].envelope.as_ref().unwrap().id.as_str(), keyed.trim());
    let waiting = b.take("mail", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(waiting.len(), 2, "two scheduled jobs");
    for d in &waiting {
        let env = d.envelope.as_ref().unwrap();
        if env.id.as_str() == later["id"].as_str().unwrap() {
            let ahead = env.run_at.since(before);
            assert!(
                ahead >= Duration::from_secs(599) && ahead <= Duration::from_secs(605),
                "{ahead:?}"
            );
        } else {
            assert_eq!(env.id.as_str(), at.trim());
            assert_eq!(
                env.run_at,
                Timestamp(4_070_905_200_000),
                "RFC 3339 with its offset"
            );
        }
    }
}

/// Bad input is refused with a message that says what to write instead.
#[test]
fn bad_input_says_what_to_do() {
    let url = redis_url();
    let err = fails(&["stats"]);
    assert!(
        err.contains("no backend URL") && err.contains("JOBSMITH_URL"),
        "{err}"
    );
    let err = fails(&["--url", "localhost:6379", "stats"]);
    assert!(
        err.contains("cannot connect to `localhost:6379`") && err.contains("redis://"),
        "{err}"
    );
    let err = fails(&["--url", "ftp://example.com", "stats"]);
    assert!(err.contains("unknown backend scheme `ftp://`"), "{err}");
    let err = fails(&["--url", "redis://127.0.0.1:1", "stats"]);
    assert!(
        err.contains("cannot connect to `redis://127.0.0.1:1`"),
        "{err}"
    );
    let err = fails(&["--url", "amqp://guest:secret@127.0.0.1:1/%2f", "stats"]);
    assert!(
        err.contains("guest:***@") && !err.contains("secret"),
        "passwords are hidden: {err}"
    );
    let err = fails(&["--url", &url, "enqueue", "x", "--args", "[1, 2]"]);
    assert!(
        err.contains("is not a JSON object") && err.contains("--args '{"),
        "{err}"
    );
    let err = fails(&["--url", &url, "enqueue", "x", "--args", "{user_id: 7}"]);
    assert!(err.contains("bad --args: key must be a string"), "{err}");
    let err = fails(&["--url", &url, "enqueue", "x", "--at", "next tuesday"]);
    assert!(
        err.contains("bad --at `next tuesday`") && err.contains("+10m"),
        "{err}"
    );
    let err = fails(&["--url", &url, "enqueue", "x", "--at", "+10 parsecs"]);
    assert!(err.contains("bad --at `+10 parsecs`"), "{err}");
    let err = fails(&["--url", &url, "dead", "list", "--older-than", "1 week"]);
    assert!(err.contains("bad --older-than `1 week`"), "{err}");
    let err = fails(&["--url", &url, "stats", "--watch", "0"]);
    assert!(err.contains("bad --watch"), "{err}");
    let err = fails(&[
        "migrate",
        "--from",
        &url,
        "--to",
        "redis://127.0.0.1:6379",
        "--hold",
        "soon",
    ]);
    assert!(err.contains("bad --hold `soon`"), "{err}");
}
