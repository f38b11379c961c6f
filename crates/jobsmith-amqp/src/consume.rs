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
use jobsmith_core::Result;
use lapin::message::DeliveryResult;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use std::cmp::Reverse;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a new consumer may take to fill its buffer before a reserve goes on.
const WARM_UP: Duration = Duration::from_millis(100);

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
        let version_2 = self.cfg.queue_version == 2 && !self.cfg.quorum;
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
        let consumer = link
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
        consumer.set_delegate(move |delivery: DeliveryResult| {
            let weak = weak.clone();
            let queue = queue.clone();
            async move {
                let Some(inner) = weak.upgrade() else { return };
                match delivery {
                    Ok(Some(d)) => inner.buffer(gen, &queue, d),
                    Ok(None) => {
                        // Cancelled by the broker (the queue was deleted): start again on next reserve.
                        inner.lock().consuming.remove(&queue);
                        inner.wake.notify_waiters();
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, queue = %queue, "consumer stopped");
                        inner.lost.notify_one();
                        inner.wake.notify_waiters();
                    }
                }
            }
        });
        let mut st = self.lock();
        st.wanted.insert(q.to_owned());
        st.consuming.insert(q.to_owned());
        Ok(ready)
    }

    fn buffer(self: &Arc<Self>, gen: u64, q: &str, d: lapin::message::Delivery) {
        {
            let mut st = self.lock();
            if self.current().is_some_and(|l| l.gen != gen) {
                return;
            }
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
                    return;
                }
                if st.tombstones.remove(id).is_some() {
                    // Settled while its connection was down: done with it.
                    let inner = Arc::clone(self);
                    let tag = d.delivery_tag;
                    tokio::spawn(async move {
                        if let Some(link) = inner.current().filter(|l| l.gen == gen) {
                            let _ = inner.ack_tags(&link, vec![tag]).await;
                        }
                    });
                    return;
                }
            }
            let priority = d.properties.priority().unwrap_or(0);
            // Delivery tags count up in delivery order on a channel; the
            // delegate may run out of order, so they, not arrival, set the order.
            st.buffers.entry(q.to_owned()).or_default().insert(
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
