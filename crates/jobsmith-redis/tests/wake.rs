//! How an idle reserve's wait ends on time, each test on a `redis-server` of
//! its own: the backend keeps the time and ends the `BLPOP` with `CLIENT
//! UNBLOCK` (Redis itself times a blocked pop out only on its 100 ms tick),
//! reusing the blocking connection; a user the server does not allow
//! `CLIENT` to still has its waits end on time, on a new connection each.

mod support;

use jobsmith_core::{Backend, Envelope, Timestamp};
use jobsmith_redis::{RedisBackend, RedisConfig};
use std::time::{Duration, Instant};
use support::server::Server;

/// How late after its due time a scheduled job must reach a waiting reserve (the contract's bound).
const DUE_BOUND: Duration = Duration::from_millis(100);

async fn connect(url: &str) -> RedisBackend {
    let config = RedisConfig::from_url(url)
        .expect("a redis URL")
        .with_prefix("wake");
    RedisBackend::connect_with(config).await.expect("connect")
}

async fn admin(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("a redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Connections the server has accepted since it started.
async fn connections_made(server: &Server) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut admin(server).await)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats gives total_connections_received")
}

/// Three reserves that each wait 300 ms for nothing, then one that waits
/// while a job is scheduled 700 ms out: each wait ends within the bound of
/// its time, and the job is handed out within the bound of its due time.
async fn waits_end_on_time(b: &RedisBackend) {
    let q = vec!["q".to_owned()];
    let wait = Duration::from_millis(300);
    for _ in 0..3 {
        let started = Instant::now();
        let got = b
            .reserve(&q, 1, Duration::from_secs(30), wait)
            .await
            .expect("reserve");
        let took = started.elapsed();
        assert!(got.is_empty());
        assert!(
            took >= wait && took <= wait + DUE_BOUND,
            "a reserve asked to wait {wait:?} returned after {took:?}"
        );
    }
    let waiter = {
        let b = b.clone();
        let q = q.clone();
        tokio::spawn(async move {
            let got = b
                .reserve(&q, 1, Duration::from_secs(30), Duration::from_secs(10))
                .await
                .expect("reserve");
            (got.len(), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut env = Envelope::with_args("noop", "q", &serde_json::json!({})).expect("json");
    let delay = Duration::from_millis(700);
    env.run_at = Timestamp::now().plus(delay);
    let due = Instant::now() + delay;
    b.enqueue(vec![env]).await.expect("enqueue");
    let (n, at) = waiter.await.expect("the reserve task runs");
    assert_eq!(n, 1, "the waiting reserve gets the job when it comes due");
    let late = at.saturating_duration_since(due);
    assert!(
        late <= DUE_BOUND,
        "the job reached the waiting reserve {late:?} after its due time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_whose_time_is_up_is_unblocked_and_its_connection_reused() {
    let server = Server::start(false).await;
    let b = connect(&server.url()).await;
    // The first wait opens the blocking connection; count from after it.
    b.reserve(
        &["q".to_owned()],
        1,
        Duration::from_secs(30),
        Duration::from_millis(50),
    )
    .await
    .expect("reserve");
    let before = connections_made(&server).await;
    waits_end_on_time(&b).await;
    // One more for each count read here; none for the waits, which reuse theirs.
    let made = connections_made(&server).await - before;
    assert!(
        made <= 1,
        "the waits opened {made} connections; a wait ended by CLIENT UNBLOCK keeps its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_client_unblock_still_has_its_waits_end_on_time() {
    let server = Server::start(false).await;
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "worker", "on", ">secret", "~*", "&*", "+@all", "-client",
            ][..],
        )
        .query_async::<()>(&mut admin(&server).await)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://worker:secret@127.0.0.1:{}", server.port);
    let b = connect(&url).await;
    waits_end_on_time(&b).await;
}
