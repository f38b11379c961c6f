//! What a receive brings in: receives whose answer was lost are remembered,
//! and each message received is handed on, delayed again, or deleted as
//! expired or as a second copy.

use crate::calls::{self, Send};
use crate::codec::{self, Outgoing};
use crate::inbox::Received;
use crate::inner::{delay_for, receive_count, Inner};
use crate::unique::Claim;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use jobsmith_core::lock::LockExt;
use jobsmith_core::{Envelope, Error, JobId, Malformed, Result, Timestamp};
use std::time::{Duration, Instant};

/// A job is handed out up to this long before it is due: SQS delays count
/// whole seconds, so a job due in 1.4 s is sent with a 1 s delay and held
/// here for the rest.
pub(crate) const EARLY: Duration = Duration::from_secs(1);
/// A receive this soon after a message's first is a second copy delivered at
/// once, not a lost worker's attempt (see `delivered_twice_at_once`).
const TWICE_AT_ONCE: Duration = Duration::from_secs(1);

/// Received messages that are not handed out: what `sort_received` does with them.
#[derive(Default)]
struct Aside {
    /// Receipts of second copies of imported jobs, to delete.
    duplicates: Vec<String>,
    /// (receipt, body, delay) of messages that surfaced early, to send again.
    redelay: Vec<(String, String, u64)>,
    /// (receipt, envelope) of jobs whose TTL passed, to delete and count.
    expired: Vec<(String, Box<Envelope>)>,
}

/// Whether a message came again so soon after its first receive that no
/// worker can have lost it in between: a lease that ends with its worker
/// keeps the message hidden for its whole visibility timeout, two seconds at
/// the least (a lease is whole seconds plus [`EARLY`]). Such a copy comes from
/// at-least-once delivery: a standard queue now and then hands a message to
/// two receives at once, and moto's concurrent long polls race the same way.
/// Its receive is no attempt. The window is a second short of those two, for
/// the clock between SQS and this host.
fn delivered_twice_at_once(m: &Message, now: Timestamp) -> bool {
    let Some(first) = codec::system_number(
        m.attributes(),
        &MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
    ) else {
        return false;
    };
    now.as_millis().saturating_sub(first) < TWICE_AT_ONCE.as_millis() as u64
}

/// What to do with one received message.
enum Incoming {
    /// Hand it out (now, or when it comes due within a second).
    Deliver(Box<Received>),
    /// Its TTL passed: delete it and count it.
    Expired { receipt: String, env: Box<Envelope> },
    /// Due more than a second from now (delays past 15 minutes): send it
    /// again with a new delay, delete this copy.
    Redelay {
        receipt: String,
        body: String,
        delay: u64,
    },
}

impl Inner {
    /// Receives from `url`, remembering a receive whose answer was lost:
    /// SQS may have handed it messages, which come back later with one
    /// receive too many on their count.
    pub(crate) async fn receive(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: u64,
    ) -> Result<(Vec<Message>, Instant)> {
        let from = Timestamp::now().as_millis();
        let got = calls::receive(&self.client, url, max, wait, visibility).await;
        if let Err(e) = &got {
            if e.is_transient() {
                let to = Timestamp::now().as_millis();
                let mut lost = self.lost_receives.lock_unpoisoned();
                let horizon = to.saturating_sub(13 * 3_600_000);
                lost.retain(|(_, _, t)| *t > horizon);
                if lost.len() < 4096 {
                    lost.push((url.to_owned(), from.saturating_sub(1000), to + 1000));
                }
            }
        }
        got
    }

    /// Whether a message's first receive was one of this process's lost receives.
    fn first_receive_lost(&self, url: &str, m: &Message) -> bool {
        let Some(first) = codec::system_number(
            m.attributes(),
            &MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
        ) else {
            return false;
        };
        self.lost_receives
            .lock_unpoisoned()
            .iter()
            .any(|(u, from, to)| u == url && (*from..=*to).contains(&first))
    }

    fn classify(
        &self,
        queue: &str,
        level: i8,
        url: &str,
        m: Message,
        deadline: Instant,
        now: Timestamp,
    ) -> Option<Incoming> {
        let receipt = m.receipt_handle()?.to_owned();
        let raw = codec::decode_body(m.body().unwrap_or(""), m.message_attributes());
        let mut rc = receive_count(&m);
        if rc >= 2 && (delivered_twice_at_once(&m, now) || self.first_receive_lost(url, &m)) {
            rc -= 1;
        }
        let payload = match Envelope::from_bytes(&raw) {
            Ok(mut env) => {
                if env.is_expired(now) {
                    return Some(Incoming::Expired {
                        receipt,
                        env: Box::new(env),
                    });
                }
                if env.run_at > now.plus(EARLY) {
                    return Some(Incoming::Redelay {
                        receipt,
                        body: String::from_utf8(raw).unwrap_or_default(),
                        delay: delay_for(env.run_at),
                    });
                }
                env.attempt = env.attempt.saturating_add(rc);
                Ok(env)
            }
            Err(e) => Err(Malformed {
                raw,
                reason: format!("payload is not a job envelope: {e}"),
            }),
        };
        let (id, due) = match &payload {
            Ok(env) => (env.id.clone(), env.run_at),
            Err(_) => (JobId::from(m.message_id().unwrap_or_default()), now),
        };
        Some(Incoming::Deliver(Box::new(Received::new(
            queue.to_owned(),
            level,
            url.to_owned(),
            receipt,
            id,
            payload,
            due,
            deadline,
        ))))
    }

