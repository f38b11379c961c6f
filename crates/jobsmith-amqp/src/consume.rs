//! Consumers and their prefetch buffers: how deliveries reach `reserve`.
//!
//! Each queue a process reserves from gets one consumer (manual ack, prefetch
//! `prefetch`) on the link's consume channel. Deliveries land in a local
//! buffer ordered by priority then arrival, and wake waiting reserves; a
//! reserve never polls the broker.

use crate::call::Calls;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, Outgoing};
use crate::state::{Buffered, Consuming};
use crate::topology::{passive_count, Declared};
use futures_util::future::try_join_all;
use futures_util::{FutureExt, StreamExt};
use jobsmith_core::lock::LockExt;
use jobsmith_core::{Error, Result};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::cmp::Reverse;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a new consumer may take to fill its buffer before a reserve goes on.
const WARM_UP: Duration = Duration::from_millis(100);

/// How long a cancelled consumer's task may take to buffer its last deliveries.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// How long a queue the broker refused to declare or consume is left alone.
const REFUSED_RETRY: Duration = Duration::from_secs(1);

/// The most deliveries a consumer's task takes in under one lock.
const RUN: usize = 256;

/// A copy of `e` if it is the broker's refusal of one queue, to give again
/// without asking; `None` for a lost connection, which is not remembered.
fn refusal(e: &Error) -> Option<Error> {
    match e {
        Error::Backend { .. } | Error::Misconfigured { .. } => Some(e.same_kind()),
        _ => None,
    }
}

