//! [`RedisBackend`]: the [`Backend`] contract on Redis, one Lua script per state move.

use crate::config::RedisConfig;
use crate::error::from_redis;
use crate::keys::Keys;
use crate::reply;
use crate::scripts::{Scripts, CHUNK, SETTLE_LIMIT};
use crate::wake::Waiter;
use futures_util::future::try_join_all;
use jobsmith_core::{
    Backend, DeadJob, Delivery, Envelope, Error, JobId, Lease, LeaseStatus, Malformed, QueueStats,
    Result, Timestamp,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, Script, ScriptInvocation, ServerErrorKind, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The default largest envelope: 16 MiB, as on the memory backend.
const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Most jobs one reserve script hands out.
const MAX_RESERVE: usize = 1000;

/// Durations beyond this (about 100 years) are treated as this, to keep script arithmetic exact.
const FOREVER_MS: u64 = 100 * 365 * 86_400_000;

/// A jobsmith backend on Redis. Clones share one connection.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    waiter: Waiter,
    keys: Keys,
    config: RedisConfig,
}

/// A client for the server `config` names, with its TLS trust settings.
fn open_client(config: &RedisConfig) -> Result<Client> {
    #[cfg(feature = "tls")]
    crate::tls::install_provider();
    match &config.tls_ca {
        #[cfg(feature = "tls")]
        Some(ca) if config.server.starts_with("rediss://") => {
            crate::tls::client_trusting(&config.server, ca)
        }
        Some(ca) => Err(Error::Config(format!(
            "a CA file ({}) applies only to TLS: write `rediss://`",
            ca.display()
        ))),
        None => Client::open(config.server.as_str())
            .map_err(|e| Error::Config(format!("bad Redis URL: {e}"))),
    }
}

