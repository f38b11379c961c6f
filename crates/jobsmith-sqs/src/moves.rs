//! [`Moves`]: the jobs a migration took and holds, handed back when the
//! hold runs out (the take and remove steps of `migrate.rs`).

use crate::calls::{self, Send};
use crate::codec::{self, Outgoing, IMPORT};
use crate::inner::{delay_for, receive_count, Inner};
use jobsmith_core::holds::Holds;
use jobsmith_core::{Delivery, Envelope, JobId, Lease, LeaseStatus, Malformed, Result, Timestamp};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How much longer than the hold a taken message stays hidden, so that the
/// hold's own give-back, not SQS, returns it.
const MARGIN_SECS: u64 = 30;

/// What one backend keeps about what it holds for migrations.
#[derive(Default)]
pub(crate) struct Moves {
    taken: Arc<Holds<Taken>>,
}

struct Taken {
    url: String,
    receipt: String,
    queue: String,
    payload: std::result::Result<Envelope, Malformed>,
    token: Option<String>,
}

impl Moves {
    pub(crate) async fn take(
        &self,
        inner: &Arc<Inner>,
        queue: &str,
        max: usize,
        hold: Duration,
    ) -> Result<Vec<Delivery>> {
        let Some(family) = inner.queues.existing(queue).await? else {
            return Ok(Vec::new());
        };
        let visibility = calls::whole_seconds_up(hold) + MARGIN_SECS;
        let expires_at = Timestamp::now().plus(hold);
        let mut out = Vec::new();
        let mut tokens = Vec::new();
        for (_, url) in family.levels_desc() {
            while out.len() < max {
                let (msgs, _) = calls::receive(
                    &inner.client,
                    url,
                    max - out.len(),
                    Duration::ZERO,
                    visibility,
                )
                .await?;
                if msgs.is_empty() {
                    break;
                }
                let mut duplicates = Vec::new();
                for m in msgs {
                    let Some(receipt) = m.receipt_handle().map(str::to_owned) else {
                        continue;
                    };
                    if inner.import_duplicate(queue, &m).await? {
                        duplicates.push(receipt);
                        continue;
                    }
                    let raw = codec::decode_body(m.body().unwrap_or(""), m.message_attributes());
                    let earlier = receive_count(&m).saturating_sub(1);
                    let payload = match Envelope::from_bytes(&raw) {
                        Ok(mut env) => {
                            env.attempt = env.attempt.saturating_add(earlier);
                            Ok(env)
                        }
                        Err(e) => Err(Malformed {
                            raw,
                            reason: format!("payload is not a job envelope: {e}"),
                        }),
                    };
                    let id = match &payload {
                        Ok(env) => env.id.clone(),
                        Err(_) => JobId::from(m.message_id().unwrap_or_default()),
                    };
                    let token = self.taken.hold(Taken {
                        url: url.clone(),
                        receipt,
                        queue: queue.to_owned(),
                        payload: payload.clone(),
                        token: codec::attribute(m.message_attributes(), IMPORT).map(str::to_owned),
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
                if !duplicates.is_empty() {
                    let receipts: Vec<&str> = duplicates.iter().map(String::as_str).collect();
                    calls::delete(&inner.client, url, &receipts).await?;
                }
            }
        }
        let weak = Arc::downgrade(inner);
        self.taken
            .give_back_after(hold, tokens, move |left| give_back(weak, left));
        Ok(out)
    }

    pub(crate) async fn remove(&self, inner: &Inner, leases: &[Lease]) -> Result<Vec<LeaseStatus>> {
        let mut out = Vec::with_capacity(leases.len());
        for lease in leases {
            let Some(t) = self.taken.release(&lease.token) else {
                out.push(LeaseStatus::Lost);
                continue;
            };
            let deleted = calls::delete(&inner.client, &t.url, &[t.receipt.as_str()]).await?;
            if !deleted.first().copied().unwrap_or(false) {
                out.push(LeaseStatus::Lost);
                continue;
            }
            if let Ok(env) = &t.payload {
                if let Some(k) = &env.idempotency_key {
                    inner.keys.free(&t.queue, k, &env.id).await?;
                }
            }
            out.push(LeaseStatus::Held);
        }
        Ok(out)
    }
}

/// A hold ran out: each job still held is sent again, then the original deleted.
async fn give_back(inner: Weak<Inner>, left: Vec<Taken>) {
    let Some(inner) = inner.upgrade() else {
        return;
    };
    for t in left {
        let (mut out, delay, id) = match &t.payload {
            Ok(env) => (
                Outgoing::text(String::from_utf8(env.to_bytes()).unwrap_or_default()),
                delay_for(env.run_at),
                env.id.to_string(),
            ),
            Err(m) => (Outgoing::from_raw(&m.raw), 0, JobId::new().to_string()),
        };
        if let Some(tok) = t.token {
            out = out.with(IMPORT, tok);
        }
        let fifo = inner
            .config
            .fifo
            .then(|| (id.clone(), format!("{id}-{}", fastrand::u64(..))));
        let send = Send { out, delay, fifo };
        let step = async {
            calls::send(&inner.client, &t.url, vec![send], inner.budget()).await?;
            calls::delete(&inner.client, &t.url, &[t.receipt.as_str()]).await
        };
        if let Err(e) = step.await {
            tracing::warn!(error = %e, "a migration hold ran out and its job could not be handed back early; SQS returns it when its visibility ends");
        }
    }
}
