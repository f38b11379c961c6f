//! Long leases and the broker's `consumer_timeout`.
//!
//! RabbitMQ 3.10 closes a channel when one of its deliveries has stayed
//! unacknowledged longer than `consumer_timeout`, and requeues everything the
//! channel held: a job running that long would run again. So no delivery is
//! held for more than half of it (the URL's `consumer_timeout`, default 30 min):
//!
//! - A lease whose delivery is that old is *parked*: a copy of the job (its
//!   attempt counted, as a lost lease's would be) goes to a park queue of its
//!   own, `p.q.park.<token>`, with a per-message TTL equal to what is left of
//!   the lease; when the broker has confirmed it, the delivery is acked. The
//!   park queue dead-letters into the work queue, so if this process dies the
//!   job comes back when its lease would have run out, as it does on every
//!   backend. The lease and its token do not change.
//! - Each `extend` of a parked lease renews the copy: `basic.get` it, publish
//!   a new copy with the new TTL (confirmed), then ack the old one.
//! - Settling a parked lease publishes what replaces the job (if anything),
//!   then deletes the park queue; its copy goes with it. A lease that runs out
//!   needs nothing: its copy's TTL returns the job.
//! - A delivery that waits that long in the prefetch buffer (workers busy with
//!   long jobs) is republished to the back of its work queue and acked.
//!
//! A crash between two steps leaves one copy more, never one fewer: between
//! publishing a copy and acking what it replaces, the broker holds both, and a
//! crash there runs the job again (at-least-once), but it is never lost.
//! Parking, renewing and taking a lease to settle it are serialised by
//! [`Inner::handover`], so a settlement never races a handover.

use crate::call::Calls;
use crate::error::from_lapin;
use crate::inner::Inner;
use crate::link::Link;
use crate::message::{self, Outgoing};
use crate::state::{Held, Parked};
use jobsmith_core::lock::LockExt;
use jobsmith_core::{LeaseStatus, Timestamp};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use std::sync::Arc;
use std::time::Duration;

/// The shortest a park queue's `x-expires` may be.
const MIN_PARK_EXPIRES: Duration = Duration::from_secs(3600);

impl Inner {
    /// How long a delivery may stay unacknowledged: half the broker's `consumer_timeout`.
    pub(crate) fn handover_after(&self) -> Duration {
        self.cfg.consumer_timeout / 2
    }

    /// How often the reaper looks for deliveries to hand over.
    pub(crate) fn handover_every(&self) -> Duration {
        (self.handover_after() / 8).min(Duration::from_secs(1))
    }

    /// Parks the leases, and returns the buffered deliveries, held for
    /// [`Inner::handover_after`] or longer.
    pub(crate) async fn hand_over(self: &Arc<Self>) {
        let Some(link) = self.current() else { return };
        let after = self.handover_after();
        let _turn = self.handover.lock().await;
        let (due, stale) = {
            let mut st = self.state.lock_unpoisoned();
            let due: Vec<String> = st
                .leases
                .iter()
                .filter(|(_, h)| {
                    h.parked.is_none() && h.gen == link.gen && h.delivered.elapsed() >= after
                })
                .map(|(t, _)| t.clone())
                .collect();
            (due, st.take_stale(link.gen, after))
        };
        if !stale.is_empty() {
            let tags = stale.iter().map(|(_, b)| b.tag).collect();
            let msgs = stale
                .into_iter()
                .map(|(q, b)| message::raw(&self.names, &q, b.data, b.priority))
                .collect();
            if let Err(e) = self.replace(&link, msgs, tags).await {
                tracing::warn!(error = %e, "could not return long-buffered deliveries; the broker may requeue them");
            }
        }
        for token in due {
            if let Err(e) = self.park(&link, &token).await {
                tracing::warn!(error = %e, "could not park a long lease; will try again");
            }
        }
    }

    /// Moves one lease from its delivery to a park queue. Call with [`Inner::handover`] held.
    async fn park(&self, link: &Link, token: &str) -> jobsmith_core::Result<()> {
        let now = Timestamp::now();
        let (copy, tag, park, expires) = {
            let st = self.state.lock_unpoisoned();
            let Some(h) = st.leases.get(token) else {
                return Ok(());
            };
            let ttl = h.expires_at.since(now).max(Duration::from_millis(1));
            let expires = (ttl * 4).max(MIN_PARK_EXPIRES);
            let park = self.names.park(&h.queue, token);
            let copy = self.park_copy(h, &park, ttl);
            (copy, h.tag, (h.queue.clone(), park), expires)
        };
        let (queue, park) = park;
        {
            let admin = link.admin().await?;
            let calls = &link.calls;
            let declare = admin.queue_declare(
                park.as_str().into(),
                QueueDeclareOptions::durable(),
                self.topology().park_args(&queue, expires),
            );
            calls.answer("queue.declare", declare).await?;
            // A copy left by an attempt that failed half-way goes first, so
            // the queue never holds two.
            let purge = admin.queue_purge(park.as_str().into(), QueuePurgeOptions::default());
            calls.answer("queue.purge", purge).await?;
            message::publish_confirmed(calls, &admin, vec![copy]).await?;
        }
        let acked = self.ack_tags(link, vec![tag]).await;
        let mut st = self.state.lock_unpoisoned();
        let id = st.leases.get_mut(token).and_then(|h| {
            h.parked = Some(Parked {
                queue: park,
                max_ttl: expires / 2,
            });
            h.payload.as_ref().ok().map(|env| env.id.0.clone())
        });
        if let (Err(_), Some(id)) = (&acked, id) {
            // The connection is gone and the broker requeues the delivery:
            // if it comes back here, it is acked on arrival; if it goes to
            // another process, the job runs twice, but is never lost.
            st.tombstones.insert(id, now.plus(Duration::from_secs(600)));
        }
        drop(st);
        tracing::debug!(token, "long lease parked");
        acked
    }

