//! Messages on the wire: building them from envelopes, publishing them with
//! confirms, and reading deliveries back.

use crate::call::Calls;
use crate::error::from_lapin;
use crate::names::{self, Names};
use futures_util::future::join_all;
use jobsmith_core::{Envelope, Error, JobId, Malformed, Result, Timestamp};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use std::time::Duration;

/// Header naming why a job died.
pub(crate) const REASON: &str = "x-jobsmith-reason";
/// Header with the instant, in ms since the epoch, a job died.
pub(crate) const DIED_AT: &str = "x-jobsmith-died-at";

/// One message to publish.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
    pub(crate) props: BasicProperties,
}

/// What the broker said about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// Stored.
    Ack,
    /// No queue took it (only for mandatory publishes).
    Unroutable,
    /// Refused, such as by a full queue with `x-overflow: reject-publish`.
    Nack,
}

/// Properties of a persistent job message.
pub(crate) fn job_props(id: &str, priority: u8) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(priority)
        .with_message_id(id.into())
        .with_content_type("application/json".into())
}

/// A job envelope, to its work queue now or through the delay levels.
pub(crate) fn job(names: &Names, env: &Envelope, now: Timestamp) -> Outgoing {
    job_with_body(names, env, env.to_bytes(), now)
}

/// A buffered delivery going back unrun at a stop: the same bytes, ready as
/// they were; or, when the broker marked it redelivered, with the delivery
/// before it counted, as a reserve would count it (that one may have been
/// running when its connection died).
pub(crate) fn handed_back(
    names: &Names,
    queue: &str,
    b: crate::state::Buffered,
    now: Timestamp,
) -> Outgoing {
    match parse(&b.data) {
        Ok(mut env) if b.redelivered => {
            env.attempt = env.attempt.saturating_add(1);
            env.run_at = env.run_at.min(now);
            job(names, &env, now)
        }
        Ok(env) => job_with_body(names, &env, b.data, now),
        Err(_) => raw(names, queue, b.data, b.priority),
    }
}

/// [`job`], with the envelope already serialised as `body`.
pub(crate) fn job_with_body(
    names: &Names,
    env: &Envelope,
    body: Vec<u8>,
    now: Timestamp,
) -> Outgoing {
    let mut props = job_props(env.id.as_str(), names::broker_priority(env.priority));
    let delay = env.run_at.since(now);
    let ms = u64::try_from(delay.min(names::max_delay()).as_millis()).unwrap_or(u64::MAX);
    // The levels take it to the staging queue `STAGE_MS` before it is due,
    // where a process holds it until then (`stage.rs`).
    if ms > names::STAGE_MS {
        let ms = ms - names::STAGE_MS;
        return Outgoing {
            exchange: names.level_exchange(names::first_level(ms)),
            routing_key: names::staged_key(ms, &env.queue),
            body,
            props,
        };
    }
    if ms > names::STAGE_EARLY_MS {
        // Straight to the staging queue. Its TTL moves the job on after
        // `STAGE_MS` when no process holds it; this one's own is shorter.
        return Outgoing {
            exchange: String::new(),
            routing_key: names.soon(&env.queue),
            body,
            props: props.with_expiration(expiration(Duration::from_millis(ms))),
        };
    }
    // Due now, or soon enough that a holder would reject it into the work
    // queue at once: straight there, and the reserving process holds it
    // until it is due (`backend.rs`).
    if let Some(at) = env.expires_at {
        // The broker drops (and counts, via the expired queue) what runs out in line.
        props = props.with_expiration(expiration(at.since(now)));
    }
    Outgoing {
        exchange: String::new(),
        routing_key: names.work(&env.queue),
        body,
        props,
    }
}

/// A persistent message straight into `queue`, through the default exchange.
pub(crate) fn to_queue(queue: String, body: Vec<u8>) -> Outgoing {
    Outgoing {
        exchange: String::new(),
        routing_key: queue,
        body,
        props: BasicProperties::default().with_delivery_mode(2),
    }
}

/// Raw bytes back into a queue, ready now, as they were.
pub(crate) fn raw(names: &Names, queue: &str, body: Vec<u8>, priority: u8) -> Outgoing {
    let mut m = to_queue(names.work(queue), body);
    m.props = m.props.with_priority(priority);
    m
}

/// A record in the queue's expired-job counter.
pub(crate) fn expired(names: &Names, queue: &str, body: Vec<u8>) -> Outgoing {
    to_queue(names.expired(queue), body)
}

