//! Staging: a delayed job's last [`STAGE_MS`] are held by a process that
//! works its queue, not by a broker timer.
//!
//! The delay levels let a delayed job go into its queue's staging queue
//! `p.q.soon` [`STAGE_MS`] before it is due (a shorter delay is published
//! there at once). Each process that reserves from `q` consumes `p.q.soon`
//! on a channel of its own, holds each delivery until it is due, less
//! [`STAGE_EARLY_MS`], then rejects it without requeueing: the staging
//! queue dead-letters it into the work queue as the rejection arrives, and
//! the reserving process holds the few milliseconds it is early.
//!
//! Nothing held here is a lease or counts an attempt: a staged job reaches a
//! worker only through the work queue. When the holder's channel or
//! process goes, the broker puts what it held back in the staging queue,
//! where another holder takes it, or the queue's TTL moves it on.
//!
//! [`STAGE_MS`]: crate::names::STAGE_MS

use crate::call::Calls;
use crate::inner::Inner;
use crate::link::Link;
use crate::message;
use crate::names::STAGE_EARLY_MS;
use futures_util::StreamExt;
use jobsmith_core::lock::LockExt;
use jobsmith_core::{Result, Timestamp};
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most staged jobs one process holds per queue; more wait in the
/// staging queue for a slot, or for its TTL. At 1,000 delayed jobs a
/// second coming due, a holder holds about 1,000.
const PREFETCH: u16 = 5_000;

/// A holder of one queue's staged jobs: its channel, on which connection,
/// and how many jobs it holds.
#[derive(Debug)]
pub(crate) struct Stager {
    pub(crate) gen: u64,
    channel: Channel,
    held: Arc<AtomicUsize>,
}

impl Stager {
    /// How many staged jobs it holds: scheduled, and out of the staging
    /// queue's count while held.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Stops holding: the broker puts back what this holder had taken, and
    /// another holder (or the staging queue's TTL) moves it on.
    pub(crate) fn stop(self) {
        Calls::abandon(&self.channel);
    }
}

/// Holds `q`'s staged jobs on `link`, unless this process already does on
/// it. A holder that cannot start is logged and left out: the staging
/// queue's TTL still moves the jobs on, a little late on a busy broker.
pub(crate) async fn ensure(inner: &Arc<Inner>, link: &Link, q: &str) {
    if inner
        .state
        .lock_unpoisoned()
        .stagers
        .get(q)
        .is_some_and(|s| s.gen == link.gen)
    {
        return;
    }
    let held = Arc::new(AtomicUsize::new(0));
    match start(link, &inner.names.soon(q), Arc::clone(&held)).await {
        Ok(channel) => {
            let stager = Stager {
                gen: link.gen,
                channel,
                held,
            };
            if let Some(old) = inner
                .state
                .lock_unpoisoned()
                .stagers
                .insert(q.to_owned(), stager)
            {
                old.stop();
            }
        }
        Err(e) => tracing::warn!(
            backend = "amqp",
            queue = %q,
            error = %e,
            "cannot hold this queue's staged delayed jobs; they move on by the staging queue's TTL"
        ),
    }
}

/// Consumes `soon` on a channel of its own and holds what comes.
async fn start(link: &Link, soon: &str, held: Arc<AtomicUsize>) -> Result<Channel> {
    let ch = link.scratch().await?;
    let calls = &link.calls;
    let consumer = async {
        calls
            .answer(
                "basic.qos",
                ch.basic_qos(PREFETCH, BasicQosOptions { global: false }),
            )
            .await?;
        calls
            .answer(
                "basic.consume",
                ch.basic_consume(
                    soon.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
    }
    .await;
    let mut consumer = match consumer {
        Ok(c) => c,
        Err(e) => {
            Calls::abandon(&ch);
            return Err(e);
        }
    };
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            held.fetch_add(1, Ordering::Relaxed);
            let held = Arc::clone(&held);
            tokio::spawn(async move {
                tokio::time::sleep(hold_for(&d.data, Timestamp::now())).await;
                // Dead-letters it into the work queue; if the channel is gone,
                // the broker has put it back in the staging queue already.
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        requeue: false,
                        multiple: false,
                    })
                    .await;
                held.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    Ok(ch)
}

/// How long to hold a staged delivery whose body is `data`: until it is
/// due, less [`STAGE_EARLY_MS`]. One that does not parse goes on at once,
/// for the reserving process to dead-letter.
fn hold_for(data: &[u8], now: Timestamp) -> Duration {
    match message::parse(data) {
        Ok(env) => env
            .run_at
            .since(now)
            .saturating_sub(Duration::from_millis(STAGE_EARLY_MS)),
        Err(_) => Duration::ZERO,
    }
}