impl RedisBackend {
    /// Connects to the server a `redis://` or `rediss://` URL names; see [`RedisConfig`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(RedisConfig::from_url(url)?).await
    }

    /// Connects with a configuration already read.
    pub async fn connect_with(config: RedisConfig) -> Result<Self> {
        let client = open_client(&config)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), manager)
            .await
            .map_err(from_redis)?;
        let keys = Keys::new(&config.prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                waiter: Waiter::new(client),
                keys,
                config,
            }),
        })
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The key prefix every key of this backend starts with.
    pub fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn limit(&self) -> usize {
        self.inner
            .config
            .settings
            .max_payload
            .unwrap_or(DEFAULT_MAX_PAYLOAD)
    }

    async fn run(&self, inv: &ScriptInvocation<'_>) -> Result<Value> {
        let mut conn = self.conn();
        inv.invoke_async(&mut conn).await.map_err(from_redis)
    }

    /// Runs a script call built by [`eval_cmd`], loading the script first if
    /// the server does not know it. With `again`, the call is one whose
    /// repetition is harmless, and is tried once more on a fresh connection if
    /// the first one turns out dead (see [`Self::run_again`]).
    async fn eval(&self, script: &Script, cmd: &Cmd, again: bool) -> Result<Value> {
        let mut conn = self.conn();
        let mut retried = false;
        loop {
            match cmd.query_async::<Value>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    script.load_async(&mut conn).await.map_err(from_redis)?;
                    return cmd.query_async(&mut conn).await.map_err(from_redis);
                }
                Err(e) if again && !retried && e.is_connection_dropped() => {
                    retried = true;
                    conn = self.conn();
                }
                other => return other.map_err(from_redis),
            }
        }
    }

    /// Runs a script whose repetition is harmless (reads, enqueue by id, reserve),
    /// trying once more on a fresh connection if the first one turns out dead.
    ///
    /// A connection can be dropped between two uses; the manager notices only
    /// when a command fails on it, and reconnects. Settling scripts are not
    /// repeated here: had the first try taken effect, the second would report
    /// the lease as lost; the worker retries those itself.
    async fn run_again(&self, inv: &ScriptInvocation<'_>) -> Result<Value> {
        let mut conn = self.conn();
        match inv.invoke_async(&mut conn).await {
            Err(e) if e.is_connection_dropped() => {
                let mut conn = self.conn();
                inv.invoke_async(&mut conn).await.map_err(from_redis)
            }
            other => other.map_err(from_redis),
        }
    }

    /// Reserves from one queue; returns the deliveries and the time until its next event.
    async fn reserve_one(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> Result<(Vec<Delivery>, Option<Duration>)> {
        let mut inv = Scripts::get().reserve.key(self.inner.keys.base(queue));
        inv.arg(max.min(MAX_RESERVE))
            .arg(ms(lease))
            .arg(SETTLE_LIMIT);
        let mut items = reply::array(self.run_again(&inv).await?, "reserve")?.into_iter();
        let next = items
            .next()
            .map(|v| reply::int(&v, "reserve"))
            .transpose()?
            .unwrap_or(-1);
        let next = u64::try_from(next).ok().map(Duration::from_millis);
        let expires_at = Timestamp::now().plus(lease);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let mut f = reply::array(item, "reserve")?.into_iter();
            let (Some(id), Some(token), Some(attempt), Some(payload)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(Error::Backend(
                    "redis: reserve returned a short entry".into(),
                ));
            };
            let id = JobId(reply::string(id, "job id")?);
            let token = reply::string(token, "lease token")?;
            let attempt = u32::try_from(reply::int(&attempt, "attempt")?).unwrap_or(0);
            let raw = stored_payload(reply::bytes(payload, "payload")?);
            let envelope = match Envelope::from_bytes(&raw) {
                Ok(mut env) => {
                    env.attempt = attempt;
                    Ok(env)
                }
                Err(e) => Err(Malformed {
                    raw,
                    reason: format!("payload is not a job envelope: {e}"),
                }),
            };
            out.push(Delivery {
                lease: Lease {
                    id,
                    queue: queue.to_owned(),
                    token,
                    expires_at,
                },
                envelope,
            });
        }
        Ok((out, next))
    }

    /// Runs a per-lease script over `leases`, grouped by queue and chunked; one flag per lease, in order.
    async fn per_lease(
        &self,
        leases: &[Lease],
        script: &Script,
        head: Option<u64>,
        what: &str,
    ) -> Result<Vec<LeaseStatus>> {
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, l) in leases.iter().enumerate() {
            groups.entry(l.queue.as_str()).or_default().push(i);
        }
        let mut calls = Vec::new();
        for (queue, idx) in &groups {
            for chunk in idx.chunks(CHUNK) {
                let mut inv = script.key(self.inner.keys.base(queue));
                if let Some(h) = head {
                    inv.arg(h);
                }
                for &i in chunk {
                    inv.arg(leases[i].id.as_str()).arg(leases[i].token.as_str());
                }
                calls.push(async move {
                    let flags = reply::flags(self.run(&inv).await?, what)?;
                    if flags.len() != chunk.len() {
                        return Err(Error::Backend(format!(
                            "redis: {what} answered {} of {} leases",
                            flags.len(),
                            chunk.len()
                        )));
                    }
                    Ok::<_, Error>((chunk, flags))
                });
            }
        }
        let mut out = vec![LeaseStatus::Lost; leases.len()];
        for (chunk, flags) in try_join_all(calls).await? {
            for (&i, held) in chunk.iter().zip(flags) {
                out[i] = if held {
                    LeaseStatus::Held
                } else {
                    LeaseStatus::Lost
                };
            }
        }
        Ok(out)
    }

    async fn one_lease(&self, inv: &ScriptInvocation<'_>, what: &str) -> Result<LeaseStatus> {
        let held = reply::int(&self.run(inv).await?, what)? == 1;
        Ok(if held {
            LeaseStatus::Held
        } else {
            LeaseStatus::Lost
        })
    }

    /// Reads dead jobs: `range` (offset, count) or the given ids.
    async fn dead_read(&self, queue: &str, args: &[String]) -> Result<Vec<DeadJob>> {
        let mut inv = Scripts::get().dead_read.key(self.inner.keys.base(queue));
        for a in args {
            inv.arg(a.as_str());
        }
        reply::array(self.run_again(&inv).await?, "dead jobs")?
            .into_iter()
            .map(|item| dead_job(queue, item))
            .collect()
    }
}

