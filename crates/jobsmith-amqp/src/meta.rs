//! [`MetaStore`] for [`AmqpBackend`]: the metadata store (schedule states), kept in RabbitMQ itself.
//!
//! Entry `key` is the queue `p._meta.<hash>`, declared with `x-max-length: 1`
//! (overflow `drop-head`): a put publishes the value, stamped with the time
//! in the header `x-jobsmith-at`, and the broker drops the older value. A get
//! browses the queue without acknowledging (the broker puts the message
//! back when the browsing channel closes) and keeps the newest value found:
//! a put that lands while another process browses leaves two values for a
//! moment, and the stamp tells which is current. While one process browses,
//! the value is out of the queue for everyone else, so a get that finds
//! nothing answers "none" only when the queue was empty *and* no other
//! browse was under way (the queue's consumer count: the only consumers of
//! these queues are browses); otherwise it looks again, for up to
//! `BUSY_WAIT` (2 s), and then fails with a transient error rather than answer a
//! wrong "none". The index `p._meta` holds each key's name, once per key and
//! process start, for listing; a listing reads it the same way.

use crate::backend::AmqpBackend;
use crate::browse::collect;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, header_u64};
use jobsmith_core::lock::LockExt;
use jobsmith_core::{Error, MetaStore, Result, Timestamp};
use lapin::message::Delivery;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The header holding when a value was written, ms since the epoch.
const AT: &str = "x-jobsmith-at";

/// How long a read that finds the entry (or the index) held by other
/// browses keeps looking before it gives up with [`Error::Timeout`].
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// The longest pause between two looks; each pause is random up to it, so
/// that readers looking at once do not keep colliding.
const BUSY_PAUSE: Duration = Duration::from_millis(25);

impl Inner {
    pub(crate) async fn put_meta(self: &Arc<Self>, key: &str, value: &[u8]) -> Result<()> {
        let link = self.link().await?;
        let admin = link.admin().await?;
        let calls = &link.calls;
        let queue = self.names.meta(key);
        let declare = admin.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            self.topology().meta_args(),
        );
        calls.answer("queue.declare", declare).await?;
        let mut m = message::to_queue(queue, value.to_vec());
        let mut headers = FieldTable::default();
        let now = i64::try_from(Timestamp::now().as_millis()).unwrap_or(i64::MAX);
        headers.insert(AT.into(), AMQPValue::LongLongInt(now));
        m.props = m.props.with_headers(headers);
        let mut out = vec![m];
        let index = !self.state.lock_unpoisoned().meta_registered.contains(key);
        if index {
            let declare = admin.queue_declare(
                self.names.meta_index().into(),
                QueueDeclareOptions::durable(),
                self.topology().registry_args(),
            );
            calls.answer("queue.declare", declare).await?;
            out.push(message::to_queue(
                self.names.meta_index(),
                key.as_bytes().to_vec(),
            ));
        }
        message::publish_confirmed(calls, &admin, out).await?;
        if index {
            self.state
                .lock_unpoisoned()
                .meta_registered
                .insert(key.to_owned());
        }
        Ok(())
    }

    pub(crate) async fn get_meta(self: &Arc<Self>, key: &str) -> Result<Option<Vec<u8>>> {
        let link = self.link().await?;
        let queue = self.names.meta(key);
        let (found, whole) = browse_settled(&link, &queue, self.topology().meta_args(), |d| {
            !d.is_empty()
        })
        .await?;
        if found.is_empty() && !whole {
            // Another browse held the value, or took it from under each look,
            // for all of `BUSY_WAIT`: "none" would be a guess.
            return Err(Error::Timeout(BUSY_WAIT));
        }
        Ok(found
            .into_iter()
            .max_by_key(|d| (header_u64(&d.properties, AT).unwrap_or(0), d.delivery_tag))
            .map(|d| d.data))
    }

    pub(crate) async fn list_meta(
        self: &Arc<Self>,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let link = self.link().await?;
        // A concurrent listing holds some keys' names for a moment; after
        // `BUSY_WAIT`, what was found is listed.
        let (entries, _) = browse_settled(
            &link,
            &self.names.meta_index(),
            self.topology().registry_args(),
            |_| false,
        )
        .await?;
        let mut keys: Vec<String> = entries
            .into_iter()
            .map(|d| String::from_utf8_lossy(&d.data).into_owned())
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = self.get_meta(&key).await? {
                out.push((key, value));
            }
        }
        Ok(out)
    }
}

/// Browses `queue` until the browse was whole (no other browse held any of
/// its messages) or `enough` accepts what it found, looking again after a
/// short random pause for up to [`BUSY_WAIT`]; returns the last look's
/// messages, and whether that look was whole.
async fn browse_settled(
    link: &Link,
    queue: &str,
    args: FieldTable,
    enough: impl Fn(&[Delivery]) -> bool,
) -> Result<(Vec<Delivery>, bool)> {
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        let mut held = collect(link, queue, args.clone()).await?;
        let found = std::mem::take(&mut held.deliveries);
        let whole = held.whole;
        held.close().await;
        if whole || enough(&found) || Instant::now() >= deadline {
            return Ok((found, whole));
        }
        let cap = u64::try_from(BUSY_PAUSE.as_millis()).unwrap_or(25);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=cap))).await;
    }
}

#[async_trait::async_trait]
impl MetaStore for AmqpBackend {
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.put_meta(key, value).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_meta(key).await
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.list_meta(prefix).await
    }
}

/// Subscriptions are metadata, as on every backend; but the jobs a publish
/// creates are not keyed: a key here is two queues while the job waits and a
/// third for `unique_for` after (`unique.rs`), which for every job of every
/// event would fill the broker with queues. A publish whose confirms were
/// lost with its connection, tried again under its id, may create a job
/// twice; both carry the event's id (`docs/events.md`).
#[async_trait::async_trait]
impl jobsmith_core::Events for AmqpBackend {
    async fn put_subscription(&self, sub: &jobsmith_core::Subscription) -> Result<()> {
        jobsmith_core::MetaEvents(self).put_subscription(sub).await
    }

    async fn remove_subscription(&self, job: &str) -> Result<bool> {
        jobsmith_core::MetaEvents(self)
            .remove_subscription(job)
            .await
    }

    async fn subscriptions(&self) -> Result<Vec<jobsmith_core::Subscription>> {
        jobsmith_core::MetaEvents(self).subscriptions().await
    }

    fn keys_jobs(&self) -> bool {
        false
    }
}