    /// The copy of a held job that waits in its park queue for `ttl`.
    fn park_copy(&self, h: &Held, park: &str, ttl: Duration) -> Outgoing {
        let mut m = self.requeue_message(h);
        m.exchange = String::new();
        m.routing_key = park.to_owned();
        m.props = m.props.with_expiration(message::expiration(ttl));
        m
    }

    /// Renews a parked lease's copy so that it waits until `until`; moves the
    /// lease's expiry there when that worked.
    pub(crate) async fn renew(&self, link: &Link, token: &str, until: Timestamp) -> LeaseStatus {
        let _turn = self.handover.lock().await;
        let parked = match self.state.lock_unpoisoned().leases.get(token) {
            Some(h) => h.parked.clone(),
            None => return LeaseStatus::Lost,
        };
        let Some(parked) = parked else {
            return LeaseStatus::Held;
        };
        let now = Timestamp::now();
        let ttl = until
            .since(now)
            .min(parked.max_ttl)
            .max(Duration::from_millis(1));
        match self.renew_copy(link, &parked.queue, ttl).await {
            Ok(true) => {
                let at = now.plus(ttl);
                let mut st = self.state.lock_unpoisoned();
                if let Some(h) = st.leases.get_mut(token) {
                    let old = std::mem::replace(&mut h.expires_at, at);
                    st.expiry.remove(&(old, token.to_owned()));
                    st.expiry.insert((at, token.to_owned()));
                }
                LeaseStatus::Held
            }
            Ok(false) => {
                // The copy ran out and went back to the work queue.
                let mut st = self.state.lock_unpoisoned();
                if let Some(h) = st.leases.remove(token) {
                    st.expiry.remove(&(h.expires_at, token.to_owned()));
                }
                LeaseStatus::Lost
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew a parked lease; will try again");
                LeaseStatus::Held
            }
        }
    }

    /// Replaces the copy in `park` with one that waits `ttl`; false if there is none.
    async fn renew_copy(
        &self,
        link: &Link,
        park: &str,
        ttl: Duration,
    ) -> jobsmith_core::Result<bool> {
        let mut admin = link.admin().await?;
        let calls = &link.calls;
        let get = admin.basic_get(park.into(), BasicGetOptions { no_ack: false });
        let got = match calls.within("basic.get", get).await {
            Ok(got) => got,
            Err(e) => {
                // The copy it may yet take goes back when the channel closes.
                Calls::abandon(&admin);
                return Err(e);
            }
        };
        let got = match got {
            Ok(got) => got,
            Err(e) if crate::unique::is_not_found(&e) => {
                *admin = link.reopen_admin().await?;
                return Ok(false);
            }
            Err(e) => return Err(from_lapin(e)),
        };
        let Some(old) = got else { return Ok(false) };
        let tag = old.delivery.delivery_tag;
        let copy = Outgoing {
            exchange: String::new(),
            routing_key: park.to_owned(),
            body: old.delivery.data,
            props: old
                .delivery
                .properties
                .with_expiration(message::expiration(ttl)),
        };
        if let Err(e) = message::publish_confirmed(calls, &admin, vec![copy]).await {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            let _ = calls
                .answer("basic.nack", admin.basic_nack(tag, requeue))
                .await;
            return Err(e);
        }
        calls
            .answer(
                "basic.ack",
                admin.basic_ack(tag, BasicAckOptions::default()),
            )
            .await?;
        Ok(true)
    }

    /// Deletes a settled lease's park queue, and the copy in it.
    pub(crate) async fn unpark(&self, link: &Link, parked: &Parked) -> jobsmith_core::Result<()> {
        let admin = link.admin().await?;
        let delete =
            admin.queue_delete(parked.queue.as_str().into(), QueueDeleteOptions::default());
        link.calls.answer("queue.delete", delete).await?;
        Ok(())
    }

    /// Replaces held jobs with `msgs`: publishes them (confirmed), then acks
    /// the deliveries and deletes the park queues of the held jobs.
    pub(crate) async fn settle(
        self: &Arc<Self>,
        link: &Arc<Link>,
        msgs: Vec<Outgoing>,
        held: &[&Held],
    ) -> jobsmith_core::Result<()> {
        let tags = held
            .iter()
            .filter_map(|h| live_tag(link, h))
            .collect::<Vec<_>>();
        self.replace(link, msgs, tags).await?;
        for p in held.iter().filter_map(|h| h.parked.as_ref()) {
            self.unpark(link, p).await?;
        }
        Ok(())
    }
}

/// The delivery tag to settle, if the lease rests on a delivery of the
/// current connection; an orphaned lease's redelivery is acked when it
/// arrives, and a parked lease has no delivery.
pub(crate) fn live_tag(link: &Link, held: &Held) -> Option<u64> {
    (held.parked.is_none() && held.gen == link.gen).then_some(held.tag)
}
