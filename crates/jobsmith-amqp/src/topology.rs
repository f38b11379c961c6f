//! Declaring queues, exchanges and bindings, idempotently.
//!
//! Shared per prefix (declared once per connection): the delay-level topic
//! exchanges `p.delay.35` .. `p.delay.00`, each bound to the next one down for
//! messages whose bit at that level is 0, and the due exchange `p.due`. A
//! delayed message enters at the level of its delay's highest set bit
//! (`names::first_level`).
//! Per queue (declared when a process first uses it, on each connection): the
//! work queue, its dead-letter and expired queues, its outcome counter and
//! the counter's lock, its 36 delay-level queues, each with a TTL of
//! 2^k ms that dead-letters to the next level, and its staging queue, which
//! dead-letters to the work queue (`stage.rs`). Each level binding exists
//! twice: for the 37-word routing keys of earlier versions, which end in the
//! work queue, and for staged keys, one word longer, which end in the
//! staging queue.

use crate::call::Calls;
use crate::config::AmqpConfig;
use crate::error::from_lapin;
use crate::names::{self, Names, LEVELS, MAX_PRIORITY};
use futures_util::future::try_join_all;
use jobsmith_core::Result;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// The broker's limit for TTL arguments: 2^32 - 1 ms (about 49.7 days).
pub(crate) const MAX_TTL_MS: u64 = u32::MAX as u64;

/// How many messages `queue` holds ready, without declaring it.
pub(crate) async fn passive_count(
    calls: &Calls,
    ch: &Channel,
    queue: impl Into<ShortString>,
) -> Result<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    Ok(calls
        .answer(
            "queue.declare",
            ch.queue_declare(queue.into(), passive, FieldTable::default()),
        )
        .await?
        .message_count())
}

/// Argument tables for each kind of queue.
pub(crate) struct Topology<'a> {
    pub(crate) cfg: &'a AmqpConfig,
    pub(crate) names: &'a Names,
}

