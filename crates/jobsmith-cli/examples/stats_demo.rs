//! Load for trying the `jobsmith` command (and what made the output in
//! docs/cli.md): enqueues email and image jobs, a few scheduled ones, and
//! runs a worker for a while, some image jobs failing into the dead-letter
//! queue.
//!
//! ```sh
//! cargo run -p jobsmith-cli --example stats_demo -- redis://127.0.0.1:6379/?prefix=demo 60
//! jobsmith --url 'redis://127.0.0.1:6379/?prefix=demo' stats --watch   # in another terminal
//! ```
#![allow(clippy::print_stdout)]

use jobsmith::prelude::*;
use std::time::Duration;

/// Sends an email: takes 20 ms.
#[job(queue = "email")]
async fn send_email(n: u64) {
    tokio::time::sleep(Duration::from_millis(20 + n % 3)).await;
}

/// Resizes an image; every fifth one is corrupt and fails for good.
#[job(queue = "images", retries = 1, backoff = "fixed(100ms)")]
async fn resize(n: u64) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    if n % 5 == 0 {
        return Err(format!("image {n} is corrupt: bad PNG header"));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> jobsmith::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "memory://".into());
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(30);
    let app = App::connect(&url).await?;
    for n in 0..3000 {
        send_email.delay(n).on(&app).await?;
    }
    for n in 0..500 {
        resize.delay(n).on(&app).await?;
    }
    for n in 0..40 {
        send_email.schedule(in_hours(1), n).on(&app).await?;
    }
    println!("enqueued; working for {secs} s");
    let worker = app.worker().concurrency(4).run();
    let _ = tokio::time::timeout(Duration::from_secs(secs), worker).await;
    Ok(())
}
