//! [`Link`]: one connection to the broker and its channels.
//!
//! A link is never repaired: when its connection dies, the backend opens a
//! new one with a higher generation number. Delivery tags and leases name the
//! generation they came from, so nothing from a dead link is ever acked on a
//! new one.

use crate::call::Calls;
use crate::config::AmqpConfig;
use crate::error::{from_lapin, located};
use jobsmith_core::Result;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::{Mutex, MutexGuard};

/// One connection and the channels jobsmith uses on it.
pub(crate) struct Link {
    /// Which connection this is, counting from 1.
    pub(crate) gen: u64,
    pub(crate) conn: Connection,
    /// Bounds every call on this connection by `call_timeout`.
    pub(crate) calls: Calls,
    /// Publishes jobs, in confirm mode.
    pub(crate) publish: Channel,
    /// Carries every consumer of this process, with manual acks and a per-consumer prefetch.
    pub(crate) consume: Channel,
    /// Declares, gets and key publishes; reopened after a channel error.
    admin: Mutex<Channel>,
}

impl Link {
    /// Connects and opens the channels; `capacity` limits the consume
    /// channel's unacknowledged deliveries in all (see [`Link::limit`]).
    pub(crate) async fn open(cfg: &AmqpConfig, gen: u64, capacity: Option<u16>) -> Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("jobsmith {}", std::process::id()).into());
        let tls = crate::tls::config(cfg)?;
        let runtime = lapin::runtime::default_runtime().map_err(from_lapin)?;
        let conn = Connection::connect_with_config(&cfg.connection_uri(), props, tls, runtime)
            .await
            .map_err(|e| located(from_lapin(e), &cfg.redacted()))?;
        let calls = Calls::new(&conn, cfg.call_timeout(), cfg.redacted());
        let publish = confirm_channel(&calls, &conn).await?;
        let consume = calls.answer("channel.open", conn.create_channel()).await?;
        calls
            .answer(
                "basic.qos",
                consume.basic_qos(cfg.prefetch, BasicQosOptions { global: false }),
            )
            .await?;
        let admin = confirm_channel(&calls, &conn).await?;
        let link = Self {
            gen,
            conn,
            calls,
            publish,
            consume,
            admin: Mutex::new(admin),
        };
        if let Some(n) = capacity {
            link.limit(n).await?;
        }
        Ok(link)
    }

    /// Holds at most `n` unacknowledged deliveries on the consume channel,
    /// across all its consumers (a per-channel `basic.qos`, beside each
    /// consumer's own prefetch): what the process's workers can run; 0 lifts
    /// the limit.
    pub(crate) async fn limit(&self, n: u16) -> Result<()> {
        self.calls
            .answer(
                "basic.qos",
                self.consume.basic_qos(n, BasicQosOptions { global: true }),
            )
            .await
    }

    /// Whether the connection and its working channels are up.
    pub(crate) fn alive(&self) -> bool {
        self.conn.status().connected()
            && self.publish.status().connected()
            && self.consume.status().connected()
    }

    /// The admin channel, reopened if a broker refusal closed it. Holding it
    /// serialises admin work in this process.
    pub(crate) async fn admin(&self) -> Result<MutexGuard<'_, Channel>> {
        let mut ch = self.admin.lock().await;
        if !ch.status().connected() {
            *ch = confirm_channel(&self.calls, &self.conn).await?;
        }
        Ok(ch)
    }

    /// A new admin channel, after a broker refusal closed the old one.
    pub(crate) async fn reopen_admin(&self) -> Result<Channel> {
        confirm_channel(&self.calls, &self.conn).await
    }

    /// A fresh channel for one browse of a dead-letter queue.
    pub(crate) async fn scratch(&self) -> Result<Channel> {
        self.calls
            .answer("channel.open", self.conn.create_channel())
            .await
    }

    /// Closes the connection; the broker requeues everything unacknowledged.
    #[cfg(feature = "test-util")]
    pub(crate) async fn close(&self) {
        let _ = self
            .calls
            .answer(
                "connection.close",
                self.conn.close(320, "jobsmith closing".into()),
            )
            .await;
    }
}

/// A new channel in confirm mode.
pub(crate) async fn confirm_channel(calls: &Calls, conn: &Connection) -> Result<Channel> {
    let ch = calls.answer("channel.open", conn.create_channel()).await?;
    calls
        .answer(
            "confirm.select",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
    Ok(ch)
}