/// A dead job as stored: the envelope gets its attempt and the reason as `last_error`;
/// bytes that are not an envelope are handed back as found.
fn dead_job(queue: &str, item: Value) -> Result<DeadJob> {
    let mut f = reply::array(item, "dead job")?.into_iter();
    let (Some(id), Some(payload), Some(attempt), Some(reason), Some(died)) =
        (f.next(), f.next(), f.next(), f.next(), f.next())
    else {
        return Err(Error::Backend("redis: a dead job entry is short".into()));
    };
    let id = JobId(reply::string(id, "job id")?);
    let mut raw = stored_payload(reply::bytes(payload, "payload")?);
    let attempt = u32::try_from(reply::int(&attempt, "attempt")?).unwrap_or(0);
    let reason = reply::string(reason, "reason")?;
    let died_us = u64::try_from(reply::int(&died, "time of death")?).unwrap_or(0);
    if let Ok(mut env) = Envelope::from_bytes(&raw) {
        env.attempt = attempt;
        env.last_error = Some(reason.clone());
        raw = env.to_bytes();
    }
    Ok(DeadJob {
        id,
        queue: queue.to_owned(),
        reason,
        died_at: Timestamp(died_us / 1000),
        raw,
    })
}

/// The payload in a job's stored form, `<ready ms> <payload>` (see
/// `lua/common.lua`): the bytes after the first space, exactly as enqueued.
/// Bytes without that prefix are handed back whole.
fn stored_payload(mut raw: Vec<u8>) -> Vec<u8> {
    let digits = raw.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && raw.get(digits) == Some(&b' ') {
        raw.drain(..=digits);
    }
    raw
}

/// An `EVALSHA` of `script` on the queue whose key base is `base`, with room
/// for `args` more arguments of about `size` bytes in all.
///
/// Built directly rather than through [`redis::ScriptInvocation`], which
/// keeps each argument in its own allocation and copies them all again into
/// the command it sends.
fn eval_cmd(script: &Script, base: &str, args: usize, size: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(4 + args, size + base.len() + 64);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(1).arg(base);
    cmd
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(FOREVER_MS)
}