    /// Sorts received messages: deliverable ones are returned, expired ones
    /// are deleted and counted, far-off ones are delayed again. A step that
    /// fails (a duplicate check, a re-delay, counting) comes back beside the
    /// deliverable messages, never instead of them: the receive leased them,
    /// and dropping them would charge each an attempt when SQS delivered it
    /// again.
    pub(crate) async fn sort_received(
        &self,
        queue: &str,
        level: i8,
        url: &str,
        messages: Vec<Message>,
        sent: Instant,
        visibility: u64,
    ) -> (Vec<Received>, Option<Error>) {
        let now = Timestamp::now();
        let deadline = sent + Duration::from_secs(visibility);
        let mut out = Vec::new();
        let mut aside = Aside::default();
        let mut failed = None;
        for m in messages {
            match self.import_duplicate(queue, &m).await {
                Ok(false) => {}
                Ok(true) => {
                    // A second copy of a migrated job (see `migrate.rs`): never run.
                    aside
                        .duplicates
                        .extend(m.receipt_handle().map(str::to_owned));
                    continue;
                }
                Err(e) => {
                    // Not known to be the first copy, so not run now: SQS
                    // delivers it again when its visibility runs out.
                    failed.get_or_insert(e);
                    continue;
                }
            }
            match self.classify(queue, level, url, m, deadline, now) {
                Some(Incoming::Deliver(r)) => out.push(*r),
                Some(Incoming::Expired { receipt, env }) => aside.expired.push((receipt, env)),
                Some(Incoming::Redelay {
                    receipt,
                    body,
                    delay,
                }) => aside.redelay.push((receipt, body, delay)),
                None => {}
            }
        }
        if let Err(e) = self.put_aside(queue, url, aside).await {
            failed.get_or_insert(e);
        }
        (out, failed)
    }

    /// Deletes duplicates, delays again what surfaced early, and deletes and
    /// counts what expired, of messages received from `url`.
    async fn put_aside(&self, queue: &str, url: &str, aside: Aside) -> Result<()> {
        let Aside {
            duplicates,
            redelay,
            expired,
        } = aside;
        if !duplicates.is_empty() {
            let receipts: Vec<&str> = duplicates.iter().map(String::as_str).collect();
            calls::delete(&self.client, url, &receipts).await?;
        }
        if !redelay.is_empty() && self.config.fifo {
            // FIFO queues take no per-message delay: hide the message until
            // due instead. SQS counts each such hold as a receive.
            for (receipt, _, delay) in &redelay {
                let secs = (*delay).max(1);
                calls::change_visibility(&self.client, url, &[receipt.as_str()], secs).await?;
            }
        } else if !redelay.is_empty() {
            let (receipts, sends): (Vec<String>, Vec<Send>) = redelay
                .into_iter()
                .map(|(receipt, body, delay)| {
                    let send = Send {
                        out: Outgoing::text(body),
                        delay,
                        fifo: None,
                    };
                    (receipt, send)
                })
                .unzip();
            calls::send(&self.client, url, sends, self.budget()).await?;
            let receipts: Vec<&str> = receipts.iter().map(String::as_str).collect();
            calls::delete(&self.client, url, &receipts).await?;
        }
        if !expired.is_empty() {
            let receipts: Vec<&str> = expired.iter().map(|(r, _)| r.as_str()).collect();
            let deleted = calls::delete(&self.client, url, &receipts).await?;
            let n = deleted.iter().filter(|ok| **ok).count();
            for ((_, env), _) in expired.iter().zip(&deleted).filter(|(_, ok)| **ok) {
                jobsmith_core::count_expired(queue, &env.job);
            }
            let freed: Vec<Claim<'_>> = expired
                .iter()
                .zip(&deleted)
                .filter(|(_, ok)| **ok)
                .filter_map(|((_, env), _)| {
                    let k = env.idempotency_key.as_deref()?;
                    Some((queue, k, &env.id))
                })
                .collect();
            self.keys.free_all(&freed).await;
            self.count_expired(queue, n).await?;
        }
        Ok(())
    }
}
