//! The metadata store (schedule states), kept in RabbitMQ itself.
//!
//! Entry `key` is the queue `p._meta.<hash>`, declared with `x-max-length: 1`
//! (overflow `drop-head`): a put publishes the value, stamped with the time
//! in the header `x-jobsmith-at`, and the broker drops the older value. A get
//! browses the queue without acknowledging (the broker puts the message
//! back when the browsing channel closes) and keeps the newest value found:
//! a put that lands while another process browses leaves two values for a
//! moment, and the stamp tells which is current. While one process browses,
//! another sees the queue empty; a get that finds nothing tries again
//! briefly before it answers "none". The index `p._meta` holds each key's
//! name, once per key and process start, for listing.

use crate::dead::collect;
use crate::error::from_lapin;
use crate::inner::Inner;
use crate::message::{self, header_u64};
use jobsmith_core::{Result, Timestamp};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::sync::Arc;
use std::time::Duration;

/// The header holding when a value was written, ms since the epoch.
const AT: &str = "x-jobsmith-at";

/// How many times a get that finds nothing looks again, and how long apart.
const EMPTY_TRIES: u32 = 3;
const EMPTY_PAUSE: Duration = Duration::from_millis(20);

impl Inner {
    pub(crate) async fn put_meta(self: &Arc<Self>, key: &str, value: &[u8]) -> Result<()> {
        let link = self.link().await?;
        let admin = link.admin().await?;
        let queue = self.names.meta(key);
        admin
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                self.topology().meta_args(),
            )
            .await
            .map_err(from_lapin)?;
        let mut m = message::to_queue(queue, value.to_vec());
        let mut headers = FieldTable::default();
        let now = i64::try_from(Timestamp::now().as_millis()).unwrap_or(i64::MAX);
        headers.insert(AT.into(), AMQPValue::LongLongInt(now));
        m.props = m.props.with_headers(headers);
        let mut out = vec![m];
        let index = !self.lock().meta_registered.contains(key);
        if index {
            admin
                .queue_declare(
                    self.names.meta_index().into(),
                    QueueDeclareOptions::durable(),
                    self.topology().registry_args(),
                )
                .await
                .map_err(from_lapin)?;
            out.push(message::to_queue(
                self.names.meta_index(),
                key.as_bytes().to_vec(),
            ));
        }
        message::publish_confirmed(&admin, out).await?;
        if index {
            self.lock().meta_registered.insert(key.to_owned());
        }
        Ok(())
    }

    pub(crate) async fn get_meta(self: &Arc<Self>, key: &str) -> Result<Option<Vec<u8>>> {
        let link = self.link().await?;
        let queue = self.names.meta(key);
        for attempt in 0..EMPTY_TRIES {
            let (ch, found) = collect(&link, &queue, self.topology().meta_args()).await?;
            let _ = ch.close(200, "browse done".into()).await;
            let newest = found
                .into_iter()
                .max_by_key(|d| (header_u64(&d.properties, AT).unwrap_or(0), d.delivery_tag));
            if let Some(d) = newest {
                return Ok(Some(d.data));
            }
            if attempt + 1 < EMPTY_TRIES {
                tokio::time::sleep(EMPTY_PAUSE).await;
            }
        }
        Ok(None)
    }

    pub(crate) async fn list_meta(
        self: &Arc<Self>,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let link = self.link().await?;
        let (ch, entries) = collect(
            &link,
            &self.names.meta_index(),
            self.topology().registry_args(),
        )
        .await?;
        let _ = ch.close(200, "browse done".into()).await;
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
