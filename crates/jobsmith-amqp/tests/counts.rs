//! The processed and failed totals that only RabbitMQ builds from a counter
//! queue (see `src/counts.rs`): merges racing flushes and other merges keep
//! them exact, and a reader waits for a merge in progress instead of
//! reporting what the merger holds as missing.

mod support;

use jobsmith_amqp::AmqpBackend;
use jobsmith_core::{Backend, Envelope, LeaseStatus};
use jobsmith_core::{Inspect, SettleExt};
use lapin::options::{BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const Q: &str = "q";

fn job(n: u64) -> Envelope {
    Envelope::with_args("counted", Q, &serde_json::json!({ "n": n })).expect("JSON")
}

async fn totals(b: &AmqpBackend) -> (Option<u64>, Option<u64>) {
    let s = b
        .stats(&[Q.to_owned()])
        .await
        .expect("stats")
        .pop()
        .expect("one queue");
    (s.processed, s.failed)
}

/// Settles `n` jobs of `Q` on `b`, every third dead-lettered, each followed
/// by a flush (so the counter queue gets one message per job).
async fn settle_flushing_each(b: &AmqpBackend, n: u64) -> (u64, u64) {
    b.enqueue((0..n).map(job).collect()).await.expect("enqueue");
    let (mut acked, mut dead) = (0, 0);
    while acked + dead < n {
        let got = b
            .reserve(
                &[Q.to_owned()],
                10,
                Duration::from_secs(60),
                Duration::from_secs(5),
            )
            .await
            .expect("reserve");
        assert!(!got.is_empty(), "the queued jobs are reserved");
        for d in got {
            if (acked + dead) % 3 == 2 {
                let s = b.dead_letter(&d.lease, "boom").await.expect("dead letter");
                assert_eq!(s, LeaseStatus::Held);
                dead += 1;
            } else {
                let s = b.ack(&[d.lease]).await.expect("ack");
                assert_eq!(s, vec![LeaseStatus::Held]);
                acked += 1;
            }
            b.flush().await.expect("flush");
        }
    }
    (acked, dead)
}

/// How many messages `Q`'s counter queue holds.
async fn counter_messages(prefix: &str) -> u32 {
    let (conn, ch) = support::plain_channel().await;
    let counts = ch
        .queue_declare(
            format!("{prefix}.{Q}.counts").as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the counter queue exists");
    let _ = conn.close(200, "done".into()).await;
    counts.message_count()
}

/// 120 flushes with nobody reading pass the point (100 messages) where a
/// flush merges the counter queue; then 60 more race two other processes
/// that keep reading (and so merging) it. The totals come out exact from
/// every process, never going down on the way, and a read leaves the
/// counter queue merged into one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_stay_exact_while_flushes_and_merges_race() {
    let prefix = support::fresh_prefix();
    let (worker, reader_a, reader_b) = (
        support::connect(&prefix, "").await,
        support::connect(&prefix, "").await,
        support::connect(&prefix, "").await,
    );
    let (mut acked, mut dead) = settle_flushing_each(&worker, 120).await;
    let left = counter_messages(&prefix).await;
    assert!(
        (1..100).contains(&left),
        "flushes merge the counter queue once it holds 100 messages; it holds {left}"
    );
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [reader_a.clone(), reader_b.clone()]
        .into_iter()
        .map(|r| {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut reads = 0u32;
                let mut last = (0, 0);
                while !done.load(Ordering::SeqCst) {
                    let (p, f) = totals(&r).await;
                    let now = (p.expect("processed is known"), f.expect("failed is known"));
                    assert!(
                        now.0 >= last.0 && now.1 >= last.1,
                        "totals never go down: {last:?} then {now:?}"
                    );
                    last = now;
                    reads += 1;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..30))).await;
                }
                reads
            })
        })
        .collect();
    let (more_acked, more_dead) = settle_flushing_each(&worker, 60).await;
    acked += more_acked;
    dead += more_dead;
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.await.expect("reader") > 0, "each reader read");
    }
    assert_eq!((acked, dead), (120, 60));
    for b in [&worker, &reader_a, &reader_b] {
        assert_eq!(totals(b).await, (Some(acked), Some(dead)));
    }
    assert_eq!(
        counter_messages(&prefix).await,
        1,
        "a read merges into one message"
    );
}

/// Holds the lock of `Q`'s counter queue as a merger would, with every count
/// message taken and unacked, on a connection of its own; closing it puts
/// them back and frees the lock.
async fn hold_the_lock(prefix: &str) -> Connection {
    let (conn, ch) = support::plain_channel().await;
    let lock = ch
        .basic_consume(
            format!("{prefix}.{Q}.counts.lock").as_str().into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the lock is free");
    // Dropping the consumer would cancel it and free the lock.
    std::mem::forget(lock);
    let mut taken = 0;
    while ch
        .basic_get(
            format!("{prefix}.{Q}.counts").as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .expect("get")
        .is_some()
    {
        taken += 1;
    }
    assert!(taken > 0, "the counts were there to take");
    conn
}

/// While another process merges (holding the lock and the count messages),
/// a reader waits for it to finish instead of answering zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waits_for_a_merge_in_progress() {
    let prefix = support::fresh_prefix();
    let (worker, reader) = (
        support::connect(&prefix, "").await,
        support::connect(&prefix, "").await,
    );
    let (acked, dead) = settle_flushing_each(&worker, 3).await;
    assert_eq!((acked, dead), (2, 1));
    let merger = hold_the_lock(&prefix).await;
    let released = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // The merger dies before publishing its sum: the broker puts the
        // messages back and frees the lock.
        let at = Instant::now();
        let _ = merger.close(320, "merger gone".into()).await;
        at
    });
    let asked = Instant::now();
    let seen = totals(&reader).await;
    let answered = Instant::now();
    let released = released.await.expect("release");
    assert_eq!(
        seen,
        (Some(2), Some(1)),
        "the totals after the merger let go, not what it held"
    );
    assert!(
        answered >= released,
        "the reader answered {:?} after asking, before the merger let go",
        answered - asked
    );
}

/// A lock held past the reader's patience (3 s) gives unknown totals, not a
/// short count; once it is free, the totals are whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_too_long_gives_unknown_totals() {
    let prefix = support::fresh_prefix();
    let (worker, reader) = (
        support::connect(&prefix, "").await,
        support::connect(&prefix, "").await,
    );
    settle_flushing_each(&worker, 3).await;
    let merger = hold_the_lock(&prefix).await;
    assert_eq!(totals(&reader).await, (None, None));
    let _ = merger.close(320, "merger gone".into()).await;
    assert_eq!(totals(&reader).await, (Some(2), Some(1)));
}
