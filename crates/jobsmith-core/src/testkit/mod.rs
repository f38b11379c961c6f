//! The backend conformance suite: the one place where broker semantics are specified.
//!
//! Every backend runs the whole suite against its real server, unchanged:
//!
//! ```ignore
//! // crates/jobsmith-redis/tests/conformance.rs
//! fn harness(settings: Settings) -> BoxFuture<'static, Harness> {
//!     Box::pin(async move { /* connect with a fresh key prefix */ })
//! }
//! jobsmith_core::conformance_suite!(harness);
//! ```
//!
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[tokio::test]` per
//! behaviour in [`cases`], each named after the behaviour it pins down.

pub mod cases;
mod support;

use crate::backend::{Backend, Settings};
use crate::job::BoxFuture;
use crate::memory::MemoryBackend;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use support::{noop_registry, NoopCounter, NOOP_JOB};

/// Makes a fresh, empty backend (its own key prefix, vhost or queue prefix) with `settings`.
pub type Factory = fn(Settings) -> BoxFuture<'static, Harness>;

/// Connects another instance of a backend under test to its namespace: see [`Harness::peer`].
pub type ConnectPeer = Arc<dyn Fn() -> BoxFuture<'static, Arc<dyn Backend>> + Send + Sync>;

/// A backend under test, and the means to hurt it.
pub struct Harness {
    /// The backend, fresh and empty.
    pub backend: Arc<dyn Backend>,
    /// Fault injection for this backend.
    pub faults: Arc<dyn Faults>,
    /// A short lease the backend honours precisely enough for expiry tests
    /// (the memory backend: 300 ms; SQS, whose visibility timeout counts whole seconds: 2 s).
    pub short_lease: Duration,
    /// What this backend can only approximate; the cases that depend on it
    /// check the weaker guarantee instead, and say so.
    pub approximations: Approximations,
    /// Connects a second instance to the same namespace and settings, as
    /// another process would: its own connection and in-process state (the
    /// memory backend, which lives in one process, gives a clone). It buffers
    /// no more jobs than it reserves (RabbitMQ: prefetch 1), so that the
    /// first instance can reserve the rest.
    pub peer: ConnectPeer,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("backend", &self.backend)
            .field("short_lease", &self.short_lease)
            .field("approximations", &self.approximations)
            .finish_non_exhaustive()
    }
}

/// Contract items a backend can only approximate, each documented in `docs/backends.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Approximations {
    /// Priority holds between batches but not strictly within one receive
    /// (SQS: one queue per level, polled highest first).
    pub priority_between_batches_only: bool,
    /// The broker cannot tell how long its oldest ready job has waited
    /// without receiving it (SQS: `GetQueueAttributes` has no such
    /// attribute, and a receive counts as a delivery), so stats report
    /// `oldest_ready_age: None` rather than a guess.
    pub oldest_ready_age_unknown: bool,
    /// A scheduled job cannot be seen before it is due, so `take` cannot
    /// move it yet (SQS: a message within its delay cannot be received).
    pub scheduled_hidden_until_due: bool,
}

/// Ways to hurt a backend under test.
#[async_trait::async_trait]
pub trait Faults: Send + Sync {
    /// Cuts the backend off from its broker: operations fail until [`Faults::restore`].
    async fn sever(&self);
    /// Lets the backend reach its broker again.
    async fn restore(&self);
    /// Writes raw bytes into `queue` as a foreign producer would, bypassing enqueue.
    async fn push_raw(&self, queue: &str, raw: &[u8]);
}

/// The memory backend's faults: [`MemoryBackend::set_unavailable`] and [`MemoryBackend::push_raw`].
#[derive(Debug)]
pub struct MemoryFaults(pub MemoryBackend);

#[async_trait::async_trait]
impl Faults for MemoryFaults {
    async fn sever(&self) {
        self.0.set_unavailable(true);
    }
    async fn restore(&self) {
        self.0.set_unavailable(false);
    }
    async fn push_raw(&self, queue: &str, raw: &[u8]) {
        self.0.push_raw(queue, raw.to_vec());
    }
}

/// The memory backend's harness.
pub fn memory_harness(settings: Settings) -> BoxFuture<'static, Harness> {
    Box::pin(async move {
        let backend = MemoryBackend::new(settings);
        let peer = backend.clone();
        Harness {
            backend: Arc::new(backend.clone()),
            faults: Arc::new(MemoryFaults(backend)),
            short_lease: Duration::from_millis(300),
            approximations: Approximations::default(),
            peer: Arc::new(move || -> BoxFuture<'static, Arc<dyn Backend>> {
                let b: Arc<dyn Backend> = Arc::new(peer.clone());
                Box::pin(async move { b })
            }),
        }
    })
}

/// Expands to one `#[tokio::test]` per conformance case, each run on a fresh
/// harness from `$factory` (a [`Factory`]).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::__conformance_cases! { $factory;
            enqueue_one_round_trips,
            enqueue_batch_keeps_order,
            priority_is_strict_and_fifo_within,
            queues_are_taken_in_the_order_given,
            future_job_waits_until_due,
            reserve_takes_at_most_n,
            idle_reserve_wakes_on_enqueue,
            idle_reserve_wakes_when_schedule_comes_due,
            idle_reserve_wakes_when_retry_comes_due,
            idle_reserve_wakes_on_release,
            idle_reserve_wakes_on_dead_requeue,
            idle_reserve_returns_empty_after_wait,
            ack_completes_once,
            retry_counts_the_attempt_and_waits,
            release_does_not_count_an_attempt,
            expired_lease_is_delivered_again,
            heartbeat_keeps_the_lease,
            stale_lease_is_fenced,
            dead_letter_list_inspect_requeue_purge,
            dead_letter_keeps_one_entry_per_job,
            dead_letter_retention_by_count_and_age,
            dead_letter_list_of_a_deep_queue_finds_each_job_once,
            ttl_expired_job_is_never_delivered_and_counted,
            idempotent_enqueue_while_queued_returns_existing_id,
            idempotent_racing_enqueues_take_a_key_once,
            idempotent_key_completed_is_not_run_again,
            idempotent_key_freed_by_dead_letter,
            stats_count_every_state,
            payload_round_trips_byte_for_byte,
            payload_at_limit_round_trips_and_over_limit_is_rejected,
            malformed_payload_is_delivered_for_dead_lettering,
            connection_drop_loses_nothing_acknowledged,
            worker_reconnects_and_finishes_every_job,
            worker_retries_then_dead_letters,
            worker_dead_letters_bad_input_and_carries_on,
            metadata_store_puts_gets_and_lists,
            metadata_reads_racing_a_writer_always_find_a_value,
            stats_count_processed_and_failed,
            stats_count_outcomes_of_every_instance,
            migrate_take_holds_ready_and_scheduled,
            migrate_hold_that_runs_out_gives_the_job_back,
            migrate_import_keeps_fields_once_per_id,
            migrate_dead_import_and_delete,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:path; $($case:ident,)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::cases::$case($factory).await;
            }
        )*
    };
}
