//! `jobsmith subscriptions` and `jobsmith publish` against a real Redis, and
//! the event a dead job came from in `jobsmith dead`.

mod support;

use jobsmith::{SettleExt, Subscription, Timestamp};
use serde_json::Value;
use std::time::Duration;
use support::{connect, fails, ok, redis_url};

fn sub(job: &str, pattern: &str) -> Subscription {
    Subscription {
        job: job.into(),
        queue: "cli_events".into(),
        pattern: pattern.into(),
        any: pattern.contains(['*', '#']),
        param: "e".into(),
        priority: 0,
        max_attempts: 4,
        ttl_ms: None,
        registered_at: Timestamp::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_publish_and_dead_jobs_name_their_event() {
    let url = redis_url();
    let app = connect(&url).await;
    assert!(
        ok(&["--url", &url, "subscriptions"]).contains("no subscriptions"),
        "the empty list says how subscriptions come to be"
    );
    app.subscribe_all([
        sub("cli_welcome", "user.signed_up"),
        sub("cli_audit", "user.#"),
    ])
    .await
    .unwrap();

    let table = ok(&["--url", &url, "subscriptions"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("JOB"), "{table}");
    assert!(
        lines[1].starts_with("cli_audit") && lines[1].contains("user.#"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("cli_welcome") && lines[2].contains("cli_events"),
        "{table}"
    );
    let listed: Vec<Subscription> =
        serde_json::from_str(&ok(&["--url", &url, "--json", "subscriptions"])).unwrap();
    assert_eq!(listed.len(), 2);

    let text = ok(&[
        "--url",
        &url,
        "publish",
        "user.signed_up",
        r#"{"user_id": 7}"#,
    ]);
    assert!(text.contains("2 subscriptions reached"), "{text}");
    let again = |id: &str| -> Value {
        serde_json::from_str(&ok(&[
            "--url",
            &url,
            "--json",
            "publish",
            "user.deleted",
            r#"{"user_id": 8}"#,
            "--id",
            id,
        ]))
        .unwrap()
    };
    assert_eq!(again("evt-1")["reached"], 1, "only the pattern matches");
    assert_eq!(
        again("evt-1")["id"],
        "evt-1",
        "published again under its id"
    );
    let b = app.backend();
    let mut got = Vec::new();
    while got.len() < 3 {
        let more = b
            .reserve(
                &["cli_events".to_owned()],
                10,
                Duration::from_secs(30),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert!(
            !more.is_empty(),
            "three jobs, the second publish under the same id adding none"
        );
        got.extend(more);
    }
    assert!(b
        .reserve(
            &["cli_events".to_owned()],
            10,
            Duration::from_secs(30),
            Duration::ZERO
        )
        .await
        .unwrap()
        .is_empty());
    let deleted = got
        .iter()
        .find(|d| d.envelope.as_ref().unwrap().event.as_ref().unwrap().name == "user.deleted")
        .unwrap();
    b.dead_letter(&deleted.lease, "mail server said no")
        .await
        .unwrap();
    let list = ok(&["--url", &url, "dead", "list"]);
    assert!(
        list.contains("EVENT") && list.contains("user.deleted"),
        "{list}"
    );
    let shown = ok(&["--url", &url, "dead", "show", deleted.lease.id.as_str()]);
    assert!(shown.contains("event:  user.deleted (id evt-1)"), "{shown}");
    let listed: Value =
        serde_json::from_str(&ok(&["--url", &url, "--json", "dead", "list"])).unwrap();
    assert_eq!(listed[0]["event"]["id"], "evt-1");

    let removed = ok(&["--url", &url, "subscriptions", "remove", "cli_audit"]);
    assert!(
        removed.contains("removed the subscription of `cli_audit`"),
        "{removed}"
    );
    let err = fails(&["--url", &url, "subscriptions", "remove", "cli_audit"]);
    assert!(
        err.contains("no subscription of job `cli_audit`") && err.contains("cli_welcome"),
        "{err}"
    );
    let err = fails(&["--url", &url, "publish", "user.*", "{}"]);
    assert!(err.contains("belong in topic patterns"), "{err}");
    let err = fails(&["--url", &url, "publish", "user.signed_up", "{user_id: 7}"]);
    assert!(err.contains("the payload is not JSON"), "{err}");
}
