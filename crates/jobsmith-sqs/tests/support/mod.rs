//! What the SQS tests share: the moto endpoint, fresh prefixes, a proxy that
//! can cut the connection, and the faults the conformance suite uses.
#![allow(dead_code, unreachable_pub)]

use aws_sdk_sqs::types::MessageAttributeValue;
use jobsmith_core::testkit::Faults;
use jobsmith_core::Settings;
use jobsmith_sqs::{SqsBackend, SqsConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

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

/// A TCP proxy in front of the endpoint that can drop every connection.
#[derive(Debug)]
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    severed: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let severed = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (s, c) = (Arc::clone(&severed), Arc::clone(&conns));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if s.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut conns = c.lock().expect("lock");
                conns.retain(|h| !h.is_finished());
                conns.push(task.abort_handle());
            }
        });
        Self {
            addr,
            severed,
            conns,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        for h in self.conns.lock().expect("lock").drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.severed.store(false, Ordering::SeqCst);
    }
}

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

/// The conformance suite's faults: a proxy to cut, and raw sends.
#[derive(Debug)]
pub struct SqsFaults {
    pub proxy: Proxy,
    pub direct: SqsBackend,
}

#[async_trait::async_trait]
impl Faults for SqsFaults {
    async fn sever(&self) {
        self.proxy.sever();
    }
    async fn restore(&self) {
        self.proxy.restore();
    }
    async fn push_raw(&self, queue: &str, raw: &[u8]) {
        push_raw(&self.direct, queue, raw).await;
    }
}
