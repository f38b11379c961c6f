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
//! settlement it would cover. The bookkeeping of outstanding tags is
//! [`Outstanding`](crate::state::Outstanding), part of the process state.

use crate::inner::Inner;
use crate::link::Link;
use futures_util::future::join_all;
use jobsmith_core::lock::LockExt;
use jobsmith_core::Result;
use lapin::options::{BasicAckOptions, BasicRejectOptions};

impl Inner {
    /// Acks deliveries of `link`'s consume channel.
    pub(crate) async fn ack_tags(&self, link: &Link, tags: Vec<u64>) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let _turn = self.settling.lock().await;
        let (upto, singles) = self
            .state
            .lock_unpoisoned()
            .outstanding
            .plan(link.gen, tags);
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
        let acked = async {
            let (first, rest) = futures_util::future::join(multiple, singles).await;
            first?;
            rest.into_iter().collect()
        };
        // Given up on, the acks still go out when the broker reads again.
        link.calls.answer("basic.ack", acked).await
    }

    /// Hands deliveries of `link`'s consume channel back to the broker, as they were.
    pub(crate) async fn reject_tags(&self, link: &Link, tags: Vec<u64>) {
        if tags.is_empty() {
            return;
        }
        let _turn = self.settling.lock().await;
        self.state
            .lock_unpoisoned()
            .outstanding
            .forget(link.gen, &tags);
        let rejects = tags.into_iter().map(|t| {
            link.consume
                .basic_reject(t, BasicRejectOptions { requeue: true })
        });
        let _ = link.calls.within("basic.reject", join_all(rejects)).await;
    }
}
