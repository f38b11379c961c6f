//! The key layout: every key of a queue shares the hash tag `{prefix:queue}`.
//!
//! The scripts derive each key from the queue's base (see `lua/common.lua`),
//! so the Rust side only needs the base, the wake list, the set of queue
//! names and the metadata hash (the two keys outside any queue's slot).

/// The keys jobsmith uses under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The base of `queue`'s keys, `{prefix:queue}`: the hash tag that puts them in one slot.
    pub(crate) fn base(&self, queue: &str) -> String {
        format!("{{{}:{}}}", self.prefix, queue)
    }

    /// The list a blocked reserve on `queue` waits on.
    pub(crate) fn wake(&self, queue: &str) -> String {
        format!("{}:wake", self.base(queue))
    }

    /// The string naming the job that holds idempotency key `key` of `queue`
    /// (`IDEM .. key` in `lua/common.lua`).
    pub(crate) fn idem(&self, queue: &str, key: &str) -> String {
        format!("{}:idem:{key}", self.base(queue))
    }

    /// The set of queue names.
    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// The hash of the metadata store (schedule states), field by key.
    pub(crate) fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }
}
