//! What the SQS tests share: the moto endpoint, fresh prefixes, a proxy that
//! can cut the connection, and the faults the conformance suite uses.
#![allow(dead_code, unreachable_pub)]

use aws_sdk_sqs::types::{Message, MessageAttributeValue, QueueAttributeName};
use jobsmith_conformance::Faults;
use jobsmith_core::Settings;
use jobsmith_sqs::{SqsBackend, SqsConfig};
use std::sync::Mutex;
use std::time::Duration;

/// The SQS endpoint: `JOBSMITH_SQS_ENDPOINT`, or moto on 127.0.0.1:5000.
pub fn endpoint() -> String {
    std::env::var("JOBSMITH_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// A queue-name prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("t{:012x}", fastrand::u64(..) >> 16)
}

/// A backend on a fresh prefix, reaching the endpoint through `via` when given.
/// Dead-letter scans in tests hide what they read for 1 s, not 30 s, so a
/// scan of a deep dead-letter queue outlasts its window.
pub const SCAN_WINDOW: Duration = Duration::from_secs(1);

pub async fn backend(settings: Settings, via: Option<&str>) -> SqsBackend {
    let endpoint = via.map_or_else(endpoint, str::to_owned);
    let config = SqsConfig::new("us-east-1")
        .with_prefix(fresh_prefix())
        .with_endpoint(endpoint)
        .with_dead_scan_window(SCAN_WINDOW)
        .with_settings(settings);
    SqsBackend::connect_with(config)
        .await
        .expect("the SQS endpoint is reachable")
}

/// The TCP proxy the tests put in front of the endpoint, to cut or freeze it.
pub use jobsmith_conformance::Proxy;

/// The host:port of an http:// endpoint.
pub fn host_port(endpoint: &str) -> String {
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Writes a raw payload as a foreign producer would: text as the body,
/// anything else base64-encoded and marked `jobsmith-encoding: base64`.
pub async fn push_raw(backend: &SqsBackend, queue: &str, raw: &[u8]) {
    use base64::Engine as _;
    let url = backend.queue_url(queue).await.expect("queue");
    let mut req = backend.client().send_message().queue_url(url);
    req = match std::str::from_utf8(raw) {
        Ok(text) if !text.chars().any(|c| c < ' ' && !"\t\n\r".contains(c)) => {
            req.message_body(text)
        }
        _ => req
            .message_body(base64::engine::general_purpose::STANDARD.encode(raw))
            .message_attributes(
                "jobsmith-encoding",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("base64")
                    .build()
                    .expect("valid attribute"),
            ),
    };
    req.send().await.expect("raw send");
}

/// The conformance suite's faults: a proxy to cut, raw sends, and a queue
/// deleted behind the backend's back.
#[derive(Debug)]
pub struct SqsFaults {
    pub proxy: Proxy,
    pub direct: SqsBackend,
    /// Per broken queue: its level-0 SQS queue as it was, and the messages set aside.
    pub broken: Mutex<std::collections::HashMap<String, Deleted>>,
}

/// An SQS queue deleted by [`SqsFaults::break_queue`], to create again.
#[derive(Debug)]
pub struct Deleted {
    name: String,
    attributes: Vec<(QueueAttributeName, String)>,
    messages: Vec<Message>,
}

impl SqsFaults {
    pub fn new(proxy: Proxy, direct: SqsBackend) -> Self {
        Self {
            proxy,
            direct,
            broken: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Faults for SqsFaults {
    async fn sever(&self) {
        self.proxy.sever();
    }
    async fn restore(&self) {
        self.proxy.restore();
    }
    async fn freeze(&self) -> Option<String> {
        self.proxy.freeze();
        Some("a proxy in front of the SQS endpoint stopped forwarding".into())
    }
    fn server_words(&self) -> Vec<String> {
        vec![
            self.proxy.addr.to_string(),
            self.direct.config().region.clone(),
        ]
    }
    async fn thaw(&self) {
        self.proxy.thaw();
    }
    async fn push_raw(&self, queue: &str, raw: &[u8]) {
        push_raw(&self.direct, queue, raw).await;
    }
    /// What an operator can do to one queue: its level-0 SQS queue (which
    /// holds its jobs of priority 0) is emptied into memory and deleted.
    /// The backend has its URL and finds the queue gone.
    async fn break_queue(&self, queue: &str) -> Option<String> {
        let client = self.direct.client();
        let url = self.direct.queue_url(queue).await.expect("queue URL");
        let name = url
            .rsplit('/')
            .next()
            .expect("a URL ends in a name")
            .to_owned();
        let kept = [
            QueueAttributeName::RedrivePolicy,
            QueueAttributeName::MessageRetentionPeriod,
        ];
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .set_attribute_names(Some(kept.to_vec()))
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut messages = Vec::new();
        loop {
            let got = client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .visibility_timeout(600)
                .send()
                .await
                .expect("ReceiveMessage")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                break;
            }
            messages.extend(got);
        }
        client
            .delete_queue()
            .queue_url(&url)
            .send()
            .await
            .expect("DeleteQueue");
        let how = format!(
            "SQS queue `{name}` deleted, its {} messages set aside",
            messages.len()
        );
        self.lock().insert(
            queue.to_owned(),
            Deleted {
                name,
                attributes,
                messages,
            },
        );
        Some(how)
    }
    /// Creates the SQS queue again as it was (unless the backend already
    /// did) and sends the messages set aside back into it.
    async fn repair_queue(&self, queue: &str) {
        let Some(deleted) = self.lock().remove(queue) else {
            return;
        };
        let client = self.direct.client();
        let url = client
            .create_queue()
            .queue_name(&deleted.name)
            .set_attributes(Some(deleted.attributes.into_iter().collect()))
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("a created queue has a URL");
        for m in deleted.messages {
            client
                .send_message()
                .queue_url(&url)
                .set_message_body(m.body)
                .set_message_attributes(m.message_attributes)
                .send()
                .await
                .expect("SendMessage");
        }
    }
}

impl SqsFaults {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Deleted>> {
        self.broken.lock().expect("not poisoned")
    }
}
