//! The examples that must run unchanged on every backend, run on each.

use crate::cargo;

/// Runs `examples/events.rs` on memory, Redis, RabbitMQ and SQS (moto), each
/// in a fresh namespace, and checks that every job settled without a dead
/// one. The Redis namespace is deleted after; RabbitMQ's queues expire.
pub(crate) fn events() -> Result<(), String> {
    let tag = format!("jsexample{:08x}", fastrand::u32(..));
    let redis = format!("redis://127.0.0.1:6379/?prefix={tag}");
    let urls = [
        "memory://".to_owned(),
        redis.clone(),
        format!("amqp://guest:guest@127.0.0.1:5672/%2f?prefix={tag}&expires=1m"),
        format!("sqs://us-east-1?prefix={tag}&endpoint=http://127.0.0.1:5000"),
    ];
    let mut failed = Vec::new();
    for url in &urls {
        let mut example = cargo();
        example
            .args(["run", "--quiet", "--package", "jobsmith-examples"])
            .args(["--example", "events", "--features", "redis,amqp,sqs"])
            .env("JOBSMITH_URL", url);
        eprintln!("xtask: running {example:?}");
        let out = example
            .output()
            .map_err(|e| format!("could not run the events example: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or_default();
        eprintln!(
            "xtask: examples/events.rs on {}: {last}",
            jobsmith::redact_url(url)
        );
        if !out.status.success() || !last.ends_with("6 succeeded, 2 retried, 0 dead") {
            failed.push(format!(
                "{}: {}{}",
                jobsmith::redact_url(url),
                text,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(crate::bench::forget_redis_namespace(&redis));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "examples/events.rs failed on {}",
            failed.join("\n")
        ))
    }
}
