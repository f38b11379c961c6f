//! [`SqsBackend`]: the [`Backend`] contract on SQS queues.

use crate::calls::{self, whole_seconds_up, Send};
use crate::codec::{self, Outgoing};
use crate::config::{SqsConfig, SQS_MESSAGE_LIMIT};
use crate::dead;
use crate::inbox::{Inbox, Received};
use crate::keys::{Claim, Keys};
use crate::leases::{Held, Leases, SETTLE_MARGIN};
use crate::names::{priority_level, Role};
use crate::queues::Queues;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use futures_util::future::join_all;
use jobsmith_core::{
    Backend, DeadJob, Delivery, Envelope, Error, JobId, Lease, LeaseStatus, Malformed, QueueStats,
    Result, Tally, Timestamp,
};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A job is handed out up to this long before it is due: SQS delays count
/// whole seconds, so a job due in 1.4 s is sent with a 1 s delay and held
/// here for the rest.
const EARLY: Duration = Duration::from_secs(1);

/// Per SQS queue URL: items with the index of their lease in a request.
type ByUrl<T> = BTreeMap<String, Vec<(usize, T)>>;

/// Held messages by the SQS queue they came from, with their index in a request.
type HeldByQueue = ByUrl<Held>;

/// Jobs on AWS SQS. Clones share one client and one view of the queues.
#[derive(Clone)]
pub struct SqsBackend {
    inner: Arc<Inner>,
    moves: Arc<crate::migrate::Moves>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) config: SqsConfig,
    pub(crate) queues: Queues,
    pub(crate) leases: Leases,
    pub(crate) keys: Keys,
    pub(crate) inbox: Inbox,
    /// Dead-letter queue sizes, so a burial reads them from SQS only now and then.
    pub(crate) dead_sizes: dead::Sizes,
    /// Receives whose answer was lost: (queue URL, from, to) in ms since the epoch.
    lost_receives: std::sync::Mutex<Vec<(String, u64, u64)>>,
    /// Outcome counts not yet added to the shared totals (see `counts.rs`).
    pub(crate) tally: Tally,
    /// Serialises flushing the tally with reading the totals, so a read
    /// never misses counts another task of this process is flushing.
    pub(crate) flushing: tokio::sync::Mutex<()>,
}

/// The SQS client for `config`; see [`sdk_config`].
pub(crate) async fn client(config: &SqsConfig) -> Client {
    Client::new(&sdk_config(config).await)
}

