//! [`RedisBackend`]: connecting, and the hot path of the [`Backend`] contract
//! on Redis (enqueue, reserve, extend), one Lua script per state move.
//!
//! The capabilities live beside it: settling by kind in `settle.rs`, dead
//! letters in `dead.rs`, inspection in `inspect.rs`, the metadata store in
//! `meta.rs` and migration in `migrate.rs`.

use crate::config::RedisConfig;
use crate::error::{from_redis, located};
use crate::names::Keys;
use crate::reply;
use crate::scripts::{Scripts, CHUNK, SETTLE_LIMIT};
use crate::wake::Waiter;
use futures_util::future::try_join_all;
use jobsmith_core::lock::LockExt;
use jobsmith_core::{
    settle_by_kind, Backend, DeadLetters, Delivery, Envelope, Error, Inspect, JobId, Lease,
    LeaseStatus, Malformed, MetaStore, Migrate, Outcome, QueueErrors, Result, Timestamp,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, Script, ScriptInvocation, ServerErrorKind, Value};
use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// The default largest envelope: 16 MiB, as on the memory backend.
const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Most jobs one reserve script hands out.
pub(crate) const MAX_RESERVE: usize = 1000;

/// Durations beyond this (about 100 years) are treated as this, to keep script arithmetic exact.
const FOREVER_MS: u64 = 100 * 365 * 86_400_000;

/// A jobsmith backend on Redis. Clones share one connection.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    conn: ConnectionManager,
    /// `host:port/db`, for logs and errors.
    address: String,
    /// Set when a reserve failed to reach the server; the next that does says so.
    unreachable: std::sync::atomic::AtomicBool,
    waiter: Waiter,
    /// Ends waiting reserves when a worker stops.
    interrupt: jobsmith_core::Interrupt,
    pub(crate) keys: Keys,
    pub(crate) config: RedisConfig,
    /// Queues failing on their own, reported while the others go on.
    pub(crate) errors: QueueErrors,
    /// When this process last registered each queue it enqueued to.
    registered: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// How long a queue this process registered is taken to stay registered.
/// Nothing but a hand-made deletion removes a queue from the registry; an
/// enqueue after that much time registers it again, so such a deletion
/// hides a queue from `stats` for at most this long.
const REGISTERED_FOR: Duration = Duration::from_secs(60);

