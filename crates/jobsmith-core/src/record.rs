//! What the workers publish about the jobs they run, for processes that do
//! not link them: the `jobsmith` CLI, a dashboard.
//!
//! Each worker writes one [`JobRecord`] per registered job into the
//! backend's metadata store, under `job:{name}`, when it starts and every
//! [`REFRESH_EVERY`] while it runs; a record already stored with the same
//! definition and younger than that is left as it is, so a fleet of workers
//! writes each record about once per period. [`published_jobs`] and
//! [`published_job`] read them back from any process.
//!
//! One record per name: when two versions of a job run at once (a rolling
//! deploy that changes its queue or its parameters), the record holds the
//! definition of whichever worker wrote last, and each worker logs a warning
//! when it finds another definition written recently. Once the old workers
//! stop, the next refresh of a new one settles the record.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::job::JobDef;
use crate::registry::Registry;
use crate::shape::{Misfit, Shape};
use crate::time::Timestamp;
use jobsmith_grammar::format_duration;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The prefix of job records in the backend's metadata store.
pub(crate) const META_PREFIX: &str = "job:";

/// The record format this version writes and reads.
pub const RECORD_FORMAT: u32 = 1;

/// How often a running worker refreshes its jobs' records; a record older
/// than this is rewritten at the next refresh.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// One job as the workers that run it describe it, in the backend's
/// metadata store under `job:{name}`.
///
/// Stored as JSON; durations in the attribute syntax (`"1h"`, `"500ms"`),
/// times in milliseconds since the epoch:
///
/// ```json
/// {"format": 1, "name": "charge_card", "queue": "billing", "priority": 0,
///  "retries": 0, "max_attempts": 1, "backoff": "fixed(100ms)", "ttl": null,
///  "timeout": "30s", "unique": false, "cron": null,
///  "params": [{"name": "card", "rust_type": "String", "shape": {"type": "string"}},
///             {"name": "cents", "rust_type": "u64",
///              "shape": {"type": "integer", "min": 0, "max": 18446744073709551615}}],
///  "location": "billing::jobs (src/jobs.rs:12)",
///  "published_at": 1796770800000, "published_by": {"jobsmith": "0.1.0", "pid": 4242}}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobRecord {
    /// The record format, [`RECORD_FORMAT`]; a reader refuses a later one.
    pub format: u32,
    /// The job's registered name.
    pub name: String,
    /// The queue it goes on.
    pub queue: String,
    /// Its priority: higher runs first.
    pub priority: i32,
    /// How many times a failed attempt is tried again.
    pub retries: u32,
    /// Attempts in all: `retries + 1`, what an envelope's `max_attempts` holds.
    pub max_attempts: u32,
    /// The wait before a retry, in the attribute's syntax: `exponential(1s,
    /// max = 1h, jitter = full)`, `fixed(100ms)` or `none`.
    pub backoff: String,
    /// How long after its enqueue the job may still start, if it expires.
    pub ttl: Option<String>,
    /// How long one attempt may run, if it is bounded.
    pub timeout: Option<String>,
    /// Whether equal arguments queued or recently completed keep a new job out.
    pub unique: bool,
    /// Its cron schedule, if it has one.
    pub cron: Option<String>,
    /// The serialized parameters, in order.
    pub params: Vec<ParamRecord>,
    /// Where the job is defined: `module (file:line)`.
    pub location: String,
    /// When a worker last wrote this record.
    pub published_at: Timestamp,
    /// Which worker wrote it.
    pub published_by: Publisher,
}

/// One serialized parameter in a [`JobRecord`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ParamRecord {
    /// Its name: its key in the arguments object.
    pub name: String,
    /// Its Rust type as written in the signature.
    pub rust_type: String,
    /// What JSON it takes.
    pub shape: Shape,
}

/// The worker that wrote a [`JobRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Publisher {
    /// The version of jobsmith it runs.
    pub jobsmith: String,
    /// Its process id.
    pub pid: u32,
}

