//! The Redis backend of [jobsmith](https://docs.rs/jobsmith).
//!
//! Applications use it through the facade: enable its `redis` feature and
//! connect with a `redis://` URL (`rediss://` for TLS, with the facade's
//! `redis-tls` feature; [`RedisConfig`] says how certificates are checked). Every move between states is one Lua
//! script on one queue's keys, which share a hash tag; a reserved job holds a
//! lease that any live worker reclaims when it runs out, and stale holders are
//! fenced off by a per-reservation token; idle workers block on a wake list
//! instead of polling; a finished job leaves nothing behind. The layout and
//! each script are described in `docs/backends/redis.md`.
//!
//! ```no_run
//! use jobsmith_core::{App, Backend, Envelope};
//! use jobsmith_redis::RedisBackend;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> jobsmith_core::Result<()> {
//! let backend = RedisBackend::connect("redis://127.0.0.1:6379/0?prefix=myapp&dead_max=1000").await?;
//! let env = Envelope::with_args("resize", "images", &serde_json::json!({"id": 7}))?;
//! backend.enqueue(vec![env]).await?;
//! let app = App::new(backend);
//! assert_eq!(app.stats().await?[0].ready, 1);
//! # Ok(()) }
//! ```

mod backend;
mod config;
mod dead;
mod error;
mod inspect;
mod meta;
mod migrate;
mod names;
mod reply;
mod scripts;
mod settle;
#[cfg(feature = "tls")]
mod tls;
mod wake;

pub use backend::RedisBackend;
pub use config::{RedisConfig, DEFAULT_CALL_TIMEOUT, DEFAULT_PREFIX};
