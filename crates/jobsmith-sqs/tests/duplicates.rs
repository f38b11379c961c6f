//! SQS standard queues deliver at least once: now and then a message comes
//! twice while the first receive still holds it (moto does it too, when
//! concurrent long polls race). Such a copy is not a lost worker's attempt.

mod support;

use jobsmith_core::{Backend, Envelope, Settings};
use std::time::Duration;

/// A copy SQS hands out again at once, while the first lease holds, is charged no
/// attempt: a job with no retries left runs, it is not dead-lettered as
/// "the worker running the last attempt was lost".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_delivered_twice_at_once_is_one_attempt() {
    let b = support::backend(Settings::default(), None).await;
    let mut env =
        Envelope::with_args("conformance_noop", "q", &serde_json::json!({})).expect("JSON");
    env.max_attempts = 1;
    b.enqueue(vec![env.clone()]).await.expect("enqueue");
    let q = vec!["q".to_owned()];
    let first = b
        .reserve(&q, 1, Duration::from_secs(30), Duration::from_secs(5))
        .await
        .expect("reserve");
    assert_eq!(first.len(), 1, "the job is received");
    assert_eq!(first[0].envelope.as_ref().expect("envelope").attempt, 1);

    // SQS delivers the message again while the first receive holds it: the
    // way to make that happen at will is to show the message again.
    let url = b.queue_url("q").await.expect("url");
    b.client()
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(first[0].lease.token.clone())
        .visibility_timeout(0)
        .send()
        .await
        .expect("show the message again");
    let second = b
        .reserve(&q, 1, Duration::from_secs(30), Duration::from_secs(5))
        .await
        .expect("reserve");
    assert_eq!(second.len(), 1, "the copy is received");
    let copy = second[0].envelope.as_ref().expect("envelope");
    assert_eq!(copy.id, env.id);
    assert_eq!(
        copy.attempt, 1,
        "a copy delivered within the first lease is the same attempt, not a second one"
    );
    let _ = b.delete_all_queues().await;
}
