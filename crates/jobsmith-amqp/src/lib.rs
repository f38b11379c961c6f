//! RabbitMQ backend of [jobsmith](https://docs.rs/jobsmith), on `lapin`.
//!
//! Applications select it with the `amqp` feature of the `jobsmith` facade and
//! an `amqp://` URL; this crate is what that feature compiles in.
//!
//! ```no_run
//! use jobsmith_amqp::AmqpBackend;
//! use jobsmith_core::{App, Backend, Envelope};
//!
//! # #[tokio::main] async fn main() -> jobsmith_core::Result<()> {
//! let backend = AmqpBackend::connect("amqp://guest:guest@127.0.0.1:5672/%2f?prefix=myapp").await?;
//! let env = Envelope::with_args("resize", "images", &serde_json::json!({"id": 7}))?;
//! backend.enqueue(vec![env]).await?;
//! let app = App::new(backend);
//! # let _ = app; Ok(()) }
//! ```
//!
//! How it builds the contract from RabbitMQ's parts (see `docs/backends/rabbitmq.md`):
//! - durable queues, persistent messages, publisher confirms awaited per batch;
//! - leases are unacknowledged deliveries, with expiry and fencing kept in
//!   the process;
//! - delays through 36 binary TTL levels that dead-letter into each other, so
//!   no job waits behind another that is due later;
//! - strict priority with `x-max-priority`, plus a priority-ordered local buffer;
//! - dead letters in a per-queue dead-letter queue with `x-max-length` and
//!   `x-message-ttl` for retention;
//! - idempotency keys held in single-message queues with
//!   `x-overflow: reject-publish`;
//! - deliveries held for half of `consumer_timeout` handed over to a
//!   per-lease park queue, so long jobs outlive the broker's timeout;
//! - migrations import each job once, by id, through a ledger queue that
//!   every imported message also reaches in the same publish (`BCC`);
//! - processed and failed totals as the sum of the messages in a counter
//!   queue, to which each process adds its counts about once a second, and
//!   which readers merge into one message under a lock (an exclusive consumer).

mod acks;
mod backend;
mod browse;
mod call;
mod config;
mod consume;
mod counts;
mod dead;
mod error;
mod inner;
mod inspect;
mod lease;
mod link;
mod message;
mod meta;
mod migrate;
mod moves;
mod names;
mod park;
mod raw;
mod settle;
mod stage;
mod state;
mod tls;
mod topology;
mod unique;

pub use backend::AmqpBackend;
pub use config::{AmqpConfig, DEFAULT_CALL_TIMEOUT, DEFAULT_CONSUMER_TIMEOUT, DEFAULT_PREFIX};
pub use raw::{raw_rate, RawQueue};
