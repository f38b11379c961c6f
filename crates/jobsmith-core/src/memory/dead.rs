//! Dead letters: [`DeadLetters`] for the memory backend.

use super::*;

#[async_trait::async_trait]
impl DeadLetters for MemoryBackend {
    async fn dead_list(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<DeadJob>> {
        self.check_available()?;
        let st = self.inner.state.lock_unpoisoned();
        Ok(st
            .queues
            .get(queue)
            .map(|q| {
                q.dead
                    .values()
                    .rev()
                    .skip(offset)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn dead_get(&self, queue: &str, id: &JobId) -> Result<Option<DeadJob>> {
        self.check_available()?;
        let st = self.inner.state.lock_unpoisoned();
        Ok(st
            .queues
            .get(queue)
            .and_then(|q| q.dead_ids.get(id).and_then(|k| q.dead.get(k)).cloned()))
    }

    async fn dead_requeue(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        self.check_available()?;
        let now = Timestamp::now();
        let mut st = self.inner.state.lock_unpoisoned();
        let mut n = 0;
        for id in ids {
            let seq = st.next_seq();
            let q = st.queue(queue);
            let Some(key) = q.dead_ids.get(id).copied() else {
                continue;
            };
            let Some(mut env) = q.dead.get(&key).and_then(DeadJob::envelope) else {
                continue;
            };
            q.dead.remove(&key);
            q.dead_ids.remove(id);
            env.attempt = 0;
            env.run_at = now;
            if let Some(k) = &env.idempotency_key {
                q.keys.insert(
                    k.clone(),
                    KeyHold {
                        id: env.id.clone(),
                        completed_until: None,
                    },
                );
            }
            q.push(env.id.clone(), Ok(env), seq, now);
            n += 1;
        }
        drop(st);
        self.inner.wake.notify_waiters();
        Ok(n)
    }

    async fn dead_purge(&self, queue: &str, older_than: Option<Duration>) -> Result<usize> {
        self.check_available()?;
        let cutoff = Timestamp(Timestamp::now().0.saturating_sub(
            older_than.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        ));
        let mut st = self.inner.state.lock_unpoisoned();
        let Some(q) = st.queues.get_mut(queue) else {
            return Ok(0);
        };
        let doomed: Vec<_> = q
            .dead
            .iter()
            .filter(|(_, d)| older_than.is_none() || d.died_at <= cutoff)
            .map(|(k, d)| (*k, d.id.clone()))
            .collect();
        for (k, id) in &doomed {
            q.dead.remove(k);
            q.dead_ids.remove(id);
        }
        Ok(doomed.len())
    }

    async fn dead_delete(&self, queue: &str, ids: &[JobId]) -> Result<usize> {
        self.check_available()?;
        let mut st = self.inner.state.lock_unpoisoned();
        let Some(q) = st.queues.get_mut(queue) else {
            return Ok(0);
        };
        let mut n = 0;
        for id in ids {
            if let Some(k) = q.dead_ids.remove(id) {
                q.dead.remove(&k);
                n += 1;
            }
        }
        Ok(n)
    }
}
