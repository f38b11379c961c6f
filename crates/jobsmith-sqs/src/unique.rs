//! Idempotency keys in a DynamoDB table, shared by every process on a prefix.
//!
//! SQS has no conditional write, so it cannot say whether a key is queued,
//! running or completed. DynamoDB can: the table `<prefix>-keys` (or the
//! URL's `keys_table=`) holds one item per key held. The table is created
//! when a process first needs it (a keyed job, a metadata entry, or the
//! first outcome counts to flush):
//!
//! | attribute | value |
//! |---|---|
//! | `k` (hash key) | `<queue>\0<key>` |
//! | `job_id` | the id of the job that holds the key |
//! | `claimed_at` | when it was claimed, ms since the epoch |
//! | `completed_until` | once the job completed: until when the key stays held, ms |
//! | `purge_at` | with `completed_until`: DynamoDB's TTL attribute (seconds), for clean-up |
//!
//! A claim is a conditional `PutItem` (`attribute_not_exists(k) OR
//! completed_until < :now`); when it fails the item's `job_id` is the
//! existing job. Completion is an `UpdateItem`, freeing a `DeleteItem`, each
//! conditioned on the item still naming the job, so a late settlement of one
//! job never touches another job's hold.
//!
//! The same table holds the backend's metadata store (schedule states) in
//! one item, `k` = `"\0meta"` (no claim's key starts with NUL, as queue
//! names are not empty): each entry is a binary attribute named `m:<key>`,
//! written with an `UpdateItem` that sets that attribute alone, so writers
//! of different entries never overwrite each other, and read whole with one
//! consistent `GetItem`.
//!
//! It also holds each queue's processed and failed totals, shared by every
//! process, in one item per queue, `k` = `"\0counts\0<queue>"`, with number
//! attributes `processed` and `failed`: a flush adds a process's deltas with
//! one `UpdateItem` (`ADD processed :p, failed :f`, atomic), and `stats`
//! reads them with a consistent `BatchGetItem` (see `counts.rs`).

use crate::error::from_dynamodb;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::error::{BuildError, DisplayErrorContext};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use futures_util::future::join_all;
use jobsmith_core::{Error, JobId, Outcomes, Result, Timestamp};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long a process waits for a table it (or another process) created to become active.
const TABLE_WAIT: Duration = Duration::from_secs(120);

/// A claim that keeps meeting a hold that vanishes before it can be read
/// gives up after this many tries.
const CLAIM_TRIES: usize = 5;

/// The key table of one backend.
#[derive(Debug)]
pub(crate) struct Keys {
    client: Client,
    table: String,
    /// Set once the table is known to exist and be active.
    ready: OnceCell<()>,
}

/// One keyed job of an enqueue: (queue, key, job id).
pub(crate) type Claim<'a> = (&'a str, &'a str, &'a JobId);