/// The SDK configuration for `config`, shared by the SQS and DynamoDB
/// clients: its region and endpoint, credentials from the standard AWS chain
/// (placeholders for a loopback endpoint when the environment names none),
/// and quick retries so a lost connection is reported within seconds.
async fn sdk_config(config: &SqsConfig) -> aws_config::SdkConfig {
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
                .connect_timeout(Duration::from_secs(3))
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
        config.check_prefix()?;
        config.check_keys_table()?;
        let sdk = sdk_config(&config).await;
        let client = Client::new(&sdk);
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
            dead_sizes: dead::Sizes::default(),
            lost_receives: std::sync::Mutex::default(),
            tally: Tally::new(),
            flushing: tokio::sync::Mutex::new(()),
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

/// The attempt count a received message's body carries, plus its receives.
pub(crate) fn receive_count(m: &Message) -> u32 {
    codec::system_number(
        m.attributes(),
        &MessageSystemAttributeName::ApproximateReceiveCount,
    )
    .and_then(|n| u32::try_from(n).ok())
    .unwrap_or(1)
}

/// What to do with one received message.
enum Incoming {
    /// Hand it out (now, or when it comes due within a second).
    Deliver(Box<Received>),
    /// Its TTL passed: delete it and count it.
    Expired { receipt: String, env: Box<Envelope> },
    /// Due more than a second from now (delays past 15 minutes): send it
    /// again with a new delay, delete this copy.
    Redelay {
        receipt: String,
        body: String,
        delay: u64,
    },
}

impl Inner {
    pub(crate) fn limit(&self) -> usize {
        self.config.limit()
    }

    /// A batch call's total size budget.
    pub(crate) fn budget(&self) -> usize {
        self.limit().max(SQS_MESSAGE_LIMIT)
    }

    fn fifo_ids(&self, env: &Envelope, first: bool) -> Option<(String, String)> {
        if !self.config.fifo {
            return None;
        }
        let group = env
            .idempotency_key
            .clone()
            .unwrap_or_else(|| env.id.to_string());
        let dedup = match (&env.idempotency_key, first) {
            (Some(k), true) => k.clone(),
            _ => format!("{}-{}", env.id, fastrand::u64(..)),
        };
        Some((fifo_safe(&group), fifo_safe(&dedup)))
    }

    fn send_of(&self, env: &Envelope, body: String, first: bool) -> Send {
        let delay = delay_for(env.run_at);
        Send {
            out: Outgoing::text(body),
            delay,
            fifo: self.fifo_ids(env, first),
        }
    }

    /// Receives from `url`, remembering a receive whose answer was lost:
    /// SQS may have handed it messages, which come back later with one
    /// receive too many on their count.
    async fn receive(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: u64,
    ) -> Result<(Vec<Message>, Instant)> {
        let from = Timestamp::now().as_millis();
        let got = calls::receive(&self.client, url, max, wait, visibility).await;
        if let Err(e) = &got {
            if e.is_transient() {
                let to = Timestamp::now().as_millis();
                let mut lost = self
                    .lost_receives
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let horizon = to.saturating_sub(13 * 3_600_000);
                lost.retain(|(_, _, t)| *t > horizon);
                if lost.len() < 4096 {
                    lost.push((url.to_owned(), from.saturating_sub(1000), to + 1000));
                }
            }
        }
        got
    }

    /// Whether a message's first receive was one of this process's lost receives.
    fn first_receive_lost(&self, url: &str, m: &Message) -> bool {
        let Some(first) = codec::system_number(
            m.attributes(),
            &MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
        ) else {
            return false;
        };
        self.lost_receives
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|(u, from, to)| u == url && (*from..=*to).contains(&first))
    }

    fn classify(
        &self,
        queue: &str,
        level: i8,
        url: &str,
        m: Message,
        deadline: Instant,
        now: Timestamp,
    ) -> Option<Incoming> {
        let receipt = m.receipt_handle()?.to_owned();
        let raw = codec::decode_body(m.body().unwrap_or(""), m.message_attributes());
        let mut rc = receive_count(&m);
        if rc >= 2 && self.first_receive_lost(url, &m) {
            rc -= 1;
        }
        let payload = match Envelope::from_bytes(&raw) {
            Ok(mut env) => {
                if env.is_expired(now) {
                    return Some(Incoming::Expired {
                        receipt,
                        env: Box::new(env),
                    });
                }
                if env.run_at > now.plus(EARLY) {
                    return Some(Incoming::Redelay {
                        receipt,
                        body: String::from_utf8(raw).unwrap_or_default(),
                        delay: delay_for(env.run_at),
                    });
                }
                env.attempt = env.attempt.saturating_add(rc);
                Ok(env)
            }
            Err(e) => Err(Malformed {
                raw,
                reason: format!("payload is not a job envelope: {e}"),
            }),
        };
        let (id, due) = match &payload {
            Ok(env) => (env.id.clone(), env.run_at),
            Err(_) => (JobId::from(m.message_id().unwrap_or_default()), now),
        };
        Some(Incoming::Deliver(Box::new(Received::new(
            queue.to_owned(),
            level,
            url.to_owned(),
            receipt,
            id,
            payload,
            due,
            deadline,
        ))))
    }

    /// Sorts received messages: deliverable ones are returned, expired ones
    /// are deleted and counted, far-off ones are delayed again.
    async fn sort_received(
        &self,
        queue: &str,
        level: i8,
        url: &str,
        messages: Vec<Message>,
        sent: Instant,
        visibility: u64,
    ) -> Result<Vec<Received>> {
        let now = Timestamp::now();
        let deadline = sent + Duration::from_secs(visibility);
        let mut out = Vec::new();
        let mut expired = Vec::new();
        let mut redelay = Vec::new();
        let mut duplicates = Vec::new();
        for m in messages {
            if self.import_duplicate(queue, &m).await? {
                // A second copy of a migrated job (see `migrate.rs`): never run.
                duplicates.extend(m.receipt_handle().map(str::to_owned));
                continue;
            }
            match self.classify(queue, level, url, m, deadline, now) {
                Some(Incoming::Deliver(r)) => out.push(*r),
                Some(Incoming::Expired { receipt, env }) => expired.push((receipt, env)),
                Some(Incoming::Redelay {
                    receipt,
                    body,
                    delay,
                }) => redelay.push((receipt, body, delay)),
                None => {}
            }
        }
        if !duplicates.is_empty() {
            let receipts: Vec<&str> = duplicates.iter().map(String::as_str).collect();
            calls::delete(&self.client, url, &receipts).await?;
        }
        if !redelay.is_empty() && self.config.fifo {
            // FIFO queues take no per-message delay: hide the message until
            // due instead. SQS counts each such hold as a receive.
            for (receipt, _, delay) in &redelay {
                let secs = (*delay).max(1);
                calls::change_visibility(&self.client, url, &[receipt.as_str()], secs).await?;
            }
        } else if !redelay.is_empty() {
            let (receipts, sends): (Vec<String>, Vec<Send>) = redelay
                .into_iter()
                .map(|(receipt, body, delay)| {
                    let send = Send {
                        out: Outgoing::text(body),
                        delay,
                        fifo: None,
                    };
                    (receipt, send)
                })
                .unzip();
            calls::send(&self.client, url, sends, self.budget()).await?;
            let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
            calls::delete(&self.client, url, &receipts).await?;
        }
        if !expired.is_empty() {
            let receipts: Vec<&str> = expired.iter().map(|(r, _)| r.as_str()).collect();
            let deleted = calls::delete(&self.client, url, &receipts).await?;
            let n = deleted.iter().filter(|ok| **ok).count();
            let freed: Vec<Claim<'_>> = expired
                .iter()
                .zip(&deleted)
                .filter(|(_, ok)| **ok)
                .filter_map(|((_, env), _)| {
                    let k = env.idempotency_key.as_deref()?;
                    Some((queue, k, &env.id))
                })
                .collect();
            self.keys.free_all(&freed).await;
            self.count_expired(queue, n).await?;
        }
        Ok(out)
    }

    /// Adds `n` to `queue`'s expired count: one small message each in its counter queue.
    async fn count_expired(&self, queue: &str, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let family = self.queues.family(queue).await?;
        let sends: Vec<Send> = (0..n)
            .map(|_| Send {
                out: Outgoing::text("1".to_owned()),
                delay: 0,
                fifo: None,
            })
            .collect();
        calls::send(&self.client, &family.expired, sends, self.budget()).await
    }

    /// Receives once from each level of `queues`, highest first, until `max`
    /// are due; stops at a level that gave a full batch (more may wait there,
    /// and lower levels must not pass it). The messages go to the inbox.
    /// One receive per level keeps batches small, so a worker's receives and
    /// its acks overlap instead of taking turns.
    async fn sweep(&self, queues: &[String], max: usize, visibility: u64) -> Result<()> {
        for queue in queues {
            let family = self.queues.family(queue).await?;
            for (level, url) in family.levels_desc() {
                let need = max.saturating_sub(self.inbox.due_count(queues, Timestamp::now()));
                if need == 0 {
                    return Ok(());
                }
                let (msgs, sent) = self.receive(url, need, Duration::ZERO, visibility).await?;
                let full = msgs.len() >= need.min(calls::BATCH);
                let got = self
                    .sort_received(queue, level, url, msgs, sent, visibility)
                    .await?;
                self.inbox.put(got);
                if full {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Whether a reserve of `queues` that may wait a second or more sweeps
    /// before it long-polls: only when they span more than one level queue,
    /// where the sweep takes the levels in order. With one level queue a long
    /// poll alone does the same work (it answers at once when messages are
    /// visible, as a sweep would) and saves the receive a sweep makes when
    /// the queue is empty: one request per idle reserve, in the common case
    /// of a queue without priorities. (A shorter wait always sweeps: a long
    /// poll waits whole seconds.)
    async fn sweep_needed(&self, queues: &[String]) -> Result<bool> {
        let mut levels = 0;
        for queue in queues {
            levels += self.queues.family(queue).await?.levels.len();
            if levels > 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Starts a long poll on every level of `queues` that has none running.
    async fn start_polls(
        self: &Arc<Self>,
        queues: &[String],
        max: usize,
        wait: Duration,
        visibility: u64,
    ) -> Result<()> {
        for queue in queues {
            let family = self.queues.family(queue).await?;
            for (level, url) in family.levels_desc() {
                if !self.inbox.start_poll(url) {
                    continue;
                }
                let me = Arc::clone(self);
                let queue = queue.clone();
                let url = url.clone();
                let wait = Duration::from_secs(whole_seconds_up(wait).min(20));
                tokio::spawn(async move {
                    let polled = async {
                        let (msgs, sent) = me.receive(&url, max, wait, visibility).await?;
                        me.sort_received(&queue, level, &url, msgs, sent, visibility)
                            .await
                    };
                    match polled.await {
                        Ok(got) => {
                            me.inbox.put(got);
                            me.inbox.end_poll(&url, None);
                        }
                        Err(e) => me.inbox.end_poll(&url, Some(e)),
                    }
                });
            }
        }
        Ok(())
    }

    /// Hands out received messages with a lease of `lease`: extends those
    /// whose visibility is shorter, and records each lease.
    async fn hand_out(&self, taken: Vec<Received>, lease: Duration) -> Result<Vec<Delivery>> {
        let want = Instant::now() + lease;
        let mut short: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in taken.iter().enumerate() {
            if r.deadline < want {
                short.entry(r.url.as_str()).or_default().push(i);
            }
        }
        let mut deadlines: Vec<Option<Instant>> = taken.iter().map(|r| Some(r.deadline)).collect();
        let secs = whole_seconds_up(lease);
        let mut failed = None;
        for (url, idx) in &short {
            let receipts: Vec<&str> = idx.iter().map(|&i| taken[i].receipt.as_str()).collect();
            let sent = Instant::now();
            match calls::change_visibility(&self.client, url, &receipts, secs).await {
                Ok(ok) => {
                    for (&i, ok) in idx.iter().zip(ok) {
                        deadlines[i] = ok.then(|| sent + Duration::from_secs(secs));
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            // Nothing is lost: the messages wait for the next reserve.
            self.inbox.put(taken);
            return Err(e);
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let mut out = Vec::with_capacity(taken.len());
        for (r, deadline) in taken.into_iter().zip(deadlines) {
            let Some(deadline) = deadline else { continue };
            let lease = Lease {
                id: r.id,
                queue: r.queue,
                token: r.receipt.clone(),
                expires_at: wall.plus(deadline.saturating_duration_since(now)),
            };
            self.leases.insert(Held {
                url: r.url,
                receipt: r.receipt,
                payload: r.payload.clone(),
                deadline,
            });
            out.push(Delivery {
                lease,
                envelope: r.payload,
            });
        }
        Ok(out)
    }

    async fn reserve(
        self: &Arc<Self>,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        // Covers the second a job may be held before it is due.
        let visibility = whole_seconds_up(lease) + EARLY.as_secs();
        let mut swept = false;
        loop {
            let notified = self.inbox.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let new_level = self.queues.levels_changed.notified();
            tokio::pin!(new_level);
            new_level.as_mut().enable();
            if !swept {
                swept = true;
                let sweep = async {
                    if wait < Duration::from_secs(1) || self.sweep_needed(queues).await? {
                        self.sweep(queues, max, visibility).await?;
                    }
                    Ok::<_, Error>(())
                };
                if let Err(e) = sweep.await {
                    // What was received before the error is still handed out.
                    if self.inbox.due_count(queues, Timestamp::now()) == 0 {
                        return Err(e);
                    }
                }
            }
            let taken = self
                .inbox
                .take(queues, max, Timestamp::now(), SETTLE_MARGIN);
            if !taken.is_empty() {
                let out = self.hand_out(taken, lease).await?;
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            if let Some(e) = self.inbox.take_error() {
                return Err(e);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            self.start_polls(queues, max, deadline - now, visibility)
                .await?;
            let mut until = deadline;
            if let Some(due) = self.inbox.next_due(queues) {
                until = until.min(now + due.until_now() + Duration::from_millis(1));
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut new_level => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Takes leases that still hold, grouped by the queue they came from.
    fn take_held(&self, leases: &[Lease]) -> (Vec<LeaseStatus>, HeldByQueue) {
        by_url(leases, |lease| {
            let h = self.leases.take(lease)?;
            Some((h.url.clone(), h))
        })
    }

    /// Deletes the held messages of one queue; puts them back on a transport error.
    async fn delete_held(
        &self,
        url: &str,
        held: Vec<(usize, Held)>,
    ) -> Result<Vec<(usize, Held, bool)>> {
        let receipts: Vec<&str> = held.iter().map(|(_, h)| h.receipt.as_str()).collect();
        match calls::delete(&self.client, url, &receipts).await {
            Ok(ok) => Ok(held
                .into_iter()
                .zip(ok)
                .map(|((i, h), ok)| (i, h, ok))
                .collect()),
            Err(e) => {
                for (_, h) in held {
                    self.leases.restore(h);
                }
                Err(e)
            }
        }
    }

    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (mut statuses, by_url) = self.take_held(leases);
        // Keys are marked completed before the messages are deleted: if
        // that fails, nothing is settled and the leases stay held for a retry.
        if let Err(e) = self.complete_keys(leases, &by_url).await {
            for (_, h) in by_url.into_values().flatten() {
                self.leases.restore(h);
            }
            return Err(e);
        }
        let results = join_all(
            by_url
                .into_iter()
                .map(|(url, held)| async move { self.delete_held(&url, held).await }),
        )
        .await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(done) => {
                    for (i, _, ok) in &done {
                        if !ok {
                            statuses[*i] = LeaseStatus::Lost;
                        }
                    }
                    self.tally.processed(
                        done.iter()
                            .filter(|(_, _, ok)| *ok)
                            .map(|(i, _, _)| leases[*i].queue.as_str()),
                    );
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(statuses),
        }
    }

    /// Marks the idempotency keys of held jobs completed, all at once.
    async fn complete_keys(&self, leases: &[Lease], by_url: &HeldByQueue) -> Result<()> {
        let unique_for = self.config.settings.unique_for;
        let done = join_all(by_url.values().flatten().filter_map(|(i, h)| {
            let env = h.payload.as_ref().ok()?;
            let k = env.idempotency_key.as_deref()?;
            Some(
                self.keys
                    .complete(&leases[*i].queue, k, &env.id, unique_for),
            )
        }))
        .await;
        done.into_iter().collect()
    }

    /// Sends a replacement for a held message, then deletes the held one.
    async fn replace(&self, lease: &Lease, env: &Envelope) -> Result<LeaseStatus> {
        let Some(held) = self.leases.take(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        let mut env = env.clone();
        env.id = lease.id.clone();
        let body = String::from_utf8(env.to_bytes()).unwrap_or_default();
        let sent = async {
            let url = self
                .queues
                .level_url(&lease.queue, priority_level(env.priority))
                .await?;
            let send = self.send_of(&env, body, false);
            calls::send(&self.client, &url, vec![send], self.budget()).await
        };
        if let Err(e) = sent.await {
            self.leases.restore(held);
            return Err(e);
        }
        // The retry is queued: the failed attempt counts whatever the delete does.
        self.tally.failed(&lease.queue);
        calls::delete(&self.client, &held.url, &[held.receipt.as_str()]).await?;
        Ok(LeaseStatus::Held)
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (statuses, by_url) = self.take_held(leases);
        for (url, held) in by_url {
            let sends: Vec<Send> = held
                .iter()
                .map(|(_, h)| match &h.payload {
                    Ok(env) => {
                        let mut env = env.clone();
                        env.attempt = env.attempt.saturating_sub(1);
                        let body = String::from_utf8(env.to_bytes()).unwrap_or_default();
                        self.send_of(&env, body, false)
                    }
                    Err(m) => Send {
                        out: Outgoing::from_raw(&m.raw),
                        delay: 0,
                        fifo: self.config.fifo.then(|| {
                            (
                                h.receipt.chars().take(64).collect(),
                                fastrand::u64(..).to_string(),
                            )
                        }),
                    },
                })
                .collect();
            if let Err(e) = calls::send(&self.client, &url, sends, self.budget()).await {
                for (_, h) in held {
                    self.leases.restore(h);
                }
                return Err(e);
            }
            let receipts: Vec<&str> = held.iter().map(|(_, h)| h.receipt.as_str()).collect();
            calls::delete(&self.client, &url, &receipts).await?;
        }
        Ok(statuses)
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        let Some(held) = self.leases.take(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        let out = dead::burial(&held.payload, &lease.id, reason, self.budget());
        let buried = async {
            let family = self.queues.family(&lease.queue).await?;
            let fifo = self.config.fifo.then(|| {
                (
                    fifo_safe(lease.id.as_str()),
                    format!("{}-{}", fifo_safe(lease.id.as_str()), fastrand::u64(..)),
                )
            });
            let send = Send {
                out,
                delay: 0,
                fifo,
            };
            calls::send(&self.client, &family.dead, vec![send], self.budget()).await?;
            Ok::<_, Error>(family)
        };
        let family = match buried.await {
            Ok(f) => f,
            Err(e) => {
                self.leases.restore(held);
                return Err(e);
            }
        };
        self.tally.failed(&lease.queue);
        calls::delete(&self.client, &held.url, &[held.receipt.as_str()]).await?;
        self.free_key(&lease.queue, &held).await;
        dead::enforce_retention(self, &lease.queue, &family).await?;
        Ok(LeaseStatus::Held)
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        let Some(held) = self.leases.take(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        let url = held.url.clone();
        let done = self.delete_held(&url, vec![(0, held)]).await?;
        let Some((_, held, true)) = done.into_iter().next() else {
            return Ok(LeaseStatus::Lost);
        };
        self.free_key(&lease.queue, &held).await;
        self.count_expired(&lease.queue, 1).await?;
        Ok(LeaseStatus::Held)
    }

    /// Frees the idempotency key of a settled job that did not complete.
    async fn free_key(&self, queue: &str, held: &Held) {
        if let Ok(env) = &held.payload {
            if let Some(k) = &env.idempotency_key {
                self.keys.free_all(&[(queue, k, &env.id)]).await;
            }
        }
    }

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

    async fn stats_one(&self, queue: &str) -> Result<QueueStats> {
        let mut s = QueueStats {
            queue: queue.to_owned(),
            ..QueueStats::default()
        };
        let Some(family) = self.queues.existing(queue).await? else {
            return Ok(s);
        };
        let urls: Vec<&String> = family
            .levels
            .values()
            .chain([&family.dead, &family.expired])
            .collect();
        let counts = join_all(urls.iter().map(|u| calls::counts(&self.client, u))).await;
        let n = family.levels.len();
        for (i, c) in counts.into_iter().enumerate() {
            let (visible, hidden, delayed) = c?;
            if i < n {
                s.ready += visible;
                s.in_flight += hidden;
                s.scheduled += delayed;
            } else if i == n {
                s.dead = (visible + hidden + delayed).min(self.config.settings.dead_max as u64);
            } else {
                s.expired = visible + hidden + delayed;
            }
        }
        // Messages this process received early or has not handed out yet
        // count as SQS sees them (in flight) nowhere else; here, as what they are.
        let (due, early) = self.inbox.held(queue, Timestamp::now());
        let moved = (due + early).min(s.in_flight);
        s.in_flight -= moved;
        s.ready += due.min(moved);
        s.scheduled += moved - due.min(moved);
        Ok(s)
    }
}

/// Each lease's status (`Held` where `pick` finds it still held, else
/// `Lost`), and what `pick` found, grouped by SQS queue URL with the lease's index.
fn by_url<T>(
    leases: &[Lease],
    mut pick: impl FnMut(&Lease) -> Option<(String, T)>,
) -> (Vec<LeaseStatus>, ByUrl<T>) {
    let mut statuses = vec![LeaseStatus::Lost; leases.len()];
    let mut groups: ByUrl<T> = BTreeMap::new();
    for (i, lease) in leases.iter().enumerate() {
        if let Some((url, found)) = pick(lease) {
            statuses[i] = LeaseStatus::Held;
            groups.entry(url).or_default().push((i, found));
        }
    }
    (statuses, groups)
}

/// Whole seconds of SQS delay until `run_at`, rounded down (the rest is
/// waited out in the inbox), at most 15 minutes.
pub(crate) fn delay_for(run_at: Timestamp) -> u64 {
    run_at.until_now().as_secs().min(calls::MAX_DELAY)
}

/// A FIFO group or deduplication id: at most 128 of the characters SQS allows.
fn fifo_safe(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    if out.is_empty() {
        out.push('-');
    }
    out
}

#[async_trait::async_trait]
impl Backend for SqsBackend {
    fn name(&self) -> &'static str {
        "sqs"
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

    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.inner.ack(leases).await
    }

    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        self.inner.replace(lease, envelope).await
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.inner.release(leases).await
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        self.inner.dead_letter(lease, reason).await
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        self.inner.expire(lease).await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.inner.extend(leases, lease).await
    }

    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>> {
        dead::list(&self.inner, queue, offset, limit).await
    }

    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>> {
        Ok(dead::list(&self.inner, queue, 0, usize::MAX)
            .await?
            .into_iter()
            .find(|d| d.id == *id))
    }

    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        dead::requeue(&self.inner, queue, ids).await
    }

    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize> {
        dead::purge(&self.inner, queue, older_than).await
    }

    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let (all, counted) = futures_util::future::join(
            join_all(queues.iter().map(|q| self.inner.stats_one(q))),
            self.inner.read_counts(queues),
        )
        .await;
        let mut out = all.into_iter().collect::<Result<Vec<_>>>()?;
        if let Some(counted) = counted {
            for (s, c) in out.iter_mut().zip(counted) {
                s.processed = Some(c.processed);
                s.failed = Some(c.failed);
            }
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush_counts().await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let q = &self.inner.queues;
        let mut names: Vec<String> = q
            .list(&q.namer.family_start())
            .await?
            .into_iter()
            .filter_map(|(name, _)| q.namer.parse(&name))
            .filter(|(_, role)| *role == Role::Level(0))
            .map(|(queue, _)| queue)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.keys.put_meta(key, value).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // One item holds every entry: reading it whole is one call as well.
        let found = self.inner.keys.list_meta(key).await?;
        Ok(found.into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.keys.list_meta(prefix).await
    }

    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>> {
        self.moves.take(&self.inner, queue, max, hold).await
    }

    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.moves.remove(&self.inner, leases).await
    }

    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
        crate::migrate::import(&self.inner, jobs).await
    }

    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
        crate::migrate::import_dead(&self.inner, jobs).await
    }

    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        dead::delete(&self.inner, queue, ids).await
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

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}
