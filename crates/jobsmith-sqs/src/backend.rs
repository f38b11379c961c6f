//! [`SqsBackend`]: the [`Backend`] contract on SQS queues.

use crate::calls::{self, whole_seconds_up, Send};
use crate::config::SqsConfig;
use crate::dead_sizes::Sizes;
use crate::inbox::Inbox;
use crate::inner::{by_url, Inner};
use crate::leases::Leases;
use crate::moves::Moves;
use crate::names::priority_level;
use crate::queues::Queues;
use crate::unique::{Claim, Keys};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::Client;
use jobsmith_core::{
    settle_by_kind, Backend, DeadLetters, Delivery, Envelope, Error, Inspect, JobId, Lease,
    LeaseStatus, MetaStore, Migrate, Outcome, QueueErrors, Result, Tally,
};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a worker waits for a full `DeleteMessageBatch` (ten receipts)
/// before it settles fewer ([`Backend::settle_batching`]).
const SETTLE_LINGER: Duration = Duration::from_millis(20);

/// How often a worker samples queue depth by default ([`Backend::depth_sample_every`]).
const DEPTH_SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Jobs on AWS SQS. Clones share one client and one view of the queues.
#[derive(Clone)]
pub struct SqsBackend {
    pub(crate) inner: Arc<Inner>,
    pub(crate) moves: Arc<Moves>,
}

/// The SQS client for `config`; see [`sdk_config`].
pub(crate) async fn client(config: &SqsConfig) -> Client {
    Client::new(&sdk_config(config).await)
}

/// The SDK configuration for `config`, shared by the SQS and DynamoDB
/// clients: its region and endpoint, credentials from the standard AWS chain
/// (placeholders for a loopback endpoint when the environment names none),
/// quick retries so a lost connection is reported within seconds, and every
/// request bounded, retries included, by the `call_timeout` setting, so an
/// endpoint that accepts connections and never answers fails the call
/// rather than hanging it (a receive adds its long poll's wait to the bound:
/// see `calls::receive`).
async fn sdk_config(config: &SqsConfig) -> aws_config::SdkConfig {
    let call_timeout = config.call_timeout();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(1)),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(call_timeout.min(Duration::from_secs(3)))
                .operation_timeout(call_timeout)
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
        if is_loopback(endpoint) && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "jobsmith-loopback-endpoint",
            ));
        }
    }
    loader.load().await
}

