//! [`SettleByKind`] for [`SqsBackend`]: ack, retry, release, dead-letter and
//! expire, each on the held message's receipt.

use crate::backend::SqsBackend;
use crate::calls::{self, Send};
use crate::codec::Outgoing;
use crate::dead;
use crate::inner::{fifo_safe, HeldByQueue, Inner};
use crate::names::priority_level;
use futures_util::future::join_all;
use jobsmith_core::{Envelope, Error, Lease, LeaseStatus, Result, SettleByKind};

#[async_trait::async_trait]
impl SettleByKind for SqsBackend {
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.inner.ack(leases).await
    }

    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        self.inner.replace(lease, envelope).await
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.inner.release(leases).await
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        self.inner.dead_letter(lease, reason).await
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        self.inner.expire(lease).await
    }
}

impl Inner {
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (mut statuses, by_url) = self.take_held(leases);
        // Keys are marked completed before the messages are deleted: if
        // that fails, nothing is settled and the leases stay held for a retry.
        if let Err(e) = self.complete_keys(leases, &by_url).await {
            for (_, h) in by_url.into_values().flatten() {
                self.leases.restore(h);
            }
            return Err(e);
        }
        let results = join_all(
            by_url
                .into_iter()
                .map(|(url, held)| async move { self.delete_held(&url, held).await }),
        )
        .await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(done) => {
                    for (i, _, ok) in &done {
                        if !ok {
                            statuses[*i] = LeaseStatus::Lost;
                        }
                    }
                    self.tally.processed(
                        done.iter()
                            .filter(|(_, _, ok)| *ok)
                            .map(|(i, _, _)| leases[*i].queue.as_str()),
                    );
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(statuses),
        }
    }

    /// Marks the idempotency keys of held jobs completed, all at once.
    async fn complete_keys(&self, leases: &[Lease], by_url: &HeldByQueue) -> Result<()> {
        let unique_for = self.config.settings.unique_for;
        let done = join_all(by_url.values().flatten().filter_map(|(i, h)| {
            let env = h.payload.as_ref().ok()?;
            let k = env.idempotency_key.as_deref()?;
            Some(
                self.keys
                    .complete(&leases[*i].queue, k, &env.id, unique_for),
            )
        }))
        .await;
        done.into_iter().collect()
    }

    /// Sends a replacement for a held message, then deletes the held one.
    async fn replace(&self, lease: &Lease, env: &Envelope) -> Result<LeaseStatus> {
        let Some(held) = self.leases.take(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        let mut env = env.clone();
        env.id = lease.id.clone();
        let body = String::from_utf8(env.to_bytes()).unwrap_or_default();
        let sent = async {
            let url = self
                .queues
                .level_url(&lease.queue, priority_level(env.priority))
                .await?;
            let send = self.send_of(&env, body, false);
            calls::send(&self.client, &url, vec![send], self.budget()).await
        };
        if let Err(e) = sent.await {
            self.leases.restore(held);
            return Err(e);
        }
        // The retry is queued: the failed attempt counts whatever the delete does.
        self.tally.failed(&lease.queue);
        calls::delete(&self.client, &held.url, &[held.receipt.as_str()]).await?;
        Ok(LeaseStatus::Held)
    }

    pub(crate) async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let (statuses, by_url) = self.take_held(leases);
        for (url, held) in by_url {
            let sends: Vec<Send> = held
                .iter()
                .map(|(_, h)| match &h.payload {
                    Ok(env) => {
                        let mut env = env.clone();
                        env.attempt = env.attempt.saturating_sub(1);
                        let body = String::from_utf8(env.to_bytes()).unwrap_or_default();
                        self.send_of(&env, body, false)
                    }
                    Err(m) => Send {
                        out: Outgoing::from_raw(&m.raw),
                        delay: 0,
                        fifo: self.config.fifo.then(|| {
                            (
                                h.receipt.chars().take(64).collect(),
                                fastrand::u64(..).to_string(),
                            )
                        }),
                    },
                })
                .collect();
            if let Err(e) = calls::send(&self.client, &url, sends, self.budget()).await {
                for (_, h) in held {
                    self.leases.restore(h);
                }
                return Err(e);
            }
            let receipts: Vec<&str> = held.iter().map(|(_, h)| h.receipt.as_str()).collect();
            calls::delete(&self.client, &url, &receipts).await?;
        }
        Ok(statuses)
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        let Some(held) = self.leases.take(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        let out = dead::burial(&held.payload, &lease.id, reason, self.budget());
        let buried = async {
            let family = self.queues.family(&lease.queue).await?;
            let fifo = self.config.fifo.then(|| {
                (
                    fifo_safe(lease.id.as_str()),
                    format!("{}-{}", fifo_safe(lease.id.as_str()), fastrand::u64(..)),
                )
            });
            let send = Send {
                out,
                delay: 0,
                fifo,
            };
            calls::send(&self.client, &family.dead, vec![send], self.budget()).await?;
            Ok::<_, Error>(family)
        };
        let family = match buried.await {
            Ok(f) => f,
            Err(e) => {
                self.leases.restore(held);
                return Err(e);
            }
        };
        self.tally.failed(&lease.queue);
        calls::delete(&self.client, &held.url, &[held.receipt.as_str()]).await?;
        self.free_key(&lease.queue, &held).await;
        dead::enforce_retention(self, &lease.queue, &family).await?;
        Ok(LeaseStatus::Held)
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        let Some(held) = self.leases.take(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        let url = held.url.clone();
        let done = self.delete_held(&url, vec![(0, held)]).await?;
        let Some((_, held, true)) = done.into_iter().next() else {
            return Ok(LeaseStatus::Lost);
        };
        self.free_key(&lease.queue, &held).await;
        self.count_expired(&lease.queue, 1).await?;
        Ok(LeaseStatus::Held)
    }
}
