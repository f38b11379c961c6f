//! [`Link`]: one connection to the broker and its channels.
//!
//! A link is never repaired: when its connection dies, the backend opens a
//! new one with a higher generation number. Delivery tags and leases name the
//! generation they came from, so nothing from a dead link is ever acked on a
//! new one.

use crate::config::AmqpConfig;
use crate::error::from_lapin;
use jobsmith_core::Result;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::{Mutex, MutexGuard};

/// One connection and the channels jobsmith uses on it.
pub(crate) struct Link {
    /// Which connection this is, counting from 1.
    pub(crate) gen: u64,
    pub(crate) conn: Connection,
    /// Publishes jobs, in confirm mode.
    pub(crate) publish: Channel,
    /// Carries every consumer of this process, with manual acks and a per-consumer prefetch.
    pub(crate) consume: Channel,
    /// Declares, gets and key publishes; reopened after a channel error.
    admin: Mutex<Channel>,
}

impl Link {
    /// Connects and opens the channels.
    pub(crate) async fn open(cfg: &AmqpConfig, gen: u64) -> Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("jobsmith {}", std::process::id()).into());
        let conn = Connection::connect(&cfg.server, props)
            .await
            .map_err(from_lapin)?;
        let publish = confirm_channel(&conn).await?;
        let consume = conn.create_channel().await.map_err(from_lapin)?;
        consume
            .basic_qos(cfg.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(from_lapin)?;
        let admin = confirm_channel(&conn).await?;
        Ok(Self {
            gen,
            conn,
            publish,
            consume,
            admin: Mutex::new(admin),
        })
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
            *ch = confirm_channel(&self.conn).await?;
        }
        Ok(ch)
    }

    /// A new admin channel, after a broker refusal closed the old one.
    pub(crate) async fn reopen_admin(&self) -> Result<Channel> {
        confirm_channel(&self.conn).await
    }

    /// A fresh channel for one browse of a dead-letter queue.
    pub(crate) async fn scratch(&self) -> Result<Channel> {
        self.conn.create_channel().await.map_err(from_lapin)
    }

    /// Closes the connection; the broker requeues everything unacknowledged.
    pub(crate) async fn close(&self) {
        let _ = self.conn.close(320, "jobsmith closing".into()).await;
    }
}

/// A new channel in confirm mode.
pub(crate) async fn confirm_channel(conn: &Connection) -> Result<Channel> {
    let ch = conn.create_channel().await.map_err(from_lapin)?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(from_lapin)?;
    Ok(ch)
}
