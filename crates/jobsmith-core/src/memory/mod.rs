//! The embedded, in-process backend: the default, and what tests run on.
//!
//! It keeps nothing across restarts. Everything else matches the other
//! backends, as the conformance suite checks: priorities, delays, leases that
//! expire and can be extended, fencing, dead letters with retention, TTL,
//! idempotency keys and stats. An idle `reserve` sleeps on a [`Notify`] and a
//! timer set for the next due job or lease expiry, never on a polling loop.

use crate::backend::{
    settle_by_kind, Backend, DeadJob, DeadLetters, Delivery, Inspect, Lease, LeaseStatus,
    Malformed, MetaStore, Migrate, Outcome, QueueStats, Settings, SettleByKind,
};
use crate::envelope::{Envelope, JobId};
use crate::error::{Error, Result};
use crate::lock::LockExt;
use crate::time::Timestamp;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

mod dead;
mod inspect;
mod meta;
mod migrate;
mod settle;

/// The default largest envelope: 16 MiB.
const DEFAULT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// An in-process backend. Clones share the same queues.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Notify,
    /// Ends waiting reserves when a worker stops.
    interrupt: crate::Interrupt,
    settings: Settings,
    unavailable: AtomicBool,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    seq: u64,
    /// The metadata store.
    meta: std::collections::BTreeMap<String, Vec<u8>>,
}

/// Strict priority, then the time the job became ready, then arrival order.
type ReadyKey = (Reverse<i32>, Timestamp, u64);

#[derive(Default)]
struct Queue {
    jobs: HashMap<JobId, Stored>,
    ready: BTreeMap<ReadyKey, JobId>,
    scheduled: BTreeSet<(Timestamp, u64, JobId)>,
    in_flight: HashMap<JobId, Flight>,
    lease_expiry: BTreeSet<(Timestamp, JobId)>,
    dead: BTreeMap<(Timestamp, u64), DeadJob>,
    dead_ids: HashMap<JobId, (Timestamp, u64)>,
    keys: HashMap<String, KeyHold>,
    expired: u64,
    processed: u64,
    failed: u64,
    /// Ids written by `import` / `import_dead`: each is written once.
    imported: HashSet<JobId>,
}

struct Stored {
    payload: std::result::Result<Envelope, Malformed>,
    ready_key: ReadyKey,
}

struct Flight {
    token: String,
    expires_at: Timestamp,
}

struct KeyHold {
    id: JobId,
    /// `None` while the job is queued or running; when it completed, until when the key is held.
    completed_until: Option<Timestamp>,
}

impl MemoryBackend {
    /// A new, empty backend.
    pub fn new(settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                interrupt: crate::Interrupt::default(),
                settings,
                unavailable: AtomicBool::new(false),
            }),
        }
    }

    /// Makes every operation fail with [`Error::Connection`] until called
    /// again with `false`: the memory backend's stand-in for a lost
    /// connection, for testing how workers ride one out.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.unavailable.store(unavailable, Ordering::SeqCst);
        self.inner.wake.notify_waiters();
    }

    /// Puts raw bytes at the head of `queue` as if another program had written
    /// them, for testing how workers deal with payloads that are not envelopes.
    pub fn push_raw(&self, queue: &str, raw: Vec<u8>) {
        let mut st = self.inner.state.lock_unpoisoned();
        let seq = st.next_seq();
        let now = Timestamp::now();
        let q = st.queue(queue);
        let payload = match Envelope::from_bytes(&raw) {
            Ok(env) => Ok(env),
            Err(e) => Err(Malformed {
                raw,
                reason: format!("payload is not a job envelope: {e}"),
            }),
        };
        let id = match &payload {
            Ok(env) => env.id.clone(),
            Err(_) => JobId::new(),
        };
        let key = (Reverse(i32::MAX), now, seq);
        q.ready.insert(key, id.clone());
        q.jobs.insert(
            id,
            Stored {
                payload,
                ready_key: key,
            },
        );
        drop(st);
        self.inner.wake.notify_waiters();
    }

    /// The envelopes waiting in `queue`: ready ones in the order they will
    /// run, then scheduled ones by due time. Changes nothing.
    pub fn peek(&self, queue: &str) -> Vec<Envelope> {
        let st = self.inner.state.lock_unpoisoned();
        let Some(q) = st.queues.get(queue) else {
            return Vec::new();
        };
        let ready = q.ready.values();
        let scheduled = q.scheduled.iter().map(|(_, _, id)| id);
        ready
            .chain(scheduled)
            .filter_map(|id| {
                q.jobs
                    .get(id)
                    .and_then(|j| j.payload.as_ref().ok())
                    .cloned()
            })
            .collect()
    }

    fn check_available(&self) -> Result<()> {
        if self.inner.unavailable.load(Ordering::SeqCst) {
            return Err(Error::connection(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "memory backend set unavailable",
            )));
        }
        Ok(())
    }

    fn limit(&self) -> usize {
        self.inner
            .settings
            .max_payload
            .unwrap_or(DEFAULT_MAX_PAYLOAD)
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn queue(&mut self, name: &str) -> &mut Queue {
        if !self.queues.contains_key(name) {
            self.queues.insert(name.to_owned(), Queue::default());
        }
        self.queues.get_mut(name).expect("inserted above")
    }
}

