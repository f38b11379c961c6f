//! The [`MetaStore`](jobsmith_core::MetaStore) capability: the metadata store.

use super::common::{fresh, meta_of};
use crate::Factory;
use std::sync::Arc;
use std::time::Duration;

/// The metadata store: an entry reads back byte for byte, a second put
/// replaces it (last writer wins), and a listing by prefix finds exactly the
/// entries under that prefix, sorted by key.
pub async fn metadata_store_puts_gets_and_lists(factory: Factory) {
    let h = fresh(factory).await;
    let b = &*h.backend;
    assert_eq!(
        meta_of(b)
            .get_meta("schedule:a")
            .await
            .expect("get succeeds"),
        None,
        "a key never written has no value"
    );
    meta_of(b)
        .put_meta("schedule:b", b"two")
        .await
        .expect("put succeeds");
    meta_of(b)
        .put_meta("schedule:a", b"one")
        .await
        .expect("put succeeds");
    meta_of(b)
        .put_meta("other:a", b"elsewhere")
        .await
        .expect("put succeeds");
    let value = "{\"tick\":1,\"text\":\"\u{e9}t\u{e9} \u{2713}\"}".as_bytes();
    meta_of(b)
        .put_meta("schedule:a", value)
        .await
        .expect("put succeeds");
    assert_eq!(
        meta_of(b)
            .get_meta("schedule:a")
            .await
            .expect("get succeeds")
            .as_deref(),
        Some(value),
        "a second put replaces the value, byte for byte"
    );
    let listed = meta_of(b)
        .list_meta("schedule:")
        .await
        .expect("list succeeds");
    assert_eq!(
        listed,
        vec![
            ("schedule:a".to_owned(), value.to_vec()),
            ("schedule:b".to_owned(), b"two".to_vec()),
        ],
        "a listing holds the prefix's entries only, sorted by key, each once with its latest value"
    );
    assert!(
        meta_of(b)
            .list_meta("nothing:")
            .await
            .expect("list succeeds")
            .is_empty(),
        "a prefix with no entries lists nothing"
    );
}

/// Reads of one metadata entry racing each other and a writer: once the
/// entry is written, every read finds a value, and one that was written. A
/// read never answers "none" for an entry that exists, however many
/// processes read it at once (a scheduler that read "none" would write a
/// fresh state over the stored one, losing its last tick).
pub async fn metadata_reads_racing_a_writer_always_find_a_value(factory: Factory) {
    const KEY: &str = "schedule:raced";
    const WRITES: u64 = 40;
    const MIN_READS: usize = 50;
    let h = fresh(factory).await;
    let b = Arc::clone(&h.backend);
    meta_of(&*b)
        .put_meta(KEY, b"0")
        .await
        .expect("put succeeds");
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = tokio::spawn({
        let (b, writing) = (Arc::clone(&b), Arc::clone(&writing));
        async move {
            for n in 1..=WRITES {
                meta_of(&*b)
                    .put_meta(KEY, n.to_string().as_bytes())
                    .await
                    .expect("put succeeds");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            writing.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (b, writing) = (Arc::clone(&b), Arc::clone(&writing));
            tokio::spawn(async move {
                let mut reads = 0;
                while reads < MIN_READS || writing.load(std::sync::atomic::Ordering::SeqCst) {
                    let got = meta_of(&*b).get_meta(KEY).await.expect("get succeeds");
                    let value = got.unwrap_or_else(|| {
                        panic!(
                            "reader {reader}'s read {reads} found no value while other reads \
                             and a writer raced it: a read must never answer none for an \
                             entry that exists"
                        )
                    });
                    let n: u64 = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(u64::MAX);
                    assert!(
                        n <= WRITES,
                        "reader {reader} read {value:?}, which was never written"
                    );
                    reads += 1;
                    // A backend that answers without awaiting (memory) must
                    // not starve the writer.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    writer.await.expect("the writer finishes");
    for r in readers {
        r.await.expect("every read found a written value");
    }
    assert_eq!(
        meta_of(&*b)
            .get_meta(KEY)
            .await
            .expect("get succeeds")
            .as_deref(),
        Some(WRITES.to_string().as_bytes()),
        "after the race the last value written is read"
    );
}
