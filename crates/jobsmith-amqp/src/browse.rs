//! Browsing a queue: taking every message it holds, unacknowledged, on a
//! channel of its own, and putting back what is not removed.
//!
//! AMQP has no way to look into a queue without taking messages out. A browse
//! opens a channel of its own, consumes every message in the queue
//! (prefetch unlimited, manual ack), acks the ones it removes and closes the
//! channel, which puts the rest back where they were, in order. Dead letters,
//! the metadata store, the queue registry and the migration ledger are read
//! this way.

use crate::call::Calls;
use crate::link::Link;
use jobsmith_core::Result;
use lapin::message::DeliveryResult;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::time::Duration;

/// How long a browse waits for the next message before it takes what it has.
const QUIET: Duration = Duration::from_millis(300);

/// The messages a browse took off a queue, held unacknowledged on a channel
/// of its own until [`Held::close`] puts them back.
pub(crate) struct Held {
    channel: Channel,
    calls: Calls,
    /// Kept until the channel closes: dropping it first would cancel the
    /// consumer while its messages are still held, and for that moment they
    /// would belong to no consumer, so that another process would find the
    /// queue empty with no browse under way (see `whole`).
    _consumer: Option<Consumer>,
    /// The messages, oldest first.
    pub(crate) deliveries: Vec<lapin::message::Delivery>,
    /// Whether the browse saw the whole queue: when it began no other
    /// consumer (another process's browse) held any of the queue's messages,
    /// and every message the queue counted then came. A browse that finds
    /// nothing and is whole proves the queue empty at that moment.
    pub(crate) whole: bool,
}

impl Held {
    /// Removes one message for good.
    pub(crate) async fn remove(&self, tag: u64) -> Result<()> {
        let ack = self.channel.basic_ack(tag, BasicAckOptions::default());
        self.calls.answer("basic.ack", ack).await
    }

    /// Puts back every message not removed (the broker requeues, in order,
    /// what a closing channel held).
    pub(crate) async fn close(self) {
        let close = self.channel.close(200, "browse done".into());
        let _ = self.calls.answer("channel.close", close).await;
    }
}

/// Every message of `queue` (as many as it held when the browse began),
/// held until the result is closed.
pub(crate) async fn collect(link: &Link, queue: &str, args: FieldTable) -> Result<Held> {
    let ch = link.scratch().await?;
    let calls = link.calls.clone();
    let declare = ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args);
    let declared = match calls.answer("queue.declare", declare).await {
        Ok(declared) => declared,
        Err(e) => {
            Calls::abandon(&ch);
            return Err(e);
        }
    };
    let n = declared.message_count() as usize;
    // The only consumers of the queues browsed are other browses: one under
    // way holds messages that the count above leaves out.
    let unbrowsed = declared.consumer_count() == 0;
    let mut got = Vec::with_capacity(n);
    if n == 0 {
        return Ok(Held {
            channel: ch,
            calls,
            _consumer: None,
            deliveries: got,
            whole: unbrowsed,
        });
    }
    let consume = async {
        calls
            .answer(
                "basic.qos",
                ch.basic_qos(0, BasicQosOptions { global: false }),
            )
            .await?;
        let consume = ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        calls.answer("basic.consume", consume).await
    };
    let consumer = match consume.await {
        Ok(consumer) => consumer,
        Err(e) => {
            // Whatever it may yet be handed goes back when the channel closes.
            Calls::abandon(&ch);
            return Err(e);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    consumer.set_delegate(move |d: DeliveryResult| {
        let tx = tx.clone();
        async move {
            if let Ok(Some(d)) = d {
                let _ = tx.send(d);
            }
        }
    });
    while got.len() < n {
        match tokio::time::timeout(QUIET, rx.recv()).await {
            Ok(Some(d)) => got.push(d),
            _ => break,
        }
    }
    // The delegate may run out of order; delivery tags count up in queue order.
    got.sort_by_key(|d| d.delivery_tag);
    Ok(Held {
        channel: ch,
        calls,
        _consumer: Some(consumer),
        whole: unbrowsed && got.len() >= n,
        deliveries: got,
    })
}
