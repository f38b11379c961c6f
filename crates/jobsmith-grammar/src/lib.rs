//! The grammar of [jobsmith](https://docs.rs/jobsmith)'s option values:
//! human durations, cron expressions and IANA time-zone names.
//!
//! The `#[job]` macro checks `ttl = ".."`, `cron = ".."` and `tz = ".."` with
//! these parsers when the user's crate compiles, and the runtime parses the
//! same text with them at run time (backend URLs, `Cron::new`), so the two
//! can never disagree. Applications use them through `jobsmith`; this crate
//! is versioned in lockstep with `jobsmith-core` and `jobsmith-macros`.
//!
//! ```
//! use std::time::Duration;
//!
//! assert_eq!(jobsmith_grammar::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
//! assert!(jobsmith_grammar::parse_cron("*/5 * * * *").is_err()); // the seconds are missing
//! assert!(jobsmith_grammar::parse_zone("Europe/Paris").is_ok());
//! ```

mod duration;
mod schedule;

pub use crate::duration::parse_duration;
pub use crate::schedule::{parse_cron, parse_zone};
