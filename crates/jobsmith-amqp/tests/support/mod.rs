//! Shared by the RabbitMQ tests: where the broker is, and fresh namespaces.
#![allow(dead_code, unreachable_pub)]

use jobsmith_amqp::AmqpBackend;

/// The broker's URL: `JOBSMITH_AMQP_URL`, or the local default.
pub fn base_url() -> String {
    std::env::var("JOBSMITH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A fresh queue prefix; its queues delete themselves ten minutes after last use.
pub fn fresh_prefix() -> String {
    format!("jstest{:016x}", fastrand::u64(..))
}

/// The URL of a fresh namespace with `extra` query settings.
pub fn url(prefix: &str, extra: &str) -> String {
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}prefix={prefix}&expires=10m{extra}")
}

/// Connects to a fresh namespace.
pub async fn fresh(extra: &str) -> AmqpBackend {
    AmqpBackend::connect(&url(&fresh_prefix(), extra))
        .await
        .expect(
        "RabbitMQ is reachable (set JOBSMITH_AMQP_URL, or start it with `cargo xtask services`)",
    )
}
