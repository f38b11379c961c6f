//! Errors that retrying cannot fix (a wrong password, a database the server
//! does not have) fail `connect`, and stop a running worker, with an error
//! that says what to fix; and what a worker logs about a server it lost and
//! found again. Each test runs a `redis-server` of its own.
//!
//! Current-thread runtimes: the worker's tasks log on the thread whose
//! subscriber ([`Logs::capture`]) captures them.

mod support;

use jobsmith_conformance::{errors, noop_registry, Logs};
use jobsmith_core::{App, Error};
use jobsmith_redis::RedisBackend;
use std::time::{Duration, Instant};
use support::server::Server;

/// How long a worker may take to give up on a permanent error.
const GIVE_UP: Duration = Duration::from_secs(15);

/// `e` is the error of a configuration to fix: permanent, saying what to
/// change (`fix`), naming the server and never printing `secret`.
fn assert_says_what_to_fix(e: &Error, fix: &str, server: &str, secret: &str) {
    errors::assert_says_what_to_fix(e, fix, &[secret]);
    assert!(
        e.to_string().contains(server),
        "the error does not name the server {server}: {e}"
    );
}

#[tokio::test]
async fn connect_with_a_wrong_password_fails_saying_what_to_fix() {
    let server = Server::with_password("right-pw").await;
    let host = format!("127.0.0.1:{}", server.port);
    let wrong = format!("redis://:wrong-pw@{host}");
    let started = Instant::now();
    match RedisBackend::connect(&wrong).await {
        Ok(_) => panic!("connected with a wrong password"),
        Err(e) => assert_says_what_to_fix(&e, "password", &host, "wrong-pw"),
    }
    // No password at all: the server answers NOAUTH to the first command.
    match RedisBackend::connect(&server.bare_url()).await {
        Ok(_) => panic!("connected without the password the server asks for"),
        Err(e) => assert_says_what_to_fix(&e, "password", &host, "right-pw"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused logins are not retried: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_to_a_database_out_of_range_fails_saying_what_to_fix() {
    let server = Server::start(false).await;
    let host = format!("127.0.0.1:{}", server.port);
    match RedisBackend::connect(&format!("{}/99999", server.url())).await {
        Ok(_) => panic!("connected to database 99999 of a server with 16"),
        Err(e) => assert_says_what_to_fix(&e, "database", &host, "no secret"),
    }
}

/// The password changes under a running worker (its connections dropped,
/// as a rotation does): the worker stops, and `run` returns the error,
/// instead of reconnecting for ever.
#[tokio::test]
async fn a_worker_stops_with_the_error_when_its_password_stops_working() {
    let mut server = Server::with_password("first-pw").await;
    let host = format!("127.0.0.1:{}", server.port);
    let app = App::new(RedisBackend::connect(&server.url()).await.expect("connect"));
    let worker = tokio::spawn(
        app.worker()
            .registry(noop_registry())
            .stop_on(std::future::pending())
            .run(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!worker.is_finished(), "the worker runs");
    server.change_password("second-pw").await;
    let ended = tokio::time::timeout(GIVE_UP, worker).await;
    let Ok(joined) = ended else {
        panic!("the worker still runs {GIVE_UP:?} after its password stopped working");
    };
    match joined.expect("the worker task") {
        Ok(()) => panic!("the worker stopped, but `run` returned Ok"),
        Err(e) => {
            assert_says_what_to_fix(&e, "password", &host, "first-pw");
            eprintln!("the worker stopped with: {e}");
        }
    }
}

/// An ACL user that may not run scripts: connect works (PING is allowed),
/// and the worker's first reserve is refused (NOPERM) for good.
#[tokio::test]
async fn a_worker_stops_when_its_user_may_not_run_what_jobsmith_needs() {
    let server = Server::start(false).await;
    let host = format!("127.0.0.1:{}", server.port);
    let client = redis::Client::open(server.url()).expect("redis URL");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect as the default user");
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "limited",
                "on",
                ">limited-pw",
                "~*",
                "&*",
                "+@all",
                "-@scripting",
            ][..],
        )
        .exec_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://limited:limited-pw@{host}");
    let app = App::new(RedisBackend::connect(&url).await.expect("connect"));
    let worker = app
        .worker()
        .registry(noop_registry())
        .stop_on(std::future::pending())
        .run();
    match tokio::time::timeout(GIVE_UP, worker).await {
        Err(_) => panic!("the worker still runs {GIVE_UP:?} after NOPERM"),
        Ok(Ok(())) => panic!("the worker stopped, but `run` returned Ok"),
        Ok(Err(e)) => assert_says_what_to_fix(&e, "grant the user", &host, "limited-pw"),
    }
}

/// A server that goes away and comes back: the warnings name the server
/// (never its password) and the cause, and a line says the worker reconnected.
#[tokio::test]
async fn a_lost_server_is_logged_with_host_and_cause_and_reconnected() {
    let (logs, _guard) = Logs::capture();
    let mut server = Server::with_password("log-pw").await;
    let host = format!("127.0.0.1:{}", server.port);
    let app = App::new(RedisBackend::connect(&server.url()).await.expect("connect"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        app.worker()
            .registry(noop_registry())
            .stop_on(async move {
                let _ = stop_rx.await;
            })
            .run(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().await;
    let deadline = Instant::now() + GIVE_UP;
    while logs.lines_with(&["reconnected"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no line says the worker reconnected; the log was:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    worker.await.expect("worker task").expect("the worker");
    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&host) && l.contains("refused")),
        "no warning names the server {host} and the cause (connection refused); the log was:\n{text}"
    );
    assert!(
        !text.contains("log-pw"),
        "the log prints the password:\n{text}"
    );
    eprintln!("{text}");
}
