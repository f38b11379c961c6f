//! Idempotency keys' queue names: by SHA-256, so that a caller who chooses
//! keys cannot make two of them share a queue; and the names earlier
//! versions gave (two FNV-1a passes) still honoured and freed.

mod support;

use jobsmith_amqp::AmqpBackend;
use jobsmith_core::hash::{fnv1a_64, sha256_hex, FNV1A_64_BASIS};
use jobsmith_core::{Backend, Envelope, JobId, SettleExt};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::time::Duration;

/// How versions before SHA-256 named a key's queues.
fn fnv(key: &str) -> String {
    format!(
        "{:016x}{:016x}",
        fnv1a_64(FNV1A_64_BASIS, key.as_bytes()),
        fnv1a_64(0x6c62_272e_07bb_0142, key.as_bytes())
    )
}

fn keyed(key: &str, n: u64) -> Envelope {
    let mut env = Envelope::with_args("job", "q", &serde_json::json!({ "n": n })).expect("json");
    env.idempotency_key = Some(key.to_owned());
    env
}

/// Whether `queue` exists, asked on a channel of its own (a missing queue closes it).
async fn exists(queue: &str) -> bool {
    let (conn, ch) = support::plain_channel().await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok();
    let _ = conn.close(200, "done".into()).await;
    found
}

/// Writes `id` into `queue` as an earlier version would have.
async fn earlier_version_wrote(queue: &str, id: &str, limit_overflow: bool) {
    let (conn, ch) = support::plain_channel().await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert("x-expires".into(), AMQPValue::LongLongInt(600_000));
    if limit_overflow {
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("declare");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        id.as_bytes(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .expect("publish")
    .await
    .expect("confirmed");
    let _ = conn.close(200, "done".into()).await;
}

async fn backend(prefix: &str) -> AmqpBackend {
    support::connect(prefix, "").await
}

#[tokio::test]
async fn a_key_s_queues_are_named_by_its_sha256() {
    let prefix = support::fresh_prefix();
    let b = backend(&prefix).await;
    let key = "order-7";
    b.enqueue(vec![keyed(key, 7)]).await.expect("enqueue");
    let sha = sha256_hex(key.as_bytes(), 16);
    assert!(
        exists(&format!("{prefix}.q.owner.{sha}")).await,
        "the key's owner queue is named by its SHA-256"
    );
    assert!(
        !exists(&format!("{prefix}.q.owner.{}", fnv(key))).await,
        "no queue is named by the key's FNV-1a hash any more"
    );
}

#[tokio::test]
async fn a_key_an_earlier_version_holds_or_remembers_is_honoured_then_freed() {
    let prefix = support::fresh_prefix();
    let b = backend(&prefix).await;

    // Held: a job the earlier version enqueued, queued or running.
    let held = "order-8";
    earlier_version_wrote(&format!("{prefix}.q.key.{}", fnv(held)), "old-8", true).await;
    earlier_version_wrote(&format!("{prefix}.q.owner.{}", fnv(held)), "old-8", false).await;
    let ids = b.enqueue(vec![keyed(held, 8)]).await.expect("enqueue");
    assert_eq!(
        ids,
        [JobId("old-8".into())],
        "the held key makes an equal job a no-op"
    );
    assert_eq!(
        b.key_holder("q", held).await.expect("holder"),
        Some(JobId("old-8".into()))
    );

    // Remembered: completed under the earlier version, within unique_for.
    let done = "order-9";
    earlier_version_wrote(&format!("{prefix}.q.done.{}", fnv(done)), "old-9", false).await;
    let ids = b.enqueue(vec![keyed(done, 9)]).await.expect("enqueue");
    assert_eq!(
        ids,
        [JobId("old-9".into())],
        "the remembered key makes an equal job a no-op"
    );

    // The earlier version's job of `held` runs here and completes: its key
    // is freed in both forms, and remembered in the new one.
    let mut old = keyed(held, 8);
    old.id = JobId("old-8".into());
    b.publish_raw("q", &serde_json::to_vec(&old).expect("json"))
        .await
        .expect("publish");
    let got = b
        .reserve(
            &["q".to_owned()],
            1,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await
        .expect("reserve");
    assert_eq!(got.len(), 1, "the earlier version's job is delivered");
    b.ack(&[got[0].lease.clone()]).await.expect("ack");
    for kind in ["key", "owner"] {
        assert!(
            !exists(&format!("{prefix}.q.{kind}.{}", fnv(held))).await,
            "the earlier form's {kind} queue goes when the job completes"
        );
    }
    let ids = b.enqueue(vec![keyed(held, 8)]).await.expect("enqueue");
    assert_eq!(
        ids,
        [JobId("old-8".into())],
        "completed, the key is remembered for unique_for in the new form"
    );
    assert!(
        exists(&format!(
            "{prefix}.q.done.{}",
            sha256_hex(held.as_bytes(), 16)
        ))
        .await
    );
}
