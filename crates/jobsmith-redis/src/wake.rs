//! Waking idle reserves without polling: a blocking pop on per-queue wake lists.
//!
//! Every script that makes a job ready leaves a token in its queue's wake
//! list; an idle reserve blocks in `BLPOP` on the lists of the queues it
//! serves, with a timeout no longer than the time until the next scheduled
//! job or lease expiry. A blocking command holds its connection, so it runs
//! on a connection of its own, taken from a small pool, never on the shared
//! multiplexed one.

use crate::error::from_redis;
use jobsmith_core::Result;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use std::sync::Mutex;
use std::time::Duration;

/// Idle blocking connections kept for reuse.
const POOL_SIZE: usize = 4;

/// How much longer than the server-side timeout the client waits for a reply.
const GRACE: Duration = Duration::from_secs(2);

/// Blocking connections, pooled.
pub(crate) struct Waiter {
    client: Client,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl Waiter {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Blocks until a token arrives on one of `lists` or `timeout` passes.
    ///
    /// If the caller gives up (the future is dropped) the connection is
    /// dropped with it rather than pooled, since the server may still be
    /// blocking on it.
    pub(crate) async fn wait(&self, lists: &[String], timeout: Duration) -> Result<()> {
        let mut conn = match self.take() {
            Some(c) => c,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(None);
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(from_redis)?
            }
        };
        // Redis takes fractional seconds; 0 would mean "forever", so at least a millisecond.
        let secs = format!("{:.3}", timeout.as_secs_f64().max(0.001));
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(lists).arg(secs);
        match tokio::time::timeout(timeout + GRACE, cmd.query_async::<redis::Value>(&mut conn))
            .await
        {
            Ok(Ok(_)) => {
                self.put(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(from_redis(e)),
            // The server did not answer in time: drop this connection, let the caller look again.
            Err(_) => Ok(()),
        }
    }

    fn take(&self) -> Option<MultiplexedConnection> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
    }

    fn put(&self, conn: MultiplexedConnection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
    }

    /// Drops every pooled connection (after a connection error they may be dead).
    pub(crate) fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map(|i| i.len()).unwrap_or(0);
        f.debug_struct("Waiter").field("idle", &idle).finish()
    }
}
