//! [`AmqpBackend`]: the [`Backend`] contract on RabbitMQ.

use crate::config::AmqpConfig;
use crate::error::from_lapin;
use crate::inner::{supervise, Inner};
use crate::keys::Claim;
use crate::lease::reaper;
use crate::message::{self, Outgoing};
use crate::names::Names;
use crate::park::live_tag;
use crate::state::{Buffered, Held};
use crate::topology::passive_count;
use jobsmith_core::{
    Backend, DeadJob, Delivery, Envelope, Error, JobId, Lease, LeaseStatus, Malformed, QueueStats,
    Result, Timestamp,
};
use lapin::options::QueuePurgeOptions;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default largest envelope: 16 MiB (RabbitMQ 3.10 accepts up to 128 MiB;
/// raise it with `max_payload`).
const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// How long a short reserve waits for jobs the broker says are ready.
const CATCH_UP: Duration = Duration::from_millis(100);

/// A job is re-delayed rather than delivered when it arrives this much early.
const EARLY: Duration = Duration::from_millis(2);

/// A backend on RabbitMQ. Clones share one connection.
///
/// See the crate docs and `docs/backends.md` for how each part of the
/// contract is built from the broker's parts.
#[derive(Clone)]
pub struct AmqpBackend {
    inner: Arc<Inner>,
    moves: Arc<crate::migrate::Moves>,
}

impl AmqpBackend {
    /// Connects to the broker an `amqp://` or `amqps://` URL names.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(AmqpConfig::from_url(url)?).await
    }

    /// Connects with a configuration read beforehand.
    pub async fn with_config(cfg: AmqpConfig) -> Result<Self> {
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
    /// `docs/backends.md`): for tests and diagnostics.
    pub fn meta_queue_name(&self, key: &str) -> String {
        self.inner.names.meta(key)
    }

    /// Publishes raw bytes into `queue`, ready now, as another program would,
    /// bypassing enqueue: for testing how workers deal with foreign payloads.
    pub async fn publish_raw(&self, queue: &str, raw: &[u8]) -> Result<()> {
        let link = self.inner.link().await?;
        self.inner.ensure_queue(&link, queue).await?;
        message::publish_confirmed(
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
    pub async fn set_unavailable(&self, unavailable: bool) {
        self.inner.set_unavailable(unavailable).await;
    }

    fn limit(&self) -> usize {
        self.inner
            .cfg
            .settings
            .max_payload
            .unwrap_or(DEFAULT_MAX_PAYLOAD)
    }

    /// Records how settling leases taken with [`AmqpBackend::take_held`] went.
    fn after_settling<'h>(
        &self,
        link: &crate::link::Link,
        result: &Result<()>,
        held: impl IntoIterator<Item = (&'h Lease, Held)>,
    ) -> Vec<Held> {
        let mut st = self.inner.lock();
        let mut kept = Vec::new();
        for (lease, h) in held {
            if result.is_ok() {
                st.settled(&h, link.gen);
                kept.push(h);
            } else {
                st.unsettled(&lease.token, h, link.gen);
            }
        }
        kept
    }

    /// Removes the leases that still hold, as of the current connection.
    async fn take_held(
        &self,
        leases: &[Lease],
    ) -> Result<(Arc<crate::link::Link>, Vec<Option<Held>>)> {
        let link = self.inner.link().await?;
        let turn = self.inner.handover.lock().await;
        let mut st = self.inner.lock();
        let held = leases.iter().map(|l| st.take(&l.token)).collect();
        drop(st);
        drop(turn);
        self.inner.reaper.notify_one();
        Ok((link, held))
    }

    /// Replaces one held delivery with the message `msg` makes of it; on
    /// failure the delivery goes back to the broker. `None` if the lease was lost.
    async fn settle_one(
        &self,
        lease: &Lease,
        msg: impl FnOnce(&Held) -> Outgoing,
    ) -> Result<Option<Held>> {
        let (link, mut held) = self.take_held(std::slice::from_ref(lease)).await?;
        let Some(held) = held.pop().flatten() else {
            return Ok(None);
        };
        let result = self.inner.settle(&link, vec![msg(&held)], &[&held]).await;
        let held = self.after_settling(&link, &result, [(lease, held)]).pop();
        result.map(|()| held)
    }

    async fn free_key_of(&self, held: &Held) {
        let Some(k) = held
            .payload
            .as_ref()
            .ok()
            .and_then(|env| env.idempotency_key.as_ref())
        else {
            return;
        };
        let Ok(link) = self.inner.link().await else {
            return;
        };
        if let Err(e) = self.inner.free_key(&link, &held.queue, k).await {
            tracing::warn!(error = %e, key = %k, "could not free an idempotency key");
        }
    }
}

/// What a reserve does with a buffered delivery besides handing it out.
#[derive(Default)]
struct Aside {
    msgs: Vec<Outgoing>,
    tags: Vec<u64>,
    expired: Vec<(String, Envelope)>,
}

impl Aside {
    /// The payload to lease out of a buffered delivery of `q`, or `None`
    /// when the delivery is set aside instead: replaced by a republished copy
    /// (redelivered, or early) or by a record of its expiry.
    fn sort(
        &mut self,
        names: &Names,
        q: &str,
        b: Buffered,
        now: Timestamp,
    ) -> Option<std::result::Result<Envelope, Malformed>> {
        let mut env = match message::parse(&b.data) {
            Ok(env) => env,
            Err(m) => return Some(Err(m)),
        };
        if b.redelivered {
            // The delivery before this one was lost with its connection:
            // count it, then take the copy in turn.
            env.attempt = env.attempt.saturating_add(1);
            env.run_at = env.run_at.min(now);
            self.msgs.push(message::job(names, &env, now));
            self.tags.push(b.tag);
            return None;
        }
        if env.is_expired(now) {
            self.tags.push(b.tag);
            self.msgs.push(message::expired(names, q, b.data));
            self.expired.push((q.to_owned(), env));
            return None;
        }
        if env.run_at.since(now) > EARLY {
            self.msgs.push(message::job(names, &env, now));
            self.tags.push(b.tag);
            return None;
        }
        env.attempt = env.attempt.saturating_add(1);
        Some(Ok(env))
    }
}

#[async_trait::async_trait]
impl Backend for AmqpBackend {
    fn name(&self) -> &'static str {
        "amqp"
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
        if let Err(e) = message::publish_confirmed(&link.publish, out).await {
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
        // A short reserve looks at the broker once when it finds nothing
        // buffered: jobs the broker holds ready are on their way to us.
        let mut caught_up = wait >= CATCH_UP;
        loop {
            let notified = inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let link = inner.link().await?;
            inner.ensure_consuming(&link, queues).await?;
            let mut out = Vec::new();
            let mut aside = Aside::default();
            {
                let mut st = inner.lock();
                let now = Timestamp::now();
                let lease_until = now.plus(lease);
                for q in queues {
                    while out.len() < max {
                        let Some(buf) = st.buffers.get_mut(q) else {
                            break;
                        };
                        let Some((_, b)) = buf.pop_first() else { break };
                        if b.gen != link.gen {
                            continue;
                        }
                        let (tag, priority) = (b.tag, b.priority);
                        let Some(payload) = aside.sort(&inner.names, q, b, now) else {
                            continue;
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
                                delivered: Instant::now(),
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
            }
            if !out.is_empty() {
                inner.reaper.notify_one();
            }
            if !aside.tags.is_empty() {
                if let Err(e) = inner.replace(&link, aside.msgs, aside.tags).await {
                    tracing::warn!(error = %e, "could not set aside deliveries; the broker returns them");
                } else {
                    for (q, env) in aside.expired {
                        if let Some(k) = &env.idempotency_key {
                            let _ = inner.free_key(&link, &q, k).await;
                        }
                    }
                }
            }
            if out.is_empty() && !caught_up {
                caught_up = true;
                if inner.broker_ready(&link, queues).await? > 0 {
                    deadline = deadline.max(tokio::time::Instant::now() + CATCH_UP);
                }
            }
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (link, held) = self.take_held(leases).await?;
        let mut statuses = Vec::with_capacity(leases.len());
        let mut tags = Vec::with_capacity(leases.len());
        let mut taken = Vec::with_capacity(leases.len());
        for (lease, h) in leases.iter().zip(held) {
            let Some(h) = h else {
                statuses.push(LeaseStatus::Lost);
                continue;
            };
            tags.extend(live_tag(&link, &h));
            statuses.push(LeaseStatus::Held);
            taken.push((lease, h));
        }
        let result = async {
            for (_, h) in &taken {
                if let Ok(env) = &h.payload {
                    if let Some(k) = &env.idempotency_key {
                        self.inner.complete_key(&link, &h.queue, k, &env.id).await?;
                    }
                }
            }
            self.inner.ack_tags(&link, tags).await?;
            for p in taken.iter().filter_map(|(_, h)| h.parked.as_ref()) {
                self.inner.unpark(&link, p).await?;
            }
            Ok(())
        }
        .await;
        if result.is_ok() {
            self.inner
                .tally
                .processed(taken.iter().map(|(l, _)| l.queue.as_str()));
        }
        self.after_settling(&link, &result, taken);
        result.map(|()| statuses)
    }

    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        let mut env = envelope.clone();
        env.id = lease.id.clone();
        let msg = message::job(&self.inner.names, &env, Timestamp::now());
        Ok(match self.settle_one(lease, |_| msg).await? {
            Some(_) => {
                self.inner.tally.failed(&lease.queue);
                LeaseStatus::Held
            }
            None => LeaseStatus::Lost,
        })
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (link, held) = self.take_held(leases).await?;
        let mut msgs = Vec::new();
        let mut taken = Vec::new();
        let statuses = leases
            .iter()
            .zip(held)
            .map(|(lease, h)| match h {
                Some(h) => {
                    // A released job's attempt does not count.
                    msgs.push(self.inner.requeue_message_counting(&h, false));
                    taken.push((lease, h));
                    LeaseStatus::Held
                }
                None => LeaseStatus::Lost,
            })
            .collect();
        let refs: Vec<&Held> = taken.iter().map(|(_, h)| h).collect();
        let result = self.inner.settle(&link, msgs, &refs).await;
        self.after_settling(&link, &result, taken);
        result.map(|()| statuses)
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        let names = &self.inner.names;
        let dead = |h: &Held| {
            let body = match &h.payload {
                Ok(env) => {
                    let mut env = env.clone();
                    env.last_error = Some(reason.to_owned());
                    env.to_bytes()
                }
                Err(m) => m.raw.clone(),
            };
            message::dead(names, &h.queue, &lease.id, body, reason)
        };
        let Some(h) = self.settle_one(lease, dead).await? else {
            return Ok(LeaseStatus::Lost);
        };
        self.inner.tally.failed(&lease.queue);
        self.free_key_of(&h).await;
        Ok(LeaseStatus::Held)
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        let names = &self.inner.names;
        let expired = |h: &Held| {
            let body = match &h.payload {
                Ok(env) => env.to_bytes(),
                Err(m) => m.raw.clone(),
            };
            message::expired(names, &h.queue, body)
        };
        let Some(h) = self.settle_one(lease, expired).await? else {
            return Ok(LeaseStatus::Lost);
        };
        self.free_key_of(&h).await;
        Ok(LeaseStatus::Held)
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        let link = self.inner.link().await?;
        let until = Timestamp::now().plus(lease);
        let mut parked = Vec::new();
        let mut out: Vec<LeaseStatus> = {
            let mut st = self.inner.lock();
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

    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let out = browse
            .jobs
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(_, j)| j.clone())
            .collect();
        browse.finish().await;
        Ok(out)
    }

    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let out = browse
            .jobs
            .iter()
            .find(|(_, j)| &j.id == id)
            .map(|(_, j)| j.clone());
        browse.finish().await;
        Ok(out)
    }

    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let now = Timestamp::now();
        let mut n = 0;
        let mut result = Ok(());
        for (tag, job) in &browse.jobs {
            if !ids.contains(&job.id) {
                continue;
            }
            let Some(mut env) = job.envelope() else {
                continue;
            };
            env.attempt = 0;
            env.run_at = now;
            let step = async {
                if let Some(k) = &env.idempotency_key {
                    self.inner.retake_key(&link, queue, k, &env.id).await?;
                }
                message::publish_confirmed(
                    &link.publish,
                    vec![message::job(&self.inner.names, &env, now)],
                )
                .await?;
                browse.remove(*tag).await
            };
            match step.await {
                Ok(()) => n += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        browse.finish().await;
        result.map(|()| n)
    }

    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize> {
        let link = self.inner.link().await?;
        let Some(age) = older_than else {
            self.inner.ensure_queue(&link, queue).await?;
            let ch = link.admin().await?;
            let n = ch
                .queue_purge(
                    self.inner.names.dead(queue).into(),
                    QueuePurgeOptions::default(),
                )
                .await
                .map_err(from_lapin)?;
            return Ok(n as usize);
        };
        let cutoff = crate::dead::ago(age);
        let browse = self.inner.browse_dead(&link, queue).await?;
        let mut n = 0;
        let mut result = Ok(());
        for (tag, job) in &browse.jobs {
            if job.died_at <= cutoff {
                if let Err(e) = browse.remove(*tag).await {
                    result = Err(e);
                    break;
                }
                n += 1;
            }
        }
        browse.finish().await;
        result.map(|()| n)
    }

    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let inner = &self.inner;
        let link = inner.link().await?;
        // This process's own counts go out first, and nothing of ours is in
        // flight while the totals are read (see `counts.rs`).
        let _turn = inner.flushing.lock().await;
        if let Err(e) = inner.flush_counts_locked().await {
            tracing::debug!(error = %e, "could not flush outcome counts before reading them; adding ours as pending");
        }
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            inner.ensure_queue(&link, q).await?;
            let names = &inner.names;
            let ch = link.admin().await?;
            let ready = u64::from(passive_count(&ch, names.work(q)).await?);
            let scheduled: u64 = futures_util::future::try_join_all(
                (0..crate::names::LEVELS).map(|k| passive_count(&ch, names.level_queue(q, k))),
            )
            .await?
            .into_iter()
            .map(u64::from)
            .sum();
            let dead = u64::from(passive_count(&ch, names.dead(q)).await?);
            let expired = u64::from(passive_count(&ch, names.expired(q)).await?);
            drop(ch);
            let counted = inner
                .read_counts(&link, q)
                .await?
                .map(|total| total.plus(inner.tally.pending(q)));
            let now = Timestamp::now();
            let st = inner.lock();
            let (buffered, oldest) = st.buffers.get(q).map_or((0, None), |buf| {
                let oldest = buf
                    .values()
                    .filter(|b| b.gen == link.gen)
                    .filter_map(|b| message::parse(&b.data).ok())
                    .map(|e| e.run_at.min(now))
                    .min();
                (buf.len() as u64, oldest)
            });
            let in_flight = st.leases.values().filter(|h| &h.queue == q).count() as u64;
            out.push(QueueStats {
                queue: q.clone(),
                ready: ready + buffered,
                scheduled,
                in_flight,
                dead,
                expired,
                oldest_ready_age: oldest.map(|at| now.since(at)),
                processed: counted.map(|c| c.processed),
                failed: counted.map(|c| c.failed),
            });
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush_counts().await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let inner = &self.inner;
        let link = inner.link().await?;
        let mut held = crate::dead::collect(
            &link,
            &inner.names.registry(),
            inner.topology().registry_args(),
        )
        .await?;
        let deliveries = std::mem::take(&mut held.deliveries);
        held.close().await;
        let mut names: Vec<String> = deliveries
            .into_iter()
            .map(|d| String::from_utf8_lossy(&d.data).into_owned())
            .collect();
        {
            let st = inner.lock();
            names.extend(st.wanted.iter().cloned());
            names.extend(st.declared.iter().cloned());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.put_meta(key, value).await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_meta(key).await
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.list_meta(prefix).await
    }

    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>> {
        self.moves.take(&self.inner, queue, max, hold).await
    }

    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.moves.remove(&self.inner, leases).await
    }

    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
        self.moves.import(&self.inner, jobs, self.limit()).await
    }

    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
        self.moves.import_dead(&self.inner, jobs).await
    }

    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let link = self.inner.link().await?;
        let browse = self.inner.browse_dead(&link, queue).await?;
        let mut n = 0;
        let mut result = Ok(());
        for (tag, job) in &browse.jobs {
            if ids.contains(&job.id) {
                if let Err(e) = browse.remove(*tag).await {
                    result = Err(e);
                    break;
                }
                n += 1;
            }
        }
        browse.finish().await;
        result.map(|()| n)
    }
}

impl fmt::Debug for AmqpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBackend")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}
