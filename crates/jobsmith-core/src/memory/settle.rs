//! Settling reserved jobs: [`SettleByKind`] for the memory backend.

use super::*;

#[async_trait::async_trait]
impl SettleByKind for MemoryBackend {
    async fn ack(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.check_available()?;
        let now = Timestamp::now();
        let unique_for = self.inner.settings.unique_for;
        let mut st = self.inner.state.lock_unpoisoned();
        Ok(leases
            .iter()
            .map(|lease| {
                let q = st.queue(&lease.queue);
                match q.take_leased(lease) {
                    Some(job) => {
                        q.processed += 1;
                        if let Ok(env) = &job.payload {
                            if let Some(k) = &env.idempotency_key {
                                if let Some(h) = q.keys.get_mut(k).filter(|h| h.id == env.id) {
                                    h.completed_until = Some(now.plus(unique_for));
                                }
                            }
                        }
                        LeaseStatus::Held
                    }
                    None => LeaseStatus::Lost,
                }
            })
            .collect())
    }

    async fn retry(&self, lease: &Lease, envelope: &Envelope) -> Result<LeaseStatus> {
        self.check_available()?;
        let now = Timestamp::now();
        let mut st = self.inner.state.lock_unpoisoned();
        let seq = st.next_seq();
        let q = st.queue(&lease.queue);
        let Some(_) = q.take_leased(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        q.failed += 1;
        let mut env = envelope.clone();
        env.id = lease.id.clone();
        q.push(lease.id.clone(), Ok(env), seq, now);
        drop(st);
        self.inner.wake.notify_waiters();
        Ok(LeaseStatus::Held)
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.check_available()?;
        let mut st = self.inner.state.lock_unpoisoned();
        let out = leases
            .iter()
            .map(|lease| {
                let q = st.queue(&lease.queue);
                match q.take_leased(lease) {
                    Some(mut job) => {
                        if let Ok(env) = &mut job.payload {
                            env.attempt = env.attempt.saturating_sub(1);
                        }
                        q.ready.insert(job.ready_key, lease.id.clone());
                        q.jobs.insert(lease.id.clone(), job);
                        LeaseStatus::Held
                    }
                    None => LeaseStatus::Lost,
                }
            })
            .collect();
        drop(st);
        self.inner.wake.notify_waiters();
        Ok(out)
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<LeaseStatus> {
        self.check_available()?;
        let mut st = self.inner.state.lock_unpoisoned();
        let seq = st.next_seq();
        let q = st.queue(&lease.queue);
        let Some(job) = q.take_leased(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        q.failed += 1;
        let raw = match job.payload {
            Ok(mut env) => {
                q.free_key(&env);
                env.last_error = Some(reason.to_owned());
                env.to_bytes()
            }
            Err(m) => m.raw,
        };
        let dead = DeadJob {
            id: lease.id.clone(),
            queue: lease.queue.clone(),
            reason: reason.to_owned(),
            died_at: Timestamp::now(),
            raw,
        };
        q.bury(dead, seq, &self.inner.settings);
        Ok(LeaseStatus::Held)
    }

    async fn expire(&self, lease: &Lease) -> Result<LeaseStatus> {
        self.check_available()?;
        let mut st = self.inner.state.lock_unpoisoned();
        let q = st.queue(&lease.queue);
        let Some(job) = q.take_leased(lease) else {
            return Ok(LeaseStatus::Lost);
        };
        if let Ok(env) = &job.payload {
            q.free_key(env);
        }
        q.expired += 1;
        Ok(LeaseStatus::Held)
    }
}
