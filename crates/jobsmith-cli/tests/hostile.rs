//! Names from the queue printed by the binary: a job, a queue, a reason or a
//! published job record holding terminal escapes, written to Redis by
//! whoever can write there, reach the terminal escaped, on stdout and on
//! stderr, in every command that prints them.

mod support;

use jobsmith_core::{DeadJob, Envelope, Timestamp};
use serde_json::json;
use std::process::Output;
use support::{connect, jobsmith, redis_url};

/// Clears the screen, sets the terminal's title, rings the bell, and a C1 CSI.
const EVIL: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m";

/// Runs the binary, returning its whole output whatever its exit status.
fn run(args: &[&str]) -> Output {
    jobsmith().args(args).output().expect("the binary runs")
}

/// Panics when `bytes` hold a control character other than a newline or a tab.
fn assert_printable(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\t'))
        .collect();
    assert!(
        raw.is_empty(),
        "{what} printed raw control characters {raw:?}:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_queue_are_printed_escaped() {
    let url = redis_url();
    let app = connect(&url).await;
    let b = app.backend();
    let queue = format!("mail{EVIL}");
    let job = format!("charge{EVIL}");
    let mut env = Envelope::with_args(job.clone(), queue.clone(), &json!({"x": 1})).unwrap();
    env.attempt = 3;
    let id = env.id.clone();
    let dead = DeadJob::new(
        id.clone(),
        queue.clone(),
        format!("boom{EVIL}"),
        Timestamp::now(),
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
    let ready = Envelope::with_args(job.clone(), queue.clone(), &json!({"x": 2})).unwrap();
    b.enqueue(vec![ready]).await.unwrap();

    let list = run(&["--url", &url, "dead", "list"]);
    let show = run(&["--url", &url, "dead", "show", id.as_str()]);
    let stats = run(&["--url", &url, "stats"]);
    let missing = run(&["--url", &url, "dead", "show", "no-such-id"]);
    let json = run(&["--url", &url, "--json", "dead", "list"]);
    drop_prefix(&url).await;

    assert!(list.status.success(), "{list:?}");
    assert!(show.status.success(), "{show:?}");
    assert!(stats.status.success(), "{stats:?}");
    assert!(!missing.status.success(), "{missing:?}");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(r"charge\u001b[2J"),
        "the name is shown, escaped: {listed}"
    );
    let counted = String::from_utf8_lossy(&stats.stdout);
    assert!(
        counted.contains(r"mail\u001b[2J"),
        "the queue is listed, escaped: {counted}"
    );
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("--json stays JSON ({e}): {json:?}"));
    assert_eq!(
        rows[0]["job"], *job,
        "--json escapes as JSON does: the name reads back exactly"
    );
    for (what, out) in [
        ("dead list", &list),
        ("dead show", &show),
        ("stats", &stats),
        ("dead show of a missing id", &missing),
        ("dead list --json", &json),
    ] {
        assert_printable(&format!("{what} (stdout)"), &out.stdout);
        assert_printable(&format!("{what} (stderr)"), &out.stderr);
    }
}

/// A job record written to the metadata store by whoever can write there:
/// its name, its parameters' names and types, and the version that
/// published it hold terminal escapes. `enqueue --force` quotes each of
/// them in a warning on stderr, and each must reach the terminal escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_record_from_the_queue_is_printed_escaped() {
    let url = redis_url();
    let app = connect(&url).await;
    let record = json!({
        "format": 1,
        "name": format!("refund{EVIL}"),
        "queue": "billing",
        "priority": 0,
        "retries": 0,
        "max_attempts": 1,
        "backoff": "none",
        "ttl": null,
        "timeout": null,
        "unique": true,
        "cron": null,
        "params": [{
            "name": format!("card{EVIL}"),
            "rust_type": format!("String{EVIL}"),
            "shape": {"type": "string"},
        }],
        "location": "billing::jobs (src/jobs.rs:12)",
        // A day old: the CLI warns that no worker may be running it.
        "published_at": Timestamp::now().as_millis() - 86_400_000,
        "published_by": {"jobsmith": format!("0.1.0{EVIL}"), "pid": 4242},
    });
    app.backend()
        .meta()
        .expect("the backend has it")
        .put_meta("job:refund", &serde_json::to_vec(&record).unwrap())
        .await
        .unwrap();

    // An unknown key: the warning lists the record's parameters.
    let forced = run(&[
        "--url",
        &url,
        "enqueue",
        "refund",
        "--force",
        "--args",
        r#"{"amount": 5}"#,
    ]);
    drop_prefix(&url).await;

    assert!(forced.status.success(), "{forced:?}");
    let warned = String::from_utf8_lossy(&forced.stderr);
    for shown in [r"card\u001b[2J", r"0.1.0\u001b[2J", r"refund\u001b[2J"] {
        assert!(
            warned.contains(shown),
            "the warnings quote `{shown}`, escaped: {warned}"
        );
    }
    assert_printable("enqueue --force (stderr)", &forced.stderr);
    assert_printable("enqueue --force (stdout)", &forced.stdout);
}

/// Deletes every key of the test's Redis prefix.
async fn drop_prefix(url: &str) {
    let (base, prefix) = url.split_once("?prefix=").expect("a prefixed URL");
    let client = redis::Client::open(base).expect("a redis URL");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{prefix}*"))
        .query_async(&mut con)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut con)
            .await
            .expect("DEL");
    }
}
