//! A work queue deleted behind the back of a process that consumes it: the
//! process declares it again, bindings and all, and goes on serving it and
//! the other queues.

mod support;

use jobsmith_core::SettleExt;
use jobsmith_core::{Backend, Envelope, Timestamp};
use lapin::options::QueueDeleteOptions;
use std::time::Duration;

fn job(queue: &str, n: u64) -> Envelope {
    Envelope::with_args("deleted_probe", queue, &serde_json::json!({ "n": n }))
        .expect("plain JSON serializes")
}

/// Reserves over `queues` until a job comes (each reserve waits up to 5 s), and acks it.
async fn next(b: &jobsmith_amqp::AmqpBackend, queues: &[String]) -> (String, u64) {
    for _ in 0..4 {
        let got = b
            .reserve(queues, 1, Duration::from_secs(30), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| {
                panic!("a reserve over {queues:?} failed after one of them was deleted: {e}")
            });
        if let Some(d) = got.into_iter().next() {
            b.ack(std::slice::from_ref(&d.lease)).await.expect("ack");
            let env = d.envelope.expect("an envelope");
            return (env.queue, support::arg_n(&env.args).expect("n"));
        }
    }
    panic!("no job came over {queues:?} in 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_work_queue_is_declared_again_and_served_beside_the_others() {
    let b = support::fresh("").await;
    let queues = vec!["gone".to_owned(), "kept".to_owned()];
    b.enqueue(vec![job("gone", 1), job("kept", 2)])
        .await
        .expect("enqueue");
    let mut first = vec![next(&b, &queues).await, next(&b, &queues).await];
    first.sort();
    assert_eq!(first, vec![("gone".into(), 1), ("kept".into(), 2)]);

    let (_conn, ch) = support::plain_channel().await;
    ch.queue_delete(
        b.work_queue_name("gone").as_str().into(),
        QueueDeleteOptions::default(),
    )
    .await
    .expect("queue.delete");
    // The broker cancels the consumer; let the cancellation arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;

    b.enqueue(vec![job("kept", 3)]).await.expect("enqueue");
    assert_eq!(
        next(&b, &queues).await,
        ("kept".into(), 3),
        "the other queue is served"
    );
    // A delayed job reaches the work queue through its bindings: declared again too.
    let mut later = job("gone", 4);
    later.run_at = Timestamp::now().plus(Duration::from_millis(300));
    b.enqueue(vec![later]).await.expect("enqueue");
    assert_eq!(
        next(&b, &queues).await,
        ("gone".into(), 4),
        "the deleted queue is declared again, bindings and all, and served"
    );
}
