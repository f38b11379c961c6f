//! How jobsmith names and addresses things on the broker.
//!
//! For a prefix `p` and a queue `q`: the work queue `p.q`, its dead-letter
//! queue `p.q.dead`, its expired-job counter `p.q.expired`, its outcome
//! counter `p.q.counts` and that counter's lock `p.q.counts.lock`, its delay levels
//! `p.q.delay.00` to `p.q.delay.35` and its staging queue `p.q.soon`, and idempotency key queues
//! `p.q.key.<hash>` / `p.q.done.<hash>`, and park queues `p.q.park.<token>`
//! for long leases; the metadata store is `p._meta.<hash>` per entry and the
//! index `p._meta`. Exchanges `p.delay.00`..`p.delay.35`
//! and `p.due` are shared by every queue of the prefix.

use std::time::Duration;

/// Delay levels: level `k` holds a message for 2^k ms, so any delay up to
/// 2^36 ms (about 795 days) is a sum of levels, one per set bit.
pub(crate) const LEVELS: u32 = 36;

/// The broker priority range: `x-max-priority` of work queues.
pub(crate) const MAX_PRIORITY: u8 = 10;

/// Names for one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn work(&self, q: &str) -> String {
        format!("{}.{q}", self.prefix)
    }

    pub(crate) fn dead(&self, q: &str) -> String {
        format!("{}.{q}.dead", self.prefix)
    }

    pub(crate) fn expired(&self, q: &str) -> String {
        format!("{}.{q}.expired", self.prefix)
    }

    /// The queue whose messages add up to `q`'s processed and failed totals.
    pub(crate) fn counts(&self, q: &str) -> String {
        format!("{}.{q}.counts", self.prefix)
    }

    /// The empty queue whose exclusive consumer is the lock on merging the counts.
    pub(crate) fn counts_lock(&self, q: &str) -> String {
        format!("{}.{q}.counts.lock", self.prefix)
    }

    pub(crate) fn level_queue(&self, q: &str, k: u32) -> String {
        format!("{}.{q}.delay.{k:02}", self.prefix)
    }

    /// Where a delayed job waits out its last [`STAGE_MS`], held by a
    /// process that works `q`; its TTL moves it to the work queue when none does.
    pub(crate) fn soon(&self, q: &str) -> String {
        format!("{}.{q}.soon", self.prefix)
    }

    pub(crate) fn level_exchange(&self, k: u32) -> String {
        format!("{}.delay.{k:02}", self.prefix)
    }

    /// Where a message goes when its last delay level lets it go.
    pub(crate) fn due_exchange(&self) -> String {
        format!("{}.due", self.prefix)
    }

    /// Where level `k` dead-letters to: the next level down, or the due exchange.
    pub(crate) fn after_level(&self, k: u32) -> String {
        if k == 0 {
            self.due_exchange()
        } else {
            self.level_exchange(k - 1)
        }
    }

    /// The queue whose one message is the holder of `key` (see `unique.rs`).
    pub(crate) fn hold(&self, q: &str, key: &str, form: KeyForm) -> String {
        format!("{}.{q}.key.{}", self.prefix, form.hash(key))
    }

    /// Where the holder of `key` is named: read by enqueues that found the
    /// key taken. The hold queue itself is never read, because a message
    /// being read does not count towards its `x-max-length`.
    pub(crate) fn owner(&self, q: &str, key: &str, form: KeyForm) -> String {
        format!("{}.{q}.owner.{}", self.prefix, form.hash(key))
    }

    /// Where a completed job's `key` is remembered for `unique_for`.
    pub(crate) fn done(&self, q: &str, key: &str, form: KeyForm) -> String {
        format!("{}.{q}.done.{}", self.prefix, form.hash(key))
    }

    /// Where a long lease's job waits while it runs, named after the lease token.
    pub(crate) fn park(&self, q: &str, token: &str) -> String {
        format!("{}.{q}.park.{token}", self.prefix)
    }

    /// The queue holding the latest value of metadata entry `key`.
    pub(crate) fn meta(&self, key: &str) -> String {
        format!("{}._meta.{}", self.prefix, hash_hex(key.as_bytes()))
    }

    /// The queue that remembers which metadata keys exist.
    pub(crate) fn meta_index(&self) -> String {
        format!("{}._meta", self.prefix)
    }

    /// The ledger of job ids a migration imported (see `migrate.rs`).
    pub(crate) fn ledger(&self) -> String {
        format!("{}._migrated", self.prefix)
    }

    /// The queue that remembers which queues exist.
    pub(crate) fn registry(&self) -> String {
        format!("{}._queues", self.prefix)
    }
}

