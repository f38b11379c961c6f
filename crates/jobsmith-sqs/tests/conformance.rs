//! The backend conformance suite from `jobsmith-conformance`, against the SQS
//! endpoint at `JOBSMITH_SQS_ENDPOINT` (default moto on 127.0.0.1:5000),
//! with a fresh queue prefix per test and a proxy in front to cut the
//! connection. These contract items are approximations on SQS, each flagged
//! and each checked in its weaker form by the suite:
//! - priority is strict between reserves, not within one receive (SQS
//!   returns a sample of a queue's messages, so a batch may mix levels);
//! - the oldest ready job's age is unknown (`GetQueueAttributes` has no
//!   such attribute, and peeking would count as a delivery);
//! - a scheduled job cannot be taken by a migration before it is due;
//! - a job that comes due while a reserve waits reaches it up to 1.5 s
//!   late, not 100 ms: moto's waiting long poll looks for messages whose
//!   delay ended once a second.

mod support;

use jobsmith_conformance::{Approximations, Harness};
use jobsmith_core::{Backend, BoxFuture, Settings};
use std::sync::Arc;
use std::time::Duration;

fn harness(settings: Settings) -> BoxFuture<'static, Harness> {
    Box::pin(async move {
        let proxy = support::Proxy::start(support::host_port(&support::endpoint())).await;
        let backend = support::backend(settings.clone(), Some(&proxy.url())).await;
        let direct = jobsmith_sqs::SqsBackend::connect_with(
            backend.config().clone().with_endpoint(support::endpoint()),
        )
        .await
        .expect("the SQS endpoint is reachable");
        let mut approximations = Approximations::default();
        approximations.priority_between_batches_only = true;
        approximations.oldest_ready_age_unknown = true;
        approximations.scheduled_hidden_until_due = true;
        // moto looks for messages whose delay ended only once a second while
        // a long poll waits: a job due then reaches the poll up to 1 s late
        // (docs/backends/sqs.md, "Reserving, waking, leases").
        approximations.due_wake_bound = Some(Duration::from_millis(1500));
        let peer_config = backend.config().clone().with_endpoint(support::endpoint());
        Harness {
            backend: Arc::new(backend),
            faults: Arc::new(support::SqsFaults::new(proxy, direct)),
            short_lease: Duration::from_secs(2),
            approximations,
            peer: Arc::new(move || -> BoxFuture<'static, Arc<dyn Backend>> {
                let config = peer_config.clone();
                Box::pin(async move {
                    let b: Arc<dyn Backend> = Arc::new(
                        jobsmith_sqs::SqsBackend::connect_with(config)
                            .await
                            .expect("the SQS endpoint is reachable"),
                    );
                    b
                })
            }),
        }
    })
}

jobsmith_conformance::conformance_suite!(harness);
