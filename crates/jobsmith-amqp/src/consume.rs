//! Consumers and their prefetch buffers: how deliveries reach `reserve`.
//!
//! Each queue a process reserves from gets one consumer (manual ack, prefetch
//! `prefetch`) on the link's consume channel. Deliveries land in a local
//! buffer ordered by priority then arrival, and wake waiting reserves; a
//! reserve never polls the broker.

use crate::error::from_lapin;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, Outgoing};
use crate::state::Buffered;
use crate::topology::{passive_count, Declared};
use futures_util::future::try_join_all;
use futures_util::{FutureExt, StreamExt};
use jobsmith_core::Result;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use std::cmp::Reverse;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a new consumer may take to fill its buffer before a reserve goes on.
const WARM_UP: Duration = Duration::from_millis(100);

/// The most deliveries a consumer's task takes in under one lock.
const RUN: usize = 256;

impl Inner {
    /// Declares a queue's topology once per connection; returns the ready count
    /// when it declared.
    pub(crate) async fn ensure_queue(
        self: &Arc<Self>,
        link: &Link,
        q: &str,
    ) -> Result<Option<u32>> {
        if self.lock().declared.contains(q) {
            return Ok(None);
        }
        let mut admin = link.admin().await?;
        let topology = self.topology();
        let version_2 = self.cfg.version_2();
        let ready = match topology.declare_queue(&admin, q, version_2).await? {
            Declared::Ready(n) => n,
            Declared::OtherVersion => {
                let (asked, found) = if version_2 { (2, 1) } else { (1, 2) };
                tracing::warn!(
                    queue = %self.names.work(q),
                    "queue_version={asked} is asked for, but this work queue was declared \
                     before as classic queue version {found}; it is used as it is. To convert \
                     it in place, give it the policy `queue-version: {asked}` (rabbitmqctl \
                     set_policy); or use a new prefix"
                );
                // The refusal closed the admin channel.
                *admin = link.reopen_admin().await?;
                match topology.declare_queue(&admin, q, !version_2).await? {
                    Declared::Ready(n) => n,
                    Declared::OtherVersion => {
                        return Err(jobsmith_core::Error::Backend(format!(
                            "the broker refused work queue {} as classic queue version 1 and 2",
                            self.names.work(q)
                        )))
                    }
                }
            }
        };
        let register = {
            let mut st = self.lock();
            st.declared.insert(q.to_owned());
            st.registered.insert(q.to_owned())
        };
        if register {
            let entry = message::to_queue(self.names.registry(), q.as_bytes().to_vec());
            admin
                .queue_declare(
                    self.names.registry().into(),
                    lapin::options::QueueDeclareOptions::durable(),
                    self.topology().registry_args(),
                )
                .await
                .map_err(from_lapin)?;
            message::publish_confirmed(&admin, vec![entry]).await?;
        }
        Ok(Some(ready))
    }

    /// How many jobs the broker holds ready in `queues` (not yet delivered to anyone).
    pub(crate) async fn broker_ready(&self, link: &Link, queues: &[String]) -> Result<u32> {
        let ch = link.admin().await?;
        // Requests on one channel are answered in order: send them all, then read the answers.
        let counts = try_join_all(
            queues
                .iter()
                .map(|q| passive_count(&ch, self.names.work(q))),
        )
        .await?;
        Ok(counts.into_iter().sum())
    }

    /// Starts consumers for the queues that have none on this link yet.
    pub(crate) async fn ensure_consuming(
        self: &Arc<Self>,
        link: &Link,
        queues: &[String],
    ) -> Result<()> {
        let missing = {
            let st = self.lock();
            queues.iter().any(|q| !st.consuming.contains(q))
        };
        if !missing {
            return Ok(());
        }
        let _setup = self.consumer_setup.lock().await;
        let mut warming = Vec::new();
        for q in queues {
            if self.lock().consuming.contains(q) {
                continue;
            }
            let ready = self.start_consumer(link, q).await?;
            if ready > 0 {
                warming.push((q.clone(), ready.min(u32::from(self.cfg.prefetch)) as usize));
            }
        }
        // A new consumer's first deliveries are on their way: let them land, so
        // that the first reserve sees every queue it was given, in order.
        let until = tokio::time::Instant::now() + WARM_UP;
        for (q, want) in warming {
            loop {
                let notified = self.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.lock().buffered(&q) >= want || tokio::time::Instant::now() >= until {
                    break;
                }
                let _ = tokio::time::timeout_at(until, notified).await;
            }
        }
        Ok(())
    }

