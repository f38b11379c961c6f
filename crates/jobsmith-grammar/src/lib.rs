//! The grammar of [jobsmith](https://docs.rs/jobsmith)'s option values:
//! human durations, backoffs, cron expressions, IANA time-zone names,
//! missed-tick policies, and event names and topic patterns.
//!
//! The `#[job]` macro checks `ttl = ".."`, `backoff = ".."`, `cron = ".."`,
//! `tz = ".."` and `missed = ".."` with these parsers when the user's crate
//! compiles, and the runtime parses the same text with them at run time
//! (backend URLs, `Cron::new`, `Missed::from_str`) and writes it with them
//! (a job's published record), so the two can never disagree. Applications
//! use them through `jobsmith`; this crate is versioned in lockstep with
//! `jobsmith-core` and `jobsmith-macros`.
//!
//! ```
//! use std::time::Duration;
//!
//! assert_eq!(jobsmith_grammar::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
//! assert!(jobsmith_grammar::parse_cron("*/5 * * * *").is_err()); // the seconds are missing
//! assert!(jobsmith_grammar::parse_zone("Europe/Paris").is_ok());
//! assert_eq!(
//!     jobsmith_grammar::parse_backoff("fixed(30s)"),
//!     Ok(jobsmith_grammar::Backoff::Fixed(Duration::from_secs(30)))
//! );
//! assert_eq!(jobsmith_grammar::parse_missed("catch_up"), Ok(jobsmith_grammar::Missed::CatchUp));
//! ```

mod backoff;
mod duration;
mod schedule;
mod topic;

pub use crate::backoff::{parse_backoff, Backoff, Jitter};
pub use crate::duration::{format_duration, parse_duration};
pub use crate::schedule::{parse_cron, parse_missed, parse_zone, Missed};
pub use crate::topic::{parse_event_name, parse_topic_pattern, topic_matches, MAX_TOPIC_LEN};
