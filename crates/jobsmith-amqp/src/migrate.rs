//! [`Migrate`] for [`AmqpBackend`]: forwards to the process's [`Moves`](crate::moves::Moves).

use crate::backend::AmqpBackend;
use jobsmith_core::{DeadJob, Delivery, Envelope, Lease, LeaseStatus, Migrate, Result};
use std::time::Duration;

#[async_trait::async_trait]
impl Migrate for AmqpBackend {
    async fn take(&self, queue: &str, max: usize, hold: Duration) -> Result<Vec<Delivery>> {
        self.moves.take(&self.inner, queue, max, hold).await
    }

    async fn remove(&self, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        self.moves.remove(&self.inner, leases).await
    }

    async fn import(&self, jobs: Vec<Envelope>) -> Result<Vec<bool>> {
        self.moves.import(&self.inner, jobs, self.limit()).await
    }

    async fn import_dead(&self, jobs: Vec<DeadJob>) -> Result<Vec<bool>> {
        self.moves.import_dead(&self.inner, jobs).await
    }
}