impl Keys {
    pub(crate) fn new(client: Client, table: String) -> Self {
        Self {
            client,
            table,
            ready: OnceCell::new(),
        }
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// Holds each `(queue, key)` for its job, all at once; for each, `None`
    /// when the job now holds it, or the holder's id. On an error, the keys
    /// this call took are freed again.
    pub(crate) async fn claim_all(&self, claims: &[Claim<'_>]) -> Result<Vec<Option<JobId>>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_table().await?;
        let results = join_all(claims.iter().map(|(q, k, id)| self.claim(q, k, id))).await;
        if results.iter().all(Result::is_ok) {
            return Ok(results.into_iter().map(|r| r.unwrap_or(None)).collect());
        }
        let taken: Vec<Claim<'_>> = claims
            .iter()
            .zip(&results)
            .filter(|(_, r)| matches!(r, Ok(None)))
            .map(|(c, _)| *c)
            .collect();
        self.free_all(&taken).await;
        let err = results.into_iter().find_map(Result::err);
        Err(err.unwrap_or_else(|| Error::backend("dynamodb PutItem failed")))
    }

    /// Holds `key` for job `id`; or, when another job holds it, that job's id.
    pub(crate) async fn claim(&self, queue: &str, key: &str, id: &JobId) -> Result<Option<JobId>> {
        self.ensure_table().await?;
        let k = item_key(queue, key);
        for _ in 0..CLAIM_TRIES {
            let now = Timestamp::now().as_millis();
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("k", AttributeValue::S(k.clone()))
                .item("job_id", AttributeValue::S(id.to_string()))
                .item("claimed_at", number(now))
                .condition_expression("attribute_not_exists(k) OR completed_until < :now")
                .expression_attribute_values(":now", number(now))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let e = match put {
                Ok(_) => return Ok(None),
                Err(e) => e,
            };
            let Some(PutItemError::ConditionalCheckFailedException(failed)) = e.as_service_error()
            else {
                return Err(from_dynamodb("PutItem", e));
            };
            let holder = match failed.item().and_then(|item| live_holder(item, now)) {
                Some(h) => Some(h),
                None => self.holder(&k).await?,
            };
            match holder {
                // Our own claim, whose first answer was lost and retried.
                Some(h) if h == *id => return Ok(None),
                Some(h) => return Ok(Some(h)),
                // Freed between the write and the read: try again.
                None => {}
            }
        }
        Err(Error::backend(format!(
            "dynamodb PutItem: key `{key}` of queue `{queue}` kept changing hands"
        )))
    }

    /// The job holding `key` of `queue` now, if any, read consistently.
    pub(crate) async fn peek(&self, queue: &str, key: &str) -> Result<Option<JobId>> {
        self.ensure_table().await?;
        self.holder(&item_key(queue, key)).await
    }

    /// The job holding `k` now, read consistently.
    async fn holder(&self, k: &str) -> Result<Option<JobId>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("k", AttributeValue::S(k.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_dynamodb("GetItem", e))?;
        Ok(out
            .item()
            .and_then(|item| live_holder(item, Timestamp::now().as_millis())))
    }

    /// Frees `key` if job `id` holds it (it died, expired, or its enqueue failed).
    pub(crate) async fn free(&self, queue: &str, key: &str, id: &JobId) -> Result<()> {
        self.ensure_table().await?;
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("k", AttributeValue::S(item_key(queue, key)))
            .condition_expression("job_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(from_dynamodb("DeleteItem", e)),
        }
    }

    /// Frees keys on a path that has already settled its jobs: a failure is
    /// logged (the key stays held), not returned.
    pub(crate) async fn free_all(&self, claims: &[Claim<'_>]) {
        let results = join_all(claims.iter().map(|(q, k, id)| self.free(q, k, id))).await;
        for ((queue, key, id), r) in claims.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(
                    queue = *queue, key = %jobsmith_core::printable(key),
                    job = %jobsmith_core::printable(id.as_str()), error = %e,
                    "could not free an idempotency key; it stays held until deleted from the key table"
                );
            }
        }
    }

    /// Marks `key` completed by `id`: held for `unique_for` more. A key held
    /// by another job is left alone; a key with no item (a job enqueued
    /// before the table existed) is written.
    pub(crate) async fn complete(
        &self,
        queue: &str,
        key: &str,
        id: &JobId,
        unique_for: Duration,
    ) -> Result<()> {
        self.ensure_table().await?;
        let now = Timestamp::now();
        let until = now.plus(unique_for).as_millis();
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("k", AttributeValue::S(item_key(queue, key)))
            .update_expression(
                "SET job_id = :id, claimed_at = if_not_exists(claimed_at, :now), \
                 completed_until = :until, purge_at = :purge",
            )
            .condition_expression("attribute_not_exists(k) OR job_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
            .expression_attribute_values(":now", number(now.as_millis()))
            .expression_attribute_values(":until", number(until))
            .expression_attribute_values(":purge", number(until / 1000 + 1))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(from_dynamodb("UpdateItem", e)),
        }
    }

    /// Creates the table when missing (on-demand billing, TTL on
    /// `purge_at`) and waits until it is active; once per process.
    async fn ensure_table(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let described = self
                    .client
                    .describe_table()
                    .table_name(&self.table)
                    .send()
                    .await;
                match described {
                    Ok(out)
                        if out.table().and_then(|t| t.table_status())
                            == Some(&TableStatus::Active) =>
                    {
                        Ok(())
                    }
                    Ok(_) => self.wait_active().await,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_not_found_exception()) =>
                    {
                        self.create_table().await
                    }
                    Err(e) => Err(from_dynamodb("DescribeTable", e)),
                }
            })
            .await?;
        Ok(())
    }

    /// Waits until the table is active.
    async fn wait_active(&self) -> Result<()> {
        self.client
            .wait_until_table_exists()
            .table_name(&self.table)
            .wait(TABLE_WAIT)
            .await
            .map_err(|e| {
                let message = format!(
                    "dynamodb key table `{}` did not become active: {}",
                    self.table,
                    DisplayErrorContext(&e)
                );
                Error::backend_caused(message, e)
            })?;
        Ok(())
    }

    /// Creates the table and turns its TTL on; when another process is
    /// creating it at the same time, waits for that one instead.
    async fn create_table(&self) -> Result<()> {
        let build = |e: BuildError| Error::backend_caused(format!("dynamodb: {e}"), e);
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("k")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("k")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                return self.wait_active().await;
            }
            Err(e) => return Err(from_dynamodb("CreateTable", e)),
        }
        self.wait_active().await?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("purge_at")
                    .enabled(true)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(|e| from_dynamodb("UpdateTimeToLive", e))?;
        Ok(())
    }

    /// Deletes the table (test clean-up); whether it existed.
    pub(crate) async fn delete_table(&self) -> Result<bool> {
        match self
            .client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(from_dynamodb("DeleteTable", e)),
        }
    }
}

/// The hash key of the item holding the metadata store.
const META_ITEM: &str = "\u{0}meta";

