//! Inspection: [`Inspect`] (queues and their counts) for the memory backend.

use super::*;

#[async_trait::async_trait]
impl Inspect for MemoryBackend {
    async fn queues(&self) -> Result<Vec<String>> {
        self.check_available()?;
        let st = self.inner.state.lock_unpoisoned();
        let mut names: Vec<String> = st.queues.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    async fn stats(&self, queues: &[String]) -> Result<Vec<QueueStats>> {
        self.check_available()?;
        let now = Timestamp::now();
        let mut st = self.inner.state.lock_unpoisoned();
        Ok(queues
            .iter()
            .map(|name| {
                let q = st.queue(name);
                q.settle(now);
                let oldest = q
                    .ready
                    .keys()
                    .map(|(_, at, _)| *at)
                    .min()
                    .map(|at| now.since(at));
                QueueStats {
                    queue: name.clone(),
                    ready: q.ready.len() as u64,
                    scheduled: q.scheduled.len() as u64,
                    in_flight: q.in_flight.len() as u64,
                    dead: q.dead.len() as u64,
                    expired: q.expired,
                    oldest_ready_age: oldest,
                    processed: Some(q.processed),
                    failed: Some(q.failed),
                    error: None,
                }
            })
            .collect())
    }
}