/// A per-message TTL (`expiration`) of `ttl`, capped at the broker's limit.
pub(crate) fn expiration(ttl: Duration) -> ShortString {
    ttl.as_millis()
        .min(u128::from(crate::topology::MAX_TTL_MS))
        .to_string()
        .into()
}

/// A job to its queue's dead-letter queue, with the reason in headers.
pub(crate) fn dead(
    names: &Names,
    queue: &str,
    id: &JobId,
    body: Vec<u8>,
    reason: &str,
) -> Outgoing {
    let mut headers = FieldTable::default();
    headers.insert(
        REASON.into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        DIED_AT.into(),
        AMQPValue::LongLongInt(i64::try_from(Timestamp::now().as_millis()).unwrap_or(i64::MAX)),
    );
    Outgoing {
        exchange: String::new(),
        routing_key: names.dead(queue),
        body,
        props: BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into())
            .with_headers(headers),
    }
}

/// Publishes every message, then waits for every confirm: one round trip
/// for the batch, within `call_timeout` (see [`Calls::publish`]).
pub(crate) async fn publish_all(
    calls: &Calls,
    ch: &Channel,
    msgs: Vec<Outgoing>,
    mandatory: bool,
) -> Result<Vec<Confirmed>> {
    calls.publish(send_all(ch, msgs, mandatory)).await
}

/// Publishes and requires every message to be stored, within `call_timeout`.
pub(crate) async fn publish_confirmed(
    calls: &Calls,
    ch: &Channel,
    msgs: Vec<Outgoing>,
) -> Result<()> {
    stored(publish_all(calls, ch, msgs, true).await?)
}

/// [`publish_confirmed`] with no bound of its own, once the broker does
/// not block the connection: for a step its caller bounds as a whole.
pub(crate) async fn publish_confirmed_unbounded(
    calls: &Calls,
    ch: &Channel,
    msgs: Vec<Outgoing>,
) -> Result<()> {
    calls.unblocked().await;
    stored(send_all(ch, msgs, true).await?)
}

/// Publishes every message, then waits for every confirm, however long.
async fn send_all(
    ch: &Channel,
    mut msgs: Vec<Outgoing>,
    mandatory: bool,
) -> Result<Vec<Confirmed>> {
    let opts = BasicPublishOptions {
        mandatory,
        ..BasicPublishOptions::default()
    };
    // Each publish queues its frames when first polled, so polling them all
    // in order pipelines the batch while keeping its order on the wire. Names
    // and properties move into the frames; only the bodies stay borrowed.
    let sends = msgs.iter_mut().map(|m| {
        let Outgoing {
            exchange,
            routing_key,
            body,
            props,
        } = m;
        let body: &[u8] = body;
        ch.basic_publish(
            std::mem::take(exchange).into(),
            std::mem::take(routing_key).into(),
            opts,
            body,
            std::mem::take(props),
        )
    });
    let pending = join_all(sends).await;
    let mut confirms = Vec::with_capacity(pending.len());
    for p in pending {
        confirms.push(p.map_err(from_lapin)?);
    }
    let answers = join_all(confirms).await;
    let mut out = Vec::with_capacity(answers.len());
    for c in answers {
        out.push(match c.map_err(from_lapin)? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Confirmed::Ack,
            Confirmation::Ack(Some(_)) => Confirmed::Unroutable,
            Confirmation::Nack(_) => Confirmed::Nack,
        });
    }
    Ok(out)
}

/// Whether the broker stored every message it answered for.
fn stored(confirms: Vec<Confirmed>) -> Result<()> {
    for c in confirms {
        match c {
            Confirmed::Ack => {}
            Confirmed::Unroutable => {
                return Err(Error::backend(
                    "the broker could route a message to no queue: was the topology deleted?",
                ))
            }
            Confirmed::Nack => return Err(Error::backend("the broker refused a message")),
        }
    }
    Ok(())
}

/// A payload as an envelope, or why it is not one.
pub(crate) fn parse(data: &[u8]) -> std::result::Result<Envelope, Malformed> {
    Envelope::from_bytes(data).map_err(|e| Malformed {
        raw: data.to_vec(),
        reason: format!("payload is not a job envelope: {e}"),
    })
}

/// A text header's value.
pub(crate) fn header_text(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header's value.
pub(crate) fn header_u64(props: &BasicProperties, key: &str) -> Option<u64> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}
