//! [`SettleByKind`] on Redis: ack, retry, release, dead-letter and expire, one script per lease move.

use crate::backend::{ms, RedisBackend};
use crate::reply;
use crate::scripts::Scripts;
use jobsmith_core::{Envelope, Lease, LeaseStatus, Result, SettleByKind, Timestamp};
use redis::ScriptInvocation;

impl RedisBackend {
    async fn one_lease(&self, inv: &ScriptInvocation<'_>, what: &str) -> Result<LeaseStatus> {
        let held = reply::int(&self.run(inv).await?, what)? == 1;
        Ok(if held {
            LeaseStatus::Held
        } else {
            LeaseStatus::Lost
        })
    }
}

#[async_trait::async_trait]
impl SettleByKind for RedisBackend {
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let unique_for = ms(self.inner.config.settings.unique_for);
        self.per_lease(leases, &Scripts::get().ack, Some(unique_for), "ack")
            .await
    }

    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        let mut env = envelope.clone();
        env.id = lease.id.clone();
        let mut inv = Scripts::get().retry.key(self.inner.keys.base(&lease.queue));
        inv.arg(lease.id.as_str())
            .arg(lease.token.as_str())
            .arg(env.to_bytes())
            .arg(env.priority)
            .arg(env.run_at.as_millis())
            .arg(env.expires_at.map_or(0, Timestamp::as_millis));
        self.one_lease(&inv, "retry").await
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.per_lease(leases, &Scripts::get().release, None, "release")
            .await
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        let s = &self.inner.config.settings;
        let mut inv = Scripts::get().bury.key(self.inner.keys.base(&lease.queue));
        inv.arg(lease.id.as_str())
            .arg(lease.token.as_str())
            .arg(reason)
            .arg(
                s.dead_max
                    .min(usize::try_from(i64::MAX).unwrap_or(usize::MAX)),
            )
            .arg(ms(s.dead_max_age));
        self.one_lease(&inv, "dead-letter").await
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        let mut inv = Scripts::get()
            .expire
            .key(self.inner.keys.base(&lease.queue));
        inv.arg(lease.id.as_str()).arg(lease.token.as_str());
        self.one_lease(&inv, "expire").await
    }
}
