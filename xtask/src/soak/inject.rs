//! Bad input, written straight into the broker as a foreign producer would:
//! payloads that are not envelopes, and envelopes naming a job nobody knows.

use super::plan::QUEUE;
use jobsmith::{Envelope, JobId, MemoryBackend, Timestamp};

/// How to write raw bytes into the soak's queue, per backend.
#[derive(Debug)]
pub(crate) enum Injector {
    /// The memory backend's own raw push.
    Memory(MemoryBackend),
    /// The Redis backend's key layout, written with plain commands.
    Redis {
        /// The server, without jobsmith's settings.
        url: String,
        /// The backend's key prefix.
        prefix: String,
    },
    /// A raw publish to the queue's broker queue.
    Amqp(jobsmith::amqp::AmqpBackend),
    /// A raw `SendMessage`.
    Sqs(jobsmith::sqs::SqsBackend),
}

/// One injected payload, and how the checker recognises it in the dead-letter queue.
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    /// The bytes written.
    pub(crate) raw: Vec<u8>,
    /// For an envelope of an unknown job, its id.
    pub(crate) id: Option<JobId>,
}

impl Injected {
    /// The `i`th payload that is not an envelope.
    pub(crate) fn garbage(run: &str, i: usize) -> Self {
        Self {
            raw: format!("soak {run} garbage #{i}: {{\"v\":1, not json").into_bytes(),
            id: None,
        }
    }

    /// The `i`th envelope for a job that no worker has.
    pub(crate) fn unknown(i: usize) -> Self {
        let mut env = Envelope::with_args("soak_no_such_job", QUEUE, &serde_json::json!({"i": i}))
            .unwrap_or_else(|_| unreachable!("plain JSON serializes"));
        env.max_attempts = 3;
        Self {
            raw: env.to_bytes(),
            id: Some(env.id),
        }
    }

    /// A short description for failure messages.
    pub(crate) fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!("envelope of unknown job, id {id}"),
            None => format!("garbage `{}`", String::from_utf8_lossy(&self.raw)),
        }
    }
}

impl Injector {
    /// Writes `raw` into the soak's queue, ready now.
    pub(crate) async fn push(&self, raw: &[u8]) -> Result<(), String> {
        match self {
            Injector::Memory(m) => {
                m.push_raw(QUEUE, raw.to_vec());
                Ok(())
            }
            Injector::Redis { url, prefix } => redis_push(url, prefix, raw).await,
            Injector::Amqp(b) => b.publish_raw(QUEUE, raw).await.map_err(|e| e.to_string()),
            Injector::Sqs(b) => {
                let url = b.queue_url(QUEUE).await.map_err(|e| e.to_string())?;
                let body = String::from_utf8(raw.to_vec())
                    .map_err(|_| "SQS bodies are text: inject text only".to_owned())?;
                b.client()
                    .send_message()
                    .queue_url(url)
                    .message_body(body)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| format!("SendMessage: {e}"))
            }
        }
    }
}

/// The Redis backend's layout (see crates/jobsmith-redis/src/scripts): the
/// payload and its ready time in the queue's job hash, its id at the tail of
/// the priority-0 ready list, and a wake token.
async fn redis_push(url: &str, prefix: &str, raw: &[u8]) -> Result<(), String> {
    let id = serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("raw-{:016x}", fastrand::u64(..)));
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let base = format!("{{{prefix}:{QUEUE}}}");
    redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(format!("{base}:jobs"))
        .arg(format!("p:{id}"))
        .arg(raw)
        .arg(format!("r:{id}"))
        .arg(Timestamp::now().as_millis())
        .cmd("RPUSH")
        .arg(format!("{base}:ready:0"))
        .arg(&id)
        .cmd("ZADD")
        .arg(format!("{base}:prios"))
        .arg(0)
        .arg(0)
        .cmd("RPUSH")
        .arg(format!("{base}:wake"))
        .arg(1)
        .exec_async(&mut conn)
        .await
        .map_err(|e| format!("raw write to redis: {e}"))
}
