//! The `jobsmith` binary against the real backends: `dead` and `enqueue` on
//! Redis, RabbitMQ and SQS; `JOBSMITH_URL` and bad input on Redis (`stats`: tests/stats.rs).

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
    let dead = DeadJob::new(
        id.clone(),
        queue.to_owned(),
        reason.to_owned(),
        Timestamp(Timestamp::now().0 - u64::try_from(died_ago.as_millis()).unwrap()),
        env.to_bytes(),
    );
    assert_eq!(
        b.migration()
            .expect("the backend has it")
            .import_dead(vec![dead])
            .await
            .unwrap(),
        vec![true]
    );
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

/// Reserves from `queue` until `n` jobs came back, in the order they came;
/// then checks that no more are ready. A broker may hand out a queue's jobs
/// over several reserves (RabbitMQ's deliveries arrive one by one).
async fn reserve_exactly(b: &dyn Backend, queue: &str, n: usize) -> Vec<jobsmith_core::Delivery> {
    let lease = Duration::from_secs(60);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < deadline {
        got.extend(
            b.reserve(&q(queue), 10, lease, Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    assert_eq!(got.len(), n, "{n} jobs ready in {queue}");
    let more = b
        .reserve(&q(queue), 10, lease, Duration::from_secs(1))
        .await
        .unwrap();
    let more: Vec<_> = more.iter().map(|d| &d.lease.id).collect();
    assert!(
        more.is_empty(),
        "only {n} jobs ready in {queue}; also {more:?}"
    );
    got
}

/// `dead list|show|retry|purge` against `url`'s backend, with queue,
/// job-name and age filters, bulk retry, `show` printing the reason and the
/// whole envelope, and `purge` in both output forms.
async fn dead_list_show_retry_purge_with_filters(url: String) {
    let app = connect(&url).await;
    let b = &**app.backend();
    let hour = Duration::from_secs(3600);
    let a_old = bury(b, "mail", "send_welcome", "smtp said 550", 2 * hour).await;
    let a_new = bury(b, "mail", "send_welcome", "smtp timeout", Duration::ZERO).await;
    let other = bury(b, "mail", "send_digest", "template missing", Duration::ZERO).await;
    let img = bury(b, "images", "resize", "bad image", Duration::ZERO).await;
    let raw = JobId::new();
    b.migration()
        .expect("the backend has it")
        .import_dead(vec![DeadJob::new(
            raw.clone(),
            "images".into(),
            "payload is not a job envelope".into(),
            Timestamp::now(),
            b"\x00not json\xff".to_vec(),
        )])
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
    let got = reserve_exactly(b, "mail", 2).await;
    let back: Vec<&JobId> = got.iter().map(|d| &d.lease.id).collect();
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

    // A queue the backend does not know is a typo: refused, naming the
    // queues it knows, before anything is retried or purged.
    for cmd in [["dead", "purge"], ["dead", "retry"]] {
        let err = fails(&["--url", &url, cmd[0], cmd[1], "--all", "--queue", "mial"]);
        assert!(
            err.contains("no queue `mial`") && err.contains("mail"),
            "{cmd:?}: {err}"
        );
    }
    let err = fails(&["--url", &url, "dead", "list", "--queue", "mial"]);
    assert!(err.contains("no queue `mial`"), "{err}");
    // purge: refuses without a choice, then by filter, then by id.
    let err = fails(&["--url", &url, "dead", "purge"]);
    assert!(err.contains("--all"), "{err}");
    assert_eq!(
        ok(&["--url", &url, "dead", "purge", "--all", "--queue", "images"]),
        "purged 2 dead jobs\n"
    );
    let left = ok(&["--url", &url, "--json", "dead", "list"]);
    assert_eq!(ids_of(&left), sorted(vec![&a_new]));
    assert_eq!(
        ok(&["--url", &url, "--json", "dead", "purge", &a_new.0]).trim(),
        r#"{"purged":1}"#
    );
    assert_eq!(
        ok(&["--url", &url, "--json", "dead", "purge", "--all"]).trim(),
        r#"{"purged":0}"#,
        "nothing is left to purge"
    );
    assert!(ids_of(&ok(&["--url", &url, "--json", "dead", "list"])).is_empty());
    assert_eq!(ok(&["--url", &url, "dead", "list"]), "no dead jobs match\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_commands_on_redis() {
    dead_list_show_retry_purge_with_filters(redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_commands_on_rabbitmq() {
    dead_list_show_retry_purge_with_filters(support::amqp_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_commands_on_sqs() {
    dead_list_show_retry_purge_with_filters(support::sqs_url()).await;
}

/// `enqueue` against `url`'s backend writes an envelope by name: ready or
/// scheduled (`+10m`, RFC 3339 with an offset), with priority and key
/// (`--force`: no worker published these jobs; tests/published.rs has those that did).
async fn enqueue_then_the_job_is_there(url: String) {
    let app = connect(&url).await;
    let b = &**app.backend();
    let id = ok(&[
        "--url",
        &url,
        "enqueue",
        "send_welcome",
        "--force",
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
        "--force",
        "--args",
        r#"{"user_id": 8}"#,
        "--queue",
        "mail",
        "--at",
        "+10m",
    ]);
    let later: Value = serde_json::from_str(&later).unwrap();
    let in_ten_minutes = |run_at: Timestamp| {
        let ahead = run_at.since(before);
        assert!(
            ahead >= Duration::from_secs(599) && ahead <= Duration::from_secs(605),
            "{ahead:?}"
        );
    };
    let at = ok(&[
        "--url",
        &url,
        "--json",
        "enqueue",
        "nightly",
        "--force",
        "--queue",
        "mail",
        "--at",
        "2099-01-01T00:00:00+01:00",
    ]);
    let at: Value = serde_json::from_str(&at).unwrap();
    assert_eq!(
        at["run_at"], "2098-12-31T23:00:00Z",
        "RFC 3339 with its offset"
    );
    let keyed = ok(&[
        "--url", &url, "enqueue", "sync", "--force", "--queue", "mail", "--key", "sync-42",
    ]);
    let again = ok(&[
        "--url", &url, "enqueue", "sync", "--force", "--queue", "mail", "--key", "sync-42",
    ]);
    assert_eq!(keyed, again, "an equal key returns the queued job's id");

    // Two ready jobs: the plain one and the keyed one, priority 3 first.
    let got = reserve_exactly(b, "mail", 2).await;
    let env = got[0].envelope.as_ref().unwrap();
    assert_eq!(env.id.as_str(), id, "priority 3 comes first");
    assert_eq!(
        (env.job.as_str(), env.priority, env.max_attempts),
        ("send_welcome", 3, 6)
    );
    assert_eq!(env.args.get(), r#"{"user_id": 7, "template": "welcome"}"#);
    assert_eq!(got[1].envelope.as_ref().unwrap().id.as_str(), keyed.trim());

    let stats = b
        .inspect()
        .expect("the backend has it")
        .stats(&q("mail"))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(stats.scheduled, 2, "two scheduled jobs: {stats:?}");
    let waiting = b
        .migration()
        .expect("the backend has it")
        .take("mail", 10, Duration::from_secs(60))
        .await
        .unwrap();
    if b.name() == "sqs" {
        // SQS cannot hand out a message within its delay (docs/cli.md,
        // SCHEDULED-LEFT), so the stored run_at cannot be read back before
        // it is due: what is checked is the run_at the command printed.
        assert!(waiting.is_empty(), "SQS hides delayed jobs");
        let printed = later["run_at"].as_str().unwrap();
        in_ten_minutes(jobsmith_cli::parse_at(printed, before).unwrap());
        return;
    }
    assert_eq!(waiting.len(), 2, "two scheduled jobs");
    for d in &waiting {
        let env = d.envelope.as_ref().unwrap();
        if env.id.as_str() == later["id"].as_str().unwrap() {
            in_ten_minutes(env.run_at);
        } else {
            assert_eq!(env.id.as_str(), at["id"].as_str().unwrap());
            assert_eq!(
                env.run_at,
                Timestamp(4_070_905_200_000),
                "RFC 3339 with its offset"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_on_redis() {
    enqueue_then_the_job_is_there(redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_on_rabbitmq() {
    enqueue_then_the_job_is_there(support::amqp_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_on_sqs() {
    enqueue_then_the_job_is_there(support::sqs_url()).await;
}

/// Without `--url`, the binary connects to the backend `JOBSMITH_URL` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobsmith_url_in_the_environment_names_the_backend() {
    let url = redis_url();
    let app = connect(&url).await;
    let b = &**app.backend();
    let run = |args: &[&str]| {
        let out = support::jobsmith()
            .env("JOBSMITH_URL", &url)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "jobsmith {args:?} with JOBSMITH_URL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let id = run(&["enqueue", "send_welcome", "--force", "--queue", "mail"]);
    let stats: Value = serde_json::from_str(&run(&["--json", "stats", "--queue", "mail"])).unwrap();
    assert_eq!(stats["queues"][0]["ready"], 1, "{stats}");
    let got = reserve_exactly(b, "mail", 1).await;
    assert_eq!(got[0].lease.id.as_str(), id.trim());
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

/// Values past any sane bound are refused with what to give instead, not
/// stored (a queue no worker can name, a job due in the year 275,000) and
/// never a panic (exit 101).
#[test]
fn values_out_of_bounds_are_refused() {
    let url = redis_url();
    for (args, says) in [
        (vec!["enqueue", "x", "--force", "--queue", ""], "queue name"),
        (
            vec!["enqueue", "x", "--force", "--queue", "a}b:c{d"],
            "queue name",
        ),
        (
            vec!["enqueue", "x", "--force", "--queue", "mail\u{1b}[2J"],
            "queue name",
        ),
        (
            vec!["enqueue", "x", "--force", "--at", "+99999999d"],
            "--at",
        ),
        (
            vec!["enqueue", "x", "--force", "--max-attempts", "4294967295"],
            "--max-attempts",
        ),
        (
            vec!["enqueue", "x", "--force", "--ttl", "99999999d"],
            "--ttl",
        ),
        (vec!["stats", "--watch", "1e300"], "--watch"),
        (vec!["stats", "--watch", "NaN"], "--watch"),
    ] {
        let mut all = vec!["--url", url.as_str()];
        all.extend(&args);
        let out = support::jobsmith()
            .args(&all)
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: exit 1, not a panic: {err}"
        );
        assert!(err.contains(says), "{args:?} names what is wrong: {err}");
        assert!(
            !err.contains('\u{1b}'),
            "{args:?}: no raw escape is printed: {err}"
        );
    }
}
