//! Keeping running jobs' leases alive, and sampling queue depth for metrics.

use super::shared::Shared;
use crate::backend::LeaseStatus;
use std::sync::Arc;
use std::time::Duration;

/// Extends the leases of all running jobs, and of finished jobs whose
/// outcomes are not reported yet, in one call, every third of the lease.
pub(super) async fn heartbeat(shared: Arc<Shared>) {
    let every = shared.lease / 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (slots, leases) = shared.live_leases();
        if leases.is_empty() {
            continue;
        }
        match shared.backend.extend(&leases, shared.lease).await {
            Ok(statuses) => {
                for ((slot, lease), status) in slots.into_iter().zip(&leases).zip(statuses) {
                    // A finished job's lease may be lost because it was just settled.
                    if status != LeaseStatus::Lost {
                        continue;
                    }
                    if shared.cancel(slot) {
                        tracing::warn!(id = %crate::printable(lease.id.as_str()), queue = %crate::printable(&lease.queue), "lease lost while the job runs; asking it to stop");
                    } else if shared.take_waiting(slot, false).is_some() {
                        tracing::warn!(id = %crate::printable(lease.id.as_str()), queue = %crate::printable(&lease.queue), "lease lost while the job waited for a slot; it is left to run elsewhere");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.describe(), "could not extend leases; will try again")
            }
        }
    }
}

/// Samples queue depth and the oldest ready job's age into gauges, `every`
/// so often from the worker's start until it stops.
pub(super) async fn sample_depth(shared: Arc<Shared>, queues: Vec<String>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let stats = match async { shared.backend.inspect()?.stats(&queues).await }.await {
            Ok(stats) => {
                failing = false;
                stats
            }
            Err(e) => {
                // Once per outage, not once per tick.
                if !failing {
                    tracing::warn!(error = %e.describe(), "could not sample queue depth; the gauges keep their last values");
                }
                failing = true;
                continue;
            }
        };
        // A queue that could not be read keeps its last values; the backend
        // reports it.
        for s in stats.into_iter().filter(|s| s.error.is_none()) {
            let q = s.queue.clone();
            metrics::gauge!("jobsmith_queue_depth", "queue" => q.clone(), "state" => "ready")
                .set(s.ready as f64);
            metrics::gauge!("jobsmith_queue_depth", "queue" => q.clone(), "state" => "scheduled")
                .set(s.scheduled as f64);
            metrics::gauge!("jobsmith_queue_depth", "queue" => q.clone(), "state" => "in_flight")
                .set(s.in_flight as f64);
            metrics::gauge!("jobsmith_queue_depth", "queue" => q.clone(), "state" => "dead")
                .set(s.dead as f64);
            metrics::gauge!("jobsmith_queue_oldest_age_seconds", "queue" => q)
                .set(s.oldest_ready_age.map_or(0.0, |d| d.as_secs_f64()));
        }
    }
}