impl Keys {
    /// Stores a metadata entry.
    pub(crate) async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.ensure_table().await?;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("k", AttributeValue::S(META_ITEM.to_owned()))
            .update_expression("SET #m = :v")
            .expression_attribute_names("#m", format!("m:{key}"))
            .expression_attribute_values(
                ":v",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(value)),
            )
            .send()
            .await
            .map_err(|e| from_dynamodb("UpdateItem", e))?;
        Ok(())
    }

    /// Every metadata entry whose key starts with `prefix`, sorted by key.
    pub(crate) async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.ensure_table().await?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("k", AttributeValue::S(META_ITEM.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_dynamodb("GetItem", e))?;
        let mut found: Vec<(String, Vec<u8>)> = out
            .item()
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix("m:")?;
                let AttributeValue::B(bytes) = value else {
                    return None;
                };
                key.starts_with(prefix)
                    .then(|| (key.to_owned(), bytes.as_ref().to_vec()))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}

/// At most this many keys per `BatchGetItem` (DynamoDB's limit).
const BATCH_GET: usize = 100;

/// A `BatchGetItem` asks again for the keys DynamoDB left unprocessed, this many times in all.
const BATCH_GET_TRIES: u32 = 5;

impl Keys {
    /// Adds `o` to the shared totals of `queue`, atomically.
    pub(crate) async fn add_counts(&self, queue: &str, o: Outcomes) -> Result<()> {
        self.ensure_table().await?;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("k", AttributeValue::S(counts_key(queue)))
            // Both names are reserved words in DynamoDB expressions.
            .update_expression("ADD #p :p, #f :f")
            .expression_attribute_names("#p", "processed")
            .expression_attribute_names("#f", "failed")
            .expression_attribute_values(":p", number(o.processed))
            .expression_attribute_values(":f", number(o.failed))
            .send()
            .await
            .map_err(|e| from_dynamodb("UpdateItem", e))?;
        Ok(())
    }

    /// The shared totals of each of `queues`, read consistently: zero where
    /// nothing was counted yet (no item, or no table, which is not created
    /// for a read).
    pub(crate) async fn read_counts(&self, queues: &[String]) -> Result<Vec<Outcomes>> {
        let build = |e: BuildError| Error::backend_caused(format!("dynamodb: {e}"), e);
        let mut wanted: Vec<String> = queues.iter().map(|q| counts_key(q)).collect();
        // A key may be asked for once per request.
        wanted.sort();
        wanted.dedup();
        let mut found: HashMap<String, Outcomes> = HashMap::new();
        for chunk in wanted.chunks(BATCH_GET) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|k| HashMap::from([("k".to_owned(), AttributeValue::S(k.clone()))]))
                .collect();
            for attempt in 0..BATCH_GET_TRIES {
                if keys.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(build)?;
                let out = match self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_not_found_exception()) =>
                    {
                        return Ok(vec![Outcomes::default(); queues.len()]);
                    }
                    Err(e) => return Err(from_dynamodb("BatchGetItem", e)),
                };
                let items = out.responses().and_then(|r| r.get(&self.table));
                for item in items.into_iter().flatten() {
                    if let Some(AttributeValue::S(k)) = item.get("k") {
                        found.insert(
                            k.clone(),
                            Outcomes {
                                processed: number_of(item, "processed"),
                                failed: number_of(item, "failed"),
                            },
                        );
                    }
                }
                keys = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
            }
            if !keys.is_empty() {
                return Err(Error::backend(format!(
                    "dynamodb BatchGetItem left {} counter items of table `{}` unread after {BATCH_GET_TRIES} tries",
                    keys.len(),
                    self.table
                )));
            }
        }
        Ok(queues
            .iter()
            .map(|q| found.get(&counts_key(q)).copied().unwrap_or_default())
            .collect())
    }
}

/// The hash key of `queue`'s outcome totals; no claim's key starts with NUL.
fn counts_key(queue: &str) -> String {
    format!("\u{0}counts\u{0}{queue}")
}

/// A number attribute of `item`, 0 when missing.
fn number_of(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The hash key of `key` in `queue`; NUL cannot occur in a queue name.
fn item_key(queue: &str, key: &str) -> String {
    format!("{queue}\u{0}{key}")
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// The job an item names, unless its completion hold ran out by `now`.
fn live_holder(item: &HashMap<String, AttributeValue>, now: u64) -> Option<JobId> {
    let until = item
        .get("completed_until")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<u64>().ok());
    if until.is_some_and(|until| until < now) {
        return None;
    }
    match item.get("job_id") {
        Some(AttributeValue::S(id)) => Some(JobId::from(id.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_that_ran_out_holds_nothing() {
        let mut item = HashMap::new();
        item.insert("job_id".to_owned(), AttributeValue::S("j1".into()));
        assert_eq!(live_holder(&item, 10), Some(JobId::from("j1")));
        item.insert("completed_until".to_owned(), number(20));
        assert_eq!(live_holder(&item, 20), Some(JobId::from("j1")));
        assert_eq!(live_holder(&item, 21), None);
    }
}
