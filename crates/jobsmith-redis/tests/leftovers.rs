//! A finished job leaves nothing behind: after many jobs run to completion,
//! the server holds the same keys and the same memory as before.
//!
//! `JOBSMITH_REDIS_LEFTOVER_JOBS` sets how many (default 20,000); the issue's
//! 1,000,000 is a run by hand. The test uses a `redis-server` of its own so
//! that `INFO memory` measures only it.

mod support;

use jobsmith_core::{Backend, Envelope};
use jobsmith_core::{Inspect, SettleExt};
use jobsmith_redis::{RedisBackend, RedisConfig};
use std::time::{Duration, Instant};

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

async fn dbsize(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("DBSIZE")
        .query_async(conn)
        .await
        .expect("DBSIZE")
}

/// Runs `n` jobs through enqueue, reserve and ack, in batches, half with idempotency keys.
async fn run_jobs(b: &RedisBackend, n: usize, keyed: bool) {
    let queues = vec!["q".to_owned()];
    let mut sent = 0;
    let mut done = 0;
    while done < n {
        if sent < n {
            let batch: Vec<Envelope> = (sent..(sent + 2000).min(n))
                .map(|i| {
                    let mut e = Envelope::with_args("noop", "q", &serde_json::json!({"i": i}))
                        .expect("json");
                    if keyed && i % 2 == 0 {
                        e.idempotency_key = Some(format!("k{i}"));
                    }
                    e
                })
                .collect();
            sent += batch.len();
            b.enqueue(batch).await.expect("enqueue");
        }
        let got = b
            .reserve(
                &queues,
                500,
                Duration::from_secs(60),
                Duration::from_secs(1),
            )
            .await
            .expect("reserve");
        let leases: Vec<_> = got.iter().map(|d| d.lease.clone()).collect();
        done += leases.len();
        b.ack(&leases).await.expect("ack");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_jobs_leave_no_keys_and_no_memory_behind() {
    let n: usize = std::env::var("JOBSMITH_REDIS_LEFTOVER_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = support::server::Server::start(false).await;
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // unique_for = 0: completed keys are not remembered, so nothing at all should stay.
    let config = RedisConfig::from_url(&format!("{}?unique_for=0s", server.url()))
        .expect("url")
        .with_prefix("left");
    let b = RedisBackend::connect_with(config).await.expect("connect");

    // Warm up: scripts loaded, per-queue counters created, allocator settled.
    run_jobs(&b, 2000, true).await;
    let (keys_before, mem_before) = (dbsize(&mut conn).await, used_memory(&mut conn).await);

    let started = Instant::now();
    run_jobs(&b, n, true).await;
    let took = started.elapsed();
    let (keys_after, mem_after) = (dbsize(&mut conn).await, used_memory(&mut conn).await);
    eprintln!(
        "{n} jobs in {took:?}: keys {keys_before} -> {keys_after}, used_memory {mem_before} -> {mem_after} ({:+} bytes)",
        mem_after - mem_before
    );
    assert_eq!(
        keys_after, keys_before,
        "a completed job leaves no key behind"
    );
    assert!(
        (mem_after - mem_before).abs() < 512 * 1024,
        "used_memory returns to its baseline: {mem_before} -> {mem_after}"
    );
    let s = b.stats(&["q".to_owned()]).await.expect("stats").remove(0);
    assert_eq!((s.ready, s.scheduled, s.in_flight, s.dead), (0, 0, 0, 0));
}