impl Inner {
    /// Declares a queue's topology once per connection; returns the ready count
    /// when it declared.
    pub(crate) async fn ensure_queue(
        self: &Arc<Self>,
        link: &Link,
        q: &str,
    ) -> Result<Option<u32>> {
        if self.state.lock_unpoisoned().declared.contains(q) {
            return Ok(None);
        }
        let mut admin = link.admin().await?;
        let topology = self.topology();
        let version_2 = self.cfg.version_2();
        let calls = &link.calls;
        let ready = match topology.declare_queue(calls, &admin, q, version_2).await? {
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
                match topology.declare_queue(calls, &admin, q, !version_2).await? {
                    Declared::Ready(n) => n,
                    Declared::OtherVersion => {
                        return Err(jobsmith_core::Error::backend(format!(
                            "the broker refused work queue {} as classic queue version 1 and 2",
                            self.names.work(q)
                        )))
                    }
                }
            }
        };
        let register = {
            let mut st = self.state.lock_unpoisoned();
            st.declared.insert(q.to_owned());
            st.registered.insert(q.to_owned())
        };
        if register {
            let entry = message::to_queue(self.names.registry(), q.as_bytes().to_vec());
            let declare = admin.queue_declare(
                self.names.registry().into(),
                lapin::options::QueueDeclareOptions::durable(),
                self.topology().registry_args(),
            );
            calls.answer("queue.declare", declare).await?;
            message::publish_confirmed(calls, &admin, vec![entry]).await?;
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
                .map(|q| passive_count(&link.calls, &ch, self.names.work(q))),
        )
        .await?;
        Ok(counts.into_iter().sum())
    }

    /// Starts consumers for the queues that have none on this link yet,
    /// unless a worker stopped since the reserve that asks took `mark`;
    /// returns the queues whose consumer could not be started, each with
    /// why. One queue the broker refuses does not keep the others from being
    /// consumed; it is reported, and asked for again at most once per
    /// [`REFUSED_RETRY`].
    pub(crate) async fn ensure_consuming(
        self: &Arc<Self>,
        link: &Link,
        queues: &[String],
        mark: u64,
    ) -> Vec<(String, Error)> {
        let missing = {
            let st = self.state.lock_unpoisoned();
            queues.iter().any(|q| !st.consuming.contains(q))
        };
        if !missing {
            return Vec::new();
        }
        let _setup = self.consumer_setup.lock().await;
        // Checked under the setup lock, which `stop_consuming` holds while it
        // cancels: a reserve from before a stop never starts a consumer after it.
        if self.interrupt.has_fired(mark) {
            return Vec::new();
        }
        let mut warming = Vec::new();
        let mut failed: Vec<(String, Error)> = Vec::new();
        for q in queues {
            if self.state.lock_unpoisoned().consuming.contains(q)
                || failed.iter().any(|(f, _)| f == q)
            {
                continue;
            }
            if let Some(why) = self.refused_lately(q) {
                failed.push((q.clone(), why));
                continue;
            }
            match self.start_consumer(link, q).await {
                Ok(ready) => {
                    self.errors.worked(q);
                    if ready > 0 {
                        let held = self
                            .state
                            .lock_unpoisoned()
                            .consumer_limit(q, self.cfg.prefetch);
                        warming.push((q.clone(), ready.min(u32::from(held)) as usize));
                    }
                }
                Err(e) => {
                    self.errors.failed(q, "consume", &e);
                    if let Some(again) = refusal(&e) {
                        let at = std::time::Instant::now();
                        self.state
                            .lock_unpoisoned()
                            .refused
                            .insert(q.clone(), (at, again));
                    }
                    failed.push((q.clone(), e));
                }
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
                if self.state.lock_unpoisoned().buffered(&q) >= want
                    || tokio::time::Instant::now() >= until
                {
                    break;
                }
                let _ = tokio::time::timeout_at(until, notified).await;
            }
        }
        failed
    }

    /// Why the broker refused `q` less than [`REFUSED_RETRY`] ago, if it did.
    fn refused_lately(&self, q: &str) -> Option<Error> {
        let mut st = self.state.lock_unpoisoned();
        match st.refused.get(q) {
            Some((at, why)) if at.elapsed() < REFUSED_RETRY => refusal(why),
            Some(_) => {
                st.refused.remove(q);
                None
            }
            None => None,
        }
    }

    /// Declares `q` and consumes it on `link`; returns its ready count.
    pub(crate) async fn start_consumer(self: &Arc<Self>, link: &Link, q: &str) -> Result<u32> {
        let started = async {
            // Declaring told the count already; a queue declared before is
            // asked, on the admin channel: were the queue gone or locked, the
            // refusal closes that channel, not the one every consumer is on.
            let ready = match self.ensure_queue(link, q).await? {
                Some(ready) => ready,
                None => {
                    let admin = link.admin().await?;
                    passive_count(&link.calls, &admin, self.names.work(q)).await?
                }
            };
            // A per-consumer `basic.qos` holds for the consumers started
            // after it on the channel: this one gets its workers' share.
            let share = self
                .state
                .lock_unpoisoned()
                .consumer_limit(q, self.cfg.prefetch);
            let calls = &link.calls;
            calls
                .answer(
                    "basic.qos",
                    link.consume
                        .basic_qos(share, BasicQosOptions { global: false }),
                )
                .await?;
            let consume = link.consume.basic_consume(
                self.names.work(q).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            );
            let consumer = match calls.answer("basic.consume", consume).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    if e.is_transient() {
                        // The consumer may start later, with deliveries no
                        // one reads: closing the channel ends this link,
                        // and the broker requeues what it held.
                        Calls::abandon(&link.consume);
                    }
                    return Err(e);
                }
            };
            Ok::<_, Error>((ready, consumer))
        };
        let (ready, mut consumer) = match started.await {
            Ok(started) => started,
            Err(e) => {
                // Declared in full next time: the queue may have been deleted,
                // or declared otherwise, since this process declared it.
                self.state.lock_unpoisoned().declared.remove(q);
                return Err(e);
            }
        };
        let weak: Weak<Inner> = Arc::downgrade(self);
        let gen = link.gen;
        let queue = q.to_owned();
        let tag = consumer.tag();
        let own_tag = tag.clone();
        // One task per consumer takes every delivery that has arrived each
        // time it wakes: one lock and one wake of the reserves per run, where
        // a lapin delegate costs a spawned task per delivery.
        let task = tokio::spawn(async move {
            loop {
                let (run, end) = next_run(&mut consumer).await;
                let Some(inner) = weak.upgrade() else { return };
                inner.buffer(gen, &queue, run);
                match end {
                    End::More => {}
                    End::Cancelled => {
                        // Cancelled by the broker (the queue was deleted):
                        // declare it and consume it again on the next
                        // reserve. A stop cancels too, but has already
                        // taken the consumer out.
                        let mut st = inner.state.lock_unpoisoned();
                        if st.consumers.get(&queue).is_some_and(|c| c.tag == own_tag) {
                            st.consuming.remove(&queue);
                            st.consumers.remove(&queue);
                            st.declared.remove(&queue);
                        }
                        drop(st);
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
        {
            let mut st = self.state.lock_unpoisoned();
            st.wanted.insert(q.to_owned());
            st.consuming.insert(q.to_owned());
            st.consumers
                .insert(q.to_owned(), Consuming { gen, tag, task });
        }
        crate::stage::ensure(self, link, q).await;
        Ok(ready)
    }

    /// Cancels the consumers of `queues` and hands back, uncounted, what
    /// they had buffered; a later `ensure_consuming` starts them again.
    ///
    /// A buffered delivery cannot go back as it is: a rejected message
    /// returns marked redelivered, which counts an attempt (its earlier
    /// delivery may have been running when its connection died). So each
    /// goes back as a copy, published and confirmed before the delivery is
    /// acked, behind the jobs that are queued now.
    pub(crate) async fn stop_consuming(self: &Arc<Self>, queues: &[String]) -> Result<()> {
        let _setup = self.consumer_setup.lock().await;
        let consumers: Vec<Consuming> = {
            let mut st = self.state.lock_unpoisoned();
            queues
                .iter()
                .filter_map(|q| {
                    st.wanted.remove(q);
                    st.consuming.remove(q);
                    if let Some(s) = st.stagers.remove(q) {
                        s.stop();
                    }
                    st.consumers.remove(q)
                })
                .collect()
        };
        let Some(link) = self.current() else {
            // The connection is gone, and with it everything it held unacked.
            return Ok(());
        };
        for c in consumers.into_iter().filter(|c| c.gen == link.gen) {
            let cancelled = link
                .calls
                .answer(
                    "basic.cancel",
                    link.consume
                        .basic_cancel(c.tag.clone(), BasicCancelOptions::default()),
                )
                .await;
            // After the broker's cancel-ok no delivery comes; the task buffers
            // the ones before it, then ends.
            let mut task = c.task;
            let ended = match cancelled {
                Ok(()) => tokio::time::timeout(CANCEL_WAIT, &mut task).await.is_ok(),
                Err(_) => false,
            };
            if !ended {
                task.abort();
            }
        }
        let now = jobsmith_core::Timestamp::now();
        let (msgs, tags): (Vec<Outgoing>, Vec<u64>) = {
            let mut st = self.state.lock_unpoisoned();
            queues
                .iter()
                .flat_map(|q| st.take_unleased(q).map(move |b| (q, b)).collect::<Vec<_>>())
                .filter(|(_, b)| b.gen == link.gen)
                .map(|(q, b)| {
                    let tag = b.tag;
                    (message::handed_back(&self.names, q, b, now), tag)
                })
                .unzip()
        };
        self.replace(&link, msgs, tags).await
    }

    /// Takes in a run of deliveries from `q`'s consumer on connection `gen`.
    fn buffer(self: &Arc<Self>, gen: u64, q: &str, run: Vec<lapin::message::Delivery>) {
        if run.is_empty() || self.current().is_some_and(|l| l.gen != gen) {
            return;
        }
        let mut settled = Vec::new();
        {
            let mut st = self.state.lock_unpoisoned();
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
    /// were, so nothing is lost either way. If the broker gives no answer
    /// within `call_timeout`, the caller gets the error and the rest goes
    /// on in the background: acking before the copies are confirmed could
    /// lose them, and requeueing could run them twice.
    pub(crate) async fn replace(
        self: &Arc<Self>,
        link: &Arc<Link>,
        msgs: Vec<Outgoing>,
        tags: Vec<u64>,
    ) -> Result<()> {
        if tags.is_empty() && msgs.is_empty() {
            return Ok(());
        }
        if msgs.is_empty() {
            return self.ack_tags(link, tags).await;
        }
        let (inner, on) = (Arc::clone(self), Arc::clone(link));
        let swap = async move {
            match message::publish_confirmed_unbounded(&on.calls, &on.publish, msgs).await {
                Ok(()) => inner.ack_tags(&on, tags).await,
                Err(e) => {
                    inner.reject_tags(&on, tags).await;
                    Err(e)
                }
            }
        };
        link.calls.or_in_background("basic.publish", swap).await
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
