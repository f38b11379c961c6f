//! What a finished job comes to, on its way from the job's task to the settler.

use crate::backend::Lease;
use crate::envelope::Envelope;

/// The outcome of one delivery, to be told to the backend with its lease.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Succeeded.
    Ack(&'static str),
    /// Failed; run again at the envelope's `run_at`.
    Retry(Envelope, &'static str),
    /// Failed for good, with the reason and the job's registered name
    /// (`unregistered` for a name no job has, `malformed` for a payload that
    /// is not an envelope): a label value from a closed set.
    Dead(String, &'static str),
    /// Its TTL had passed; dropped unrun. With the job's registered name,
    /// or `unregistered`.
    Expire(&'static str),
    /// Cancelled at a stop before it finished: back to ready, uncounted.
    Release,
}

/// An outcome and the lease to settle it with.
#[derive(Debug)]
pub(super) struct Settle {
    /// The job's slot in the worker, whose lease is kept alive until this is reported.
    pub(super) slot: u64,
    pub(super) lease: Lease,
    pub(super) outcome: Outcome,
}
