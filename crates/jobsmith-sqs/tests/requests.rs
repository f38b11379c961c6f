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

/// A worker at its defaults draining short jobs receives and deletes ten at
/// a time: the worker sizes its next reserve only once the jobs of the last
/// one have taken their free slots (the conformance case
/// `worker_takes_short_jobs_in_batches_of_its_concurrency` holds that rule on
/// every backend that hands out what it is asked for), and the acks go out in
/// tens. This case adds what only SQS can count, its billed requests. Before,
/// receives alternated between ten and the six slots left free, and each
/// delete took what one receive had brought: about 0.126 receives and 0.124
/// deletes per job instead of 0.1.
#[tokio::test]
async fn a_worker_draining_short_jobs_receives_and_deletes_ten_at_a_time() {
    use jobsmith_conformance::{noop_registry, NoopCounter};
    use std::sync::Arc;

    const JOBS: u64 = 200;
    let b = Arc::new(support::backend(Settings::default(), None).await);
    let jobs: Vec<Envelope> = (0..JOBS)
        .map(|n| {
            Envelope::with_args(
                "conformance_noop",
                "drain",
                &json!({ "fail_times": 0, "n": n }),
            )
            .expect("JSON")
        })
        .collect();
    b.enqueue(jobs).await.expect("enqueue");
    let (receives, deletes) = (sent("ReceiveMessage"), sent("DeleteMessageBatch"));
    let counter = NoopCounter::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = jobsmith_core::App::from_backend(Arc::clone(&b) as Arc<dyn Backend>)
        .worker()
        .queues(["drain"])
        .registry(noop_registry())
        .state(counter.clone())
        .stop_on(async move {
            let _ = stop_rx.await;
        });
    let run = tokio::spawn(worker.run_report());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while counter.get() < JOBS {
        assert!(std::time::Instant::now() < deadline, "the jobs ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    run.await.expect("join").expect("worker");
    let receives = sent("ReceiveMessage") - receives;
    let deletes = sent("DeleteMessageBatch") - deletes;
    // Ten jobs a request, and a few more: the long poll left waiting at the
    // end, and a partial batch or two where moto answers with fewer.
    let most = JOBS / 10 + 3;
    assert!(
        receives <= most && deletes <= most,
        "{JOBS} jobs took {receives} receives and {deletes} deletes (at most {most} each)"
    );
    b.delete_all_queues().await.expect("clean up");
}

/// Requests by operation since `before`, leaving out those that did not change.
fn since(before: &[(String, u64)]) -> Vec<(String, u64)> {
    jobsmith_sqs::requests_sent_by_operation()
        .into_iter()
        .filter_map(|(op, n)| {
            let was = before.iter().find(|(o, _)| *o == op).map_or(0, |(_, n)| *n);
            (n > was).then(|| (op, n - was))
        })
        .collect()
}

/// A process finds a queue's family with one listing and creates only what
/// it lacks: no `GetQueueUrl` per queue of the family.
#[tokio::test]
async fn a_family_is_found_with_one_listing_and_only_what_is_missing_is_created() {
    let b = support::backend(Settings::default(), None).await;
    let job = || Envelope::with_args("conformance_noop", "q", &json!({ "n": 0 })).expect("JSON");
    let ops = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
        list.iter().map(|(op, n)| ((*op).to_owned(), *n)).collect()
    };
    let before = jobsmith_sqs::requests_sent_by_operation();
    b.enqueue(vec![job()]).await.expect("enqueue");
    assert_eq!(
        since(&before),
        ops(&[
            ("CreateQueue", 3),
            ("GetQueueAttributes", 1),
            ("ListQueues", 1),
            ("SendMessageBatch", 1),
        ]),
        "a new family: one listing, its three queues created, the dead-letter queue's ARN read"
    );
    let other = jobsmith_sqs::SqsBackend::connect_with(b.config().clone())
        .await
        .expect("the SQS endpoint is reachable");
    let before = jobsmith_sqs::requests_sent_by_operation();
    other.enqueue(vec![job()]).await.expect("enqueue");
    assert_eq!(
        since(&before),
        ops(&[
            ("GetQueueAttributes", 1),
            ("ListQueues", 1),
            ("SendMessageBatch", 1),
        ]),
        "another process finds the whole family in the listing"
    );
    b.delete_all_queues().await.expect("clean up");
}
