//! Settling deliveries of the consume channel, with acks coalesced.
//!
//! `basic.ack` with `multiple` settles every unsettled delivery up to a tag in
//! one frame, which saves the broker most of its per-ack work. It is only
//! safe when no delivery below that tag is still in use (buffered, or held by
//! a running job), so the process tracks which tags of the current
//! connection are outstanding: a batch acks with `multiple` the longest run
//! of its tags that starts at the lowest outstanding tag, and the rest one by
//! one. Tags count up from 1 on a channel, but the delivery callback may see
//! them out of order: only tags below the first one not seen yet are trusted
//! to be complete. Every ack and reject of the consume channel goes through
//! here, planned and sent under one lock, so no `multiple` overtakes a
//! settlement it would cover.

use crate::error::from_lapin;
use crate::inner::Inner;
use crate::link::Link;
use futures_util::future::join_all;
use jobsmith_core::Result;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use std::collections::BTreeSet;

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
    fn plan(&mut self, gen: u64, mut batch: Vec<u64>) -> (Option<u64>, Vec<u64>) {
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
    fn forget(&mut self, gen: u64, tags: &[u64]) {
        if gen == self.gen {
            for t in tags {
                self.tags.remove(t);
            }
        }
    }
}

impl Inner {
    /// Acks deliveries of `link`'s consume channel.
    pub(crate) async fn ack_tags(&self, link: &Link, tags: Vec<u64>) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let _turn = self.settling.lock().await;
        let (upto, singles) = self.lock().outstanding.plan(link.gen, tags);
        let ch = &link.consume;
        let multiple = async {
            match upto {
                Some(t) => ch.basic_ack(t, BasicAckOptions { multiple: true }).await,
                None => Ok(()),
            }
        };
        let singles = join_all(
            singles
                .into_iter()
                .map(|t| ch.basic_ack(t, BasicAckOptions::default())),
        );
        let (first, rest) = futures_util::future::join(multiple, singles).await;
        first.map_err(from_lapin)?;
        for r in rest {
            r.map_err(from_lapin)?;
        }
        Ok(())
    }

    /// Hands deliveries of `link`'s consume channel back to the broker, as they were.
    pub(crate) async fn reject_tags(&self, link: &Link, tags: Vec<u64>) {
        if tags.is_empty() {
            return;
        }
        let _turn = self.settling.lock().await;
        self.lock().outstanding.forget(link.gen, &tags);
        let rejects = tags.into_iter().map(|t| {
            link.consume
                .basic_reject(t, BasicRejectOptions { requeue: true })
        });
        let _ = join_all(rejects).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
