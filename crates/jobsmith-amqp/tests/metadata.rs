//! The metadata store's one RabbitMQ-only hazard: a get reads an entry by
//! consuming it unacknowledged, so while one process reads it the value is
//! out of its queue for every other process. A get that finds nothing then
//! must not answer "none" for an entry that exists: a scheduler that starts
//! on such an answer would write a fresh state over the stored one.
//! (Concurrent gets through the backend are the conformance case
//! `metadata_reads_racing_a_writer_always_find_a_value`; this file holds the
//! entry deterministically, with a plain consumer of its own.)

mod support;

use jobsmith_core::MetaStore;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use std::time::Duration;

const KEY: &str = "schedule:held";

/// A consumer on another connection holding the entry's message unacknowledged.
struct Holder {
    conn: Connection,
    _channel: Channel,
    _consumer: Consumer,
}

impl Holder {
    /// Holds the message in `queue` once it has been delivered to this consumer.
    async fn take(queue: &str) -> Self {
        let (conn, channel) = support::plain_channel().await;
        channel
            .basic_qos(0, BasicQosOptions::default())
            .await
            .expect("qos");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        consumer.set_delegate(move |d: lapin::message::DeliveryResult| {
            let tx = tx.clone();
            async move {
                if let Ok(Some(d)) = d {
                    let _ = tx.send(d.data);
                }
            }
        });
        let held = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the entry's message is delivered to the holder")
            .expect("a delivery");
        assert_eq!(held, b"stored", "the holder holds the entry's value");
        Self {
            conn,
            _channel: channel,
            _consumer: consumer,
        }
    }

    /// Lets go: the broker puts the message back.
    async fn release(self) {
        self.conn
            .close(200, "released".into())
            .await
            .expect("close");
    }
}

/// Held for a moment, the entry is read once it is back: the get waits
/// instead of answering "none".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_waits_while_another_process_reads_the_entry() {
    let backend = support::fresh("").await;
    backend.put_meta(KEY, b"stored").await.expect("put");
    let holder = Holder::take(&backend.meta_queue_name(KEY)).await;

    let get = tokio::spawn({
        let backend = backend.clone();
        async move { backend.get_meta(KEY).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    if get.is_finished() {
        panic!(
            "a get answered while the entry was held elsewhere: {:?}",
            get.await
        );
    }
    holder.release().await;
    let got = get
        .await
        .expect("the get's task")
        .expect("the get succeeds");
    assert_eq!(
        got.as_deref(),
        Some(&b"stored"[..]),
        "a get finds the value once it is back"
    );
}

/// Held for longer than a get waits, the entry cannot be read: the get
/// fails with a transient error (a caller tries again later), never "none".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_that_cannot_see_the_entry_fails_instead_of_answering_none() {
    let backend = support::fresh("").await;
    backend.put_meta(KEY, b"stored").await.expect("put");
    let holder = Holder::take(&backend.meta_queue_name(KEY)).await;

    let err = backend
        .get_meta(KEY)
        .await
        .expect_err("a get that cannot see a held entry fails, never answering none");
    assert!(err.is_transient(), "the failure is transient: {err}");
    holder.release().await;
    assert_eq!(
        backend.get_meta(KEY).await.expect("get").as_deref(),
        Some(&b"stored"[..]),
        "the value is intact once it is back"
    );
    assert_eq!(
        backend.get_meta("schedule:never").await.expect("get"),
        None,
        "an entry never written, which nobody holds, is still none at once"
    );
}
