//! Shared by the RabbitMQ tests: where the broker is, fresh namespaces, job
//! arguments, and changes to the local broker that undo themselves.
#![allow(dead_code, unreachable_pub)]

use jobsmith_amqp::AmqpBackend;
use serde_json::value::RawValue;

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

/// Connects to the namespace `prefix` with `extra` query settings, through
/// `proxy` rather than straight to the broker.
pub async fn connect_via(
    proxy: &jobsmith_conformance::Proxy,
    prefix: &str,
    extra: &str,
) -> AmqpBackend {
    AmqpBackend::connect(&jobsmith_conformance::url_through(
        &url(prefix, extra),
        proxy.addr,
    ))
    .await
    .expect("RabbitMQ is reachable through the proxy")
}

/// Connects to a fresh namespace.
pub async fn fresh(extra: &str) -> AmqpBackend {
    connect(&fresh_prefix(), extra).await
}

/// Connects to the namespace `prefix` with `extra` query settings.
pub async fn connect(prefix: &str, extra: &str) -> AmqpBackend {
    AmqpBackend::connect(&url(prefix, extra)).await.expect(
        "RabbitMQ is reachable (set JOBSMITH_AMQP_URL, or start it with `cargo xtask services`)",
    )
}

/// A plain AMQP connection and channel of its own, as another program would
/// have: closing the connection gives back whatever the channel holds.
pub async fn plain_channel() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(&base_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

/// The `n` of a test job's `{"n": ..}` arguments.
pub fn arg_n(args: &RawValue) -> Result<u64, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Args {
        n: u64,
    }
    let args: Args = serde_json::from_str(args.get())?;
    Ok(args.n)
}

/// Runs `rabbitmqctl` on the local broker: its output if it succeeded.
pub fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
