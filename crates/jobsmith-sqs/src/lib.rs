//! The AWS SQS backend of [jobsmith](https://docs.rs/jobsmith).
//!
//! Applications use it through the facade: enable its `sqs` feature and
//! connect with an `sqs://<region>?prefix=<prefix>` URL (add
//! `&endpoint=http://127.0.0.1:5000` for moto, LocalStack or ElasticMQ).
//! What SQS lacks is built from SQS's own parts: priorities are one queue
//! per level, swept highest first and long-polled all at once; delays past
//! 15 minutes are sent again until due; leases are visibility timeouts,
//! fenced by the holder's own clock; dead letters live in a dead-letter
//! queue with a redrive policy. Idempotency keys, which need a conditional
//! write SQS lacks, live in a DynamoDB table (`<prefix>-keys`, created when
//! first needed: a keyed job, a schedule, or the first jobs settled) shared
//! by every process.
//! `docs/backends/sqs.md` says what is guaranteed, what is approximated, and
//! the IAM permissions needed. Migrations into SQS import each job once,
//! by id, with markers in the same key table (see `migrate.rs`). The same
//! table holds each queue's processed and failed totals, to which every
//! process adds its counts about once a second (see `counts.rs`).
//!
//! ```no_run
//! use jobsmith_core::{App, Backend, Envelope};
//! use jobsmith_sqs::SqsBackend;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> jobsmith_core::Result<()> {
//! let backend =
//!     SqsBackend::connect("sqs://us-east-1?prefix=myapp&endpoint=http://127.0.0.1:5000").await?;
//! let env = Envelope::with_args("resize", "images", &serde_json::json!({"id": 7}))?;
//! backend.enqueue(vec![env]).await?;
//! let app = App::new(backend);
//! assert_eq!(app.stats().await?[0].ready, 1);
//! # Ok(()) }
//! ```

mod backend;
mod calls;
mod codec;
mod config;
mod counts;
mod dead;
mod dead_sizes;
mod error;
mod inbox;
mod inner;
mod inspect;
mod leases;
mod meta;
mod migrate;
mod moves;
mod names;
mod queues;
mod raw;
mod receive;
mod requests;
mod reserve;
mod settle;
mod unique;

pub use backend::SqsBackend;
pub use config::{
    SqsConfig, DEFAULT_CALL_TIMEOUT, DEFAULT_DEAD_SCAN_WINDOW, DEFAULT_PREFIX, SQS_MAX_MESSAGE,
    SQS_MESSAGE_LIMIT,
};
pub use names::priority_level;
#[doc(hidden)]
pub use raw::raw_rate;
pub use requests::{requests_sent, requests_sent_by_operation};
