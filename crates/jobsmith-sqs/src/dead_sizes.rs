//! Each dead-letter queue's size as this process knows it, so that a burial
//! reads it from SQS only now and then (see `dead.rs`).

use jobsmith_core::lock::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a dead-letter queue's size read from SQS stands in for a new
/// read after a burial (burials by other processes, and moves by the redrive
/// policy, are seen at the next read).
const RECOUNT: Duration = Duration::from_secs(60);

/// This process's idea of each dead-letter queue's size, by queue URL.
#[derive(Debug, Default)]
pub(crate) struct Sizes {
    known: Mutex<HashMap<String, Size>>,
}

/// A size SQS gave, and what this process buried since.
#[derive(Debug, Clone, Copy)]
struct Size {
    counted: u64,
    buried_since: u64,
    at: Instant,
}

impl Sizes {
    /// Notes a burial in `url`; whether its size should be read from SQS:
    /// it may now be over `max`, or the last read is stale or missing.
    pub(crate) fn buried(&self, url: &str, max: u64) -> bool {
        match self.known.lock_unpoisoned().get_mut(url) {
            Some(s) if s.at.elapsed() < RECOUNT => {
                s.buried_since += 1;
                s.counted + s.buried_since > max
            }
            _ => true,
        }
    }

    /// Records the size of `url` just read or left by a scan.
    pub(crate) fn counted(&self, url: &str, counted: u64) {
        self.known.lock_unpoisoned().insert(
            url.to_owned(),
            Size {
                counted,
                buried_since: 0,
                at: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burial_reads_the_size_only_when_it_may_have_passed_dead_max() {
        let sizes = Sizes::default();
        assert!(sizes.buried("q", 3), "nothing known yet: read it");
        sizes.counted("q", 1);
        assert!(!sizes.buried("q", 3), "1 + 1 of 3");
        assert!(!sizes.buried("q", 3), "1 + 2 of 3");
        assert!(sizes.buried("q", 3), "1 + 3 is over 3: read it");
        sizes.counted("q", 3);
        assert!(sizes.buried("q", 3), "3 + 1 is over 3: read it");
        assert!(sizes.buried("other", 3), "each queue on its own");
    }
}
