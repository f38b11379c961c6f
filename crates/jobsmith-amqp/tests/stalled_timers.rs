//! Delayed jobs start on time while the broker's delay timers stall.
//!
//! A delay level is a queue whose TTL timer lets its messages go. On a busy
//! broker that shares its cores, those timers fire late, up to about a
//! second, while deliveries driven by messages stay prompt
//! (docs/backends/rabbitmq.md). The test stands that in on a RabbitMQ node
//! of its own: it suspends every delay-level queue of its queue (`sys:suspend`
//! on the queue processes) for 1.3 s, over the last stretch of two delayed
//! jobs, one due in under a second from its enqueue and one due later, and
//! checks both start within 200 ms of their due time.

mod support;

use jobsmith_conformance::tls::TlsRabbit;
use jobsmith_core::SettleExt;
use jobsmith_core::{Backend, Envelope, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const QUEUE: &str = "stall";

/// How long the levels stay suspended.
const STALL_MS: u64 = 1_300;

/// How late a job may start.
const BOUND_MS: u64 = 200;

fn job(n: u64, run_at: Timestamp) -> Envelope {
    let mut env =
        Envelope::with_args("stall", QUEUE, &serde_json::json!({ "n": n })).expect("json");
    env.run_at = run_at;
    env
}

/// Milliseconds since the epoch, as the broker's `os:system_time(millisecond)` reads.
fn epoch_ms() -> u64 {
    Timestamp::now().as_millis()
}

async fn sleep_until(epoch: u64) {
    tokio::time::sleep(Duration::from_millis(epoch.saturating_sub(epoch_ms()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_start_on_time_while_the_delay_levels_stall() {
    let node = Arc::new(TlsRabbit::start());
    let url = node.amqp_url("");
    let prefix = url
        .split("prefix=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("the URL names its prefix")
        .to_owned();
    let backend = Arc::new(
        jobsmith_amqp::AmqpBackend::connect(&url)
            .await
            .expect("the test's own node is reachable"),
    );
    let queues = vec![QUEUE.to_owned()];
    // Consuming declares the queue and starts this process's consumers.
    let none = backend
        .reserve(
            &queues,
            1,
            Duration::from_secs(30),
            Duration::from_millis(50),
        )
        .await
        .expect("reserve");
    assert!(none.is_empty());

    // The stall's start, far enough ahead for `rabbitmqctl` to have set it up.
    let stall_at = epoch_ms() + 12_000;
    let resume_at = stall_at + STALL_MS;
    let script = format!(
        "Pids = [amqqueue:get_pid(Q) || K <- lists:seq(0, 35), \
           {{ok, Q}} <- [rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, \
             iolist_to_binary(io_lib:format(\"~s.~s.delay.~2..0B\", [\"{prefix}\", \"{QUEUE}\", K]))))]], \
         spawn(fun() -> \
           timer:sleep(max(0, {stall_at} - os:system_time(millisecond))), \
           [sys:suspend(P) || P <- Pids], \
           timer:sleep(max(0, {resume_at} - os:system_time(millisecond))), \
           [sys:resume(P) || P <- Pids] end), \
         length(Pids)."
    );
    let set = {
        let node = Arc::clone(&node);
        tokio::task::spawn_blocking(move || node.rabbitmqctl(&["eval", &script]))
            .await
            .expect("rabbitmqctl runs")
    };
    assert_eq!(
        set.as_deref(),
        Some("36"),
        "the stall is set up on the queue's 36 delay levels"
    );
    let margin = stall_at.saturating_sub(epoch_ms());
    assert!(
        margin > 1_500,
        "rabbitmqctl took too long: the stall starts in {margin} ms"
    );

    // Due 700 ms into the stall: its levels would let it go in the stall.
    let long = Timestamp(stall_at + 700);
    backend
        .enqueue(vec![job(1, long)])
        .await
        .expect("enqueue the long delay");
    // Enqueued 100 ms before the stall, due 600 ms into it.
    sleep_until(stall_at - 100).await;
    let short = Timestamp(stall_at + 600);
    backend
        .enqueue(vec![job(2, short)])
        .await
        .expect("enqueue the short delay");

    let due: HashMap<String, u64> = [(1, long), (2, short)]
        .into_iter()
        .map(|(n, at)| (format!("{{\"n\":{n}}}"), at.as_millis()))
        .collect();
    let mut late = HashMap::new();
    let deadline = resume_at + 5_000;
    while late.len() < 2 && epoch_ms() < deadline {
        let got = backend
            .reserve(
                &queues,
                2,
                Duration::from_secs(30),
                Duration::from_millis(200),
            )
            .await
            .expect("reserve");
        let now = epoch_ms();
        for d in got {
            let env = d.envelope.as_ref().expect("a job envelope");
            let args = env.args.get().to_owned();
            let due_ms = due[&args];
            late.insert(
                args,
                i64::try_from(now).unwrap() - i64::try_from(due_ms).unwrap(),
            );
            backend
                .ack(std::slice::from_ref(&d.lease))
                .await
                .expect("ack");
        }
    }
    assert_eq!(late.len(), 2, "both jobs ran: {late:?}");
    for (args, ms) in &late {
        assert!(
            (-5..=i64::try_from(BOUND_MS).unwrap()).contains(ms),
            "job {args} started {ms} ms after it was due, while the delay levels stalled for \
             {STALL_MS} ms (all started: {late:?})"
        );
    }
}
