//! Moving jobs in and out for `jobsmith migrate`: take, remove, import.
//!
//! - **Take** `basic.get`s messages, unacknowledged, from the work queue and
//!   then from the delay levels (scheduled jobs), on a channel of its own.
//!   When the hold runs out, a copy of each job still held is republished
//!   (through the delay levels if its time has not come) and the original
//!   acked, so no attempt is counted. If this process dies, the broker
//!   requeues what it held; a worker then counts the lost delivery as an
//!   attempt, as it would for any consumer that died.
//! - **Remove** acks what take held.
//! - **Import** needs to know which job ids it wrote before, and AMQP cannot
//!   look a message up by id. So every imported message is published once,
//!   with a `BCC` header naming the ledger queue `<prefix>._migrated`: the
//!   broker routes that single publish to the job's queue *and* the ledger,
//!   atomically, and confirms it once both hold it. A job is in the
//!   destination if and only if its id is in the ledger. The ledger's ids
//!   are read once per process (a browse, like a dead-letter listing) and
//!   kept in memory. The ledger keeps a copy of every message imported;
//!   delete the queue once a migration is finished and checked. Two
//!   migrations into one prefix at the same time are not supported.

use crate::call::Calls;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, Outgoing, DIED_AT};
use crate::names::LEVELS;
use futures_util::future::try_join_all;
use jobsmith_core::holds::Holds;
use jobsmith_core::{
    DeadJob, Delivery, Envelope, Error, JobId, Lease, LeaseStatus, Malformed, Result, Timestamp,
};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::Channel;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What one backend keeps about migrations.
#[derive(Default)]
pub(crate) struct Moves {
    taken: Arc<Holds<Taken>>,
    /// The ledger's ids, once read; the lock serialises imports in this process.
    ledger: tokio::sync::Mutex<Option<HashSet<JobId>>>,
}

/// The channel one take used, closed when its last job is settled.
struct Group {
    ch: Channel,
    calls: Calls,
    left: AtomicUsize,
}

struct Taken {
    group: Arc<Group>,
    tag: u64,
    queue: String,
    priority: u8,
    payload: std::result::Result<Envelope, Malformed>,
}

impl Group {
    async fn settled_one(&self) {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.close("migration page settled").await;
        }
    }

    /// Closes the channel: the broker requeues what it still holds.
    async fn close(&self, why: &str) {
        let close = self.ch.close(200, why.into());
        let _ = self.calls.answer("channel.close", close).await;
    }

    /// Acks one message the take holds.
    async fn ack(&self, tag: u64) -> Result<()> {
        let ack = self.ch.basic_ack(tag, BasicAckOptions::default());
        self.calls.answer("basic.ack", ack).await
    }
}

/// The ledger's arguments: lazy, and expiring as the URL's `expires` says.
fn ledger_args(inner: &Inner) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-mode".into(),
        AMQPValue::LongString(LongString::from("lazy")),
    );
    if let Some(e) = inner.cfg.expires {
        t.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(i64::try_from(e.as_millis()).unwrap_or(i64::MAX)),
        );
    }
    t
}

/// `props` with a `BCC` header that sends the message to the ledger too.
fn with_ledger(msg: &mut Outgoing, ledger: &str) {
    let mut headers = msg.props.headers().clone().unwrap_or_default();
    headers.insert(
        "BCC".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
            LongString::from(ledger),
        )])),
    );
    msg.props = std::mem::take(&mut msg.props).with_headers(headers);
}

