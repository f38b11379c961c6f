//! Finding and creating each jobsmith queue's family of SQS queues.
//!
//! A family is created when first used: the dead-letter queue, then the
//! level-0 queue with a redrive policy pointing at it, then the expired-jobs
//! counter; other priority levels when a job first needs them. One listing
//! of the family's names finds the queues that exist, whatever created
//! them, and only the others are created. Levels created by other
//! processes are found by listing the family's names, at most every
//! [`REFRESH`].

use crate::config::SqsConfig;
use crate::error::{from_sdk, is_missing_queue};
use crate::names::{Namer, Role};
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use jobsmith_core::lock::LockExt;
use jobsmith_core::Result;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a family's list of priority levels is read again from SQS.
pub(crate) const REFRESH: Duration = Duration::from_secs(10);

/// SQS's longest message retention: 14 days.
const MAX_RETENTION: u64 = 14 * 86_400;

/// The SQS queues of one jobsmith queue.
#[derive(Clone, Debug)]
pub(crate) struct Family {
    /// Level queue URLs, by level.
    pub(crate) levels: BTreeMap<i8, String>,
    /// The dead-letter queue's URL.
    pub(crate) dead: String,
    /// The dead-letter queue's ARN, for redrive policies.
    dead_arn: String,
    /// The expired-jobs counter's URL.
    pub(crate) expired: String,
    refreshed: Instant,
}

impl Family {
    /// Level queues, highest level first.
    pub(crate) fn levels_desc(&self) -> impl Iterator<Item = (i8, &String)> {
        self.levels.iter().rev().map(|(l, u)| (*l, u))
    }
}

/// What one listing found of a family.
#[derive(Debug, Default)]
struct Listed {
    levels: BTreeMap<i8, String>,
    dead: Option<String>,
    expired: Option<String>,
}

/// Whether `CreateQueue` refused because a queue of that name exists with
/// other attributes.
fn exists_otherwise<E, R>(e: &aws_sdk_sqs::error::SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    e.code()
        .is_some_and(|c| c.contains("QueueNameExists") || c.contains("QueueAlreadyExists"))
}

/// The families this backend has seen, by jobsmith queue name.
#[derive(Debug)]
pub(crate) struct Queues {
    client: Client,
    pub(crate) namer: Namer,
    fifo: bool,
    max_receives: u32,
    dead_retention: u64,
    families: Mutex<HashMap<String, Arc<Family>>>,
    /// One family is created at a time, so two tasks don't race to create it.
    creating: tokio::sync::Mutex<()>,
    /// Woken when this process adds a priority level, so idle reserves watch it too.
    pub(crate) levels_changed: tokio::sync::Notify,
}

impl Queues {
    pub(crate) fn new(client: Client, config: &SqsConfig) -> Self {
        Self {
            client,
            namer: Namer::new(&config.prefix, config.fifo),
            fifo: config.fifo,
            max_receives: config.max_receives,
            dead_retention: config
                .settings
                .dead_max_age
                .as_secs()
                .clamp(60, MAX_RETENTION),
            families: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            levels_changed: tokio::sync::Notify::new(),
        }
    }

    fn cached(&self, queue: &str) -> Option<Arc<Family>> {
        self.families.lock_unpoisoned().get(queue).cloned()
    }

    fn store(&self, queue: &str, family: Family) -> Arc<Family> {
        let family = Arc::new(family);
        self.families
            .lock_unpoisoned()
            .insert(queue.to_owned(), Arc::clone(&family));
        family
    }

    /// `queue`'s family, created when missing, its levels refreshed when stale.
    pub(crate) async fn family(&self, queue: &str) -> Result<Arc<Family>> {
        if let Some(f) = self.cached(queue) {
            if f.refreshed.elapsed() < REFRESH {
                return Ok(f);
            }
        }
        let _guard = self.creating.lock().await;
        if let Some(f) = self.cached(queue) {
            if f.refreshed.elapsed() < REFRESH {
                return Ok(f);
            }
            let mut f = (*f).clone();
            f.levels = self.list_levels(queue).await?;
            f.refreshed = Instant::now();
            if !f.levels.contains_key(&0) {
                let url = self
                    .ensure(queue, Role::Level(0), Some(&f.dead_arn))
                    .await?;
                f.levels.insert(0, url);
            }
            return Ok(self.store(queue, f));
        }
        // One listing finds what exists of the family; only what it lacks
        // is created (no `GetQueueUrl` per queue: three requests fewer for
        // each process and queue, which weigh on a short-lived process).
        let Listed {
            mut levels,
            dead,
            expired,
        } = self.list_family(queue).await?;
        let dead = match dead {
            Some(url) => url,
            None => self.create(queue, Role::Dead, None).await?,
        };
        let dead_arn = self.arn(&dead).await?;
        if let std::collections::btree_map::Entry::Vacant(slot) = levels.entry(0) {
            slot.insert(self.create(queue, Role::Level(0), Some(&dead_arn)).await?);
        }
        let expired = match expired {
            Some(url) => url,
            None => self.create(queue, Role::Expired, None).await?,
        };
        Ok(self.store(
            queue,
            Family {
                levels,
                dead,
                dead_arn,
                expired,
                refreshed: Instant::now(),
            },
        ))
    }

