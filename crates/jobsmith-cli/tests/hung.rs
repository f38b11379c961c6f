//! `jobsmith stats` against a broker that hangs (a proxy in front of it that
//! keeps connections open and forwards nothing) exits with an error within
//! the URL's `call_timeout`, on Redis, RabbitMQ and SQS, instead of hanging
//! for as long as the broker does.

mod support;

use jobsmith_conformance::{url_host_port, url_through, Proxy};
use std::time::{Duration, Instant};
use support::{amqp_url, jobsmith, redis_url, sqs_url};

/// The limit the tests set in the URL.
const CALL_TIMEOUT: &str = "2s";
/// What the command may take: connecting and one stats call, each bounded
/// by the limit, and the process's start.
const BOUND: Duration = Duration::from_secs(6);
/// When a command that does not end is killed, so that it fails the test
/// rather than hanging it.
const GIVE_UP: Duration = Duration::from_secs(60);

/// Runs `jobsmith --url <url> stats --queue mail` with the proxy frozen;
/// it must exit non-zero within [`BOUND`], saying the broker did not answer.
async fn stats_fails_in_time(name: &str, url: String, proxy: &Proxy) {
    proxy.freeze();
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = jobsmith()
            .args(["--url", &url, "stats", "--queue", "mail"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > GIVE_UP {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    });
    let out = run.await.expect("the runner thread");
    let took = started.elapsed();
    proxy.thaw();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{name}: `jobsmith stats` on a frozen broker ended after {took:?}: {stderr}");
    assert!(
        !out.status.success(),
        "{name}: `jobsmith stats` on a frozen broker succeeded after {took:?}"
    );
    assert!(
        took <= BOUND,
        "{name}: `jobsmith stats` on a frozen broker took {took:?} to fail, beyond {BOUND:?} \
         with call_timeout={CALL_TIMEOUT}: {stderr}"
    );
    assert!(
        stderr.contains("no answer"),
        "{name}: the error says the broker did not answer: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_on_a_hung_redis_fails_within_call_timeout() {
    let url = redis_url();
    let proxy = Proxy::start(url_host_port(&url, 6379)).await;
    let url = format!(
        "{}&call_timeout={CALL_TIMEOUT}",
        url_through(&url, proxy.addr)
    );
    stats_fails_in_time("redis", url, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_on_a_hung_rabbitmq_fails_within_call_timeout() {
    let url = amqp_url();
    let proxy = Proxy::start(url_host_port(&url, 5672)).await;
    let url = format!(
        "{}&call_timeout={CALL_TIMEOUT}",
        url_through(&url, proxy.addr)
    );
    stats_fails_in_time("amqp", url, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_on_a_hung_sqs_fails_within_call_timeout() {
    let endpoint =
        std::env::var("JOBSMITH_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let proxy = Proxy::start(url_host_port(&endpoint, 80)).await;
    let url = sqs_url().replace(&endpoint, &proxy.url());
    let url = format!("{url}&call_timeout={CALL_TIMEOUT}");
    stats_fails_in_time("sqs", url, &proxy).await;
}