/// The routing key of a delayed message: one word per level, most significant
/// first (`1` = wait in that level), then the queue's hash as the last word.
/// Staged keys (see [`STAGE_MS`]) add a last word, [`STAGED`].
pub(crate) fn delay_key(delay_ms: u64, q: &str) -> String {
    let mut key = String::with_capacity(2 * LEVELS as usize + 35);
    for k in (0..LEVELS).rev() {
        key.push(if delay_ms >> k & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(&hash_hex(q.as_bytes()));
    key
}

/// The routing key of a delayed message whose levels end in the queue's
/// staging queue rather than its work queue: [`delay_key`] and one more
/// word. A topic pattern's `*` matches one word, so the 37-word patterns of
/// earlier versions never match a 38-word key, nor these patterns theirs:
/// the two routes share the level queues and exchanges and never cross.
pub(crate) fn staged_key(delay_ms: u64, q: &str) -> String {
    let mut key = delay_key(delay_ms, q);
    key.push('.');
    key.push_str(STAGED);
    key
}

/// The last word of a staged routing key and its patterns.
pub(crate) const STAGED: &str = "s";

/// The level a delay of `delay_ms` (at least 1) enters at: its highest set
/// bit. Levels above would only pass the message down, and each topic
/// exchange a message crosses costs the broker a match of the routing key
/// (publishing at the top level made a 1 ms delay cross 36 of them:
/// publish and confirm took 5 ms instead of under 1).
pub(crate) fn first_level(delay_ms: u64) -> u32 {
    (u64::BITS - 1 - delay_ms.max(1).leading_zeros()).min(LEVELS - 1)
}

/// How long before its due time a delayed job leaves the broker's timers,
/// in ms: the levels let it go into the queue's staging queue this much
/// early (a shorter delay goes there at once), and a process that works the
/// queue holds it until it is due, then rejects it, which dead-letters it
/// into the work queue at once.
///
/// Every level is a queue whose TTL timer lets its messages go, and on a
/// busy broker whose two cores other processes also want, those timers fire
/// late, while deliveries driven by messages stay prompt: on a private 3.10
/// node taking 1,000 persistent jobs/s beside two busy loops, a single
/// level (one timer) let messages go p99 294-673 ms and at most about 1 s
/// late, while jobs published straight to a work queue arrived p99 9-22 ms
/// after they were sent (docs/backends/rabbitmq.md). A second covers the
/// worst seen; what waits it out is a rejection, a message the broker acts
/// on as it arrives. Without a process holding it (no worker running), the
/// staging queue's own TTL of the same length moves the job on time, give or
/// take those timers.
pub(crate) const STAGE_MS: u64 = 1_000;

/// How long before its due time a staged job is rejected into the work
/// queue, in ms (and the delay below which a job goes straight there): what
/// the hop from the staging queue to a reserving process may take. That hop
/// is driven by messages, about 2 ms on an idle broker, but a busy broker
/// on a machine whose cores other processes want stalls it for 100-250 ms
/// at times, on every worker at once: the soak beside two busy loops
/// started staged jobs rejected 50 ms ahead p99 42-398 ms late, and 250 ms
/// ahead 12 ms (retries, whose backoff is shorter than this, 37-63 ms). The
/// reserving process holds what arrives early until it is due, in a slot of
/// its prefetch, as it held jobs that earlier versions sent ahead by up to
/// [`MAX_LEAD_MS`].
pub(crate) const STAGE_EARLY_MS: u64 = 250;

/// How early a delivery may reach a work queue from earlier versions, which
/// sent delayed messages ahead of their due time by up to 250 ms and had the
/// reserving process hold them (one still in the levels at an upgrade
/// arrives that early), or now from staging.
pub(crate) const MAX_LEAD_MS: u64 = 250;

/// The largest delay one trip through the levels can give.
pub(crate) fn max_delay() -> Duration {
    Duration::from_millis((1u64 << LEVELS) - 1)
}

/// The binding pattern that matches bit `k` = `bit` and any queue (`q = None`) or one queue.
pub(crate) fn level_pattern(k: u32, bit: char, q: Option<&str>) -> String {
    let mut p = String::with_capacity(2 * LEVELS as usize + 35);
    for i in (0..LEVELS).rev() {
        p.push(if i == k { bit } else { '*' });
        p.push('.');
    }
    match q {
        Some(q) => p.push_str(&hash_hex(q.as_bytes())),
        None => p.push('*'),
    }
    p
}

/// The due exchange's binding for a queue: any bits, then the queue's hash.
pub(crate) fn due_pattern(q: &str) -> String {
    let mut p = "*.".repeat(LEVELS as usize);
    p.push_str(&hash_hex(q.as_bytes()));
    p
}

/// A pattern for staged keys: `pattern` and the staged word.
pub(crate) fn staged(mut pattern: String) -> String {
    pattern.push('.');
    pattern.push_str(STAGED);
    pattern
}

/// jobsmith priority to broker priority: below 0 → 0, 0 → 1, 1..=9 → 2..=10, above → 10.
pub(crate) fn broker_priority(p: i32) -> u8 {
    u8::try_from(p.saturating_add(1).clamp(0, i32::from(MAX_PRIORITY))).unwrap_or(MAX_PRIORITY)
}

/// How an idempotency key's queues are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyForm {
    /// By the first 128 bits of the key's SHA-256, as 32 hex digits: keys
    /// may come from a job's caller, who must not be able to make two of
    /// them share a queue (the second job would be a no-op).
    Sha256,
    /// By [`hash_hex`], as versions before this one did: read, and freed,
    /// so that a key held by a job they enqueued still holds.
    Fnv,
}

impl KeyForm {
    fn hash(self, key: &str) -> String {
        match self {
            KeyForm::Sha256 => jobsmith_core::hash::sha256_hex(key.as_bytes(), 16),
            KeyForm::Fnv => hash_hex(key.as_bytes()),
        }
    }
}

/// A stable 128-bit hash (two FNV-1a 64 passes), as 32 hex digits: short,
/// and safe in queue names and routing-key words whatever the input.
pub(crate) fn hash_hex(bytes: &[u8]) -> String {
    use jobsmith_core::hash::{fnv1a_64, FNV1A_64_BASIS};
    format!(
        "{:016x}{:016x}",
        fnv1a_64(FNV1A_64_BASIS, bytes),
        fnv1a_64(0x6c62_272e_07bb_0142, bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_keep_their_order() {
        assert!(broker_priority(-1) < broker_priority(0));
        assert!(broker_priority(0) < broker_priority(5));
        assert!(broker_priority(5) < broker_priority(9));
        assert_eq!(broker_priority(i32::MAX), MAX_PRIORITY);
        assert_eq!(broker_priority(i32::MIN), 0);
    }

    /// These hashes name queues and routing keys already on users' brokers.
    #[test]
    fn hashes_stay_the_ones_already_on_brokers() {
        assert_eq!(hash_hex(b""), "cbf29ce4842223256c62272e07bb0142");
        assert_eq!(hash_hex(b"a"), "af63dc4c8601ec8ce5c9b63722c2ee79");
        assert_eq!(hash_hex(b"foobar"), "85944171f73967e8d261c5099350d8f3");
        assert_eq!(hash_hex(b"emails"), "9bc8ab07a084391cf173f10b5a478fa7");
    }

    #[test]
    fn a_delay_enters_at_its_highest_set_bit() {
        assert_eq!(first_level(1), 0);
        assert_eq!(first_level(2), 1);
        assert_eq!(first_level(3), 1);
        assert_eq!(first_level(1024), 10);
        assert_eq!(first_level(2047), 10);
        assert_eq!(first_level((1u64 << LEVELS) - 1), LEVELS - 1);
        assert_eq!(first_level(u64::MAX), LEVELS - 1);
    }

    #[test]
    fn staged_keys_have_one_word_more_than_earlier_patterns() {
        let key = staged_key(0b101, "q");
        assert_eq!(key.split('.').count(), LEVELS as usize + 2);
        assert!(key.starts_with(&delay_key(0b101, "q")));
        let pat = staged(level_pattern(2, '1', Some("q")));
        assert_eq!(pat.split('.').count(), LEVELS as usize + 2);
        assert_eq!(
            staged(due_pattern("q")).split('.').count(),
            LEVELS as usize + 2
        );
    }

    #[test]
    fn delay_keys_match_their_level_patterns() {
        let key = delay_key(0b101, "q");
        let words: Vec<&str> = key.split('.').collect();
        assert_eq!(words.len(), LEVELS as usize + 1);
        assert_eq!(words[LEVELS as usize - 1], "1");
        assert_eq!(words[LEVELS as usize - 2], "0");
        assert_eq!(words[LEVELS as usize - 3], "1");
        let pat = level_pattern(2, '1', Some("q"));
        assert_eq!(pat.split('.').count(), LEVELS as usize + 1);
    }
}
