//! The wire format: one [`Envelope`] per job, identical on every backend.

use crate::event::EventRef;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// The current envelope format version, written into [`Envelope::v`].
///
/// It is also the only version this build reads: an envelope of another
/// version does not parse (see [`Envelope::from_bytes`]).
pub const ENVELOPE_VERSION: u32 = 1;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// One job as it travels through a backend.
///
/// Serialized as JSON. Backend delivery handles (receipt handles, delivery
/// tags, lease tokens) never go in here: they travel beside it in a
/// [`Lease`](crate::Lease).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`]; no other version is read.
    #[serde(deserialize_with = "known_version")]
    pub v: u32,
    /// The job's id, time-ordered.
    pub id: JobId,
    /// The registered job name.
    pub job: String,
    /// The job's arguments, as JSON, kept byte for byte.
    pub args: Box<RawValue>,
    /// The queue the job is on.
    pub queue: String,
    /// Priority: higher runs first. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Attempts started so far, this delivery included (0 while queued for the first time).
    #[serde(default)]
    pub attempt: u32,
    /// Attempts allowed in all: retries + 1.
    pub max_attempts: u32,
    /// When the job was first enqueued.
    pub enqueued_at: Timestamp,
    /// When the job may next run.
    pub run_at: Timestamp,
    /// After this instant the job is never run, and is counted as expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Idempotency key: a key that is queued or completed is not enqueued again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the enqueuing span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// The error of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The event this job was created for, when a publish created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Box<EventRef>>,
}

impl Envelope {
    /// A new envelope for `job` on `queue`, ready now, one attempt allowed.
    ///
    /// `args` must be valid JSON; use [`Envelope::with_args`] for a value.
    pub fn new(job: impl Into<String>, queue: impl Into<String>, args: Box<RawValue>) -> Self {
        let now = Timestamp::now();
        Self {
            v: ENVELOPE_VERSION,
            id: JobId::new(),
            job: job.into(),
            args,
            queue: queue.into(),
            priority: 0,
            attempt: 0,
            max_attempts: 1,
            enqueued_at: now,
            run_at: now,
            expires_at: None,
            idempotency_key: None,
            trace: None,
            last_error: None,
            event: None,
        }
    }

    /// A new envelope whose arguments are `args` serialized to JSON; a NaN or
    /// infinite float in them, which JSON cannot carry, is
    /// [`Error::NonFiniteArgument`](crate::Error::NonFiniteArgument).
    pub fn with_args<T: Serialize + ?Sized>(
        job: impl Into<String>,
        queue: impl Into<String>,
        args: &T,
    ) -> crate::Result<Self> {
        let raw = crate::args::to_json(args)?;
        Ok(Self::new(job, queue, raw))
    }

    /// The envelope as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing this struct cannot fail: every field is plain data.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The length of [`Envelope::to_bytes`], counted without building the bytes.
    pub fn encoded_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        // As in `to_bytes`: serializing plain data cannot fail.
        let _ = serde_json::to_writer(&mut count, self);
        count.0
    }

    /// Parses an envelope from JSON bytes.
    ///
    /// An envelope whose `v` is not [`ENVELOPE_VERSION`] is an error naming
    /// the version: its fields may mean what this build does not know, and
    /// reading it as version 1 would drop the ones it cannot see. A backend
    /// delivers it as [`Malformed`](crate::Malformed), so the worker
    /// dead-letters it with that reason, its bytes as they were.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether the job has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Reads `v`, refusing a version this build does not know.
fn known_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == ENVELOPE_VERSION {
        return Ok(v);
    }
    Err(serde::de::Error::custom(format_args!(
        "envelope format version {v} is not one this jobsmith reads (it reads version {ENVELOPE_VERSION}): a newer jobsmith or a foreign producer wrote it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_known_version_parses() {
        let env = Envelope::with_args("j", "q", &serde_json::json!({})).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(Envelope::from_bytes(&env.to_bytes()).unwrap().v, 1);
        for other in [0, 2, 99] {
            v["v"] = other.into();
            let err = Envelope::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("envelope format version {other} is not one")),
                "{err}"
            );
        }
    }
}