impl Publisher {
    fn this_process() -> Self {
        Self {
            jobsmith: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        }
    }
}

/// Why arguments do not fit a job's published parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgsMisfit {
    /// The arguments are not a JSON object.
    NotAnObject,
    /// A parameter that is not an `Option` is missing.
    Missing {
        /// The parameter.
        param: String,
        /// Its Rust type.
        rust_type: String,
        /// What it takes.
        expected: String,
    },
    /// A key names no parameter.
    Unknown {
        /// The key.
        key: String,
        /// The job's parameters, in order.
        params: Vec<String>,
    },
    /// A value does not fit its parameter.
    Mismatch {
        /// Where: the parameter, and within it (`tags[0]`).
        at: String,
        /// The parameter's Rust type.
        rust_type: String,
        /// What was expected and what was found.
        misfit: String,
    },
}

impl std::fmt::Display for ArgsMisfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsMisfit::NotAnObject => f.write_str("the arguments are not a JSON object"),
            ArgsMisfit::Missing {
                param,
                rust_type,
                expected,
            } => write!(
                f,
                "parameter `{param}` ({rust_type}) is missing: give {expected}"
            ),
            ArgsMisfit::Unknown { key, params } if params.is_empty() => {
                write!(f, "the job has no parameter `{key}`: it takes no arguments")
            }
            ArgsMisfit::Unknown { key, params } => write!(
                f,
                "the job has no parameter `{key}`: its parameters are {}",
                params.join(", ")
            ),
            ArgsMisfit::Mismatch {
                at,
                rust_type,
                misfit,
            } => write!(f, "parameter `{at}` ({rust_type}): {misfit}"),
        }
    }
}

impl JobRecord {
    /// The record of `def`, as this process would publish it now.
    pub fn of(def: &JobDef) -> Self {
        let o = &def.options;
        let shapes = (def.shapes)();
        let params = def
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| ParamRecord {
                name: p.name.to_owned(),
                rust_type: p.rust_type.to_owned(),
                shape: shapes.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        Self {
            format: RECORD_FORMAT,
            name: def.name.to_owned(),
            queue: o.queue.to_owned(),
            priority: o.priority,
            retries: o.retries,
            max_attempts: o.retries.saturating_add(1),
            backoff: o.backoff.syntax().to_string(),
            ttl: o.ttl.map(format_duration),
            timeout: o.timeout.map(format_duration),
            unique: o.unique,
            cron: o.cron.map(|c| c.expr.to_owned()),
            params,
            location: def.location.to_owned(),
            published_at: Timestamp::now(),
            published_by: Publisher::this_process(),
        }
    }

    /// Whether `other` describes the same job, whoever published it and when.
    pub fn same_definition(&self, other: &JobRecord) -> bool {
        let mut other = other.clone();
        other.published_at = self.published_at;
        other.published_by = self.published_by.clone();
        *self == other
    }

    /// The TTL as a duration, if the job has one that parses.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
            .as_deref()
            .and_then(|t| crate::parse_duration(t).ok())
    }

    /// Whether `args` (the JSON object an envelope carries) fit the job's
    /// parameters: every key a parameter, every parameter that is not an
    /// `Option` given, every value of its parameter's [`Shape`].
    ///
    /// This is as much as the record tells: a struct's fields, an enum's
    /// payload and a hand-written `Deserialize` are not looked into, so
    /// arguments that pass may still fail to deserialize in the worker
    /// (which dead-letters them with why). Arguments that fail here would
    /// fail there, except unknown keys, which the job would ignore.
    pub fn check_args(&self, args: &Value) -> std::result::Result<(), ArgsMisfit> {
        let Value::Object(given) = args else {
            return Err(ArgsMisfit::NotAnObject);
        };
        if let Some(key) = given
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            return Err(ArgsMisfit::Unknown {
                key: key.clone(),
                params: self.params.iter().map(|p| p.name.clone()).collect(),
            });
        }
        for p in &self.params {
            match given.get(&p.name) {
                None if p.shape.optional() => {}
                None => {
                    return Err(ArgsMisfit::Missing {
                        param: p.name.clone(),
                        rust_type: p.rust_type.clone(),
                        expected: p.shape.to_string(),
                    })
                }
                Some(v) => {
                    p.shape
                        .check(v)
                        .map_err(|Misfit { path, message }| ArgsMisfit::Mismatch {
                            at: format!("{}{path}", p.name),
                            rust_type: p.rust_type.clone(),
                            misfit: message,
                        })?
                }
            }
        }
        Ok(())
    }
}

