//! Work queues are classic queue version 1, or 2 with `queue_version=2`; a
//! work queue declared before as the other version is still used: the broker
//! refuses to declare it again as asked, and the backend then declares it as
//! it is.

mod support;

use jobsmith_core::SettleExt;
use jobsmith_core::{Backend, Envelope};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use std::time::Duration;

fn job(queue: &str, n: u64) -> Envelope {
    Envelope::with_args("topology_probe", queue, &serde_json::json!({ "n": n }))
        .expect("plain JSON serializes")
}

/// The `x-queue-version` argument of the queue `name`, as `rabbitmqctl` lists it.
fn queue_version(name: &str) -> Option<String> {
    let listing = support::rabbitmqctl(&[
        "list_queues",
        "--no-table-headers",
        "--quiet",
        "name",
        "arguments",
    ])
    .expect("rabbitmqctl lists the queues");
    let line = listing
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("queue {name} is listed"));
    let at = line.find("{\"x-queue-version\",")?;
    let rest = &line[at + "{\"x-queue-version\",".len()..];
    Some(rest.split('}').next().unwrap_or("").trim().to_owned())
}

/// Reserves until `n` jobs came; their ids, in order; acks them.
async fn take_ids(b: &jobsmith_amqp::AmqpBackend, n: usize) -> Vec<jobsmith_core::JobId> {
    let mut got = Vec::new();
    for _ in 0..20 {
        let more = b
            .reserve(
                &["q".to_owned()],
                10,
                Duration::from_secs(30),
                Duration::from_secs(1),
            )
            .await
            .expect("reserve");
        got.extend(more);
        if got.len() >= n {
            break;
        }
    }
    let ids = got
        .iter()
        .filter_map(|d| d.envelope.as_ref().ok().map(|e| e.id.clone()))
        .collect();
    let leases: Vec<_> = got.into_iter().map(|d| d.lease).collect();
    b.ack(&leases).await.expect("ack");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_work_queue_is_version_1_unless_queue_version_2_is_asked_for() {
    let (one, two) = (support::fresh_prefix(), support::fresh_prefix());
    support::connect(&one, "")
        .await
        .enqueue(vec![job("q", 1)])
        .await
        .expect("enqueue");
    support::connect(&two, "&queue_version=2")
        .await
        .enqueue(vec![job("q", 1)])
        .await
        .expect("enqueue");
    assert_eq!(queue_version(&format!("{one}.q")), None);
    assert_eq!(queue_version(&format!("{two}.q")).as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_work_queue_is_used_as_it_is_without_queue_version_2() {
    let prefix = support::fresh_prefix();
    let first = job("q", 1);
    support::connect(&prefix, "&queue_version=2")
        .await
        .enqueue(vec![first.clone()])
        .await
        .expect("enqueue");
    let b = support::connect(&prefix, "").await;
    let second = job("q", 2);
    b.enqueue(vec![second.clone()])
        .await
        .expect("an enqueue into the version 2 queue succeeds");
    assert_eq!(take_ids(&b, 2).await, vec![first.id, second.id]);
    assert_eq!(queue_version(&format!("{prefix}.q")).as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_declared_without_a_version_is_used_as_it_is_with_queue_version_2() {
    let prefix = support::fresh_prefix();
    let work = format!("{prefix}.q");
    // The work queue as jobsmith declared it before version 2, holding a job.
    let (conn, ch) = support::plain_channel().await;
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongLongInt(600_000));
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(10));
    args.insert(
        "x-queue-mode".into(),
        AMQPValue::LongString(LongString::from("lazy")),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(format!("{prefix}.q.expired"))),
    );
    ch.queue_declare(work.as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("declare the old work queue");
    let old = job("q", 1);
    ch.basic_publish(
        "".into(),
        work.as_str().into(),
        BasicPublishOptions::default(),
        &old.to_bytes(),
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(1)
            .with_message_id(old.id.as_str().into()),
    )
    .await
    .expect("publish")
    .await
    .expect("published");
    assert_eq!(queue_version(&work), None, "the old queue has no version");

    let b = support::connect(&prefix, "&queue_version=2").await;
    let new = job("q", 2);
    b.enqueue(vec![new.clone()])
        .await
        .expect("an enqueue into the old work queue succeeds");
    assert_eq!(
        take_ids(&b, 2).await,
        vec![old.id, new.id],
        "the old job, then the new one"
    );
    assert_eq!(
        queue_version(&work),
        None,
        "the old queue is left as it was"
    );
    conn.close(0, "done".into()).await.expect("close");
}
