//! [`SettleByKind`] for [`AmqpBackend`]: acking, retrying, releasing, burying and expiring leases.

use crate::backend::AmqpBackend;
use crate::message::{self, Outgoing};
use crate::park::live_tag;
use crate::state::Held;
use jobsmith_core::lock::LockExt;
use jobsmith_core::{Envelope, Lease, LeaseStatus, Result, SettleByKind, Timestamp};
use std::sync::Arc;

impl AmqpBackend {
    /// Records how settling leases taken with [`AmqpBackend::take_held`] went.
    fn after_settling<'h>(
        &self,
        link: &crate::link::Link,
        result: &Result<()>,
        held: impl IntoIterator<Item = (&'h Lease, Held)>,
    ) -> Vec<Held> {
        let mut st = self.inner.state.lock_unpoisoned();
        let mut kept = Vec::new();
        for (lease, h) in held {
            if result.is_ok() {
                st.settled(&h, link.gen);
                kept.push(h);
            } else {
                st.unsettled(&lease.token, h, link.gen);
            }
        }
        kept
    }

    /// Removes the leases that still hold, as of the current connection.
    async fn take_held(
        &self,
        leases: &[Lease],
    ) -> Result<(Arc<crate::link::Link>, Vec<Option<Held>>)> {
        let link = self.inner.link().await?;
        let turn = self.inner.handover.lock().await;
        let mut st = self.inner.state.lock_unpoisoned();
        let held = leases.iter().map(|l| st.take(&l.token)).collect();
        drop(st);
        drop(turn);
        self.inner.reaper.notify_one();
        Ok((link, held))
    }

    /// Replaces one held delivery with the message `msg` makes of it; on
    /// failure the delivery goes back to the broker. `None` if the lease was lost.
    async fn settle_one(
        &self,
        lease: &Lease,
        msg: impl FnOnce(&Held) -> Outgoing,
    ) -> Result<Option<Held>> {
        let (link, mut held) = self.take_held(std::slice::from_ref(lease)).await?;
        let Some(held) = held.pop().flatten() else {
            return Ok(None);
        };
        let result = self.inner.settle(&link, vec![msg(&held)], &[&held]).await;
        let held = self.after_settling(&link, &result, [(lease, held)]).pop();
        result.map(|()| held)
    }

    async fn free_key_of(&self, held: &Held) {
        let Some(k) = held
            .payload
            .as_ref()
            .ok()
            .and_then(|env| env.idempotency_key.as_ref())
        else {
            return;
        };
        let Ok(link) = self.inner.link().await else {
            return;
        };
        if let Err(e) = self.inner.free_key(&link, &held.queue, k).await {
            tracing::warn!(error = %e, key = %jobsmith_core::printable(k), "could not free an idempotency key");
        }
    }
}

#[async_trait::async_trait]
impl SettleByKind for AmqpBackend {
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (link, held) = self.take_held(leases).await?;
        let mut statuses = Vec::with_capacity(leases.len());
        let mut tags = Vec::with_capacity(leases.len());
        let mut taken = Vec::with_capacity(leases.len());
        for (lease, h) in leases.iter().zip(held) {
            let Some(h) = h else {
                statuses.push(LeaseStatus::Lost);
                continue;
            };
            tags.extend(live_tag(&link, &h));
            statuses.push(LeaseStatus::Held);
            taken.push((lease, h));
        }
        let result = async {
            for (_, h) in &taken {
                if let Ok(env) = &h.payload {
                    if let Some(k) = &env.idempotency_key {
                        self.inner.complete_key(&link, &h.queue, k, &env.id).await?;
                    }
                }
            }
            self.inner.ack_tags(&link, tags).await?;
            for p in taken.iter().filter_map(|(_, h)| h.parked.as_ref()) {
                self.inner.unpark(&link, p).await?;
            }
            Ok(())
        }
        .await;
        if result.is_ok() {
            self.inner
                .tally
                .processed(taken.iter().map(|(l, _)| l.queue.as_str()));
        }
        self.after_settling(&link, &result, taken);
        result.map(|()| statuses)
    }

    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        let mut env = envelope.clone();
        env.id = lease.id.clone();
        let msg = message::job(&self.inner.names, &env, Timestamp::now());
        Ok(match self.settle_one(lease, |_| msg).await? {
            Some(_) => {
                self.inner.tally.failed(&lease.queue);
                LeaseStatus::Held
            }
            None => LeaseStatus::Lost,
        })
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (link, held) = self.take_held(leases).await?;
        let mut msgs = Vec::new();
        let mut taken = Vec::new();
        let statuses = leases
            .iter()
            .zip(held)
            .map(|(lease, h)| match h {
                Some(h) => {
                    // A released job's attempt does not count.
                    msgs.push(self.inner.requeue_message_counting(&h, false));
                    taken.push((lease, h));
                    LeaseStatus::Held
                }
                None => LeaseStatus::Lost,
            })
            .collect();
        let refs: Vec<&Held> = taken.iter().map(|(_, h)| h).collect();
        let result = self.inner.settle(&link, msgs, &refs).await;
        self.after_settling(&link, &result, taken);
        result.map(|()| statuses)
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        let names = &self.inner.names;
        let dead = |h: &Held| {
            let body = match &h.payload {
                Ok(env) => {
                    let mut env = env.clone();
                    env.last_error = Some(reason.to_owned());
                    env.to_bytes()
                }
                Err(m) => m.raw.clone(),
            };
            message::dead(names, &h.queue, &lease.id, body, reason)
        };
        let Some(h) = self.settle_one(lease, dead).await? else {
            return Ok(LeaseStatus::Lost);
        };
        self.inner.tally.failed(&lease.queue);
        self.free_key_of(&h).await;
        Ok(LeaseStatus::Held)
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        let names = &self.inner.names;
        let expired = |h: &Held| {
            let body = match &h.payload {
                Ok(env) => env.to_bytes(),
                Err(m) => m.raw.clone(),
            };
            message::expired(names, &h.queue, body)
        };
        let Some(h) = self.settle_one(lease, expired).await? else {
            return Ok(LeaseStatus::Lost);
        };
        self.free_key_of(&h).await;
        Ok(LeaseStatus::Held)
    }
}
