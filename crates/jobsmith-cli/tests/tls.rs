//! The `jobsmith` binary over TLS: `rediss://` against a `redis-server` of
//! the test's own that speaks only TLS, and `amqps://` against a RabbitMQ node
//! of the test's own with a TLS listener (both in `support`), each trusting
//! a throwaway CA with `tls_ca=`. `enqueue` writes a job, `stats` counts it;
//! a CA that did not sign the server is refused, naming the certificate.

mod support;

use jobsmith_conformance::tls::{TlsRabbit, TlsRedis};
use serde_json::Value;
use support::{fails, ok};

/// `enqueue` then `stats` over `url`: one ready job in queue `tls`.
fn enqueue_and_count(url: &str) {
    let id = ok(&[
        "--url",
        url,
        "enqueue",
        "noop",
        // No worker has published this job: it is enqueued as it is.
        "--force",
        "--queue",
        "tls",
        "--args",
        r#"{"n":1}"#,
        "--max-attempts",
        "1",
    ]);
    assert!(!id.trim().is_empty(), "enqueue prints the job's id");
    let stats: Value =
        serde_json::from_str(&ok(&["--url", url, "--json", "stats", "--queue", "tls"]))
            .expect("stats prints JSON");
    let row = &stats["queues"][0];
    assert_eq!(row["queue"], "tls", "{stats}");
    assert_eq!(row["ready"].as_u64(), Some(1), "{stats}");
}

/// `stats` with a CA that did not sign the server fails, and says why.
fn refuses_the_other_ca(url: &str) {
    let err = fails(&["--url", url, "stats"]);
    assert!(
        err.to_lowercase().contains("certificate"),
        "the error names the certificate problem: {err}"
    );
    eprintln!("{err}");
}

#[test]
fn rediss_with_a_private_ca() {
    let server = TlsRedis::start();
    enqueue_and_count(&server.url(&format!("&tls_ca={}", server.certs.file("ca.pem"))));
    refuses_the_other_ca(&server.url(&format!("&tls_ca={}", server.certs.file("other-ca.pem"))));
}

#[test]
fn amqps_with_a_private_ca() {
    let node = TlsRabbit::start();
    enqueue_and_count(&node.url(&format!("&tls_ca={}", node.certs.file("ca.pem"))));
    refuses_the_other_ca(&node.url(&format!("&tls_ca={}", node.certs.file("other-ca.pem"))));
}
