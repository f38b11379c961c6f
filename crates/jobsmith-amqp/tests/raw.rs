//! The bench's yardstick, a plain lapin client on the same broker: it
//! publishes and consumes every message it sends, on both kinds of queue,
//! and leaves no queue behind.

mod support;

use jobsmith_amqp::{raw_rate, RawQueue};

#[tokio::test]
async fn the_plain_client_moves_every_message_and_leaves_no_queue() {
    let prefix = support::fresh_prefix();
    let url = support::url(&prefix, "");
    for queue in [RawQueue::Plain, RawQueue::AsWorkQueue] {
        // It returns only once it has consumed as many as it published.
        let (publish, consume) = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            raw_rate(&url, 300, queue),
        )
        .await
        .expect("300 messages go through within a minute")
        .expect("the plain client runs");
        assert!(
            publish.is_finite() && publish > 0.0 && consume.is_finite() && consume > 0.0,
            "{queue:?}: rates {publish}/s and {consume}/s"
        );
    }
    let listing = support::rabbitmqctl(&["list_queues", "--no-table-headers", "--quiet", "name"])
        .expect("rabbitmqctl lists the queues");
    let left: Vec<&str> = listing.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "queues left behind: {left:?}");
}
