//! The backend's shared core: configuration, the current [`Link`], and
//! reconnection with backoff.

use crate::config::AmqpConfig;
use crate::error::disconnected;
use crate::link::Link;
use crate::names::Names;
use crate::state::State;
use crate::topology::Topology;
use jobsmith_core::{Error, Result, Tally};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Inner {
    pub(crate) cfg: AmqpConfig,
    pub(crate) names: Names,
    /// Distinguishes this process's lease tokens from any other's.
    pub(crate) instance: String,
    current: RwLock<Option<Arc<Link>>>,
    connecting: tokio::sync::Mutex<()>,
    /// Serialises starting consumers, so a queue never gets two in one process.
    pub(crate) consumer_setup: tokio::sync::Mutex<()>,
    /// Serialises parking and renewing leases with taking them to settle.
    pub(crate) handover: tokio::sync::Mutex<()>,
    /// Serialises acks and rejects on the consume channel (see `acks.rs`).
    pub(crate) settling: tokio::sync::Mutex<()>,
    gen: AtomicU64,
    unavailable: AtomicBool,
    pub(crate) state: Mutex<State>,
    /// Signalled when deliveries arrive or the link changes.
    pub(crate) wake: Notify,
    /// Signalled when the lease table changes.
    pub(crate) reaper: Arc<Notify>,
    /// Signalled when the link dies.
    pub(crate) lost: Arc<Notify>,
    /// Outcome counts not yet added to the counter queues (see `counts.rs`).
    pub(crate) tally: Tally,
    /// Serialises flushing the tally with reading the totals, so a read
    /// never misses counts another task of this process is flushing.
    pub(crate) flushing: tokio::sync::Mutex<()>,
}

impl Inner {
    pub(crate) fn new(cfg: AmqpConfig) -> Self {
        Self {
            names: Names::new(&cfg.prefix),
            cfg,
            instance: format!("{:08x}", fastrand::u32(..)),
            current: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            consumer_setup: tokio::sync::Mutex::new(()),
            handover: tokio::sync::Mutex::new(()),
            settling: tokio::sync::Mutex::new(()),
            gen: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            reaper: Arc::new(Notify::new()),
            lost: Arc::new(Notify::new()),
            tally: Tally::new(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn topology(&self) -> Topology<'_> {
        Topology {
            cfg: &self.cfg,
            names: &self.names,
        }
    }

    /// The live link, if there is one, without trying to connect.
    pub(crate) fn current(&self) -> Option<Arc<Link>> {
        let l = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        l.alive().then_some(l)
    }

    /// The live link, connecting first if there is none.
    pub(crate) async fn link(self: &Arc<Self>) -> Result<Arc<Link>> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(disconnected("the connection was severed"));
        }
        if let Some(l) = self.current() {
            return Ok(l);
        }
        self.reconnect().await
    }

    /// Opens a new link (once, however many tasks ask), declares the shared
    /// topology and resumes every consumer.
    pub(crate) async fn reconnect(self: &Arc<Self>) -> Result<Arc<Link>> {
        let _guard = self.connecting.lock().await;
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(disconnected("the connection was severed"));
        }
        if let Some(l) = self.current() {
            return Ok(l);
        }
        let gen = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
        let link = tokio::time::timeout(CONNECT_TIMEOUT, Link::open(&self.cfg, gen))
            .await
            .map_err(|_| Error::Timeout(CONNECT_TIMEOUT))??;
        let link = Arc::new(link);
        {
            let admin = link.admin().await?;
            self.topology().declare_shared(&admin).await?;
        }
        let wanted: Vec<String> = {
            let mut st = self.lock();
            st.new_connection(gen);
            st.wanted.iter().cloned().collect()
        };
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&link));
        tracing::info!(server = %self.cfg.redacted(), generation = gen, "connected to RabbitMQ");
        for q in &wanted {
            self.start_consumer(&link, q).await?;
        }
        self.wake.notify_waiters();
        self.reaper.notify_one();
        Ok(link)
    }

    /// Cuts the connection, and keeps it cut until called with `false`.
    pub(crate) async fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            let link = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(l) = link {
                l.close().await;
            }
        }
        self.lost.notify_one();
        self.wake.notify_waiters();
    }

    /// How many connections have been opened so far.
    pub(crate) fn generation(&self) -> u64 {
        self.gen.load(Ordering::SeqCst)
    }

    pub(crate) fn is_unavailable(&self) -> bool {
        self.unavailable.load(Ordering::SeqCst)
    }
}

/// Keeps a link up: when it dies, reconnects with capped, jittered
/// exponential backoff (50 ms doubling to 5 s) and resumes consuming, whether
/// or not anyone is calling the backend. Ends when the backend is dropped.
pub(crate) async fn supervise(weak: Weak<Inner>, lost: Arc<Notify>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let healthy = {
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_unavailable() || inner.current().is_some() {
                true
            } else {
                match inner.reconnect().await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "RabbitMQ connection lost; reconnecting");
                        inner.wake.notify_waiters();
                        false
                    }
                }
            }
        };
        if healthy {
            backoff = Duration::from_millis(50);
            let _ = tokio::time::timeout(Duration::from_secs(1), lost.notified()).await;
        } else {
            let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
