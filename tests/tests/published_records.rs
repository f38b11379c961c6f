//! The record a worker publishes per job, on the memory backend: what it
//! holds (from the `#[job]` attribute and the parameters' own types), that a
//! fresh record is not rewritten, and that the newest definition wins.

use jobsmith::prelude::*;
use jobsmith::{published_job, published_jobs, JobRecord, Shape};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A user type: an object whose fields are named in the record.
#[derive(Serialize, Deserialize)]
struct Address {
    city: String,
    zip: String,
}

/// A newtype: described as what it wraps.
#[derive(Serialize, Deserialize)]
struct UserId(u32);

#[job(queue = "pr_mail", retries = 1, priority = -2, timeout = "30s", backoff = "none")]
async fn pr_send(
    r#user: UserId,
    to: Address,
    bytes: Option<Vec<u8>>,
    ctx: JobContext,
) -> Result<(), String> {
    let _ = (r#user, to, bytes, ctx);
    Ok(())
}

#[job]
async fn pr_tick() {}

fn int(min: i64, max: u64) -> Shape {
    serde_json::from_value(serde_json::json!({"type": "integer", "min": min, "max": max})).unwrap()
}

async fn work_until_idle(app: &App) {
    tokio::time::timeout(Duration::from_secs(30), app.worker().until_idle().run())
        .await
        .expect("idle within 30 s")
        .expect("the worker runs");
}

#[tokio::test]
async fn a_worker_publishes_each_job_it_runs() {
    let app = App::memory();
    assert!(published_jobs(&**app.backend()).await.unwrap().is_empty());
    work_until_idle(&app).await;

    let records = published_jobs(&**app.backend()).await.unwrap();
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["pr_send", "pr_tick"]);
    let r = &records[0];
    assert_eq!(
        (r.queue.as_str(), r.retries, r.max_attempts, r.priority),
        ("pr_mail", 1, 2, -2)
    );
    assert_eq!(
        (r.backoff.as_str(), r.timeout.as_deref(), r.ttl.as_deref()),
        ("none", Some("30s"), None)
    );
    assert_eq!(r.published_by.pid, std::process::id());
    let params: Vec<(&str, &str)> = r
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.rust_type.as_str()))
        .collect();
    assert_eq!(
        params,
        [
            ("user", "UserId"),
            ("to", "Address"),
            ("bytes", "Option<Vec<u8>>")
        ],
        "serialized parameters only, named as serde names them"
    );
    assert_eq!(r.params[0].shape, int(0, u64::from(u32::MAX)));
    assert_eq!(
        serde_json::to_value(&r.params[1].shape).unwrap(),
        serde_json::json!({"type": "struct", "name": "Address", "fields": ["city", "zip"]})
    );
    assert_eq!(
        serde_json::to_value(&r.params[2].shape).unwrap(),
        serde_json::json!({"type": "nullable", "inner": {"type": "array", "items": {"type": "integer", "min": 0, "max": 255}}})
    );
    assert!(r
        .check_args(&serde_json::json!({"user": 7, "to": {"city": "Lyon", "zip": "69001"}}))
        .is_ok());
    assert_eq!(
        records[1].max_attempts, 4,
        "the runtime's default: 3 retries"
    );
    assert!(records[1].params.is_empty());
}

#[tokio::test]
async fn a_fresh_record_is_kept_and_another_definition_is_replaced() {
    let app = App::memory();
    let b = &**app.backend();
    work_until_idle(&app).await;
    let first = published_job(b, "pr_send").await.unwrap().unwrap();

    // Fresh and the same: a second worker leaves it as it is.
    tokio::time::sleep(Duration::from_millis(5)).await;
    work_until_idle(&app).await;
    let again = published_job(b, "pr_send").await.unwrap().unwrap();
    assert_eq!(again.published_at, first.published_at);

    // Another version's definition, written just now: the newest writer wins.
    let mut other = serde_json::to_value(&first).unwrap();
    other["queue"] = "pr_mail_v0".into();
    other["published_by"]["pid"] = 1.into();
    b.meta()
        .expect("the backend has it")
        .put_meta("job:pr_send", other.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(
        published_job(b, "pr_send").await.unwrap().unwrap().queue,
        "pr_mail_v0"
    );
    work_until_idle(&app).await;
    let now: JobRecord = published_job(b, "pr_send").await.unwrap().unwrap();
    assert_eq!(now.queue, "pr_mail");
    assert!(now.same_definition(&first));
}