fn text(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn ms(d: Duration) -> AMQPValue {
    AMQPValue::LongLongInt(
        i64::try_from(d.as_millis().min(u128::from(MAX_TTL_MS))).unwrap_or(i64::MAX),
    )
}

impl Topology<'_> {
    fn base(&self, quorum: bool) -> FieldTable {
        let mut t = FieldTable::default();
        if quorum && self.cfg.quorum {
            t.insert("x-queue-type".into(), text("quorum"));
        }
        if let Some(e) = self.cfg.expires {
            t.insert("x-expires".into(), ms(e));
        }
        t
    }

    /// A work queue's arguments; `version_2` asks for classic queue version 2.
    pub(crate) fn work_args(&self, q: &str, version_2: bool) -> FieldTable {
        let mut t = self.base(true);
        if !self.cfg.quorum {
            t.insert(
                "x-max-priority".into(),
                AMQPValue::ShortShortUInt(MAX_PRIORITY),
            );
            // Persistent jobs are written to disk anyway; a lazy queue does
            // not also hold them in the queue process's memory. On the bench
            // (50,000 jobs queued) it drains about 1.45x and enqueues about
            // 1.3x faster than a default version 1 queue.
            t.insert("x-queue-mode".into(), text("lazy"));
            // Version 2 (the `queue_version` setting): see `AmqpConfig`.
            if version_2 {
                t.insert("x-queue-version".into(), AMQPValue::ShortShortUInt(2));
            }
        }
        // Jobs whose per-message TTL runs out in the queue are counted, not lost.
        t.insert("x-dead-letter-exchange".into(), text(""));
        t.insert(
            "x-dead-letter-routing-key".into(),
            text(&self.names.expired(q)),
        );
        t
    }

    pub(crate) fn dead_args(&self) -> FieldTable {
        let s = &self.cfg.settings;
        let mut t = self.base(true);
        t.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(i64::try_from(s.dead_max).unwrap_or(i64::MAX)),
        );
        if s.dead_max_age.as_millis() <= u128::from(MAX_TTL_MS) {
            t.insert("x-message-ttl".into(), ms(s.dead_max_age));
        }
        t
    }

    /// A counter queue: expired jobs, or outcome counts.
    pub(crate) fn counter_args(&self) -> FieldTable {
        let mut t = self.base(true);
        if !self.cfg.quorum {
            t.insert("x-queue-mode".into(), text("lazy"));
        }
        t
    }

    /// The lock of an outcome counter: always empty, so classic.
    pub(crate) fn lock_args(&self) -> FieldTable {
        self.base(false)
    }

    fn level_args(&self, k: u32) -> FieldTable {
        let mut t = self.base(false);
        t.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1i64 << k));
        t.insert(
            "x-dead-letter-exchange".into(),
            text(&self.names.after_level(k)),
        );
        t
    }

    /// A staging queue: what no process holds goes on to the work queue
    /// after [`names::STAGE_MS`] (a message's own `expiration` can make it sooner),
    /// and what a process rejects goes there at once.
    fn soon_args(&self, q: &str) -> FieldTable {
        let mut t = self.base(false);
        t.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(names::STAGE_MS).unwrap_or(i64::MAX)),
        );
        t.insert("x-dead-letter-exchange".into(), text(""));
        t.insert(
            "x-dead-letter-routing-key".into(),
            text(&self.names.work(q)),
        );
        t
    }

    /// The registry of queue names: one small message per queue and process start.
    pub(crate) fn registry_args(&self) -> FieldTable {
        let mut t = self.base(false);
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(10_000));
        t
    }

    /// A metadata entry: the latest value only (a publish drops the older head).
    pub(crate) fn meta_args(&self) -> FieldTable {
        let mut t = self.base(false);
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        t
    }

    /// An idempotency key held by a queued or running job: one message at most,
    /// a second publish is refused (nacked).
    pub(crate) fn hold_args(&self) -> FieldTable {
        let mut t = self.base(false);
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        t.insert("x-overflow".into(), text("reject-publish"));
        t
    }

    /// The name of a key's holder: the newest id only.
    pub(crate) fn owner_args(&self) -> FieldTable {
        let mut t = self.base(false);
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        t
    }

    /// A completed job's key: one message, kept `unique_for`; the queue goes
    /// away a minute after that if nobody touches it.
    pub(crate) fn done_args(&self) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        t.insert(
            "x-expires".into(),
            ms(self.cfg.settings.unique_for + Duration::from_secs(60)),
        );
        t
    }

    /// A park queue: its one message goes back to the work queue when its
    /// per-message TTL runs out, and the queue itself goes away `expires`
    /// after it was last used.
    pub(crate) fn park_args(&self, q: &str, expires: Duration) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-dead-letter-exchange".into(), text(""));
        t.insert(
            "x-dead-letter-routing-key".into(),
            text(&self.names.work(q)),
        );
        t.insert("x-expires".into(), ms(expires));
        t
    }

    /// The exchanges and bindings every queue of the prefix shares.
    pub(crate) async fn declare_shared(&self, calls: &Calls, ch: &Channel) -> Result<()> {
        let opts = ExchangeDeclareOptions {
            durable: true,
            auto_delete: self.cfg.expires.is_some(),
            ..ExchangeDeclareOptions::default()
        };
        let mut exchanges: Vec<String> =
            (0..LEVELS).map(|k| self.names.level_exchange(k)).collect();
        exchanges.push(self.names.due_exchange());
        // Requests on one channel are answered in order: send them all, then read the answers.
        let declares = try_join_all(exchanges.into_iter().map(|x| {
            ch.exchange_declare(x.into(), ExchangeKind::Topic, opts, FieldTable::default())
        }));
        calls.answer("exchange.declare", declares).await?;
        // A zero bit at level k skips the level: on to the next exchange
        // down, for earlier versions' keys and for staged ones.
        let binds = try_join_all((0..LEVELS).flat_map(|k| {
            let plain = names::level_pattern(k, '0', None);
            [names::staged(plain.clone()), plain].map(|pattern| {
                ch.exchange_bind(
                    self.names.after_level(k).into(),
                    self.names.level_exchange(k).into(),
                    pattern.into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
            })
        }));
        calls.answer("exchange.bind", binds).await?;
        Ok(())
    }

    /// Everything one queue needs; returns the work queue's ready count.
    ///
    /// With `version_2`, the work queue is asked for as classic queue version
    /// 2, and without it as version 1 (no `x-queue-version`). A work queue
    /// declared before the other way makes the broker refuse (and close
    /// `ch`): [`Declared::OtherVersion`] says so, and the caller declares
    /// again, on a new channel, the other way.
    pub(crate) async fn declare_queue(
        &self,
        calls: &Calls,
        ch: &Channel,
        q: &str,
        version_2: bool,
    ) -> Result<Declared> {
        let n = &self.names;
        let durable = QueueDeclareOptions::durable();
        let work = n.work(q);
        let declare = |name: String, args| {
            calls.answer(
                "queue.declare",
                ch.queue_declare(name.into(), durable, args),
            )
        };
        declare(n.expired(q), self.counter_args()).await?;
        declare(n.counts(q), self.counter_args()).await?;
        declare(n.counts_lock(q), self.lock_args()).await?;
        declare(n.dead(q), self.dead_args()).await?;
        let declared = calls
            .within(
                "queue.declare",
                ch.queue_declare(work.as_str().into(), durable, self.work_args(q, version_2)),
            )
            .await?;
        let declared = match declared {
            Ok(d) => d,
            Err(e) if refuses_queue_version(&e) => return Ok(Declared::OtherVersion),
            Err(e) => return Err(from_lapin(e)),
        };
        let bind = ch.queue_bind(
            work.as_str().into(),
            n.due_exchange().into(),
            names::due_pattern(q).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        calls.answer("queue.bind", bind).await?;
        declare(n.soon(q), self.soon_args(q)).await?;
        let bind = ch.queue_bind(
            n.soon(q).into(),
            n.due_exchange().into(),
            names::staged(names::due_pattern(q)).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        calls.answer("queue.bind", bind).await?;
        let levels =
            try_join_all((0..LEVELS).map(|k| {
                ch.queue_declare(n.level_queue(q, k).into(), durable, self.level_args(k))
            }));
        calls.answer("queue.declare", levels).await?;
        let binds = try_join_all((0..LEVELS).flat_map(|k| {
            let plain = names::level_pattern(k, '1', Some(q));
            [names::staged(plain.clone()), plain].map(|pattern| {
                ch.queue_bind(
                    n.level_queue(q, k).into(),
                    n.level_exchange(k).into(),
                    pattern.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
            })
        }));
        calls.answer("queue.bind", binds).await?;
        Ok(Declared::Ready(declared.message_count()))
    }
}

/// What [`Topology::declare_queue`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Declared {
    /// Declared; the work queue holds this many ready jobs.
    Ready(u32),
    /// The work queue exists with another classic queue version than the
    /// one asked for, and the broker refused the declaration.
    OtherVersion,
}

/// Whether the broker refused a declaration because the queue exists with
/// another `x-queue-version` (`PRECONDITION_FAILED`, "inequivalent arg").
fn refuses_queue_version(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            amqp.get_id() == 406 && amqp.get_message().as_str().contains("'x-queue-version'")
        }
        _ => false,
    }
}
