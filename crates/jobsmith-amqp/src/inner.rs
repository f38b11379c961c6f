//! The backend's shared core: configuration, the current [`Link`], and
//! reconnection with backoff.

use crate::config::AmqpConfig;
use crate::error::disconnected;
use crate::link::Link;
use crate::names::Names;
use crate::state::State;
use crate::topology::Topology;
use jobsmith_core::lock::{LockExt, RwLockExt};
use jobsmith_core::retry::{jitter, Doubling};
use jobsmith_core::{QueueErrors, Result, Tally};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How long one connection attempt may take, or `call_timeout` if shorter.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Inner {
    pub(crate) cfg: AmqpConfig,
    pub(crate) names: Names,
    /// Distinguishes this process's lease tokens from any other's.
    pub(crate) instance: String,
    current: RwLock<Option<Arc<Link>>>,
    connecting: tokio::sync::Mutex<()>,
    /// How many connection attempts have failed, and why the last one did.
    failures: Mutex<(u64, String)>,
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
    /// Ends waiting reserves when a worker stops.
    pub(crate) interrupt: jobsmith_core::Interrupt,
    /// Signalled when the lease table changes.
    pub(crate) reaper: Arc<Notify>,
    /// Signalled when the link dies.
    pub(crate) lost: Arc<Notify>,
    /// Outcome counts not yet added to the counter queues (see `counts.rs`).
    pub(crate) tally: Tally,
    /// Serialises flushing the tally with reading the totals, so a read
    /// never misses counts another task of this process is flushing.
    pub(crate) flushing: tokio::sync::Mutex<()>,
    /// Queues failing on their own, reported while the others go on.
    pub(crate) errors: QueueErrors,
}

impl Inner {
    pub(crate) fn new(cfg: AmqpConfig) -> Self {
        Self {
            names: Names::new(&cfg.prefix),
            cfg,
            instance: format!("{:08x}", fastrand::u32(..)),
            current: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            failures: Mutex::new((0, String::new())),
            consumer_setup: tokio::sync::Mutex::new(()),
            handover: tokio::sync::Mutex::new(()),
            settling: tokio::sync::Mutex::new(()),
            gen: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            interrupt: jobsmith_core::Interrupt::default(),
            reaper: Arc::new(Notify::new()),
            lost: Arc::new(Notify::new()),
            tally: Tally::new(),
            flushing: tokio::sync::Mutex::new(()),
            errors: QueueErrors::new(),
        }
    }

    pub(crate) fn topology(&self) -> Topology<'_> {
        Topology {
            cfg: &self.cfg,
            names: &self.names,
        }
    }

    /// The live link, if there is one, without trying to connect.
    pub(crate) fn current(&self) -> Option<Arc<Link>> {
        let l = self.current.read_unpoisoned().clone()?;
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
    ///
    /// A task that waited while another's attempt failed gets that failure
    /// rather than trying again at once: callers waiting together fail
    /// together, within one attempt's time (a hung broker fails every call
    /// within `call_timeout`, not one more for each caller in line).
    pub(crate) async fn reconnect(self: &Arc<Self>) -> Result<Arc<Link>> {
        let failed_before = self.failures.lock_unpoisoned().0;
        let _guard = self.connecting.lock().await;
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(disconnected("the connection was severed"));
        }
        if let Some(l) = self.current() {
            return Ok(l);
        }
        {
            let failures = self.failures.lock_unpoisoned();
            if failures.0 != failed_before {
                return Err(disconnected(&format!(
                    "reconnecting failed just now: {}",
                    failures.1
                )));
            }
        }
        let attempt = self.open_and_resume().await;
        if let Err(e) = &attempt {
            let mut failures = self.failures.lock_unpoisoned();
            failures.0 += 1;
            failures.1 = e.describe();
        }
        attempt
    }

    /// One connection attempt: see [`Inner::reconnect`].
    async fn open_and_resume(self: &Arc<Self>) -> Result<Arc<Link>> {
        let gen = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
        let capacity = self.state.lock_unpoisoned().channel_limit();
        let limit = self.cfg.call_timeout().min(CONNECT_TIMEOUT);
        let link = tokio::time::timeout(limit, Link::open(&self.cfg, gen, capacity))
            .await
            .map_err(|_| {
                disconnected(&format!(
                    "connecting to {} got no answer within {limit:?}; the broker may be hung \
                     (the limit is the URL's `call_timeout`)",
                    self.cfg.redacted()
                ))
            })??;
        let link = Arc::new(link);
        {
            let admin = link.admin().await?;
            self.topology().declare_shared(&link.calls, &admin).await?;
        }
        let wanted: Vec<String> = {
            let mut st = self.state.lock_unpoisoned();
            st.new_connection(gen);
            st.wanted.iter().cloned().collect()
        };
        *self.current.write_unpoisoned() = Some(Arc::clone(&link));
        tracing::info!(server = %self.cfg.redacted(), generation = gen, "connected to RabbitMQ");
        for q in &wanted {
            match self.start_consumer(&link, q).await {
                Err(e) if e.is_transient() => return Err(e),
                // One queue refused: the others are consumed, it is tried again on a reserve.
                Err(e) => self.errors.failed(q, "consume", &e),
                Ok(_) => {}
            }
        }
        self.wake.notify_waiters();
        self.reaper.notify_one();
        Ok(link)
    }

    /// Cuts the connection, and keeps it cut until called with `false`.
    #[cfg(feature = "test-util")]
    pub(crate) async fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            let link = self.current.write_unpoisoned().take();
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
    let mut backoff = Doubling::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        // The wait before reconnecting again, or None while the link is up.
        let retry_in = {
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_unavailable() || inner.current().is_some() {
                None
            } else {
                match inner.reconnect().await {
                    Ok(_) => None,
                    Err(e) if e.is_permanent() => {
                        let delay = backoff.next_delay();
                        // A worker stops on this; an app that only enqueues
                        // sees it on each call, until the broker is fixed.
                        tracing::error!(server = %inner.cfg.redacted(), error = %e.describe(), retry_in_ms = delay.as_millis() as u64, "RabbitMQ refuses this configuration; trying again in case it is fixed there");
                        inner.wake.notify_waiters();
                        Some(delay)
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(server = %inner.cfg.redacted(), error = %e.describe(), retry_in_ms = delay.as_millis() as u64, "RabbitMQ connection lost; reconnecting");
                        inner.wake.notify_waiters();
                        Some(delay)
                    }
                }
            }
        };
        match retry_in {
            None => {
                backoff.reset();
                let _ = tokio::time::timeout(Duration::from_secs(1), lost.notified()).await;
            }
            Some(delay) => tokio::time::sleep(delay + jitter(delay)).await,
        }
    }
}
