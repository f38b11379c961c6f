//! What one process keeps about its deliveries: prefetch buffers, leases,
//! and which delivery tags are unsettled (for the coalesced acks of `acks.rs`).

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

/// A queue's consumer and the task that reads its deliveries.
#[derive(Debug)]
pub(crate) struct Consuming {
    /// The connection it runs on.
    pub(crate) gen: u64,
    pub(crate) tag: lapin::types::ShortString,
    /// Ends once the consumer's stream has ended and its last deliveries are buffered.
    pub(crate) task: tokio::task::JoinHandle<()>,
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
    /// The consumer of each queue in `consuming`, to cancel it by.
    pub(crate) consumers: HashMap<String, Consuming>,
    /// The workers of this process that said how many jobs they run at once
    /// (`start_reserving`): their queues and that number.
    pub(crate) reserving: Vec<(Vec<String>, usize)>,
    /// Queues whose topology is declared on the current connection.
    pub(crate) declared: HashSet<String>,
    /// The holders of queues' staged delayed jobs (`stage.rs`), by queue.
    pub(crate) stagers: HashMap<String, crate::stage::Stager>,
    /// Queues the broker refused to declare or consume, with when and why:
    /// not tried again for a second, so that a broken queue costs the broker
    /// a refusal (and a closed channel) a second, not one per reserve.
    pub(crate) refused: HashMap<String, (std::time::Instant, jobsmith_core::Error)>,
    /// Queues this process has written to the registry.
    pub(crate) registered: HashSet<String>,
    /// Metadata keys this process has written to the metadata index.
    pub(crate) meta_registered: HashSet<String>,
    pub(crate) buffers: HashMap<String, BTreeMap<BufferKey, Buffered>>,
    /// Deliveries that arrived before they were due (delayed jobs are sent
    /// ahead of their time), by queue, in due order: handed out when due.
    pub(crate) early: HashMap<String, BTreeMap<(Timestamp, u64), Buffered>>,
    pub(crate) leases: HashMap<String, Held>,
    pub(crate) expiry: BTreeSet<(Timestamp, String)>,
    /// Leases whose connection died, by job id: when the broker redelivers the
    /// job to this process, the lease moves onto the new delivery.
    pub(crate) orphans: HashMap<String, String>,
    /// Jobs settled while their lease was orphaned, by job id, until when to
    /// watch for them: when one is redelivered here, it is acked at once.
    pub(crate) tombstones: HashMap<String, Timestamp>,
    /// Deliveries of the current connection not settled yet.
    pub(crate) outstanding: Outstanding,
}

impl State {
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Removes the lease if `token` still holds it. The caller settles it, then
    /// calls [`State::settled`], or [`State::unsettled`] if that failed.
    pub(crate) fn take(&mut self, token: &str) -> Option<Held> {
        let held = self.leases.remove(token)?;
        self.expiry.remove(&(held.expires_at, token.to_owned()));
        Some(held)
    }