/// Every job record on `backend`, sorted by name. A record that cannot be
/// read (another format, not JSON) is left out, with a warning.
pub async fn published_jobs(backend: &dyn Backend) -> Result<Vec<JobRecord>> {
    let stored = backend.meta()?.list_meta(META_PREFIX).await?;
    let mut out: Vec<JobRecord> = stored
        .into_iter()
        .filter_map(|(key, bytes)| match read(&key, &bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "a job record is not readable; it is left out (a worker running the job rewrites it)");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The record of the job `name` on `backend`: `None` if no worker published
/// one, an error if it cannot be read (another format, not JSON).
pub async fn published_job(backend: &dyn Backend, name: &str) -> Result<Option<JobRecord>> {
    let key = format!("{META_PREFIX}{name}");
    match backend.meta()?.get_meta(&key).await? {
        Some(bytes) => read(&key, &bytes).map(Some),
        None => Ok(None),
    }
}

fn read(key: &str, bytes: &[u8]) -> Result<JobRecord> {
    // The format first, so that a later one says so rather than failing on a field.
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let unreadable =
        |why: String| Error::Config(format!("the job record `{key}` is not readable: {why}"));
    let format: Format = serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
    if format.format != RECORD_FORMAT {
        return Err(unreadable(format!(
            "it has format {}, and this version of jobsmith reads format {RECORD_FORMAT}; upgrade it",
            format.format
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))
}

/// Writes the record of each job in `registry` whose stored record is
/// missing, another definition, or older than `fresh_for`; returns how many
/// it wrote. Each put is its own; a failure stops the round with the error.
pub(crate) async fn publish(
    backend: &dyn Backend,
    registry: &Registry,
    fresh_for: Duration,
) -> Result<usize> {
    let stored: BTreeMap<String, JobRecord> = backend
        .meta()?
        .list_meta(META_PREFIX)
        .await?
        .into_iter()
        .filter_map(|(key, bytes)| Some((key, read_quietly(&bytes)?)))
        .collect();
    let now = Timestamp::now();
    let mut written = 0;
    for def in registry.defs() {
        let record = JobRecord::of(def);
        let key = format!("{META_PREFIX}{}", def.name);
        if let Some(old) = stored.get(&key) {
            let age = now.since(old.published_at);
            if record.same_definition(old) {
                if age < fresh_for {
                    continue;
                }
            } else if age < REFRESH_EVERY * 2 && old.published_by != record.published_by {
                tracing::warn!(
                    job = def.name,
                    other_queue = %old.queue,
                    other_max_attempts = old.max_attempts,
                    other_jobsmith = %old.published_by.jobsmith,
                    other_pid = old.published_by.pid,
                    "another worker published a different definition of this job in the last {} minutes (two versions deployed at once?); the record follows whichever writes last",
                    REFRESH_EVERY.as_secs() * 2 / 60
                );
            }
        }
        let bytes = serde_json::to_vec(&record).map_err(Error::Serialize)?;
        backend.meta()?.put_meta(&key, &bytes).await?;
        written += 1;
    }
    Ok(written)
}

/// How long a worker's start waits for its first publish.
pub(crate) const START_WAIT: Duration = Duration::from_secs(10);

/// How soon a publish that failed is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Publishes `registry`'s records every [`REFRESH_EVERY`], and
/// [`RETRY_AFTER`] a failure, for as long as the worker runs (it aborts
/// this task when it stops); the first try comes [`RETRY_AFTER`] the start
/// when the start's own publish did not succeed.
pub(crate) async fn refresh(
    backend: std::sync::Arc<dyn Backend>,
    registry: Registry,
    published: bool,
) {
    let mut wait = if published {
        REFRESH_EVERY
    } else {
        RETRY_AFTER
    };
    let mut failing = !published;
    loop {
        tokio::time::sleep(wait).await;
        match publish(&*backend, &registry, REFRESH_EVERY).await {
            Ok(_) => {
                if failing {
                    tracing::info!("published the jobs' records");
                }
                failing = false;
                wait = REFRESH_EVERY;
            }
            Err(e) => {
                // Once per outage, not once per try.
                if !failing {
                    tracing::warn!(error = %e, "could not refresh the jobs' records; will try again");
                }
                failing = true;
                wait = RETRY_AFTER;
            }
        }
    }
}

fn read_quietly(bytes: &[u8]) -> Option<JobRecord> {
    serde_json::from_slice::<JobRecord>(bytes)
        .ok()
        .filter(|r| r.format == RECORD_FORMAT)
}

/// `d` in the attribute syntax: the largest unit that divides it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use crate::job::Param;
    use crate::options::JobOptions;
    use crate::shape::shape_of;
    use serde_json::json;

    fn never(
        _: &serde_json::value::RawValue,
        _: crate::JobContext,
    ) -> std::result::Result<
        crate::BoxFuture<'static, std::result::Result<(), crate::Failure>>,
        serde_json::Error,
    > {
        unreachable!("never run")
    }

    static CHARGE: JobDef = JobDef {
        name: "charge",
        location: "here",
        options: JobOptions {
            queue: "billing",
            retries: 0,
            backoff: Backoff::Fixed(Duration::from_millis(100)),
            ttl: Some(Duration::from_secs(7 * 86_400)),
            ..JobOptions::DEFAULT
        },
        run: never,
        params: &[
            Param {
                name: "card",
                rust_type: "String",
            },
            Param {
                name: "cents",
                rust_type: "u64",
            },
            Param {
                name: "note",
                rust_type: "Option<String>",
            },
        ],
        shapes: || {
            vec![
                shape_of::<String>(),
                shape_of::<u64>(),
                shape_of::<Option<String>>(),
            ]
        },
    };

    #[test]
    fn a_record_holds_the_definition_and_round_trips() {
        let r = JobRecord::of(&CHARGE);
        assert_eq!(
            (r.queue.as_str(), r.retries, r.max_attempts),
            ("billing", 0, 1)
        );
        assert_eq!(r.backoff, "fixed(100ms)");
        assert_eq!(r.ttl.as_deref(), Some("7d"));
        assert_eq!(r.ttl(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(r.params[1].shape, shape_of::<u64>());
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(read("job:charge", &bytes).unwrap(), r);
        let mut later = serde_json::to_value(&r).unwrap();
        later["format"] = json!(2);
        let e = read("job:charge", &serde_json::to_vec(&later).unwrap()).unwrap_err();
        assert!(e.to_string().contains("format 2"), "{e}");
    }

    #[test]
    fn arguments_are_checked_against_the_parameters() {
        let r = JobRecord::of(&CHARGE);
        assert!(r.check_args(&json!({"card": "4242", "cents": 5})).is_ok());
        assert!(r
            .check_args(&json!({"card": "4242", "cents": 5, "note": null}))
            .is_ok());
        let says = |args: Value| r.check_args(&args).unwrap_err().to_string();
        assert_eq!(
            says(json!({"card": "4242"})),
            "parameter `cents` (u64) is missing: give an integer from 0 to 18446744073709551615"
        );
        assert_eq!(
            says(json!({"card": "4242", "cents": -1})),
            "parameter `cents` (u64): expected an integer from 0 to 18446744073709551615, got -1"
        );
        assert_eq!(
            says(json!({"card": "4242", "cents": 1, "cent": 1})),
            "the job has no parameter `cent`: its parameters are card, cents, note"
        );
        assert_eq!(says(json!([])), "the arguments are not a JSON object");
    }
}
