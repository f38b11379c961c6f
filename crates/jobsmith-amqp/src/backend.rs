//! [`AmqpBackend`]: the struct, connecting, and the hot path of the [`Backend`]
//! contract on RabbitMQ. Each capability has a file of its own: `settle.rs`,
//! `dead.rs`, `inspect.rs`, `meta.rs`, `migrate.rs`.

use crate::config::AmqpConfig;
use crate::inner::{supervise, Inner};
use crate::lease::reaper;
use crate::message::{self, Outgoing};
use crate::names::{self, Names};
use crate::state::{Buffered, Held};
use crate::unique::Claim;
use jobsmith_core::lock::LockExt;
use jobsmith_core::{
    settle_by_kind, Backend, DeadLetters, Delivery, Envelope, Error, Inspect, JobId, Lease,
    LeaseStatus, Malformed, MetaStore, Migrate, Outcome, Result, Timestamp,
};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The default largest envelope: 16 MiB (RabbitMQ 3.10 accepts up to 128 MiB;
/// raise it with `max_payload`).
const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// How long a short reserve waits for jobs the broker says are ready.
const CATCH_UP: Duration = Duration::from_millis(100);

/// A job is held, or re-delayed, rather than delivered when it arrives this much early.
const EARLY: Duration = Duration::from_millis(2);

/// A job that arrives early by up to this much is held by the reserving
/// process until it is due (staged jobs come [`names::STAGE_EARLY_MS`]
/// early, and earlier versions' delayed messages up to
/// [`names::MAX_LEAD_MS`]); one earlier still (clock skew between publishers)
/// is re-delayed through the broker.
const HOLD: Duration = Duration::from_millis(names::MAX_LEAD_MS + 300);

// Staged jobs arrive no earlier than earlier versions' delayed messages did.
const _: () = assert!(names::STAGE_EARLY_MS <= names::MAX_LEAD_MS);

/// A backend on RabbitMQ. Clones share one connection.
///
/// See the crate docs and `docs/backends/rabbitmq.md` for how each part of the
/// contract is built from the broker's parts.
#[derive(Clone)]
pub struct AmqpBackend {
    pub(crate) inner: Arc<Inner>,
    pub(crate) moves: Arc<crate::moves::Moves>,
}

impl AmqpBackend {
    /// Connects to the broker an `amqp://` or `amqps://` URL names; see [`AmqpConfig`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(AmqpConfig::from_url(url)?).await
    }

    /// Connects with a configuration read beforehand.
    pub async fn connect_with(cfg: AmqpConfig) -> Result<Self> {
        let inner = Arc::new(Inner::new(cfg));
        inner.link().await?;
        tokio::spawn(supervise(Arc::downgrade(&inner), Arc::clone(&inner.lost)));
        tokio::spawn(reaper(Arc::downgrade(&inner), Arc::clone(&inner.reaper)));
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
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.cfg
    }

    /// The broker queue that holds `queue`'s ready jobs.
    pub fn work_queue_name(&self, queue: &str) -> String {
        self.inner.names.work(queue)
    }

    /// The broker queue that holds the metadata entry `key` (see
    /// `docs/backends/rabbitmq.md`): for tests and diagnostics.
    pub fn meta_queue_name(&self, key: &str) -> String {
        self.inner.names.meta(key)
    }

    /// Publishes raw bytes into `queue`, ready now, as another program would,
    /// bypassing enqueue: for testing how workers deal with foreign payloads.
    #[cfg(feature = "test-util")]
    pub async fn publish_raw(&self, queue: &str, raw: &[u8]) -> Result<()> {
        let link = self.inner.link().await?;
        self.inner.ensure_queue(&link, queue).await?;
        message::publish_confirmed(
            &link.calls,
            &link.publish,
            vec![message::raw(&self.inner.names, queue, raw.to_vec(), 0)],
        )
        .await
    }

    /// How many connections to the broker this backend has opened: 1 unless
    /// it had to reconnect. For tests and diagnostics.
    pub fn connections_opened(&self) -> u64 {
        self.inner.generation()
    }

    /// Cuts the connection and keeps every operation failing with a transient
    /// error until called again with `false`; then the backend reconnects by
    /// itself. For testing how workers ride out a lost broker.
    #[cfg(feature = "test-util")]
    pub async fn set_unavailable(&self, unavailable: bool) {
        self.inner.set_unavailable(unavailable).await;
    }

    /// The largest envelope accepted, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.inner
            .cfg
            .settings
            .max_payload
            .unwrap_or(DEFAULT_MAX_PAYLOAD)
    }
}

/// `queues` without those that `failed`, in order.
fn without(queues: &[String], failed: &[(String, Error)]) -> Vec<String> {
    queues
        .iter()
        .filter(|q| !failed.iter().any(|(f, _)| f == *q))
        .cloned()
        .collect()
}

/// What a reserve does with a buffered delivery besides handing it out.
#[derive(Default)]
struct Aside {
    msgs: Vec<Outgoing>,
    tags: Vec<u64>,
    expired: Vec<(String, Envelope)>,
}

