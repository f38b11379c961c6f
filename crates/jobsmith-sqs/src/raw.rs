//! The raw SDK rate on the same endpoint, for the benchmark to compare against.

use crate::backend::client;
use crate::calls;
use crate::codec::Outgoing;
use crate::config::SqsConfig;
use crate::error::from_sdk;
use jobsmith_core::Result;
use std::time::{Duration, Instant};

/// Plain SQS throughput through the AWS SDK, with none of jobsmith's work:
/// `n` messages (about the size of a no-op job's envelope) sent in batches
/// of ten, one call after another, then received ten at a time and deleted
/// with one batch delete per receive. Uses a fresh queue under the URL's
/// prefix, deleted afterwards. Returns (sends per second, receive+delete per second).
#[doc(hidden)]
pub async fn raw_rate(url: &str, n: usize) -> Result<(f64, f64)> {
    let config = SqsConfig::from_url(url)?;
    let client = client(&config).await;
    let name = format!("{}-raw{:08x}", config.prefix, fastrand::u32(..));
    let queue = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .map_err(|e| from_sdk("CreateQueue", e))?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let body = format!(
        r#"{{"v":1,"id":"0190d5c4-0000-7000-8000-000000000000","job":"bench_noop","args":[0],"queue":"default","priority":0,"attempt":0,"max_attempts":1,"enqueued_at":{0},"run_at":{0}}}"#,
        jobsmith_core::Timestamp::now().as_millis()
    );
    let sends: Vec<calls::Send> = (0..n)
        .map(|_| calls::Send {
            out: Outgoing::text(body.clone()),
            delay: 0,
            fifo: None,
        })
        .collect();
    let started = Instant::now();
    calls::send(&client, &queue, sends, usize::MAX).await?;
    let send_rate = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let (msgs, _) =
            calls::receive(&client, &queue, calls::BATCH, Duration::from_secs(1), 30).await?;
        if msgs.is_empty() {
            break;
        }
        let receipts: Vec<&str> = msgs.iter().filter_map(|m| m.receipt_handle()).collect();
        calls::delete(&client, &queue, &receipts).await?;
        got += msgs.len();
    }
    let recv_rate = got as f64 / started.elapsed().as_secs_f64();
    let _ = client.delete_queue().queue_url(&queue).send().await;
    Ok((send_rate, recv_rate))
}