    /// `queue`'s family if it exists, without creating anything.
    pub(crate) async fn existing(&self, queue: &str) -> Result<Option<Arc<Family>>> {
        if self.cached(queue).is_some() {
            return self.family(queue).await.map(Some);
        }
        let name = self.namer.name(queue, Role::Level(0))?;
        if self.url(&name).await?.is_none() {
            return Ok(None);
        }
        self.family(queue).await.map(Some)
    }

    /// The URL of `queue`'s queue for `level`, created when missing.
    pub(crate) async fn level_url(&self, queue: &str, level: i8) -> Result<String> {
        let family = self.family(queue).await?;
        if let Some(url) = family.levels.get(&level) {
            return Ok(url.clone());
        }
        let _guard = self.creating.lock().await;
        let mut f = (*self.cached(queue).unwrap_or(family)).clone();
        if let Some(url) = f.levels.get(&level) {
            return Ok(url.clone());
        }
        let url = self
            .ensure(queue, Role::Level(level), Some(&f.dead_arn))
            .await?;
        f.levels.insert(level, url.clone());
        self.store(queue, f);
        self.levels_changed.notify_waiters();
        Ok(url)
    }

    /// Every SQS queue whose name starts with `start`: names and URLs.
    pub(crate) async fn list(&self, start: &str) -> Result<Vec<(String, String)>> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_queues()
                .queue_name_prefix(start)
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("ListQueues", e))?;
            for url in out.queue_urls() {
                if let Some(name) = url.rsplit('/').next() {
                    names.push((name.to_owned(), url.clone()));
                }
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(names);
            }
        }
    }

    async fn list_levels(&self, queue: &str) -> Result<BTreeMap<i8, String>> {
        Ok(self.list_family(queue).await?.levels)
    }

    /// The SQS queues of `queue`'s family that exist, from one listing of
    /// the names that start with its level-0 queue's.
    async fn list_family(&self, queue: &str) -> Result<Listed> {
        let start = self.namer.name(queue, Role::Level(0))?;
        let start = start.trim_end_matches(".fifo");
        let mut listed = Listed::default();
        for (name, url) in self.list(start).await? {
            match self.namer.parse(&name) {
                Some((q, Role::Level(l))) if q == queue => {
                    listed.levels.insert(l, url);
                }
                Some((q, Role::Dead)) if q == queue => listed.dead = Some(url),
                Some((q, Role::Expired)) if q == queue => listed.expired = Some(url),
                _ => {}
            }
        }
        Ok(listed)
    }

    async fn url(&self, name: &str) -> Result<Option<String>> {
        match self.client.get_queue_url().queue_name(name).send().await {
            Ok(out) => Ok(out.queue_url().map(str::to_owned)),
            Err(e) if is_missing_queue(&e) => Ok(None),
            Err(e) => Err(from_sdk("GetQueueUrl", e)),
        }
    }

    async fn arn(&self, url: &str) -> Result<String> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| from_sdk("GetQueueAttributes", e))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| jobsmith_core::Error::backend(format!("sqs: queue {url} has no ARN")))
    }

    /// The URL of `queue`'s queue for `role`, which is created when missing.
    async fn ensure(&self, queue: &str, role: Role, dead_arn: Option<&str>) -> Result<String> {
        let name = self.namer.name(queue, role)?;
        if let Some(url) = self.url(&name).await? {
            return Ok(url);
        }
        self.create(queue, role, dead_arn).await
    }

    /// Creates `queue`'s queue for `role`, which a listing did not show;
    /// its URL. A listing may miss a queue just created (on AWS, listings
    /// lag): `CreateQueue` with the same attributes then answers the
    /// existing queue's URL, and with others (another process's settings)
    /// refuses, and the queue is used by name as it is.
    async fn create(&self, queue: &str, role: Role, dead_arn: Option<&str>) -> Result<String> {
        let name = self.namer.name(queue, role)?;
        let mut req = self.client.create_queue().queue_name(&name);
        let fifo = self.fifo && role != Role::Expired;
        if fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        let retention = match role {
            Role::Dead => self.dead_retention,
            _ => MAX_RETENTION,
        };
        req = req.attributes(
            QueueAttributeName::MessageRetentionPeriod,
            retention.to_string(),
        );
        if let Some(arn) = dead_arn {
            let policy = serde_json::json!({
                "deadLetterTargetArn": arn,
                "maxReceiveCount": self.max_receives.to_string(),
            });
            req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if exists_otherwise(&e) => {
                if let Some(url) = self.url(&name).await? {
                    return Ok(url);
                }
                return Err(from_sdk("CreateQueue", e));
            }
            Err(e) => return Err(from_sdk("CreateQueue", e)),
        };
        tracing::info!(queue = %name, "created SQS queue");
        out.queue_url().map(str::to_owned).ok_or_else(|| {
            jobsmith_core::Error::backend(format!("sqs: CreateQueue {name} gave no URL"))
        })
    }
}
