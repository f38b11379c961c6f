//! The backend conformance suite of [jobsmith](https://docs.rs/jobsmith): the
//! one place where broker semantics are specified.
//!
//! Every backend runs the whole suite against its real server, unchanged. A
//! backend crate adds this crate and tokio as dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! jobsmith-conformance = "=0.1.0"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! and writes a [`Factory`]: a function that connects a fresh, empty backend
//! (its own key prefix, vhost or queue prefix) and returns it in a
//! [`Harness`], with the [`Faults`] the suite may inflict on it and the
//! [`Approximations`] it is allowed. Then `tests/conformance.rs` is two lines,
//! here with the memory backend's factory, [`memory_harness`]:
//!
//! ```
//! use jobsmith_conformance::{conformance_suite, memory_harness};
//! conformance_suite!(memory_harness);
//! # fn main() {}
//! ```
//!
//! [`conformance_suite!`] expands to one `#[tokio::test]` per behaviour in
//! [`cases`], each named after the behaviour it pins down, listed by the part
//! of the contract it tests: the [`Backend`] hot path, settling, and the
//! capability traits ([`DeadLetters`](jobsmith_core::DeadLetters),
//! [`Inspect`](jobsmith_core::Inspect), [`MetaStore`](jobsmith_core::MetaStore),
//! [`Migrate`](jobsmith_core::Migrate)), then faults, whole workers, and
//! whole workers stopping or crashing (`stops`).

pub mod cases;
pub mod errors;
mod logs;
mod proxy;
pub mod recorder;
mod support;
pub mod tls;
pub mod values;

use jobsmith_core::{Backend, BoxFuture, MemoryBackend, Settings};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use logs::{Capturing, Logs};
pub use proxy::{url_host_port, url_through, Proxy};
pub use support::{noop_registry, NoopCounter, NOOP_JOB, UNIQUE_NOOP_JOB};

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

