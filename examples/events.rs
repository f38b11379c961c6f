//! jobsmith's events: one `UserSignedUp`, three handlers on their own queues,
//! each retried on its own; unchanged on every backend.
//!
//! ```sh
//! cargo run --example events                                   # in-process memory backend
//! JOBSMITH_URL=redis://127.0.0.1:6379 cargo run --example events --features redis
//! JOBSMITH_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example events --features amqp
//! JOBSMITH_URL='sqs://us-east-1?endpoint=http://127.0.0.1:5000' cargo run --example events --features sqs
//! ```
#![allow(clippy::print_stdout)]

use jobsmith::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A user signed up: the publisher knows nothing of who handles it.
#[derive(Debug, Serialize, Deserialize, Event)]
#[event(name = "user.signed_up")]
struct UserSignedUp {
    user_id: u64,
    plan: String,
}

/// Sends the welcome email; the mail server refuses the first try.
#[job(queue = "email", on = UserSignedUp, retries = 3, backoff = "fixed(200ms)")]
async fn send_welcome(e: UserSignedUp, ctx: JobContext) -> Result<(), String> {
    if ctx.attempt() == 1 {
        println!(
            "  send_welcome(user {}): the mail server said 421, try again",
            e.user_id
        );
        return Err("421 try again later".into());
    }
    println!(
        "  send_welcome(user {}): sent on attempt {}",
        e.user_id,
        ctx.attempt()
    );
    Ok(())
}

/// Starts the trial of the plan the user chose.
#[job(queue = "billing", on = UserSignedUp)]
async fn start_trial(e: UserSignedUp) {
    println!(
        "  start_trial(user {}): {} trial started",
        e.user_id, e.plan
    );
}

/// Writes an audit record of every `user.*` event, whatever its type.
#[job(queue = "audit", on = "user.*")]
async fn audit(e: AnyEvent, ctx: JobContext) {
    let id = ctx.event().map(|ev| ev.id.to_string()).unwrap_or_default();
    println!("  audit: {} {} (event {id})", e.name, e.payload);
}

#[tokio::main]
async fn main() -> jobsmith::Result<()> {
    let url = std::env::var("JOBSMITH_URL").unwrap_or_else(|_| "memory://".into());
    let app = App::connect(&url).await?;
    println!("jobsmith events on {}\n", jobsmith::redact_url(&url));

    // A worker registers the subscriptions of its jobs when it starts; this
    // process publishes before its worker runs, so it registers them first.
    let registered = app.register_subscriptions().await?;
    println!("subscriptions: {}", registered.join(", "));
    for (user_id, plan) in [(7, "pro"), (8, "team")] {
        let event = UserSignedUp {
            user_id,
            plan: plan.into(),
        };
        let published = app.publish(event).await?;
        println!(
            "published user.signed_up for user {user_id}: {} subscriptions reached",
            published.reached
        );
    }
    println!("\nrunning the worker until every job has settled:");
    let report = app
        .worker()
        .grace_period(Duration::from_secs(5))
        .until_idle()
        .run_report()
        .await?;
    println!(
        "\nworker: {} attempts, {} succeeded, {} retried, {} dead",
        report.started, report.succeeded, report.retried, report.dead
    );
    Ok(())
}
