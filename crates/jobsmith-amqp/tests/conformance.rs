//! The backend conformance suite, unchanged, against a real RabbitMQ, with a
//! fresh queue prefix per case.

mod support;

use jobsmith_amqp::AmqpBackend;
use jobsmith_core::testkit::{Approximations, Faults, Harness};
use jobsmith_core::{Backend, BoxFuture, Settings};
use std::sync::Arc;
use std::time::Duration;

/// Severs by closing the backend's connection and refusing to reconnect until
/// restored; pushes raw bytes as a foreign producer would.
struct AmqpFaults(AmqpBackend);

#[async_trait::async_trait]
impl Faults for AmqpFaults {
    async fn sever(&self) {
        self.0.set_unavailable(true).await;
    }
    async fn restore(&self) {
        self.0.set_unavailable(false).await;
    }
    async fn push_raw(&self, queue: &str, raw: &[u8]) {
        self.0.publish_raw(queue, raw).await.expect("raw publish");
    }
}

fn settings_query(s: &Settings) -> String {
    let mut q = format!(
        "&dead_max={}&dead_max_age={}ms&unique_for={}ms",
        s.dead_max,
        s.dead_max_age.as_millis(),
        s.unique_for.as_millis()
    );
    if let Some(m) = s.max_payload {
        q.push_str(&format!("&max_payload={m}"));
    }
    q
}

fn harness(settings: Settings) -> BoxFuture<'static, Harness> {
    Box::pin(async move {
        let prefix = support::fresh_prefix();
        let query = settings_query(&settings);
        let backend = support::connect(&prefix, &query).await;
        // Prefetch 1: the peer holds no job beyond the one it reserves.
        let peer_query = format!("{query}&prefetch=1");
        Harness {
            backend: Arc::new(backend.clone()),
            faults: Arc::new(AmqpFaults(backend)),
            short_lease: Duration::from_millis(300),
            approximations: Approximations::default(),
            peer: Arc::new(move || -> BoxFuture<'static, Arc<dyn Backend>> {
                let (prefix, query) = (prefix.clone(), peer_query.clone());
                Box::pin(async move {
                    let b: Arc<dyn Backend> = Arc::new(support::connect(&prefix, &query).await);
                    b
                })
            }),
        }
    })
}

jobsmith_core::conformance_suite!(harness);