impl Aside {
    /// What to do with a buffered delivery of `q`: lease it out, hold it
    /// until it is due, or set it aside (replaced by a republished copy,
    /// when redelivered or early by more than [`HOLD`], or by a record of
    /// its expiry).
    fn sort(&mut self, names: &Names, q: &str, b: Buffered, now: Timestamp) -> Sorted {
        let mut env = match message::parse(&b.data) {
            Ok(env) => env,
            Err(m) => return Sorted::Lease(Err(m)),
        };
        if b.redelivered {
            // The delivery before this one was lost with its connection:
            // count it, then take the copy in turn.
            env.attempt = env.attempt.saturating_add(1);
            env.run_at = env.run_at.min(now);
            self.msgs.push(message::job(names, &env, now));
            self.tags.push(b.tag);
            return Sorted::Aside;
        }
        if env.is_expired(now) {
            self.tags.push(b.tag);
            self.msgs.push(message::expired(names, q, b.data));
            self.expired.push((q.to_owned(), env));
            return Sorted::Aside;
        }
        let early = env.run_at.since(now);
        if early > HOLD {
            self.msgs.push(message::job(names, &env, now));
            self.tags.push(b.tag);
            return Sorted::Aside;
        }
        if early > EARLY {
            return Sorted::Hold(env.run_at, b);
        }
        env.attempt = env.attempt.saturating_add(1);
        Sorted::Lease(Ok(env))
    }
}

/// What [`Aside::sort`] makes of a buffered delivery.
enum Sorted {
    /// Lease it out: the envelope, or the bad payload.
    Lease(std::result::Result<Envelope, Malformed>),
    /// Hold it until it is due, at the time given.
    Hold(Timestamp, Buffered),
    /// Set aside: nothing to lease.
    Aside,
}

#[async_trait::async_trait]
impl Backend for AmqpBackend {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn server(&self) -> String {
        self.inner.cfg.redacted()
    }

    fn max_payload(&self) -> usize {
        self.limit()
    }

