//! Moving jobs in and out: [`Migrate`] for the memory backend.

use super::*;

#[async_trait::async_trait]
impl Migrate for MemoryBackend {
    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>> {
        self.check_available()?;
        let now = Timestamp::now();
        let until = now.plus(hold);
        let mut st = self.inner.state.lock_unpoisoned();
        let seq = st.next_seq();
        let Some(q) = st.queues.get_mut(queue) else {
            return Ok(Vec::new());
        };
        q.settle(now);
        let mut out = Vec::new();
        while out.len() < max {
            let id = if let Some((_, id)) = q.ready.pop_first() {
                id
            } else if let Some((_, _, id)) = q.scheduled.pop_first() {
                id
            } else {
                break;
            };
            let Some(job) = q.jobs.get(&id) else {
                continue;
            };
            let token = new_token(seq.wrapping_mul(1_000_003).wrapping_add(out.len() as u64));
            q.in_flight.insert(
                id.clone(),
                Flight {
                    token: token.clone(),
                    expires_at: until,
                },
            );
            q.lease_expiry.insert((until, id.clone()));
            out.push(Delivery {
                lease: Lease {
                    id,
                    queue: queue.to_owned(),
                    token,
                    expires_at: until,
                },
                envelope: job.payload.clone(),
            });
        }
        Ok(out)
    }

    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.check_available()?;
        let mut st = self.inner.state.lock_unpoisoned();
        Ok(leases
            .iter()
            .map(|lease| {
                let q = st.queue(&lease.queue);
                match q.take_leased(lease) {
                    Some(job) => {
                        if let Ok(env) = &job.payload {
                            q.free_key(env);
                        }
                        LeaseStatus::Held
                    }
                    None => LeaseStatus::Lost,
                }
            })
            .collect())
    }

    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
        self.check_available()?;
        let limit = self.limit();
        for env in &jobs {
            let size = env.encoded_len();
            if size > limit {
                return Err(Error::PayloadTooLarge { size, limit });
            }
        }
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(jobs.len());
        let mut st = self.inner.state.lock_unpoisoned();
        for env in jobs {
            let seq = st.next_seq();
            let q = st.queue(&env.queue);
            if q.jobs.contains_key(&env.id) || !q.imported.insert(env.id.clone()) {
                out.push(false);
                continue;
            }
            if let Some(key) = &env.idempotency_key {
                // The job is kept even if another job holds its key here.
                q.claim_key(key, &env.id, now);
            }
            q.push(env.id.clone(), Ok(env), seq, now);
            out.push(true);
        }
        drop(st);
        self.inner.wake.notify_waiters();
        Ok(out)
    }

    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
        self.check_available()?;
        let mut st = self.inner.state.lock_unpoisoned();
        let mut out = Vec::with_capacity(jobs.len());
        for dead in jobs {
            let seq = st.next_seq();
            let q = st.queue(&dead.queue);
            if q.dead_ids.contains_key(&dead.id) || !q.imported.insert(dead.id.clone()) {
                out.push(false);
                continue;
            }
            q.bury(dead, seq, &self.inner.settings);
            out.push(true);
        }
        Ok(out)
    }
}