/// Contract items a backend can only approximate, each documented in `docs/backends/`.
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
    /// How late past its due time a delayed or retried job may reach a
    /// reserve that was already waiting when the job was stored, where the
    /// broker cannot honour the contract's 100 ms; `None` holds the backend
    /// to 100 ms.
    pub due_wake_bound: Option<Duration>,
    /// A job whose TTL runs out while it waits in line can be dropped by
    /// the broker itself, unseen by any process: it is counted in `stats`
    /// but not in the `jobsmith_jobs_expired_total` metric (RabbitMQ: a
    /// per-message TTL dead-letters it to the queue's expired counter).
    pub expired_in_line_dropped_by_broker: bool,
    /// The jobs a publish creates carry no idempotency key, so a publish
    /// tried again under its id (its answer lost) can create a job again,
    /// carrying the same event id (RabbitMQ: a key costs broker queues, see
    /// [`Events::keys_jobs`](jobsmith_core::Events::keys_jobs)).
    pub event_jobs_unkeyed: bool,
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
    /// Ends the backend as a process's end ends it (an exit, or kill -9):
    /// its connections close, what it held goes back by the broker's own
    /// rules, and it takes no further part. The default severs and
    /// restores, which is as good as gone for a backend that takes nothing
    /// in unless asked (memory, Redis, SQS).
    async fn kill(&self) {
        self.sever().await;
        self.restore().await;
    }
    /// Breaks `queue` on its own, as an operator or a foreign client could,
    /// so that the backend's operations on it fail until
    /// [`Faults::repair_queue`]; the backend's other queues are untouched.
    /// The jobs it holds are kept, in place or set aside, and are there
    /// again once it is repaired. Returns what was done, or `None` where a
    /// queue cannot break on its own (the memory backend: the default); the
    /// cases that need it then say so and pass.
    async fn break_queue(&self, queue: &str) -> Option<String> {
        let _ = queue;
        None
    }
    /// Undoes [`Faults::break_queue`], putting back any jobs it set aside.
    async fn repair_queue(&self, queue: &str) {
        let _ = queue;
    }
    /// Hangs the broker as far as the backend can tell: its connections
    /// stay open, new ones are accepted, and nothing is answered until
    /// [`Faults::thaw`] (a [`Proxy::freeze`] in front of it, as a `SIGSTOP`
    /// of the broker would). Returns what was done, or `None` where there is
    /// no connection to freeze (the memory backend: the default); the cases
    /// that need it then say so and pass.
    async fn freeze(&self) -> Option<String> {
        None
    }
    /// Undoes [`Faults::freeze`]: what was held goes on, as after a `SIGCONT`.
    async fn thaw(&self) {}
    /// What the backend's [`Backend::server`] must hold while these faults
    /// apply: the `host:port` it reaches its broker at (the proxy's, when
    /// one is in front), and where the backend has one, its region. A log
    /// line about a broker in trouble names these for an operator to act
    /// on. Empty where there is no server (the memory backend: the default).
    fn server_words(&self) -> Vec<String> {
        Vec::new()
    }
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
            hot_path {
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
                expired_lease_is_delivered_again,
                heartbeat_keeps_the_lease,
                waiting_reserve_gets_a_schedule_stored_while_it_waits,
                waiting_reserve_gets_a_retry_stored_while_it_waits,
                waiting_reserve_gets_an_import_stored_while_it_waits,
                ttl_expired_job_is_never_delivered_and_counted,
                expired_jobs_are_counted_in_the_expired_metric,
            }
            settle {
                ack_completes_once,
                retry_counts_the_attempt_and_waits,
                release_does_not_count_an_attempt,
                stale_lease_is_fenced,
            }
            keys {
                idempotent_enqueue_while_queued_returns_existing_id,
                idempotent_racing_enqueues_take_a_key_once,
                idempotent_key_completed_is_not_run_again,
                idempotent_key_freed_by_dead_letter,
                idempotent_key_holder_names_the_job_holding_a_key,
                unique_key_of_the_earlier_form_is_honoured_until_released,
            }
            payload {
                payload_round_trips_byte_for_byte,
                payload_at_limit_round_trips_and_over_limit_is_rejected,
                malformed_payload_is_delivered_for_dead_lettering,
                arguments_round_trip_bit_for_bit,
                non_finite_argument_is_refused_at_enqueue,
            }
            dead_letters {
                dead_letter_list_inspect_requeue_purge,
                dead_letter_keeps_one_entry_per_job,
                dead_letter_retention_by_count_and_age,
                dead_letter_list_of_a_deep_queue_finds_each_job_once,
            }
            inspect {
                stats_count_every_state,
                stats_count_processed_and_failed,
                stats_count_outcomes_of_every_instance,
            }
            meta {
                metadata_store_puts_gets_and_lists,
                metadata_reads_racing_a_writer_always_find_a_value,
            }
            events {
                events_fan_out_one_job_per_subscription,
                events_patterns_match_as_topics,
                events_failing_subscriber_is_retried_alone,
                events_publish_tried_again_creates_no_job_twice,
                events_subscription_added_midstream_gets_later_publishes,
                events_removed_subscription_gets_nothing_more,
                events_worker_registers_runs_and_dead_letters_misfits,
            }
            migrate {
                migrate_take_holds_ready_and_scheduled,
                migrate_hold_that_runs_out_gives_the_job_back,
                migrate_import_keeps_fields_once_per_id,
                migrate_dead_import_and_delete,
            }
            faults {
                connection_drop_loses_nothing_acknowledged,
                reserve_over_a_broken_queue_serves_the_others,
                stats_mark_a_broken_queue_and_count_the_others,
                worker_runs_the_others_beside_a_broken_queue_and_its_jobs_once_repaired,
                frozen_broker_fails_each_call_within_call_timeout,
                frozen_broker_shows_in_the_worker_log_within_call_timeout,
            }
            worker {
                worker_reconnects_and_finishes_every_job,
                worker_retries_then_dead_letters,
                worker_dead_letters_bad_input_and_carries_on,
                worker_dead_letters_an_unknown_envelope_version,
                workers_sharing_a_backend_do_not_starve_each_other,
                worker_takes_short_jobs_in_batches_of_its_concurrency,
            }
            stops {
                worker_stop_charges_no_attempt,
                worker_stop_hands_back_at_once_what_it_takes_in,
                worker_stop_charges_nothing_to_jobs_coming_due,
                worker_stop_charges_nothing_to_jobs_taken_ahead,
                worker_crash_charges_at_most_its_concurrency,
                worker_crash_on_many_queues_and_levels_charges_at_most_its_concurrency,
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:path; $($group:ident { $($case:ident,)* })*) => {
        $($(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::cases::$group::$case($factory).await;
            }
        )*)*
    };
}
