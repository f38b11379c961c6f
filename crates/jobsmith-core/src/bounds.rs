//! The bounds every job keeps, whoever builds it: a typed enqueue, the CLI,
//! a worker's list of queues. A value past them is refused with what to
//! give instead, before anything reaches the broker.

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::time::Timestamp;
use std::time::Duration;

/// The most attempts a job may have in all: 101, the most `#[job(retries = 100)]` gives.
pub const MAX_ATTEMPTS: u32 = 101;

/// How far ahead a job may be due, or expire: about 100 years.
pub const MAX_AHEAD: Duration = Duration::from_secs(100 * 366 * 86_400);

/// The longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 100;

/// Refuses a queue name every backend cannot hold as it is: empty, longer
/// than [`MAX_QUEUE_NAME`], or holding anything but ASCII letters, digits,
/// `-`, `_`, `.` and `:` (so never a Redis hash tag's `{` `}`, an AMQP
/// pattern's `*` `#`, a space or a control character).
pub fn check_queue_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "queue name \"{}\" is not one every backend can hold: give 1 to {MAX_QUEUE_NAME} ASCII letters, digits, `-`, `_`, `.` or `:`",
        name.escape_default()
    )))
}

impl Envelope {
    /// Refuses an envelope past the bounds: its queue name (see
    /// [`check_queue_name`]), an empty job name, attempts outside
    /// 1..=[`MAX_ATTEMPTS`], a run time or expiry more than [`MAX_AHEAD`]
    /// from now.
    pub fn check_bounds(&self) -> Result<()> {
        check_queue_name(&self.queue)?;
        if self.job.trim().is_empty() || self.job.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "job name \"{}\" is empty or holds control characters: give the job's registered name",
                self.job.escape_default()
            )));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(Error::Invalid(format!(
                "max attempts {} is outside 1 to {MAX_ATTEMPTS}: a job runs at least once, and at most `retries = 100` + 1 times",
                self.max_attempts
            )));
        }
        let latest = Timestamp::now().plus(MAX_AHEAD);
        if self.run_at > latest {
            return Err(Error::Invalid(format!(
                "run time {} ms after the epoch is more than 100 years ahead: schedule it nearer, or keep the date in your data and enqueue later",
                self.run_at.as_millis()
            )));
        }
        if self.expires_at.is_some_and(|e| e > latest.plus(MAX_AHEAD)) {
            return Err(Error::Invalid(
                "expiry is more than 100 years after the run time: give a shorter ttl, or none"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        for ok in ["q", "mail", "billing-eu.v2", "a:b_c", &"x".repeat(100)] {
            assert!(check_queue_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a}b:c{d",
            "a b",
            "mail\u{1b}[2J",
            "é",
            "a*",
            "a#",
            &"x".repeat(101),
        ] {
            let err = check_queue_name(bad).expect_err(bad).to_string();
            assert!(!err.contains('\u{1b}'), "the name is shown escaped: {err}");
        }
    }

    #[test]
    fn envelopes() {
        let raw = serde_json::value::RawValue::from_string("{}".into()).expect("JSON");
        let ok = Envelope::new("job", "q", raw);
        assert!(ok.check_bounds().is_ok());
        let mut e = ok.clone();
        e.max_attempts = u32::MAX;
        assert!(e.check_bounds().is_err());
        let mut e = ok.clone();
        e.max_attempts = 0;
        assert!(e.check_bounds().is_err());
        let mut e = ok.clone();
        e.run_at = Timestamp::now().plus(Duration::from_secs(99_999_999 * 86_400));
        assert!(e.check_bounds().is_err());
        let mut e = ok;
        e.job = String::new();
        assert!(e.check_bounds().is_err());
    }
}