fn is_loopback(endpoint: &str) -> bool {
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

impl SqsBackend {
    /// Connects with an `sqs://<region>?prefix=..&endpoint=..` URL; see [`SqsConfig`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(SqsConfig::from_url(url)?).await
    }

    /// Connects with a configuration.
    pub async fn connect_with(config: SqsConfig) -> Result<Self> {
        config.check_max_payload()?;
        config.check_prefix()?;
        config.check_keys_table()?;
        let sdk = sdk_config(&config).await;
        let client = Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .interceptor(crate::requests::CountRequests)
                .build(),
        );
        let queues = Queues::new(client.clone(), &config);
        let keys = Keys::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            config.keys_table_name(),
        );
        let inner = Arc::new(Inner {
            client,
            config,
            queues,
            leases: Leases::default(),
            keys,
            inbox: Inbox::default(),
            interrupt: jobsmith_core::Interrupt::default(),
            dead_sizes: Sizes::default(),
            lost_receives: std::sync::Mutex::default(),
            tally: Tally::new(),
            flushing: tokio::sync::Mutex::new(()),
            errors: QueueErrors::new(),
        });
        tokio::spawn(jobsmith_core::flush_periodically(
            Arc::downgrade(&inner),
            |i| &i.tally,
            |i| async move { i.flush_counts().await },
        ));
        Ok(Self {
            inner,
            moves: Arc::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SqsConfig {
        &self.inner.config
    }

    /// The SDK client, for what the backend does not do (tests, tooling).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The URL of `queue`'s SQS queue at priority level 0, created when missing.
    pub async fn queue_url(&self, queue: &str) -> Result<String> {
        self.inner.queues.level_url(queue, 0).await
    }

    /// Deletes the DynamoDB table of idempotency keys (test clean-up);
    /// whether it existed.
    pub async fn delete_key_table(&self) -> Result<bool> {
        self.inner.keys.delete_table().await
    }

    /// The name of the DynamoDB table of idempotency keys.
    pub fn key_table(&self) -> &str {
        self.inner.keys.table()
    }

    /// Deletes every SQS queue under this backend's prefix (test clean-up).
    pub async fn delete_all_queues(&self) -> Result<usize> {
        let start = self.inner.queues.namer.family_start();
        let found = self.inner.queues.list(&start).await?;
        for (_, url) in &found {
            self.inner
                .client
                .delete_queue()
                .queue_url(url)
                .send()
                .await
                .map_err(|e| crate::error::from_sdk("DeleteQueue", e))?;
        }
        Ok(found.len())
    }
}

#[async_trait::async_trait]
impl Backend for SqsBackend {
    fn name(&self) -> &'static str {
        "sqs"
    }

    fn server(&self) -> String {
        self.inner.config.server()
    }

    fn max_payload(&self) -> usize {
        self.inner.limit()
    }

    async fn enqueue(&self, jobs: Vec<Envelope>) -> Result<Vec<JobId>> {
        let inner = &self.inner;
        let limit = inner.limit();
        let mut prepared = Vec::with_capacity(jobs.len());
        for mut env in jobs {
            env.attempt = 0;
            let bytes = env.to_bytes();
            if bytes.len() > limit {
                return Err(Error::PayloadTooLarge {
                    size: bytes.len(),
                    limit,
                });
            }
            prepared.push((env, String::from_utf8(bytes).unwrap_or_default()));
        }
        let verdicts = claim_keys(&inner.keys, &prepared).await?;
        let mut ids = Vec::with_capacity(prepared.len());
        // Per target (queue, level): the jobs, and their messages in the same order.
        let mut groups: Vec<((String, i8), Vec<Envelope>, Vec<Send>)> = Vec::new();
        for ((env, body), existing) in prepared.into_iter().zip(verdicts) {
            if let Some(existing) = existing {
                ids.push(existing);
                continue;
            }
            ids.push(env.id.clone());
            let target = (env.queue.clone(), priority_level(env.priority));
            let send = inner.send_of(&env, body, true);
            match groups.iter_mut().find(|(t, _, _)| *t == target) {
                Some((_, envs, sends)) => {
                    envs.push(env);
                    sends.push(send);
                }
                None => groups.push((target, vec![env], vec![send])),
            }
        }
        for n in 0..groups.len() {
            let ((queue, level), _, sends) = &mut groups[n];
            let sends = std::mem::take(sends);
            let sent = async {
                let url = inner.queues.level_url(queue, *level).await?;
                calls::send(&inner.client, &url, sends, inner.budget()).await
            };
            if let Err(e) = sent.await {
                let unsent: Vec<Claim<'_>> = groups[n..]
                    .iter()
                    .flat_map(|(_, envs, _)| envs)
                    .filter_map(|env| {
                        let k = env.idempotency_key.as_deref()?;
                        Some((env.queue.as_str(), k, &env.id))
                    })
                    .collect();
                inner.keys.free_all(&unsent).await;
                return Err(e);
            }
        }
        Ok(ids)
    }

    async fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        self.inner.reserve(queues, max, lease, wait).await
    }

    async fn settle(&self, outcomes: &[Outcome]) -> Vec<Result<LeaseStatus>> {
        settle_by_kind(self, outcomes).await
    }

    async fn start_reserving(&self, queues: &[String], capacity: usize) -> Result<()> {
        self.inner.inbox.start_reserving(queues, capacity);
        Ok(())
    }

    async fn stop_reserving(&self, queues: &[String]) -> Result<()> {
        self.inner.stop_reserving(queues).await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.inner.extend(leases, lease).await
    }

    fn prefetches(&self) -> bool {
        // Background receives fill the inbox ahead of reserves.
        true
    }

    fn settle_batching(&self) -> Option<(usize, Duration)> {
        // A delete takes ten receipts: at the worker's defaults, settling what
        // had finished sent batches of about seven (0.146 deletes per job).
        Some((10, SETTLE_LINGER))
    }

    fn depth_sample_every(&self) -> Duration {
        // Each sample is a `GetQueueAttributes` per level queue, dead-letter
        // queue and expired counter of each queue: every 5 s, 36 billed
        // requests a minute for one queue, two thirds of an idle worker's.
        // The alerts on these gauges hold for minutes (docs/alerts).
        DEPTH_SAMPLE_EVERY
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush_counts().await
    }

    async fn key_holder(&self, queue: &str, key: &str) -> Result<Option<JobId>> {
        self.inner.keys.peek(queue, key).await
    }

    fn as_dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }

    fn as_inspect(&self) -> Option<&dyn Inspect> {
        Some(self)
    }

    fn as_meta_store(&self) -> Option<&dyn MetaStore> {
        Some(self)
    }

    fn as_migrate(&self) -> Option<&dyn Migrate> {
        Some(self)
    }
}

impl Inner {
    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        let (mut statuses, by_url) = by_url(leases, |l| self.leases.check(l));
        let secs = whole_seconds_up(lease);
        for (url, entries) in by_url {
            let receipts: Vec<&str> = entries.iter().map(|(_, r)| r.as_str()).collect();
            let sent = Instant::now();
            let ok = calls::change_visibility(&self.client, &url, &receipts, secs).await?;
            for ((i, _), ok) in entries.iter().zip(ok) {
                if ok {
                    self.leases
                        .extended(&leases[*i], sent + Duration::from_secs(secs));
                } else {
                    self.leases.forget(&leases[*i]);
                    statuses[*i] = LeaseStatus::Lost;
                }
            }
        }
        Ok(statuses)
    }
}

/// Claims the idempotency keys of an enqueue's jobs: for each job, `None`
/// to send it, or the id of the job that holds its key. A key that occurs
/// twice in the batch is claimed once; the later jobs get the first's answer.
async fn claim_keys(keys: &Keys, prepared: &[(Envelope, String)]) -> Result<Vec<Option<JobId>>> {
    let mut claims: Vec<Claim<'_>> = Vec::new();
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut slots: Vec<Option<(usize, bool)>> = Vec::with_capacity(prepared.len());
    for (env, _) in prepared {
        let Some(k) = env.idempotency_key.as_deref() else {
            slots.push(None);
            continue;
        };
        match first.entry((env.queue.as_str(), k)) {
            Entry::Occupied(o) => slots.push(Some((*o.get(), false))),
            Entry::Vacant(v) => {
                v.insert(claims.len());
                slots.push(Some((claims.len(), true)));
                claims.push((env.queue.as_str(), k, &env.id));
            }
        }
    }
    let held = keys.claim_all(&claims).await?;
    Ok(slots
        .into_iter()
        .map(|slot| match slot {
            None => None,
            Some((c, true)) => held[c].clone(),
            Some((c, false)) => Some(held[c].clone().unwrap_or_else(|| claims[c].2.clone())),
        })
        .collect())
}

impl fmt::Debug for SqsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsBackend")
            .field("region", &self.inner.config.region)
            .field("prefix", &self.inner.config.prefix)
            .field("endpoint", &self.inner.config.endpoint)
            .field("fifo", &self.inner.config.fifo)
            .finish_non_exhaustive()
    }
}
