//! A broken part of one queue must not cost the jobs received beside it: a
//! receive leases what it gets, and a message it drops comes back from SQS
//! with an attempt charged.

mod support;

use jobsmith_core::{Backend, Envelope, Settings, Timestamp};
use std::time::Duration;

fn job(n: u64) -> Envelope {
    Envelope::with_args("broken_probe", "q", &serde_json::json!({ "n": n })).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_received_beside_an_expiry_that_cannot_be_counted_is_handed_out() {
    let b = support::backend(Settings::default(), None).await;
    let mut dying = job(1);
    dying.expires_at = Some(Timestamp::now().plus(Duration::from_millis(300)));
    b.enqueue(vec![dying, job(2)]).await.expect("enqueue");
    // The queue's expired-jobs counter, deleted behind the backend's back.
    let counter = format!("{}__expired", b.queue_url("q").await.expect("queue URL"));
    b.client()
        .delete_queue()
        .queue_url(&counter)
        .send()
        .await
        .expect("DeleteQueue");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = b
        .reserve(
            &["q".to_owned()],
            10,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .await
        .expect("the job that can run is handed out though the expiry beside it cannot be counted");
    let envs: Vec<&Envelope> = got
        .iter()
        .filter_map(|d| d.envelope.as_ref().ok())
        .collect();
    assert_eq!(envs.len(), 1, "only the live job is handed out");
    let n = envs[0].args.get();
    assert!(n.contains("\"n\":2"), "the live job: {n}");
    assert_eq!(envs[0].attempt, 1, "as its first attempt");
}
