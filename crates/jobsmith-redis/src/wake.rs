//! Waking idle reserves without polling: a blocking pop on per-queue wake lists.
//!
//! Every script that makes a job ready, or schedules one sooner than what
//! was due first, leaves a token in its queue's wake list; an idle reserve
//! blocks in `BLPOP` on the lists of the queues it serves, with a timeout no
//! longer than the time until the next scheduled job or lease expiry. A
//! blocking command holds its connection, so it runs on a connection of its
//! own, taken from a small pool, never on the shared multiplexed one.
//!
//! The timeout is kept here, not by the server: Redis looks at blocked
//! clients' timeouts only on its periodic tick (`hz`, 10 a second by
//! default), so a `BLPOP` times out up to 100 ms late. When the time is up
//! the wait ends with `CLIENT UNBLOCK`, sent on the shared connection, and
//! the blocking connection goes back to the pool.

use crate::config::RedisConfig;
use crate::error::from_redis;
use jobsmith_core::lock::LockExt;
use jobsmith_core::Result;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Idle blocking connections kept for reuse.
const POOL_SIZE: usize = 4;

/// How long an unblocked pop may take to answer before its connection is dropped.
const GRACE: Duration = Duration::from_secs(2);

/// Blocking connections, pooled.
pub(crate) struct Waiter {
    client: Client,
    /// How long a connection attempt may take.
    connect_timeout: Duration,
    /// How long a command other than the pop itself may wait for its answer.
    call_timeout: Duration,
    /// The backend's shared connection, which ends waits whose time is up.
    control: ConnectionManager,
    /// Set once the server refuses `CLIENT ID` or `CLIENT UNBLOCK` (an ACL
    /// without them): a wait whose time is up then drops its connection.
    no_unblock: AtomicBool,
    idle: Mutex<Vec<Blocking>>,
}

/// A connection for blocking commands, and its id on the server.
struct Blocking {
    conn: MultiplexedConnection,
    id: Option<i64>,
}

impl Waiter {
    pub(crate) fn new(client: Client, control: ConnectionManager, config: &RedisConfig) -> Self {
        Self {
            client,
            connect_timeout: config.connect_timeout(),
            call_timeout: config.call_timeout(),
            control,
            no_unblock: AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Blocks until a token arrives on one of `lists` or `timeout` passes.
    ///
    /// If the caller gives up (the future is dropped) the connection is
    /// dropped with it rather than pooled, since the server may still be
    /// blocking on it.
    pub(crate) async fn wait(&self, lists: &[String], timeout: Duration) -> Result<()> {
        let mut blocking = match self.take() {
            Some(b) => b,
            None => self.open().await?,
        };
        // Redis takes fractional seconds; 0 would mean "forever", so at least
        // a millisecond. The server's timeout only backs up the one kept here.
        let secs = format!("{:.3}", timeout.as_secs_f64().max(0.001));
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(lists).arg(secs);
        let id = blocking.id;
        let reply = {
            let reply = cmd.query_async::<Value>(&mut blocking.conn);
            tokio::pin!(reply);
            tokio::select! {
                r = &mut reply => Some(r),
                () = tokio::time::sleep(timeout) => {
                    if self.unblock(id).await? {
                        // The server answers the unblocked pop at once.
                        tokio::time::timeout(GRACE, &mut reply).await.ok()
                    } else {
                        None
                    }
                }
            }
        };
        match reply {
            Some(Ok(_)) => {
                self.put(blocking);
                Ok(())
            }
            Some(Err(e)) => Err(from_redis(e)),
            // The time is up and the pop could not be ended cleanly: drop
            // this connection (the server frees a closed client's block).
            None => Ok(()),
        }
    }

    /// A new blocking connection, with its client id when the server tells it.
    async fn open(&self) -> Result<Blocking> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(from_redis)?;
        let id = if self.no_unblock.load(Ordering::Relaxed) {
            None
        } else {
            // The connection has no response timeout (it blocks in `BLPOP`
            // for as long as a wait asks), so this one is kept here.
            let mut ask = redis::cmd("CLIENT");
            ask.arg("ID");
            let asked = ask.query_async(&mut conn);
            let answer = tokio::time::timeout(self.call_timeout, asked)
                .await
                .map_err(|_| {
                    from_redis(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                })?;
            match answer {
                Ok(id) => Some(id),
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                    self.refused(&e);
                    None
                }
                Err(e) => return Err(from_redis(e)),
            }
        };
        Ok(Blocking { conn, id })
    }

    /// Ends the pop blocking client `id`; whether its answer can be awaited.
    /// Fails when the server does not answer at all (it is down or hung):
    /// the wait then reports it rather than ending as if it had timed out.
    async fn unblock(&self, id: Option<i64>) -> Result<bool> {
        let Some(id) = id else { return Ok(false) };
        let mut control = self.control.clone();
        let sent = redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(id)
            .query_async::<i64>(&mut control)
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                self.refused(&e);
                Ok(false)
            }
            Err(e) if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() => {
                Err(from_redis(e))
            }
            Err(_) => Ok(false),
        }
    }

    fn refused(&self, e: &redis::RedisError) {
        if !self.no_unblock.swap(true, Ordering::Relaxed) {
            tracing::info!(error = %e, "the Redis user may not run CLIENT ID / CLIENT UNBLOCK: an idle reserve whose wait is up drops its blocking connection instead of reusing it");
        }
    }

    fn take(&self) -> Option<Blocking> {
        self.idle.lock_unpoisoned().pop()
    }

    fn put(&self, blocking: Blocking) {
        let mut idle = self.idle.lock_unpoisoned();
        if idle.len() < POOL_SIZE {
            idle.push(blocking);
        }
    }

    /// Drops every pooled connection (after a connection error they may be dead).
    pub(crate) fn clear(&self) {
        self.idle.lock_unpoisoned().clear();
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map(|i| i.len()).unwrap_or(0);
        f.debug_struct("Waiter").field("idle", &idle).finish()
    }
}