impl Queue {
    /// Moves due scheduled jobs to ready, and jobs whose lease ran out back to ready.
    fn settle(&mut self, now: Timestamp) {
        while let Some((at, _, _)) = self.scheduled.first() {
            if *at > now {
                break;
            }
            let (at, seq, id) = self.scheduled.pop_first().expect("checked non-empty");
            if let Some(job) = self.jobs.get_mut(&id) {
                let prio = job.payload.as_ref().map_or(0, |e| e.priority);
                job.ready_key = (Reverse(prio), at, seq);
                self.ready.insert(job.ready_key, id);
            }
        }
        while let Some((at, _)) = self.lease_expiry.first() {
            if *at > now {
                break;
            }
            let (_, id) = self.lease_expiry.pop_first().expect("checked non-empty");
            self.in_flight.remove(&id);
            if let Some(job) = self.jobs.get(&id) {
                // A scheduled job whose migration hold ran out waits again.
                match &job.payload {
                    Ok(env) if env.run_at > now => {
                        self.scheduled.insert((env.run_at, job.ready_key.2, id));
                    }
                    _ => {
                        self.ready.insert(job.ready_key, id);
                    }
                }
            }
        }
    }

    /// The next instant at which `settle` would change something.
    fn next_event(&self) -> Option<Timestamp> {
        let s = self.scheduled.first().map(|(at, _, _)| *at);
        let l = self.lease_expiry.first().map(|(at, _)| *at);
        match (s, l) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes an in-flight job if `lease` still holds it.
    fn take_leased(&mut self, lease: &Lease) -> Option<Stored> {
        match self.in_flight.get(&lease.id) {
            Some(f) if f.token == lease.token => {}
            _ => return None,
        }
        let flight = self.in_flight.remove(&lease.id)?;
        self.lease_expiry
            .remove(&(flight.expires_at, lease.id.clone()));
        self.jobs.remove(&lease.id)
    }

    fn free_key(&mut self, env: &Envelope) {
        if let Some(k) = &env.idempotency_key {
            if self.keys.get(k).is_some_and(|h| h.id == env.id) {
                self.keys.remove(k);
            }
        }
    }

    fn push(
        &mut self,
        id: JobId,
        payload: std::result::Result<Envelope, Malformed>,
        seq: u64,
        now: Timestamp,
    ) {
        let (prio, run_at) = match &payload {
            Ok(e) => (e.priority, e.run_at),
            Err(_) => (0, now),
        };
        let ready_key = (Reverse(prio), run_at.min(now), seq);
        if run_at > now {
            self.scheduled.insert((run_at, seq, id.clone()));
        } else {
            self.ready.insert(ready_key, id.clone());
        }
        self.jobs.insert(id, Stored { payload, ready_key });
    }

    /// Takes `key` for job `id` unless another job holds it.
    fn claim_key(&mut self, key: &str, id: &JobId, now: Timestamp) -> bool {
        match self.keys.get(key) {
            Some(h) if h.completed_until.is_none_or(|until| until > now) => false,
            _ => {
                self.keys.insert(
                    key.to_owned(),
                    KeyHold {
                        id: id.clone(),
                        completed_until: None,
                    },
                );
                true
            }
        }
    }

    fn bury(&mut self, dead: DeadJob, seq: u64, settings: &Settings) {
        let key = (dead.died_at, seq);
        // One entry per job id: a job buried again replaces its older entry.
        if let Some(old) = self.dead_ids.insert(dead.id.clone(), key) {
            self.dead.remove(&old);
        }
        self.dead.insert(key, dead);
        let oldest_allowed = Timestamp::now()
            .0
            .saturating_sub(u64::try_from(settings.dead_max_age.as_millis()).unwrap_or(u64::MAX));
        while let Some((k, d)) = self.dead.first_key_value() {
            if self.dead.len() <= settings.dead_max && k.0 .0 >= oldest_allowed {
                break;
            }
            let id = d.id.clone();
            self.dead.pop_first();
            self.dead_ids.remove(&id);
        }
    }
}

fn new_token(seq: u64) -> String {
    format!("{seq:x}-{:08x}", fastrand::u32(..))
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn max_payload(&self) -> usize {
        self.limit()
    }

    async fn enqueue(&self, jobs: Vec<Envelope>) -> Result<Vec<JobId>> {
        self.check_available()?;
        let limit = self.limit();
        for env in &jobs {
            let size = env.encoded_len();
            if size > limit {
                return Err(Error::PayloadTooLarge { size, limit });
            }
        }
        let now = Timestamp::now();
        let mut ids = Vec::with_capacity(jobs.len());
        let mut st = self.inner.state.lock_unpoisoned();
        for mut env in jobs {
            let seq = st.next_seq();
            let q = st.queue(&env.queue);
            if let Some(key) = &env.idempotency_key {
                match q.keys.get(key) {
                    Some(h) if h.completed_until.is_none_or(|until| until > now) => {
                        ids.push(h.id.clone());
                        continue;
                    }
                    _ => {
                        q.keys.insert(
                            key.clone(),
                            KeyHold {
                                id: env.id.clone(),
                                completed_until: None,
                            },
                        );
                    }
                }
            }
            env.attempt = 0;
            ids.push(env.id.clone());
            q.push(env.id.clone(), Ok(env), seq, now);
        }
        drop(st);
        self.inner.wake.notify_waiters();
        Ok(ids)
    }

    async fn key_holder(&self, queue: &str, key: &str) -> Result<Option<JobId>> {
        self.check_available()?;
        let now = Timestamp::now();
        let st = self.inner.state.lock_unpoisoned();
        let hold = st.queues.get(queue).and_then(|q| q.keys.get(key));
        Ok(hold
            .filter(|h| h.completed_until.is_none_or(|until| until > now))
            .map(|h| h.id.clone()))
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
        loop {
            self.check_available()?;
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            // Registered before the lock is dropped: no wake-up can slip between.
            notified.as_mut().enable();
            let mut out = Vec::new();
            let mut next_event: Option<Timestamp> = None;
            // Dropped here, counted once the lock is released.
            let mut expired: Vec<(String, String)> = Vec::new();
            {
                let mut st = self.inner.state.lock_unpoisoned();
                let now = Timestamp::now();
                let lease_until = now.plus(lease);
                for name in queues {
                    let seq = st.next_seq();
                    let Some(q) = st.queues.get_mut(name.as_str()) else {
                        continue;
                    };
                    q.settle(now);
                    while out.len() < max {
                        let Some((_, id)) = q.ready.pop_first() else {
                            break;
                        };
                        let Some(job) = q.jobs.get_mut(&id) else {
                            continue;
                        };
                        if let Ok(env) = &mut job.payload {
                            if env.is_expired(now) {
                                let env = env.clone();
                                q.jobs.remove(&id);
                                q.free_key(&env);
                                q.expired += 1;
                                expired.push((name.clone(), env.job));
                                continue;
                            }
                            env.attempt = env.attempt.saturating_add(1);
                        }
                        let token =
                            new_token(seq.wrapping_mul(1_000_003).wrapping_add(out.len() as u64));
                        q.in_flight.insert(
                            id.clone(),
                            Flight {
                                token: token.clone(),
                                expires_at: lease_until,
                            },
                        );
                        q.lease_expiry.insert((lease_until, id.clone()));
                        out.push(Delivery {
                            lease: Lease {
                                id,
                                queue: name.clone(),
                                token,
                                expires_at: lease_until,
                            },
                            envelope: job.payload.clone(),
                        });
                    }
                    if let Some(at) = q.next_event() {
                        next_event = Some(next_event.map_or(at, |n| n.min(at)));
                    }
                    if out.len() >= max {
                        break;
                    }
                }
            }
            for (queue, job) in expired {
                crate::registry::count_expired(&queue, &job);
            }
            let now = tokio::time::Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            let mut until = deadline;
            if let Some(at) = next_event {
                // One millisecond late at most, so the event is due when we look again.
                until = until.min(now + at.until_now() + Duration::from_millis(1));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
                () = self.inner.interrupt.fired(mark) => return Ok(out),
            }
        }
    }

    async fn settle(&self, outcomes: &[Outcome]) -> Vec<Result<LeaseStatus>> {
        settle_by_kind(self, outcomes).await
    }

    async fn stop_reserving(&self, _queues: &[String]) -> Result<()> {
        // Nothing is taken in ahead of a reserve here: only the waiting ones end.
        self.inner.interrupt.fire();
        Ok(())
    }

    async fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<LeaseStatus>> {
        self.check_available()?;
        let until = Timestamp::now().plus(lease);
        let mut st = self.inner.state.lock_unpoisoned();
        Ok(leases
            .iter()
            .map(|l| {
                let q = st.queue(&l.queue);
                match q.in_flight.get_mut(&l.id) {
                    Some(f) if f.token == l.token => {
                        q.lease_expiry.remove(&(f.expires_at, l.id.clone()));
                        f.expires_at = until;
                        q.lease_expiry.insert((until, l.id.clone()));
                        LeaseStatus::Held
                    }
                    _ => LeaseStatus::Lost,
                }
            })
            .collect())
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

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}