/// Where `client` connects: `host:port/db` (no credentials).
fn address_of(client: &Client) -> String {
    let info = client.get_connection_info();
    format!("{}/{}", info.addr(), info.redis_settings().db())
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
    ///
    /// Fails with [`Error::Misconfigured`] when the server refuses the
    /// password (or wants one and none is given), or has no such database.
    pub async fn connect_with(config: RedisConfig) -> Result<Self> {
        let client = open_client(&config)?;
        let address = address_of(&client);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout()))
            .set_response_timeout(Some(config.call_timeout()))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        // The manager tries a connection three times; a server that accepts
        // connections and never answers must not take three limits.
        let connecting = ConnectionManager::new_with_config(client.clone(), manager);
        let mut conn = tokio::time::timeout(config.call_timeout(), connecting)
            .await
            .map_err(|_| {
                located(
                    from_redis(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    ))),
                    &address,
                )
            })?
            .map_err(|e| located(from_redis(e), &address))?;
        // A server that wants a password lets a client without one connect,
        // and refuses its first command (NOAUTH): ask one now.
        tokio::time::timeout(
            config.call_timeout(),
            redis::cmd("PING").query_async::<Value>(&mut conn),
        )
        .await
        .map_err(|_| {
            from_redis(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        })?
        .map_err(|e| located(from_redis(e), &address))?;
        let keys = Keys::new(&config.prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                waiter: Waiter::new(client, conn.clone(), &config),
                address,
                unreachable: std::sync::atomic::AtomicBool::new(false),
                conn,
                interrupt: jobsmith_core::Interrupt::default(),
                keys,
                config,
                errors: QueueErrors::new(),
                registered: std::sync::Mutex::default(),
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

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    pub(crate) fn limit(&self) -> usize {
        self.inner
            .config
            .settings
            .max_payload
            .unwrap_or(DEFAULT_MAX_PAYLOAD)
    }

    pub(crate) async fn run(&self, inv: &ScriptInvocation<'_>) -> Result<Value> {
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
    pub(crate) async fn run_again(&self, inv: &ScriptInvocation<'_>) -> Result<Value> {
        let mut conn = self.conn();
        match inv.invoke_async(&mut conn).await {
            Err(e) if e.is_connection_dropped() => {
                let mut conn = self.conn();
                inv.invoke_async(&mut conn).await.map_err(from_redis)
            }
            other => other.map_err(from_redis),
        }
    }

    /// A reserve reached the server: if the one before could not, says so.
    fn reached(&self) {
        let inner = &self.inner;
        if inner.unreachable.load(std::sync::atomic::Ordering::Relaxed)
            && inner
                .unreachable
                .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(server = %inner.address, "reconnected to Redis");
        }
    }

    /// A reserve failed with `e`: notes a lost server, and names it in a refusal.
    fn unreached(&self, e: Error) -> Error {
        if e.is_transient() {
            self.inner
                .unreachable
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        located(e, &self.inner.address)
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
        // The jobs the script dropped as expired: counted here, where the metrics are.
        let expired = items
            .next()
            .map(|v| reply::array(v, "reserve"))
            .transpose()?
            .unwrap_or_default();
        for name in expired {
            jobsmith_core::count_expired(queue, &reply::string(name, "expired job name")?);
        }
        let expires_at = Timestamp::now().plus(lease);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(delivery(item, queue, expires_at, "reserve", "lease token")?);
        }
        Ok((out, next))
    }

    /// Runs a per-lease script over `leases`, grouped by queue and chunked; one flag per lease, in order.
    pub(crate) async fn per_lease(
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
                        return Err(Error::backend(format!(
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
}

/// The payload in a job's stored form, `<ready ms> <payload>` (see
/// `lua/common.lua`): the bytes after the first space, exactly as enqueued.
/// Bytes without that prefix are handed back whole.
pub(crate) fn stored_payload(mut raw: Vec<u8>) -> Vec<u8> {
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

/// Room for a stored payload's ready time and an envelope's fields besides
/// its arguments: ids, names, instants and numbers come to about 250 bytes.
const ENVELOPE_ROOM: usize = 320;

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(FOREVER_MS)
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn server(&self) -> String {
        self.inner.address.clone()
    }

    fn max_payload(&self) -> usize {
        self.limit()
    }

    async fn enqueue(&self, jobs: Vec<Envelope>) -> Result<Vec<JobId>> {
        let limit = self.limit();
        // Each job's stored form, `<run_at> <envelope JSON>`, written at once.
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(jobs.len());
        for env in &jobs {
            // Sized for the envelope's fields around its arguments, so that
            // writing it takes one allocation rather than one per doubling.
            let mut p = Vec::with_capacity(ENVELOPE_ROOM + env.args.get().len());
            // Writing into a Vec cannot fail.
            let _ = write!(p, "{} ", env.run_at.as_millis());
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
        // Queues not registered lately, in the set `stats` reads: a single
        // enqueue to a known queue is then one call, not two.
        let unregistered: Vec<&str> = {
            let now = std::time::Instant::now();
            let registered = self.inner.registered.lock_unpoisoned();
            groups
                .keys()
                .copied()
                .filter(|q| {
                    registered
                        .get(*q)
                        .is_none_or(|at| now.duration_since(*at) >= REGISTERED_FOR)
                })
                .collect()
        };
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
                            return Err(Error::backend(format!(
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
                if unregistered.is_empty() {
                    return Ok(());
                }
                redis::cmd("SADD")
                    .arg(self.inner.keys.queues())
                    .arg(&unregistered)
                    .query_async::<Value>(&mut conn)
                    .await
                    .map_err(from_redis)?;
                // Noted only once the set holds them: a failed call tries again.
                let now = std::time::Instant::now();
                let mut registered = self.inner.registered.lock_unpoisoned();
                for q in &unregistered {
                    registered.insert((*q).to_owned(), now);
                }
                Ok(())
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
        let mark = self.inner.interrupt.mark();
        // Queues that failed in this call: reported, and left alone until the
        // next call, so that the others are served (and waited on) meanwhile.
        let mut failed: Vec<&str> = Vec::new();
        let mut first_error = None;
        loop {
            let mut out = Vec::new();
            let mut next: Option<Duration> = None;
            for queue in queues {
                if out.len() >= max {
                    break;
                }
                if failed.contains(&queue.as_str()) {
                    continue;
                }
                match self.reserve_one(queue, max - out.len(), lease).await {
                    Ok((got, at)) => {
                        self.inner.errors.worked(queue);
                        out.extend(got);
                        if let Some(at) = at {
                            next = Some(next.map_or(at, |n| n.min(at)));
                        }
                    }
                    Err(e) => {
                        self.inner.errors.failed(queue, "reserve", &e);
                        failed.push(queue);
                        first_error.get_or_insert(e);
                    }
                }
            }
            let working: Vec<&String> = queues
                .iter()
                .filter(|q| !failed.contains(&q.as_str()))
                .collect();
            if !working.is_empty() {
                self.reached();
            }
            if !out.is_empty() || queues.is_empty() {
                return Ok(out);
            }
            if working.is_empty() {
                if let Some(e) = first_error.take() {
                    return Err(self.unreached(e));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            let mut timeout = deadline - now;
            if let Some(at) = next {
                // A millisecond late at most, so the event is due when we look again.
                timeout = timeout.min(at + Duration::from_millis(1));
            }
            let lists: Vec<String> = working.iter().map(|q| self.inner.keys.wake(q)).collect();
            // A wait given up for a stop drops its blocking connection
            // unpooled; nothing is taken by a wait, so nothing is lost.
            let waited = tokio::select! {
                r = self.inner.waiter.wait(&lists, timeout) => r,
                () = self.inner.interrupt.fired(mark) => return Ok(out),
            };
            if let Err(e) = waited {
                self.inner.waiter.clear();
                return Err(self.unreached(e));
            }
        }
    }

    async fn settle(&self, outcomes: &[Outcome]) -> Vec<Result<LeaseStatus>> {
        settle_by_kind(self, outcomes).await
    }

    async fn stop_reserving(&self, _queues: &[String]) -> Result<()> {
        // A reserve hands out all it leases: only the waiting ones end.
        self.inner.interrupt.fire();
        Ok(())
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.per_lease(leases, &Scripts::get().extend, Some(ms(lease)), "extend")
            .await
    }

    async fn key_holder(&self, queue: &str, key: &str) -> Result<Option<JobId>> {
        let mut conn = self.conn();
        // Held while queued or running; completed, it carries a TTL of `unique_for`.
        let id: Option<String> = redis::cmd("GET")
            .arg(self.inner.keys.idem(queue, key))
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(id.map(JobId))
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

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.inner.config)
            .field("waiter", &self.inner.waiter)
            .finish_non_exhaustive()
    }
}

/// One job of a reserve's or take's reply, `[id, token, attempt, payload]`,
/// as a delivery of `queue` whose lease (or hold) runs to `expires_at`; a
/// payload that is not an envelope comes as [`Malformed`], to dead-letter.
pub(crate) fn delivery(
    item: Value,
    queue: &str,
    expires_at: Timestamp,
    what: &str,
    token_kind: &str,
) -> Result<Delivery> {
    let mut f = reply::array(item, what)?.into_iter();
    let (Some(id), Some(token), Some(attempt), Some(payload)) =
        (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(Error::backend(format!(
            "redis: {what} returned a short entry"
        )));
    };
    let id = JobId(reply::string(id, "job id")?);
    let token = reply::string(token, token_kind)?;
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
}
