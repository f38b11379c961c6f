//! `amqps://` against a RabbitMQ node of the test's own with a TLS listener
//! (`support/tls.rs`: a throwaway CA, a server certificate for 127.0.0.1, a
//! private node on free ports).
//!
//! A round trip with `tls_ca=` trusting that CA; a CA that did not sign the
//! broker's certificate (and the system roots alone) refused promptly,
//! naming the certificate; an unusable CA file refused as configuration.
#![cfg(feature = "tls")]

mod support;

use jobsmith_amqp::{AmqpBackend, AmqpConfig};
use jobsmith_conformance::errors;
use jobsmith_conformance::tls::{temp_dir, TlsRabbit};
use jobsmith_core::{Backend, Envelope, Error, LeaseStatus};
use jobsmith_core::{Inspect, SettleExt};
use std::time::{Duration, Instant};

/// Longest a connection attempt may take, success or failure, before the test calls it a hang.
const PROMPT: Duration = Duration::from_secs(15);

/// Connects, or fails the test if neither success nor failure comes promptly.
async fn connect(url: &str) -> jobsmith_core::Result<AmqpBackend> {
    let started = Instant::now();
    let res = tokio::time::timeout(PROMPT, AmqpBackend::connect(url))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} hung for {PROMPT:?}"));
    eprintln!("connect to {url}: {:?}", started.elapsed());
    res
}

#[tokio::test]
async fn trusting_the_brokers_ca_gives_a_round_trip() {
    let node = TlsRabbit::start();
    let url = node.url(&format!("&tls_ca={}", node.certs.file("ca.pem")));
    let b = connect(&url).await.expect("connect over TLS");
    let queues = vec!["tls".to_owned()];
    let job = Envelope::with_args("noop", "tls", &serde_json::json!({ "n": 1 })).expect("JSON");
    b.enqueue(vec![job]).await.expect("enqueue over TLS");
    let got = b
        .reserve(&queues, 10, Duration::from_secs(60), Duration::from_secs(5))
        .await
        .expect("reserve over TLS");
    assert_eq!(got.len(), 1, "the job comes back");
    let env = got[0].envelope.as_ref().expect("an envelope");
    assert_eq!((env.job.as_str(), env.args.get()), ("noop", r#"{"n":1}"#));
    let acked = b.ack(&[got[0].lease.clone()]).await.expect("ack");
    assert_eq!(acked, vec![LeaseStatus::Held]);
    let s = &b.stats(&queues).await.expect("stats")[0];
    assert_eq!((s.ready, s.in_flight, s.dead), (0, 0, 0), "{s:?}");
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_broker_is_refused_promptly() {
    let node = TlsRabbit::start();
    for extra in [
        format!("&tls_ca={}", node.certs.file("other-ca.pem")),
        String::new(),
    ] {
        let url = node.url(&extra);
        let e = connect(&url)
            .await
            .expect_err("an unknown issuer is refused");
        let text = errors::chain(&e);
        assert!(
            text.to_lowercase().contains("certificate"),
            "the error names the certificate problem: {text}"
        );
        eprintln!("{url}: {text}");
    }
}

#[tokio::test]
async fn a_bad_ca_file_is_a_configuration_error() {
    /// Removes the directory however the test ends.
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let guard = Remove(temp_dir("amqp-tls-ca"));
    let dir = &guard.0;
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let missing = dir.join("missing.pem");
    for path in [&missing, &not_pem] {
        let url = format!("amqps://127.0.0.1:1/%2f?tls_ca={}", path.display());
        let e = AmqpBackend::connect(&url).await.expect_err("no usable CA");
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }
    let e = AmqpConfig::from_url("amqp://127.0.0.1/%2f?tls_ca=/ca.pem").expect_err("plain TCP");
    assert!(e.to_string().contains("write `amqps://`"), "{e}");
}