    /// Declares `q` and consumes it on `link`; returns its ready count.
    pub(crate) async fn start_consumer(self: &Arc<Self>, link: &Link, q: &str) -> Result<u32> {
        // Declaring told the count already; a queue declared before is asked.
        let ready = match self.ensure_queue(link, q).await? {
            Some(ready) => ready,
            None => passive_count(&*link.admin().await?, self.names.work(q)).await?,
        };
        let mut consumer = link
            .consume
            .basic_consume(
                self.names.work(q).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(from_lapin)?;
        let weak: Weak<Inner> = Arc::downgrade(self);
        let gen = link.gen;
        let queue = q.to_owned();
        // One task per consumer takes every delivery that has arrived each
        // time it wakes: one lock and one wake of the reserves per run, where
        // a lapin delegate costs a spawned task per delivery.
        tokio::spawn(async move {
            loop {
                let (run, end) = next_run(&mut consumer).await;
                let Some(inner) = weak.upgrade() else { return };
                inner.buffer(gen, &queue, run);
                match end {
                    End::More => {}
                    End::Cancelled => {
                        // The queue was deleted: start again on next reserve.
                        inner.lock().consuming.remove(&queue);
                        inner.wake.notify_waiters();
                        return;
                    }
                    End::Failed(e) => {
                        tracing::debug!(error = %e, queue = %queue, "consumer stopped");
                        inner.lost.notify_one();
                        inner.wake.notify_waiters();
                        return;
                    }
                }
            }
        });
        let mut st = self.lock();
        st.wanted.insert(q.to_owned());
        st.consuming.insert(q.to_owned());
        Ok(ready)
    }

    /// Takes in a run of deliveries from `q`'s consumer on connection `gen`.
    fn buffer(self: &Arc<Self>, gen: u64, q: &str, run: Vec<lapin::message::Delivery>) {
        if run.is_empty() || self.current().is_some_and(|l| l.gen != gen) {
            return;
        }
        let mut settled = Vec::new();
        {
            let mut st = self.lock();
            let st = &mut *st;
            let buf = st.buffers.entry(q.to_owned()).or_default();
            for d in run {
                st.outstanding.delivered(gen, d.delivery_tag);
                let redelivered_id = d
                    .properties
                    .message_id()
                    .as_ref()
                    .filter(|_| d.redelivered)
                    .map(|i| i.as_str());
                if let Some(id) = redelivered_id {
                    let orphan = st.orphans.remove(id);
                    if let Some(h) = orphan.and_then(|token| st.leases.get_mut(&token)) {
                        // Our own job, back after a reconnect: its lease holds on.
                        h.gen = gen;
                        h.tag = d.delivery_tag;
                        h.delivered = std::time::Instant::now();
                        continue;
                    }
                    if st.tombstones.remove(id).is_some() {
                        // Settled while its connection was down: done with it.
                        settled.push(d.delivery_tag);
                        continue;
                    }
                }
                let priority = d.properties.priority().unwrap_or(0);
                // Delivery tags count up in delivery order on a channel; the
                // consumers of several queues run apart, so tags, not
                // arrival, set the order.
                buf.insert(
                    (Reverse(priority), d.delivery_tag),
                    Buffered {
                        gen,
                        tag: d.delivery_tag,
                        redelivered: d.redelivered,
                        priority,
                        data: d.data,
                        received: std::time::Instant::now(),
                    },
                );
            }
        }
        if !settled.is_empty() {
            let inner = Arc::clone(self);
            tokio::spawn(async move {
                if let Some(link) = inner.current().filter(|l| l.gen == gen) {
                    let _ = inner.ack_tags(&link, settled).await;
                }
            });
        }
        self.wake.notify_waiters();
    }

    /// Republishes `msgs` (confirmed), then acks the deliveries they replace.
    /// If the republish fails, the deliveries go back to the broker as they
    /// were, so nothing is lost either way.
    pub(crate) async fn replace(
        &self,
        link: &Link,
        msgs: Vec<Outgoing>,
        tags: Vec<u64>,
    ) -> Result<()> {
        if tags.is_empty() && msgs.is_empty() {
            return Ok(());
        }
        let published = if msgs.is_empty() {
            Ok(())
        } else {
            message::publish_confirmed(&link.publish, msgs).await
        };
        match published {
            Ok(()) => self.ack_tags(link, tags).await,
            Err(e) => {
                self.reject_tags(link, tags).await;
                Err(e)
            }
        }
    }
}

/// How a consumer's stream stood after a run.
enum End {
    /// Open: more deliveries may come.
    More,
    /// Ended: the broker cancelled the consumer.
    Cancelled,
    /// Failed: the channel or connection is gone.
    Failed(lapin::Error),
}

/// Waits for the next delivery, then takes those that have already arrived,
/// up to [`RUN`] in all; and whether the stream ended.
async fn next_run(consumer: &mut lapin::Consumer) -> (Vec<lapin::message::Delivery>, End) {
    let mut run = Vec::new();
    let mut next = consumer.next().await;
    loop {
        match next {
            Some(Ok(d)) => run.push(d),
            Some(Err(e)) => return (run, End::Failed(e)),
            None => return (run, End::Cancelled),
        }
        if run.len() >= RUN {
            return (run, End::More);
        }
        match consumer.next().now_or_never() {
            Some(more) => next = more,
            None => return (run, End::More),
        }
    }
}
