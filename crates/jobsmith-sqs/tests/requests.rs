//! The request counter: every SQS request the backend sends is counted once,
//! by operation, as AWS would bill it. Against moto.

mod support;

use jobsmith_core::{Backend, Envelope, Settings};
use serde_json::json;
use std::time::Duration;

fn sent(op: &str) -> u64 {
    jobsmith_sqs::requests_sent_by_operation()
        .into_iter()
        .find(|(o, _)| o == op)
        .map_or(0, |(_, n)| n)
}

#[tokio::test]
async fn each_request_is_counted_once_by_its_operation() {
    let b = support::backend(Settings::default(), None).await;
    let jobs: Vec<Envelope> = (0..25)
        .map(|n| Envelope::with_args("conformance_noop", "q", &json!({ "n": n })).expect("JSON"))
        .collect();
    // The first enqueue creates the queues; count from the second on.
    b.enqueue(jobs[..1].to_vec()).await.expect("enqueue");
    let (total, sends) = (jobsmith_sqs::requests_sent(), sent("SendMessageBatch"));
    b.enqueue(jobs[1..].to_vec()).await.expect("enqueue");
    assert_eq!(
        sent("SendMessageBatch") - sends,
        3,
        "24 jobs go in three batches of at most ten"
    );
    assert_eq!(
        jobsmith_sqs::requests_sent() - total,
        3,
        "an enqueue to known queues sends nothing but its batches"
    );
    let receives = sent("ReceiveMessage");
    let got = b
        .reserve(
            &["q".to_owned()],
            10,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await
        .expect("reserve");
    assert!(!got.is_empty(), "jobs are ready");
    assert!(
        sent("ReceiveMessage") > receives,
        "a reserve that found jobs received them"
    );
}