    /// `held` was settled while connection `gen` is current. A lease from a
    /// dead connection was settled by publishing only: it is tombstoned, so
    /// that its redelivery is acked when it arrives.
    pub(crate) fn settled(&mut self, held: &Held, gen: u64) {
        if held.gen == gen || held.parked.is_some() {
            return;
        }
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

    /// Settling `held` failed. A lease from a dead connection holds again, as
    /// an orphan, so that the call can be made again and a redelivery finds
    /// it: had it been tombstoned, the job's redelivery would be acked and
    /// the job lost. A lease of the current connection stays gone: its
    /// delivery went back to the broker.
    pub(crate) fn unsettled(&mut self, token: &str, held: Held, gen: u64) {
        if held.gen == gen || held.parked.is_some() {
            return;
        }
        self.expiry.insert((held.expires_at, token.to_owned()));
        self.leases.insert(token.to_owned(), held);
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
        self.consumers.clear();
        self.stagers.clear();
        self.declared.clear();
        self.refused.clear();
        self.buffers.clear();
        self.early.clear();
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

    /// The most deliveries the consume channel may hold unacknowledged in
    /// all: what this process's workers run at once between them, or `None`
    /// (no limit beyond each consumer's) when no worker said.
    pub(crate) fn channel_limit(&self) -> Option<u16> {
        if self.reserving.is_empty() {
            return None;
        }
        let total: usize = self.reserving.iter().map(|(_, n)| *n).sum();
        Some(u16::try_from(total.max(1)).unwrap_or(u16::MAX))
    }

    /// The most deliveries `q`'s consumer may hold: what the workers
    /// reserving from it run at once, within `prefetch`. Each consumer has
    /// its own share, so one worker's backlog never takes the share of
    /// another worker of the process.
    pub(crate) fn consumer_limit(&self, q: &str, prefetch: u16) -> u16 {
        let mine: usize = self
            .reserving
            .iter()
            .filter(|(queues, _)| queues.iter().any(|x| x == q))
            .map(|(_, n)| *n)
            .sum();
        if mine == 0 {
            return prefetch;
        }
        u16::try_from(mine).unwrap_or(u16::MAX).min(prefetch)
    }

    /// The next delivery of `q` to sort: a held one due by `due_by`, else
    /// the first in its buffer.
    pub(crate) fn next_delivery(&mut self, q: &str, due_by: Timestamp) -> Option<Buffered> {
        if let Some(first) = self.early.get_mut(q).and_then(BTreeMap::first_entry) {
            if first.key().0 <= due_by {
                return Some(first.remove());
            }
        }
        self.buffers.get_mut(q)?.pop_first().map(|(_, b)| b)
    }

    /// Holds a delivery of `q` that arrived early, until `due`.
    pub(crate) fn hold(&mut self, q: &str, due: Timestamp, b: Buffered) {
        self.early
            .entry(q.to_owned())
            .or_default()
            .insert((due, b.tag), b);
    }

    /// When the first delivery held for one of `queues` falls due.
    pub(crate) fn next_due(&self, queues: &[String]) -> Option<Timestamp> {
        queues
            .iter()
            .filter_map(|q| self.early.get(q)?.keys().next().map(|k| k.0))
            .min()
    }

    /// Every delivery of `q` not leased out, buffered or held until due,
    /// taken out of this process's keeping.
    pub(crate) fn take_unleased(&mut self, q: &str) -> impl Iterator<Item = Buffered> {
        let buffered = self
            .buffers
            .remove(q)
            .into_iter()
            .flat_map(BTreeMap::into_values);
        let early = self
            .early
            .remove(q)
            .into_iter()
            .flat_map(BTreeMap::into_values);
        buffered.chain(early)
    }

    /// Every delivery of connection `gen` not leased out, buffered or held
    /// until due, that arrived `after` ago or longer, with its queue: taken
    /// out of this process's keeping.
    pub(crate) fn take_stale(
        &mut self,
        gen: u64,
        after: std::time::Duration,
    ) -> Vec<(String, Buffered)> {
        fn sweep<K: Ord + Copy>(
            maps: &mut HashMap<String, BTreeMap<K, Buffered>>,
            gen: u64,
            after: std::time::Duration,
            out: &mut Vec<(String, Buffered)>,
        ) {
            for (q, map) in maps.iter_mut() {
                let keys: Vec<K> = map
                    .iter()
                    .filter(|(_, b)| b.gen == gen && b.received.elapsed() >= after)
                    .map(|(k, _)| *k)
                    .collect();
                out.extend(
                    keys.iter()
                        .filter_map(|k| map.remove(k))
                        .map(|b| (q.clone(), b)),
                );
            }
        }
        let mut out = Vec::new();
        sweep(&mut self.buffers, gen, after, &mut out);
        sweep(&mut self.early, gen, after, &mut out);
        out
    }

    /// How many deliveries of `q` are held until they are due.
    pub(crate) fn held_early(&self, q: &str) -> usize {
        self.early.get(q).map_or(0, BTreeMap::len)
    }

    pub(crate) fn buffered(&self, q: &str) -> usize {
        self.buffers.get(q).map_or(0, BTreeMap::len)
    }
}

/// The unsettled deliveries of one connection's consume channel.
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    /// The connection these tags belong to.
    gen: u64,
    /// Delivered and not settled.
    tags: BTreeSet<u64>,
    /// Every tag up to this one has been seen.
    seen_to: u64,
    /// Tags seen beyond `seen_to + 1`.
    ahead: BTreeSet<u64>,
}

impl Outstanding {
    /// Starts over for a new connection.
    pub(crate) fn reset(&mut self, gen: u64) {
        *self = Self {
            gen,
            ..Self::default()
        };
    }

    /// A delivery arrived on connection `gen`.
    pub(crate) fn delivered(&mut self, gen: u64, tag: u64) {
        if gen != self.gen {
            return;
        }
        self.tags.insert(tag);
        if tag == self.seen_to + 1 {
            self.seen_to = tag;
            while self.ahead.remove(&(self.seen_to + 1)) {
                self.seen_to += 1;
            }
        } else if tag > self.seen_to {
            self.ahead.insert(tag);
        }
    }

    /// Takes `batch` out of the outstanding set. Returns the tag up to which
    /// one `multiple` ack settles exactly this batch's lowest tags, and the
    /// tags left to settle one by one.
    pub(crate) fn plan(&mut self, gen: u64, mut batch: Vec<u64>) -> (Option<u64>, Vec<u64>) {
        batch.sort_unstable();
        batch.dedup();
        if gen != self.gen {
            return (None, batch);
        }
        let mut upto = None;
        let mut n = 0;
        for t in &self.tags {
            if *t > self.seen_to || batch.get(n) != Some(t) {
                break;
            }
            upto = Some(*t);
            n += 1;
        }
        for t in &batch {
            self.tags.remove(t);
        }
        (upto, batch.split_off(n))
    }