    async fn enqueue(&self, mut jobs: Vec<Envelope>) -> Result<Vec<JobId>> {
        let limit = self.limit();
        // Serialised once: checked here, published below.
        let mut bodies = Vec::with_capacity(jobs.len());
        for env in &mut jobs {
            env.attempt = 0;
            let body = env.to_bytes();
            if body.len() > limit {
                return Err(Error::PayloadTooLarge {
                    size: body.len(),
                    limit,
                });
            }
            bodies.push(body);
        }
        let inner = &self.inner;
        let link = inner.link().await?;
        let mut queues: Vec<&str> = jobs.iter().map(|e| e.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            inner.ensure_queue(&link, q).await?;
        }
        let now = Timestamp::now();
        let mut ids = Vec::with_capacity(jobs.len());
        let mut out = Vec::with_capacity(jobs.len());
        let mut claimed = Vec::new();
        for (env, body) in jobs.into_iter().zip(bodies) {
            if let Some(key) = &env.idempotency_key {
                match inner.claim_key(&link, &env.queue, key, &env.id).await? {
                    Claim::Existing(id) => {
                        ids.push(id);
                        continue;
                    }
                    Claim::Taken => claimed.push((env.queue.clone(), key.clone())),
                }
            }
            ids.push(env.id.clone());
            out.push(message::job_with_body(&inner.names, &env, body, now));
        }
        if let Err(e) = message::publish_confirmed(&link.calls, &link.publish, out).await {
            for (q, k) in claimed {
                let _ = inner.free_key(&link, &q, &k).await;
            }
            return Err(e);
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
        let inner = &self.inner;
        let mut deadline = tokio::time::Instant::now() + wait;
        let mark = inner.interrupt.mark();
        // A short reserve looks at the broker once when it finds nothing
        // buffered: jobs the broker holds ready are on their way to us.
        let mut caught_up = wait >= CATCH_UP;
        // Queues whose consumer could not be started: left out for the rest
        // of this call, so that the others are served meanwhile.
        let mut failed: Vec<(String, Error)> = Vec::new();
        loop {
            let notified = inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let link = inner.link().await?;
            let working: Cow<'_, [String]> = if failed.is_empty() {
                Cow::Borrowed(queues)
            } else {
                Cow::Owned(without(queues, &failed))
            };
            failed.extend(inner.ensure_consuming(&link, &working, mark).await);
            let working = if failed.is_empty() {
                working
            } else {
                Cow::Owned(without(queues, &failed))
            };
            if working.is_empty() && !failed.is_empty() {
                return Err(failed.swap_remove(0).1);
            }
            let queues = &*working;
            let mut out = Vec::new();
            let mut aside = Aside::default();
            let next_due;
            {
                let mut st = inner.state.lock_unpoisoned();
                let now = Timestamp::now();
                let lease_until = now.plus(lease);
                let due_by = now.plus(EARLY);
                for q in queues {
                    while out.len() < max {
                        let Some(b) = st.next_delivery(q, due_by) else {
                            break;
                        };
                        if b.gen != link.gen {
                            continue;
                        }
                        let (tag, priority, received) = (b.tag, b.priority, b.received);
                        let payload = match aside.sort(&inner.names, q, b, now) {
                            Sorted::Lease(payload) => payload,
                            Sorted::Hold(at, b) => {
                                st.hold(q, at, b);
                                continue;
                            }
                            Sorted::Aside => continue,
                        };
                        let seq = st.next_seq();
                        let token = format!("{}-{}-{seq}", inner.instance, link.gen);
                        let id = match &payload {
                            Ok(env) => env.id.clone(),
                            Err(_) => JobId::new(),
                        };
                        st.expiry.insert((lease_until, token.clone()));
                        st.leases.insert(
                            token.clone(),
                            Held {
                                queue: q.clone(),
                                gen: link.gen,
                                tag,
                                priority,
                                payload: payload.clone(),
                                expires_at: lease_until,
                                // The broker's consumer_timeout counts from its
                                // delivery, not from when a worker took it.
                                delivered: received,
                                parked: None,
                            },
                        );
                        out.push(Delivery {
                            lease: Lease {
                                id,
                                queue: q.clone(),
                                token,
                                expires_at: lease_until,
                            },
                            envelope: payload,
                        });
                    }
                    if out.len() >= max {
                        break;
                    }
                }
                next_due = st.next_due(queues);
            }
            if !out.is_empty() {
                inner.reaper.notify_one();
            }
            if !aside.tags.is_empty() {
                if let Err(e) = inner.replace(&link, aside.msgs, aside.tags).await {
                    tracing::warn!(error = %e, "could not set aside deliveries; the broker returns them");
                } else {
                    for (q, env) in aside.expired {
                        jobsmith_core::count_expired(&q, &env.job);
                        if let Some(k) = &env.idempotency_key {
                            let _ = inner.free_key(&link, &q, k).await;
                        }
                    }
                }
            }
            if out.is_empty() && !caught_up {
                caught_up = true;
                // Only a hint: a queue deleted since its consumer started is
                // left to its consumer's cancellation.
                let ready = match inner.broker_ready(&link, queues).await {
                    Err(e) if e.is_transient() => return Err(e),
                    Err(_) => 0,
                    Ok(n) => n,
                };
                if ready > 0 {
                    deadline = deadline.max(tokio::time::Instant::now() + CATCH_UP);
                }
            }
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            // A held job that falls due ends the wait as a delivery would.
            let wake = next_due.map_or(deadline, |at| {
                deadline.min(tokio::time::Instant::now() + at.until_now())
            });
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
                () = inner.interrupt.fired(mark) => return Ok(out),
            }
        }
    }

    async fn settle(&self, outcomes: &[Outcome]) -> Vec<Result<LeaseStatus>> {
        settle_by_kind(self, outcomes).await
    }

    fn prefetches(&self) -> bool {
        // Each queue's consumer has a prefetch window.
        true
    }

    async fn start_reserving(&self, queues: &[String], capacity: usize) -> Result<()> {
        let _ = queues;
        let n = {
            let mut st = self.inner.state.lock_unpoisoned();
            st.reserving.push((queues.to_vec(), capacity.max(1)));
            st.channel_limit().unwrap_or(0)
        };
        match self.inner.current() {
            Some(link) => link.limit(n).await,
            // The next connection opens with the limit.
            None => Ok(()),
        }
    }

    async fn stop_reserving(&self, queues: &[String]) -> Result<()> {
        self.inner.interrupt.fire();
        let stopped = self.inner.stop_consuming(queues).await;
        let n = {
            let mut st = self.inner.state.lock_unpoisoned();
            if let Some(i) = st.reserving.iter().position(|(q, _)| q == queues) {
                st.reserving.remove(i);
            }
            st.channel_limit().unwrap_or(0)
        };
        if let Some(link) = self.inner.current() {
            link.limit(n).await?;
        }
        stopped
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        let link = self.inner.link().await?;
        let until = Timestamp::now().plus(lease);
        let mut parked = Vec::new();
        let mut out: Vec<LeaseStatus> = {
            let mut st = self.inner.state.lock_unpoisoned();
            leases
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let Some(h) = st.leases.get_mut(&l.token) else {
                        return LeaseStatus::Lost;
                    };
                    if h.parked.is_some() {
                        // Its copy must wait as long as the lease: renewed below.
                        parked.push(i);
                        return LeaseStatus::Held;
                    }
                    let old = std::mem::replace(&mut h.expires_at, until);
                    st.expiry.remove(&(old, l.token.clone()));
                    st.expiry.insert((until, l.token.clone()));
                    LeaseStatus::Held
                })
                .collect()
        };
        for i in parked {
            out[i] = self.inner.renew(&link, &leases[i].token, until).await;
        }
        self.inner.reaper.notify_one();
        Ok(out)
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush_counts().await
    }

    async fn key_holder(&self, queue: &str, key: &str) -> Result<Option<JobId>> {
        let link = self.inner.link().await?;
        self.inner.key_holder(&link, queue, key).await
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

    fn as_events(&self) -> Option<&dyn jobsmith_core::Events> {
        Some(self)
    }

    fn as_migrate(&self) -> Option<&dyn Migrate> {
        Some(self)
    }
}

impl fmt::Debug for AmqpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBackend")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}