impl Moves {
    pub(crate) async fn take(
        &self,
        inner: &Arc<Inner>,
        queue: &str,
        max: usize,
        hold: Duration,
    ) -> Result<Vec<Delivery>> {
        let link = inner.link().await?;
        inner.ensure_queue(&link, queue).await?;
        let ch = link.scratch().await?;
        let group = Arc::new(Group {
            ch: ch.clone(),
            calls: link.calls.clone(),
            left: AtomicUsize::new(0),
        });
        let mut sources = vec![inner.names.work(queue), inner.names.soon(queue)];
        sources.extend((0..LEVELS).rev().map(|k| inner.names.level_queue(queue, k)));
        let expires_at = Timestamp::now().plus(hold);
        let mut out = Vec::new();
        let mut tokens = Vec::new();
        'sources: for src in sources {
            while out.len() < max {
                let get = ch.basic_get(src.as_str().into(), BasicGetOptions { no_ack: false });
                let got = match link.calls.answer("basic.get", get).await {
                    Ok(got) => got,
                    Err(e) => {
                        // What it holds, and may yet take, goes back when the channel closes.
                        Calls::abandon(&ch);
                        return Err(e);
                    }
                };
                let Some(m) = got else {
                    continue 'sources;
                };
                let d = m.delivery;
                let payload = message::parse(&d.data);
                let id = match &payload {
                    Ok(env) => env.id.clone(),
                    Err(_) => d
                        .properties
                        .message_id()
                        .as_ref()
                        .map_or_else(JobId::new, |id| JobId::from(id.as_str())),
                };
                group.left.fetch_add(1, Ordering::SeqCst);
                let token = self.taken.hold(Taken {
                    group: Arc::clone(&group),
                    tag: d.delivery_tag,
                    queue: queue.to_owned(),
                    priority: d.properties.priority().unwrap_or(0),
                    payload: payload.clone(),
                });
                tokens.push(token.clone());
                out.push(Delivery {
                    lease: Lease {
                        id,
                        queue: queue.to_owned(),
                        token,
                        expires_at,
                    },
                    envelope: payload,
                });
            }
            break;
        }
        if out.is_empty() {
            group.close("nothing to take").await;
            return Ok(out);
        }
        let weak = Arc::downgrade(inner);
        self.taken
            .give_back_after(hold, tokens, move |left| give_back(weak, left));
        Ok(out)
    }

    pub(crate) async fn remove(
        &self,
        inner: &Arc<Inner>,
        leases: &[Lease],
    ) -> Result<Vec<LeaseStatus>> {
        let mut out = Vec::with_capacity(leases.len());
        for lease in leases {
            let Some(t) = self.taken.release(&lease.token) else {
                out.push(LeaseStatus::Lost);
                continue;
            };
            let acked = t.group.ack(t.tag).await.is_ok();
            t.group.settled_one().await;
            if !acked {
                out.push(LeaseStatus::Lost);
                continue;
            }
            if let Some(k) = t
                .payload
                .as_ref()
                .ok()
                .and_then(|e| e.idempotency_key.as_ref())
            {
                let link = inner.link().await?;
                inner.free_key(&link, &t.queue, k).await?;
            }
            out.push(LeaseStatus::Held);
        }
        Ok(out)
    }

    /// The ledger queue, declared and bound, and the ids in it.
    async fn ledger<'a>(
        &'a self,
        inner: &Inner,
        link: &Link,
    ) -> Result<tokio::sync::MutexGuard<'a, Option<HashSet<JobId>>>> {
        let mut ids = self.ledger.lock().await;
        if ids.is_none() {
            let name = inner.names.ledger();
            {
                let admin = link.admin().await?;
                let declare = admin.queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions::durable(),
                    ledger_args(inner),
                );
                link.calls.answer("queue.declare", declare).await?;
                // A scheduled job is published to the delay level of its
                // highest set bit; the BCC key must route from each.
                let binds = try_join_all((0..LEVELS).map(|k| {
                    admin.queue_bind(
                        name.as_str().into(),
                        inner.names.level_exchange(k).into(),
                        name.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                }));
                link.calls.answer("queue.bind", binds).await?;
            }
            let held = crate::browse::collect(link, &name, ledger_args(inner)).await?;
            let set = held
                .deliveries
                .iter()
                .filter_map(|d| d.properties.message_id().as_ref())
                .map(|id| JobId::from(id.as_str()))
                .collect();
            held.close().await;
            *ids = Some(set);
        }
        Ok(ids)
    }

    pub(crate) async fn import(
        &self,
        inner: &Arc<Inner>,
        jobs: Vec<Envelope>,
        limit: usize,
    ) -> Result<Vec<bool>> {
        let mut bodies = Vec::with_capacity(jobs.len());
        for env in &jobs {
            let body = env.to_bytes();
            if body.len() > limit {
                return Err(Error::PayloadTooLarge {
                    size: body.len(),
                    limit,
                });
            }
            bodies.push(body);
        }
        let link = inner.link().await?;
        let mut queues: Vec<&str> = jobs.iter().map(|e| e.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            inner.ensure_queue(&link, q).await?;
        }
        let mut guard = self.ledger(inner, &link).await?;
        let seen = guard.as_mut().expect("read above");
        let ledger = inner.names.ledger();
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(jobs.len());
        let mut msgs = Vec::new();
        let mut new_ids = Vec::new();
        let mut batch_ids = HashSet::new();
        for (env, body) in jobs.iter().zip(bodies) {
            if seen.contains(&env.id) || !batch_ids.insert(env.id.clone()) {
                out.push(false);
                continue;
            }
            if let Some(key) = &env.idempotency_key {
                // The job is kept even if another job holds its key here.
                inner.claim_key(&link, &env.queue, key, &env.id).await?;
            }
            let mut msg = message::job_with_body(&inner.names, env, body, now);
            with_ledger(&mut msg, &ledger);
            msgs.push(msg);
            new_ids.push(env.id.clone());
            out.push(true);
        }
        if !msgs.is_empty() {
            message::publish_confirmed(&link.calls, &link.publish, msgs).await?;
        }
        seen.extend(new_ids);
        Ok(out)
    }

    pub(crate) async fn import_dead(
        &self,
        inner: &Arc<Inner>,
        jobs: Vec<DeadJob>,
    ) -> Result<Vec<bool>> {
        let link = inner.link().await?;
        let mut queues: Vec<&str> = jobs.iter().map(|d| d.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            inner.ensure_queue(&link, q).await?;
        }
        let mut guard = self.ledger(inner, &link).await?;
        let seen = guard.as_mut().expect("read above");
        let ledger = inner.names.ledger();
        let mut out = Vec::with_capacity(jobs.len());
        let mut msgs = Vec::new();
        let mut new_ids = Vec::new();
        let mut batch_ids = HashSet::new();
        for d in jobs {
            if seen.contains(&d.id) || !batch_ids.insert(d.id.clone()) {
                out.push(false);
                continue;
            }
            let mut msg = message::dead(&inner.names, &d.queue, &d.id, d.raw, &d.reason);
            let mut headers = msg.props.headers().clone().unwrap_or_default();
            headers.insert(
                DIED_AT.into(),
                AMQPValue::LongLongInt(i64::try_from(d.died_at.as_millis()).unwrap_or(i64::MAX)),
            );
            msg.props = std::mem::take(&mut msg.props).with_headers(headers);
            with_ledger(&mut msg, &ledger);
            msgs.push(msg);
            new_ids.push(d.id);
            out.push(true);
        }
        if !msgs.is_empty() {
            message::publish_confirmed(&link.calls, &link.publish, msgs).await?;
        }
        seen.extend(new_ids);
        Ok(out)
    }
}