impl RedisBackend {
    /// The indices of `queues` grouped by queue, once each queue is
    /// registered in the set `queues()` reads (one `SADD` for all of them).
    async fn register_groups<'a>(
        &self,
        queues: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<&'a str, Vec<usize>>> {
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, q) in queues.enumerate() {
            groups.entry(q).or_default().push(i);
        }
        let mut conn = self.conn();
        redis::cmd("SADD")
            .arg(self.inner.keys.queues())
            .arg(groups.keys().collect::<Vec<_>>())
            .query_async::<Value>(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(groups)
    }
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn max_payload(&self) -> usize {
        self.limit()
    }

    async fn enqueue(&self, jobs: Vec<Envelope>) -> Result<Vec<JobId>> {
        let limit = self.limit();
        // Each job's stored form, `<run_at> <envelope JSON>`, written at once.
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(jobs.len());
        for env in &jobs {
            let mut p = format!("{} ", env.run_at.as_millis()).into_bytes();
            let head = p.len();
            serde_json::to_writer(&mut p, env).map_err(Error::Serialize)?;
            if p.len() - head > limit {
                return Err(Error::PayloadTooLarge {
                    size: p.len() - head,
                    limit,
                });
            }
            payloads.push(p);
        }
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, env) in jobs.iter().enumerate() {
            groups.entry(env.queue.as_str()).or_default().push(i);
        }
        let mut register = redis::cmd("SADD");
        register
            .arg(self.inner.keys.queues())
            .arg(groups.keys().collect::<Vec<_>>());
        // Every chunk is sent at once, pipelined on the one connection.
        let script = &Scripts::get().enqueue;
        let mut calls = Vec::new();
        for (queue, idx) in &groups {
            for chunk in idx.chunks(CHUNK) {
                let size: usize = chunk.iter().map(|&i| payloads[i].len() + 80).sum();
                let mut cmd = eval_cmd(script, &self.inner.keys.base(queue), 6 * chunk.len(), size);
                for &i in chunk {
                    let env = &jobs[i];
                    cmd.arg(env.id.as_str())
                        .arg(&payloads[i][..])
                        .arg(env.priority)
                        .arg(env.run_at.as_millis())
                        .arg(env.expires_at.map_or(0, Timestamp::as_millis))
                        .arg(env.idempotency_key.as_deref().unwrap_or(""));
                }
                calls.push(async move {
                    let held = reply::array(self.eval(script, &cmd, true).await?, "enqueue")?;
                    let mut owners = Vec::with_capacity(held.len() / 2);
                    let mut it = held.into_iter();
                    while let (Some(pos), Some(owner)) = (it.next(), it.next()) {
                        let pos = usize::try_from(reply::int(&pos, "enqueue")?).unwrap_or(0);
                        let Some(&i) = pos.checked_sub(1).and_then(|p| chunk.get(p)) else {
                            return Err(Error::Backend(format!(
                                "redis: enqueue answered position {pos} of {}",
                                chunk.len()
                            )));
                        };
                        owners.push((i, JobId(reply::string(owner, "job id")?)));
                    }
                    Ok::<_, Error>(owners)
                });
            }
        }
        drop(payloads);
        let mut conn = self.conn();
        let (_, done) = futures_util::future::try_join(
            async {
                register
                    .query_async::<Value>(&mut conn)
                    .await
                    .map_err(from_redis)
            },
            try_join_all(calls),
        )
        .await?;
        drop(groups);
        let mut out: Vec<JobId> = jobs.into_iter().map(|env| env.id).collect();
        for (i, owner) in done.into_iter().flatten() {
            out[i] = owner;
        }
        Ok(out)
    }

    async fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut out = Vec::new();
            let mut next: Option<Duration> = None;
            for queue in queues {
                if out.len() >= max {
                    break;
                }
                let (got, at) = self.reserve_one(queue, max - out.len(), lease).await?;
                out.extend(got);
                if let Some(at) = at {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            let now = tokio::time::Instant::now();
            if !out.is_empty() || now >= deadline || queues.is_empty() {
                return Ok(out);
            }
            let mut timeout = deadline - now;
            if let Some(at) = next {
                // A millisecond late at most, so the event is due when we look again.
                timeout = timeout.min(at + Duration::from_millis(1));
            }
            let lists: Vec<String> = queues.iter().map(|q| self.inner.keys.wake(q)).collect();
            if let Err(e) = self.inner.waiter.wait(&lists, timeout).await {
                self.inner.waiter.clear();
                return Err(e);
            }
        }
    }

    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let unique_for = ms(self.inner.config.settings.unique_for);
        self.per_lease(leases, &Scripts::get().ack, Some(unique_for), "ack")
            .await
    }

    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        let mut env = envelope.clone();
        env.id = lease.id.clone();
        let mut inv = Scripts::get().retry.key(self.inner.keys.base(&lease.queue));
        inv.arg(lease.id.as_str())
            .arg(lease.token.as_str())
            .arg(env.to_bytes())
            .arg(env.priority)
            .arg(env.run_at.as_millis())
            .arg(env.expires_at.map_or(0, Timestamp::as_millis));
        self.one_lease(&inv, "retry").await
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.per_lease(leases, &Scripts::get().release, None, "release")
            .await
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        let s = &self.inner.config.settings;
        let mut inv = Scripts::get().bury.key(self.inner.keys.base(&lease.queue));
        inv.arg(lease.id.as_str())
            .arg(lease.token.as_str())
            .arg(reason)
            .arg(
                s.dead_max
                    .min(usize::try_from(i64::MAX).unwrap_or(usize::MAX)),
            )
            .arg(ms(s.dead_max_age));
        self.one_lease(&inv, "dead-letter").await
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        let mut inv = Scripts::get()
            .expire
            .key(self.inner.keys.base(&lease.queue));
        inv.arg(lease.id.as_str()).arg(lease.token.as_str());
        self.one_lease(&inv, "expire").await
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.per_lease(leases, &Scripts::get().extend, Some(ms(lease)), "extend")
            .await
    }

    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>> {
        let mut out = Vec::new();
        let mut offset = offset;
        let mut left = limit;
        while left > 0 {
            let n = left.min(CHUNK);
            let got = self
                .dead_read(queue, &["range".into(), offset.to_string(), n.to_string()])
                .await?;
            let short = got.len() < n;
            offset += got.len();
            left -= got.len();
            out.extend(got);
            if short {
                break;
            }
        }
        Ok(out)
    }

    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>> {
        Ok(self
            .dead_read(queue, &["ids".into(), id.0.clone()])
            .await?
            .pop())
    }

    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let now = Timestamp::now();
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut args = vec!["ids".to_owned()];
            args.extend(chunk.iter().map(|id| id.0.clone()));
            let dead = self.dead_read(queue, &args).await?;
            let mut inv = Scripts::get().requeue.key(self.inner.keys.base(queue));
            let mut any = false;
            for d in dead {
                // Bytes that are not an envelope stay in the dead-letter queue.
                let Some(mut env) = d.envelope() else {
                    continue;
                };
                env.attempt = 0;
                env.run_at = now;
                inv.arg(d.id.as_str())
                    .arg(env.to_bytes())
                    .arg(env.priority)
                    .arg(env.expires_at.map_or(0, Timestamp::as_millis))
                    .arg(env.idempotency_key.as_deref().unwrap_or(""));
                any = true;
            }
            if any {
                n += usize::try_from(reply::int(&self.run(&inv).await?, "requeue")?).unwrap_or(0);
            }
        }
        Ok(n)
    }

    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize> {
        let cutoff = match older_than {
            None => "+inf".to_owned(),
            Some(d) => {
                let now_us = u128::from(Timestamp::now().as_millis()) * 1000;
                now_us.saturating_sub(d.as_micros()).to_string()
            }
        };
        let mut total = 0;
        loop {
            let mut inv = Scripts::get().purge.key(self.inner.keys.base(queue));
            inv.arg(cutoff.as_str()).arg(CHUNK);
            let n = usize::try_from(reply::int(&self.run(&inv).await?, "purge")?).unwrap_or(0);
            total += n;
            if n < CHUNK {
                return Ok(total);
            }
        }
    }

    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        let calls = queues.iter().map(|queue| async move {
            let mut inv = Scripts::get().stats.key(self.inner.keys.base(queue));
            inv.arg(SETTLE_LIMIT);
            let v = reply::array(self.run_again(&inv).await?, "stats")?;
            let n = |i: usize| -> Result<i64> {
                v.get(i).map_or(
                    Err(Error::Backend("redis: stats reply is short".into())),
                    |x| reply::int(x, "stats"),
                )
            };
            let count = |i: usize| n(i).map(|x| u64::try_from(x).unwrap_or(0));
            Ok::<_, Error>(QueueStats {
                queue: queue.clone(),
                ready: count(0)?,
                scheduled: count(1)?,
                in_flight: count(2)?,
                dead: count(3)?,
                expired: count(4)?,
                oldest_ready_age: u64::try_from(n(5)?).ok().map(Duration::from_millis),
                processed: Some(count(6)?),
                failed: Some(count(7)?),
            })
        });
        try_join_all(calls).await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.inner.keys.queues())
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        names.sort();
        Ok(names)
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut conn = self.conn();
        redis::cmd("HSET")
            .arg(self.inner.keys.meta())
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn();
        redis::cmd("HGET")
            .arg(self.inner.keys.meta())
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut conn = self.conn();
        // The hash holds one small entry per schedule: read it whole.
        let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.inner.keys.meta())
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let mut found: Vec<(String, Vec<u8>)> = all
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>> {
        let mut inv = Scripts::get().take.key(self.inner.keys.base(queue));
        inv.arg(max.min(MAX_RESERVE))
            .arg(ms(hold))
            .arg(SETTLE_LIMIT);
        let items = reply::array(self.run(&inv).await?, "take")?;
        let expires_at = Timestamp::now().plus(hold);
        items
            .into_iter()
            .map(|item| {
                let mut f = reply::array(item, "take")?.into_iter();
                let (Some(id), Some(token), Some(attempt), Some(payload)) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    return Err(Error::Backend("redis: take returned a short entry".into()));
                };
                let id = JobId(reply::string(id, "job id")?);
                let token = reply::string(token, "hold token")?;
                let attempt = u32::try_from(reply::int(&attempt, "attempt")?).unwrap_or(0);
                let raw = stored_payload(reply::bytes(payload, "payload")?);
                let envelope = match Envelope::from_bytes(&raw) {
                    Ok(mut env) => {
                        env.attempt = attempt;
                        Ok(env)
                    }
                    Err(e) => Err(Malformed {
                        raw,
                        reason: format!("payload is not a job envelope: {e}"),
                    }),
                };
                Ok(Delivery {
                    lease: Lease {
                        id,
                        queue: queue.to_owned(),
                        token,
                        expires_at,
                    },
                    envelope,
                })
            })
            .collect()
    }

    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.per_lease(leases, &Scripts::get().remove, None, "remove")
            .await
    }

    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
        let limit = self.limit();
        let mut payloads = Vec::with_capacity(jobs.len());
        for env in &jobs {
            let mut p = format!("{} ", env.run_at.as_millis()).into_bytes();
            let head = p.len();
            serde_json::to_writer(&mut p, env).map_err(Error::Serialize)?;
            if p.len() - head > limit {
                return Err(Error::PayloadTooLarge {
                    size: p.len() - head,
                    limit,
                });
            }
            payloads.push(p);
        }
        let groups = self
            .register_groups(jobs.iter().map(|e| e.queue.as_str()))
            .await?;
        let mut out = vec![false; jobs.len()];
        for (queue, idx) in &groups {
            for chunk in idx.chunks(CHUNK) {
                let mut inv = Scripts::get().import.key(self.inner.keys.base(queue));
                for &i in chunk {
                    let env = &jobs[i];
                    inv.arg(env.id.as_str())
                        .arg(&payloads[i][..])
                        .arg(env.priority)
                        .arg(env.run_at.as_millis())
                        .arg(env.expires_at.map_or(0, Timestamp::as_millis))
                        .arg(env.idempotency_key.as_deref().unwrap_or(""))
                        .arg(env.attempt);
                }
                // Safe to repeat: a second call finds every id marked.
                let flags = reply::flags(self.run_again(&inv).await?, "import")?;
                for (&i, written) in chunk.iter().zip(flags) {
                    out[i] = written;
                }
            }
        }
        Ok(out)
    }

    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
        let groups = self
            .register_groups(jobs.iter().map(|d| d.queue.as_str()))
            .await?;
        let mut out = vec![false; jobs.len()];
        for (queue, idx) in &groups {
            for chunk in idx.chunks(CHUNK) {
                let mut inv = Scripts::get().import_dead.key(self.inner.keys.base(queue));
                for &i in chunk {
                    let d = &jobs[i];
                    let mut p = format!("{} ", d.died_at.as_millis()).into_bytes();
                    p.extend_from_slice(&d.raw);
                    inv.arg(d.id.as_str())
                        .arg(p)
                        .arg(d.reason.as_str())
                        .arg(d.died_at.as_millis().saturating_mul(1000))
                        .arg(d.envelope().map_or(0, |e| e.attempt));
                }
                let flags = reply::flags(self.run_again(&inv).await?, "import dead")?;
                for (&i, written) in chunk.iter().zip(flags) {
                    out[i] = written;
                }
            }
        }
        Ok(out)
    }

    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut inv = Scripts::get().dead_delete.key(self.inner.keys.base(queue));
            for id in chunk {
                inv.arg(id.as_str());
            }
            n += usize::try_from(reply::int(&self.run(&inv).await?, "dead delete")?).unwrap_or(0);
        }
        Ok(n)
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.inner.config)
            .field("waiter", &self.inner.waiter)
            .finish_non_exhaustive()
    }
}
