//! What one process keeps about its deliveries: prefetch buffers and leases.

use jobsmith_core::{Envelope, Malformed, Timestamp};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

/// A delivery in the prefetch buffer, not yet handed to a worker.
#[derive(Debug)]
pub(crate) struct Buffered {
    pub(crate) gen: u64,
    pub(crate) tag: u64,
    pub(crate) redelivered: bool,
    pub(crate) priority: u8,
    pub(crate) data: Vec<u8>,
    /// When it arrived: the broker's `consumer_timeout` counts from then.
    pub(crate) received: Instant,
}

/// A delivery handed to a worker under a lease.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) queue: String,
    pub(crate) gen: u64,
    pub(crate) tag: u64,
    pub(crate) priority: u8,
    /// The envelope as delivered (its attempt counting this delivery), or the bad payload.
    pub(crate) payload: Result<Envelope, Malformed>,
    pub(crate) expires_at: Timestamp,
    /// When the broker delivered the message now backing this lease.
    pub(crate) delivered: Instant,
    /// Set once the delivery was handed over to a park queue: the lease no
    /// longer rests on a delivery (`gen` and `tag` mean nothing).
    pub(crate) parked: Option<Parked>,
}

/// A lease whose job waits in its own park queue instead of an unacked delivery.
#[derive(Debug, Clone)]
pub(crate) struct Parked {
    /// The park queue's name.
    pub(crate) queue: String,
    /// The longest TTL a copy may get: well inside the queue's `x-expires`.
    pub(crate) max_ttl: std::time::Duration,
}

/// Buffers are ordered by broker priority, then delivery tag (delivery order).
pub(crate) type BufferKey = (Reverse<u8>, u64);

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) seq: u64,
    /// Queues this process consumes, resumed after every reconnect.
    pub(crate) wanted: BTreeSet<String>,
    /// Queues with a consumer on the current connection.
    pub(crate) consuming: HashSet<String>,
    /// Queues whose topology is declared on the current connection.
    pub(crate) declared: HashSet<String>,
    /// Queues this process has written to the registry.
    pub(crate) registered: HashSet<String>,
    /// Metadata keys this process has written to the metadata index.
    pub(crate) meta_registered: HashSet<String>,
    pub(crate) buffers: HashMap<String, BTreeMap<BufferKey, Buffered>>,
    pub(crate) leases: HashMap<String, Held>,
    pub(crate) expiry: BTreeSet<(Timestamp, String)>,
    /// Leases whose connection died, by job id: when the broker redelivers the
    /// job to this process, the lease moves onto the new delivery.
    pub(crate) orphans: HashMap<String, String>,
    /// Jobs settled while their lease was orphaned, by job id, until when to
    /// watch for them: when one is redelivered here, it is acked at once.
    pub(crate) tombstones: HashMap<String, Timestamp>,
    /// Deliveries of the current connection not settled yet.
    pub(crate) outstanding: crate::acks::Outstanding,
}

impl State {
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Removes the lease if `token` still holds it. A lease from a dead
    /// connection (`gen` differs) is tombstoned: the caller settles it by
    /// publishing only, and its redelivery is acked when it arrives.
    pub(crate) fn take(&mut self, token: &str, gen: u64) -> Option<Held> {
        let held = self.leases.remove(token)?;
        self.expiry.remove(&(held.expires_at, token.to_owned()));
        if held.gen != gen && held.parked.is_none() {
            if let Ok(env) = &held.payload {
                self.orphans.remove(env.id.as_str());
                let now = Timestamp::now();
                self.tombstones.retain(|_, until| *until > now);
                self.tombstones.insert(
                    env.id.as_str().to_owned(),
                    now.plus(std::time::Duration::from_secs(600)),
                );
            }
        }
        Some(held)
    }

    /// A lease that ran out: forgotten, and no longer waiting for a redelivery.
    pub(crate) fn forget(&mut self, held: &Held) {
        if let Ok(env) = &held.payload {
            self.orphans.remove(env.id.as_str());
        }
    }

    /// Forgets everything tied to older connections: the broker has requeued it.
    pub(crate) fn new_connection(&mut self, gen: u64) {
        self.outstanding.reset(gen);
        self.consuming.clear();
        self.declared.clear();
        self.buffers.clear();
        let (expiry, orphans) = (&mut self.expiry, &mut self.orphans);
        self.leases.retain(|t, h| {
            if h.gen == gen || h.parked.is_some() {
                return true;
            }
            match &h.payload {
                Ok(env) => {
                    orphans.insert(env.id.0.clone(), t.clone());
                    true
                }
                // Nothing to match a redelivery with: the lease is gone.
                Err(_) => {
                    expiry.remove(&(h.expires_at, t.clone()));
                    false
                }
            }
        });
    }

    pub(crate) fn buffered(&self, q: &str) -> usize {
        self.buffers.get(q).map_or(0, BTreeMap::len)
    }
}
