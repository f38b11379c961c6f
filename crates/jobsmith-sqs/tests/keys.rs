//! Idempotency keys across processes: two backends on one prefix share no
//! memory, only SQS and the DynamoDB key table, and still keep the contract.

mod support;

use jobsmith_core::{Backend, Delivery, Envelope, JobId, LeaseStatus};
use jobsmith_core::{DeadLetters, SettleExt};
use jobsmith_sqs::SqsBackend;
use std::time::Duration;

/// How long a completed key holds in this test.
const UNIQUE_FOR: Duration = Duration::from_secs(3);

async fn connect(prefix: &str) -> SqsBackend {
    SqsBackend::connect(&format!(
        "sqs://us-east-1?prefix={prefix}&endpoint={}&unique_for=3s",
        support::endpoint()
    ))
    .await
    .expect("the SQS endpoint is reachable")
}

fn keyed(key: &str, n: u64) -> Envelope {
    let mut env =
        Envelope::with_args("conformance_noop", "q", &serde_json::json!({ "n": n })).expect("json");
    env.idempotency_key = Some(key.to_owned());
    env
}

async fn enqueue_one(b: &SqsBackend, env: Envelope) -> JobId {
    b.enqueue(vec![env]).await.expect("enqueue").remove(0)
}

/// Reserves until the job `id` comes, settling nothing else.
async fn reserve_job(b: &SqsBackend, id: &JobId) -> Delivery {
    let q = vec!["q".to_owned()];
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        let got = b
            .reserve(&q, 10, Duration::from_secs(30), Duration::from_secs(1))
            .await
            .expect("reserve");
        let mut found = None;
        let mut others = Vec::new();
        for d in got {
            if d.lease.id == *id {
                found = Some(d);
            } else {
                others.push(d.lease);
            }
        }
        b.release(&others).await.expect("release");
        if let Some(d) = found {
            return d;
        }
    }
    panic!("job {id:?} never came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_hold_across_processes() {
    let prefix = support::fresh_prefix();
    let a = connect(&prefix).await;
    let b = connect(&prefix).await;

    // Queued on A: B's enqueue is a no-op that returns A's id.
    let first = enqueue_one(&a, keyed("order-1", 1)).await;
    assert_eq!(
        enqueue_one(&b, keyed("order-1", 2)).await,
        first,
        "a key queued by another process returns its id"
    );
    // Within one batch, a key taken twice returns the first id; ids in order.
    let (x, y, plain) = (keyed("order-2", 3), keyed("order-2", 4), {
        let mut e = keyed("", 5);
        e.idempotency_key = None;
        e
    });
    let (x_id, plain_id) = (x.id.clone(), plain.id.clone());
    assert_eq!(
        b.enqueue(vec![x, y, plain]).await.expect("enqueue"),
        vec![x_id.clone(), x_id.clone(), plain_id]
    );
    assert_eq!(enqueue_one(&a, keyed("order-2", 6)).await, x_id);

    // Running on B: still held for A.
    let d = reserve_job(&b, &first).await;
    assert_eq!(enqueue_one(&a, keyed("order-1", 7)).await, first);
    // Completed on B: held for A and B within unique_for.
    assert_eq!(
        b.ack(std::slice::from_ref(&d.lease)).await.expect("ack"),
        vec![LeaseStatus::Held]
    );
    assert_eq!(
        enqueue_one(&a, keyed("order-1", 8)).await,
        first,
        "a key completed in another process is not run again"
    );
    assert_eq!(enqueue_one(&b, keyed("order-1", 9)).await, first);

    // Dead-lettered on A: the key is free for B.
    let d = reserve_job(&a, &x_id).await;
    assert_eq!(
        a.dead_letter(&d.lease, "boom").await.expect("dead"),
        LeaseStatus::Held
    );
    let again = enqueue_one(&b, keyed("order-2", 10)).await;
    assert_ne!(again, x_id, "a dead-lettered job frees its key");
    assert_eq!(enqueue_one(&a, keyed("order-2", 11)).await, again);

    // Dead-lettered on A, requeued by B: it takes its key again.
    let d = reserve_job(&a, &again).await;
    assert_eq!(
        a.dead_letter(&d.lease, "boom").await.expect("dead"),
        LeaseStatus::Held
    );
    assert_eq!(
        b.dead_requeue("q", std::slice::from_ref(&again))
            .await
            .expect("requeue"),
        1
    );
    assert_eq!(
        enqueue_one(&a, keyed("order-2", 12)).await,
        again,
        "a requeued dead job takes its key again"
    );

    // Past unique_for, a completed key is free: a new job runs.
    tokio::time::sleep(UNIQUE_FOR + Duration::from_millis(200)).await;
    // Past unique_for, a completed key is free: a new job runs.
    let fresh = enqueue_one(&b, keyed("order-1", 13)).await;
    assert_ne!(
        fresh, first,
        "a completion holds its key for unique_for only"
    );
    assert_eq!(enqueue_one(&a, keyed("order-1", 14)).await, fresh);

    let _ = a.delete_all_queues().await;
    let _ = a.delete_key_table().await;
}