/// A hold ran out: each job still held goes back as a fresh copy, then the
/// original is acked; if the copy cannot be published, the original is left
/// for the broker to requeue when the channel closes. A copy the broker has
/// not answered for within `call_timeout` is settled in the background once
/// it does, so the original is never both copied and requeued.
async fn give_back(inner: Weak<Inner>, left: Vec<Taken>) {
    let Some(inner) = inner.upgrade() else {
        return;
    };
    let now = Timestamp::now();
    for t in left {
        let copy = match &t.payload {
            Ok(env) => message::job(&inner.names, env, now),
            Err(m) => message::raw(&inner.names, &t.queue, m.raw.clone(), t.priority),
        };
        let link = match inner.link().await {
            Ok(link) => link,
            Err(_) => {
                t.group.close("hold ran out").await;
                t.group.settled_one().await;
                continue;
            }
        };
        let on = Arc::clone(&link);
        let step = async move {
            let sent =
                message::publish_confirmed_unbounded(&on.calls, &on.publish, vec![copy]).await;
            if sent.is_ok() {
                let _ = t.group.ack(t.tag).await;
            } else {
                t.group.close("hold ran out").await;
            }
            t.group.settled_one().await;
            sent
        };
        let _ = link.calls.or_in_background("basic.publish", step).await;
    }
}
