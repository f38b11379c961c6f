//! The backend conformance suite, unchanged, against a real RabbitMQ, with a
//! fresh queue prefix per case. One contract item is an approximation here,
//! flagged and checked in its weaker form: a job whose TTL runs out while it
//! waits in the work queue is dropped by the broker, so it is counted in
//! `stats` but in no process's `jobsmith_jobs_expired_total`.

mod support;

use jobsmith_amqp::AmqpBackend;
use jobsmith_conformance::{Approximations, Faults, Harness, Proxy};
use jobsmith_core::{Backend, BoxFuture, Settings};
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Severs by closing the backend's connection and refusing to reconnect until
/// restored; freezes the proxy the backend reaches the broker through;
/// pushes raw bytes as a foreign producer would; breaks a queue by taking
/// its name from under it.
struct AmqpFaults {
    backend: AmqpBackend,
    proxy: Proxy,
    broken: Mutex<HashMap<String, Taken>>,
}

/// A queue broken by [`AmqpFaults`]: the connection whose exclusive queue
/// holds its name, and the jobs set aside.
struct Taken {
    holder: lapin::Connection,
    jobs: Vec<Vec<u8>>,
}

#[async_trait::async_trait]
impl Faults for AmqpFaults {
    async fn sever(&self) {
        self.backend.set_unavailable(true).await;
    }
    async fn restore(&self) {
        self.backend.set_unavailable(false).await;
    }
    async fn freeze(&self) -> Option<String> {
        self.proxy.freeze();
        Some("a proxy in front of RabbitMQ stopped forwarding".into())
    }
    fn server_words(&self) -> Vec<String> {
        vec![self.proxy.addr.to_string()]
    }
    async fn thaw(&self) {
        self.proxy.thaw();
    }
    async fn push_raw(&self, queue: &str, raw: &[u8]) {
        self.backend
            .publish_raw(queue, raw)
            .await
            .expect("raw publish");
    }
    async fn kill(&self) {
        // Cut for good: restored, it would consume its queues again.
        self.backend.set_unavailable(true).await;
    }
    /// What another client can do to one queue: its jobs are moved aside,
    /// the work queue is deleted and declared again exclusive to that
    /// client's connection. Until that connection closes, every other
    /// connection's declare, consume or count of the queue is refused
    /// (`RESOURCE_LOCKED`).
    async fn break_queue(&self, queue: &str) -> Option<String> {
        let name = self.backend.work_queue_name(queue);
        let (conn, ch) = support::plain_channel().await;
        let mut jobs = Vec::new();
        let take = BasicGetOptions { no_ack: true };
        while let Some(m) = ch
            .basic_get(name.as_str().into(), take)
            .await
            .expect("basic.get")
        {
            jobs.push(m.delivery.data);
        }
        ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        ch.queue_declare(name.as_str().into(), exclusive, FieldTable::default())
            .await
            .expect("queue.declare");
        let how = format!(
            "`{name}` deleted and declared again exclusive to another connection, its {} jobs \
             set aside",
            jobs.len()
        );
        self.lock()
            .insert(queue.to_owned(), Taken { holder: conn, jobs });
        Some(how)
    }
    /// Closes the connection (the exclusive queue goes with it) and
    /// publishes the jobs set aside again, as a foreign producer would.
    async fn repair_queue(&self, queue: &str) {
        let Some(Taken { holder, jobs }) = self.lock().remove(queue) else {
            return;
        };
        holder.close(200, "repaired".into()).await.expect("close");
        for raw in jobs {
            self.backend
                .publish_raw(queue, &raw)
                .await
                .expect("publish the jobs set aside");
        }
    }
}

impl AmqpFaults {
    fn new(backend: AmqpBackend, proxy: Proxy) -> Self {
        Self {
            backend,
            proxy,
            broken: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Taken>> {
        self.broken.lock().expect("not poisoned")
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
    if let Some(t) = s.call_timeout {
        q.push_str(&format!("&call_timeout={}ms", t.as_millis()));
    }
    q
}

fn harness(settings: Settings) -> BoxFuture<'static, Harness> {
    Box::pin(async move {
        let prefix = support::fresh_prefix();
        let query = settings_query(&settings);
        let proxy = Proxy::start(jobsmith_conformance::url_host_port(
            &support::base_url(),
            5672,
        ))
        .await;
        let backend = support::connect_via(&proxy, &prefix, &query).await;
        // Prefetch 1: the peer holds no job beyond the one it reserves.
        let peer_query = format!("{query}&prefetch=1");
        let mut approximations = Approximations::default();
        // A job whose per-message TTL runs out in the work queue is dropped
        // by the broker (into the expired counter), unseen by the process.
        approximations.expired_in_line_dropped_by_broker = true;
        // An idempotency key costs queues here: the jobs events create carry none.
        approximations.event_jobs_unkeyed = true;
        Harness {
            backend: Arc::new(backend.clone()),
            faults: Arc::new(AmqpFaults::new(backend, proxy)),
            short_lease: Duration::from_millis(300),
            approximations,
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

jobsmith_conformance::conformance_suite!(harness);
