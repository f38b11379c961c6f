//! jobsmith's quickstart: four jobs, one worker, and what became of each.
//!
//! ```sh
//! cargo run --example quickstart                                   # in-process memory backend
//! JOBSMITH_URL=redis://127.0.0.1:6379 cargo run --example quickstart --features redis
//! JOBSMITH_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example quickstart --features amqp
//! ```
#![allow(clippy::print_stdout)]

use jobsmith::prelude::*;
use std::time::{Duration, Instant};

/// Application state shared by every job: here, how to greet.
#[derive(Debug)]
struct Greeter {
    greeting: String,
}

/// Charges an order; the payment gateway times out twice, then it works.
#[job(retries = 3, backoff = "fixed(300ms)")]
async fn charge_order(order_id: u64, ctx: JobContext) -> Result<(), String> {
    if ctx.attempt() < 3 {
        println!(
            "  charge_order({order_id}): attempt {} failed: gateway timeout",
            ctx.attempt()
        );
        return Err(format!("gateway timeout on attempt {}", ctx.attempt()));
    }
    println!(
        "  charge_order({order_id}): attempt {} charged",
        ctx.attempt()
    );
    Ok(())
}

/// Calls a webhook that is down for good: ends in the dead-letter queue.
#[job(retries = 2, backoff = "exponential(100ms, max = 1s, jitter = none)")]
async fn call_webhook(url: String, ctx: JobContext) -> Result<(), String> {
    println!(
        "  call_webhook({url}): attempt {} got HTTP 503",
        ctx.attempt()
    );
    Err(format!("{url} answered 503 Service Unavailable"))
}

/// A reminder, scheduled a few seconds out.
#[job(queue = "reminders")]
async fn send_reminder(user: String, enqueued_ms: u64) {
    let late = jobsmith::Timestamp::now()
        .as_millis()
        .saturating_sub(enqueued_ms);
    println!(
        "  send_reminder({user}): ran {late} ms after the enqueue (it was due after 2,000 ms)"
    );
}

/// Greets someone with the application's `Greeter`.
#[job(queue = "email")]
async fn greet(name: String, greeter: State<Greeter>) {
    println!("  greet({name}): {}, {name}!", greeter.greeting);
}

#[tokio::main]
async fn main() -> jobsmith::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(format!(
            "{},{}",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()),
            jobsmith::LOG_DIRECTIVES
        ))
        .init();
    let url = std::env::var("JOBSMITH_URL").unwrap_or_else(|_| "memory://".into());
    let app = App::connect(&url).await?;
    println!("jobsmith quickstart on {}\n", jobsmith::redact_url(&url));

    let now_ms = jobsmith::Timestamp::now().as_millis();
    let jobs = [
        ("charge_order(42)", charge_order.delay(42).on(&app).await?),
        (
            "call_webhook(..)",
            call_webhook
                .delay("https://hooks.example/down".into())
                .on(&app)
                .await?,
        ),
        (
            "send_reminder(ada)",
            send_reminder
                .schedule(in_seconds(2), "ada".into(), now_ms)
                .on(&app)
                .await?,
        ),
        ("greet(world)", greet.delay("world".into()).on(&app).await?),
    ];
    println!(
        "enqueued {} jobs; running the worker until every job has settled:",
        jobs.len()
    );

    let started = Instant::now();
    let report = app
        .worker()
        .state(Greeter {
            greeting: "Hello".into(),
        })
        .grace_period(Duration::from_secs(5))
        .until_idle()
        .run_report()
        .await?;

    println!("\nafter {:.1} s:", started.elapsed().as_secs_f64());
    for (what, id) in &jobs {
        let queue = match *what {
            w if w.starts_with("send_reminder") => "reminders",
            w if w.starts_with("greet") => "email",
            _ => "default",
        };
        match app.backend().dead_letters()?.dead_get(queue, id).await? {
            Some(dead) => println!("  {what:<20} dead-lettered: {}", dead.reason),
            None => println!("  {what:<20} succeeded"),
        }
    }
    println!(
        "\nworker: {} attempts, {} succeeded, {} retried, {} dead",
        report.started, report.succeeded, report.retried, report.dead
    );
    Ok(())
}
