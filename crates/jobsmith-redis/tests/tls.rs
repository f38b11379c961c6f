//! `rediss://` against a real TLS Redis: each test starts a `redis-server` of
//! its own that speaks only TLS, on a free port, with a throwaway CA
//! ([`TlsRedis`]).
//!
//! A round trip with `tls_ca=` trusting that CA; a CA that did not sign the
//! server's certificate (and the system roots) refused promptly, naming the
//! certificate; `#insecure` connecting without checks (feature `tls-insecure`),
//! and refused at connect, naming that feature, without it.
#![cfg(feature = "tls")]

use jobsmith_conformance::errors;
use jobsmith_conformance::tls::TlsRedis;
use jobsmith_core::{Backend, Envelope, Error, LeaseStatus};
use jobsmith_core::{Inspect, SettleExt};
use jobsmith_redis::{RedisBackend, RedisConfig};
use std::time::{Duration, Instant};

/// Longest a connection attempt may take, success or failure, before the test calls it a hang.
const PROMPT: Duration = Duration::from_secs(15);

/// Connects, or fails the test if neither success nor failure comes promptly.
async fn connect(url: &str) -> jobsmith_core::Result<RedisBackend> {
    let started = Instant::now();
    let res = tokio::time::timeout(PROMPT, RedisBackend::connect(url))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} hung for {PROMPT:?}"));
    eprintln!("connect to {url}: {:?}", started.elapsed());
    res
}

/// Enqueue, a blocking reserve woken by an enqueue, ack and stats, all over TLS.
async fn round_trip(b: &RedisBackend) {
    let queues = vec!["tls".to_owned()];
    let job = |n: u32| Envelope::with_args("noop", "tls", &serde_json::json!({ "n": n })).unwrap();
    b.enqueue(vec![job(1)]).await.expect("enqueue over TLS");
    let stats = b.stats(&queues).await.expect("stats");
    assert_eq!((stats[0].ready, stats[0].in_flight), (1, 0));

    let got = b
        .reserve(&queues, 10, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .expect("reserve");
    assert_eq!(got.len(), 1);
    let env = got[0].envelope.as_ref().expect("an envelope");
    assert_eq!((env.job.as_str(), env.args.get()), ("noop", r#"{"n":1}"#));
    assert_eq!(b.stats(&queues).await.expect("stats")[0].in_flight, 1);
    let acked = b.ack(&[got[0].lease.clone()]).await.expect("ack");
    assert_eq!(acked, vec![LeaseStatus::Held]);

    // An idle reserve blocks on a connection of its own (also TLS) until an enqueue wakes it.
    let waiter = {
        let (b, queues) = (b.clone(), queues.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let got = b
                .reserve(
                    &queues,
                    10,
                    Duration::from_secs(60),
                    Duration::from_secs(10),
                )
                .await
                .expect("blocking reserve");
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.enqueue(vec![job(2)]).await.expect("enqueue");
    let (got, waited) = waiter.await.expect("the waiter");
    assert_eq!(got.len(), 1, "woken with the job");
    assert!(
        waited < Duration::from_secs(5),
        "woken, not timed out: {waited:?}"
    );
    let acked = b.ack(&[got[0].lease.clone()]).await.expect("ack");
    assert_eq!(acked, vec![LeaseStatus::Held]);

    let s = &b.stats(&queues).await.expect("stats")[0];
    assert_eq!(
        (s.ready, s.scheduled, s.in_flight, s.dead),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn trusting_the_servers_ca_gives_a_round_trip() {
    let server = TlsRedis::start();
    let url = server.url(&format!("&tls_ca={}", server.certs.file("ca.pem")));
    let b = connect(&url).await.expect("connect over TLS");
    round_trip(&b).await;
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_is_refused_promptly() {
    let server = TlsRedis::start();
    for extra in [
        format!("&tls_ca={}", server.certs.file("other-ca.pem")),
        String::new(),
    ] {
        let url = server.url(&extra);
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

#[cfg(feature = "tls-insecure")]
#[tokio::test]
async fn insecure_connects_without_verification() {
    let server = TlsRedis::start();
    let b = connect(&server.url("#insecure"))
        .await
        .expect("connect with #insecure");
    round_trip(&b).await;
}

/// Without the `tls-insecure` feature, `#insecure` is refused before any
/// connection is tried, even to a server whose certificate would pass.
#[cfg(not(feature = "tls-insecure"))]
#[tokio::test]
async fn insecure_without_its_feature_is_refused_at_connect() {
    let server = TlsRedis::start();
    let url = server.url(&format!("&tls_ca={}#insecure", server.certs.file("ca.pem")));
    let e = connect(&url).await.expect_err("no tls-insecure feature");
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("`tls-insecure` feature of jobsmith-redis")
            && text.contains("`redis-tls-insecure`")
            && text.contains("tls_ca="),
        "the error names the feature and the secure alternative: {text}"
    );
}

#[tokio::test]
async fn a_bad_ca_file_is_a_configuration_error() {
    let dir = std::env::temp_dir().join(format!("jobsmith-redis-tls-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let missing = dir.join("missing.pem");
    for path in [&missing, &not_pem] {
        let config = RedisConfig::from_url("rediss://127.0.0.1:1")
            .expect("valid")
            .with_tls_ca(path);
        let e = RedisBackend::connect_with(config)
            .await
            .expect_err("no usable CA");
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