    /// Takes `tags` out without coalescing.
    pub(crate) fn forget(&mut self, gen: u64, tags: &[u64]) {
        if gen == self.gen {
            for t in tags {
                self.tags.remove(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orphaned() -> (State, Held) {
        let mut st = State::default();
        let env = Envelope::new(
            "j",
            "q",
            serde_json::value::RawValue::from_string("{}".into()).expect("json"),
        );
        let held = Held {
            queue: "q".into(),
            gen: 1,
            tag: 7,
            priority: 0,
            payload: Ok(env),
            expires_at: Timestamp::now().plus(std::time::Duration::from_secs(30)),
            delivered: Instant::now(),
            parked: None,
        };
        st.expiry.insert((held.expires_at, "t".into()));
        st.leases.insert("t".into(), held);
        st.new_connection(2);
        let held = st.take("t").expect("the lease holds");
        (st, held)
    }

    fn arrived(gen: u64, tag: u64, ago: std::time::Duration) -> Buffered {
        Buffered {
            gen,
            tag,
            redelivered: false,
            priority: 0,
            data: Vec::new(),
            received: Instant::now() - ago,
        }
    }

    #[test]
    fn stale_deliveries_are_taken_from_buffers_and_holds_alike() {
        let secs = std::time::Duration::from_secs;
        let mut st = State::default();
        let buf = st.buffers.entry("q".into()).or_default();
        buf.insert((Reverse(0), 1), arrived(1, 1, secs(3)));
        buf.insert((Reverse(0), 2), arrived(1, 2, secs(1)));
        // Of an older connection: its delivery is gone with it.
        buf.insert((Reverse(0), 3), arrived(0, 3, secs(3)));
        st.hold("q", Timestamp::now(), arrived(1, 4, secs(3)));
        st.hold("q", Timestamp::now(), arrived(1, 5, secs(1)));
        let mut taken: Vec<u64> = st
            .take_stale(1, secs(2))
            .into_iter()
            .map(|(q, b)| {
                assert_eq!(q, "q");
                b.tag
            })
            .collect();
        taken.sort_unstable();
        assert_eq!(
            taken,
            [1, 4],
            "what arrived 2 s ago or more, on this connection"
        );
        assert_eq!(st.buffered("q"), 2);
        assert_eq!(st.held_early("q"), 1);
    }

    #[test]
    fn an_orphan_settled_is_tombstoned() {
        let (mut st, held) = orphaned();
        let id = held.payload.as_ref().expect("envelope").id.0.clone();
        st.settled(&held, 2);
        assert!(
            st.tombstones.contains_key(&id),
            "its redelivery will be acked"
        );
        assert!(!st.orphans.contains_key(&id));
        assert!(st.leases.is_empty());
    }

    #[test]
    fn an_orphan_whose_settlement_failed_holds_again() {
        let (mut st, held) = orphaned();
        let id = held.payload.as_ref().expect("envelope").id.0.clone();
        st.unsettled("t", held, 2);
        assert!(
            !st.tombstones.contains_key(&id),
            "a tombstone would ack its redelivery and lose the job"
        );
        assert_eq!(st.orphans.get(&id).map(String::as_str), Some("t"));
        assert!(st.take("t").is_some(), "the call can be made again");
    }

    #[test]
    fn a_current_lease_whose_settlement_failed_stays_gone() {
        let (mut st, mut held) = orphaned();
        held.gen = 2;
        st.unsettled("t", held, 2);
        assert!(st.leases.is_empty(), "its delivery went back to the broker");
    }

    fn seen(tags: impl IntoIterator<Item = u64>) -> Outstanding {
        let mut o = Outstanding::default();
        o.reset(1);
        for t in tags {
            o.delivered(1, t);
        }
        o
    }

    #[test]
    fn coalesces_the_run_from_the_lowest_outstanding_tag() {
        let mut o = seen(1..=10);
        assert_eq!(o.plan(1, vec![3, 1, 2, 5]), (Some(3), vec![5]));
        // 4 is still held: nothing above it may be covered.
        assert_eq!(o.plan(1, vec![6, 7]), (None, vec![6, 7]));
        assert_eq!(o.plan(1, vec![4, 8]), (Some(8), vec![]));
        assert_eq!(o.plan(1, vec![9, 10]), (Some(10), vec![]));
    }

    #[test]
    fn never_covers_a_tag_not_seen_yet() {
        // 3 is on its way: a multiple ack at 4 would settle it unseen.
        let mut o = seen([1, 2, 4]);
        assert_eq!(o.plan(1, vec![1, 2, 4]), (Some(2), vec![4]));
        o.delivered(1, 3);
        assert_eq!(o.plan(1, vec![3]), (Some(3), vec![]));
    }

    #[test]
    fn another_connection_s_tags_are_acked_singly() {
        let mut o = seen(1..=3);
        assert_eq!(o.plan(2, vec![1, 2]), (None, vec![1, 2]));
        assert_eq!(o.plan(1, vec![1, 2, 3]), (Some(3), vec![]));
    }
}
