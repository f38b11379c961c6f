//! How late messages and jobs arrive on the SQS endpoint under test: a
//! measurement for `docs/backends/sqs.md` (*Timing on moto and on AWS*), not a
//! check, so it is ignored by default. Run it with
//!
//! ```text
//! cargo nextest run -p jobsmith-sqs --test timing --run-ignored only --no-capture
//! ```
//!
//! It prints, for each of three paths, the lateness of every sample and
//! their median and maximum:
//! - `visible`: a message sent with no delay while a long poll waits: from
//!   the send's answer to the poll's answer;
//! - `delayed`: a message sent with `DelaySeconds=1` while a long poll waits:
//!   from one second after the send to the poll's answer;
//! - `scheduled`: a job enqueued through the backend to run 300 ms to 2.7 s
//!   out while an idle reserve waits: from its `run_at` to the reserve's
//!   answer.
#![allow(clippy::print_stdout)] // a measurement reports on stdout

mod support;

use jobsmith_core::SettleExt;
use jobsmith_core::{Backend, Envelope, Settings, Timestamp};
use std::time::{Duration, Instant};

const SAMPLES: usize = 12;

fn summary(name: &str, mut late_ms: Vec<f64>) {
    late_ms.sort_by(f64::total_cmp);
    let median = late_ms[late_ms.len() / 2];
    let max = late_ms[late_ms.len() - 1];
    let all: Vec<String> = late_ms.iter().map(|ms| format!("{ms:.0}")).collect();
    println!(
        "{name:>9}: median {median:.0} ms, max {max:.0} ms; every sample (ms): {}",
        all.join(" ")
    );
}

/// Sends one message (after `delay_s`) while a 10 s long poll waits, and
/// returns how long after it became visible the poll answered, in ms.
async fn one_message(client: &aws_sdk_sqs::Client, url: &str, delay_s: i32) -> f64 {
    let poll = {
        let (client, url) = (client.clone(), url.to_owned());
        tokio::spawn(async move {
            let got = client
                .receive_message()
                .queue_url(url)
                .wait_time_seconds(10)
                .max_number_of_messages(1)
                .send()
                .await
                .expect("receive");
            (got, Instant::now())
        })
    };
    // The poll is waiting on the server by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    client
        .send_message()
        .queue_url(url)
        .message_body("x")
        .delay_seconds(delay_s)
        .send()
        .await
        .expect("send");
    let visible_at = sent + Duration::from_secs(u64::from(delay_s.unsigned_abs()));
    let (got, at) = poll.await.expect("poll task");
    let messages = got.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1, "the long poll returns the message");
    if let Some(receipt) = messages[0].receipt_handle() {
        client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .expect("delete");
    }
    at.saturating_duration_since(visible_at).as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/backends/sqs.md; run it on purpose"]
async fn lateness_on_this_endpoint() {
    let backend = support::backend(Settings::default(), None).await;
    let client = backend.client().clone();
    let url = backend.queue_url("timing").await.expect("queue");

    let mut visible = Vec::new();
    let mut delayed = Vec::new();
    for _ in 0..SAMPLES {
        visible.push(one_message(&client, &url, 0).await);
        delayed.push(one_message(&client, &url, 1).await);
    }

    let mut scheduled = Vec::new();
    let queues = vec!["timing".to_owned()];
    for i in 0..SAMPLES {
        let offset = Duration::from_millis(300 + 350 * i as u64);
        let mut env = Envelope::with_args("timing", "timing", &()).expect("args");
        env.run_at = Timestamp::now().plus(offset);
        let run_at = Instant::now() + offset;
        backend.enqueue(vec![env]).await.expect("enqueue");
        let got = backend
            .reserve(&queues, 1, Duration::from_secs(30), Duration::from_secs(10))
            .await
            .expect("reserve");
        let at = Instant::now();
        assert_eq!(got.len(), 1, "the job is reserved when due");
        backend.ack(&[got[0].lease.clone()]).await.expect("ack");
        scheduled.push(at.saturating_duration_since(run_at).as_secs_f64() * 1000.0);
    }

    println!("endpoint {}", support::endpoint());
    summary("visible", visible);
    summary("delayed", delayed);
    summary("scheduled", scheduled);
}
