//! Errors that retrying cannot fix (a wrong password, a virtual host the
//! broker does not have, a queue the broker holds with other arguments)
//! fail `connect`, or stop a running worker, with an error that says what
//! to fix, instead of reconnecting for ever.

mod support;

use jobsmith_amqp::AmqpBackend;
use jobsmith_conformance::{errors, noop_registry};
use jobsmith_core::{App, Error};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::time::{Duration, Instant};

/// How long a worker may take to give up on a permanent error.
const GIVE_UP: Duration = Duration::from_secs(15);

/// `e` is the error of a configuration to fix: permanent, saying what to
/// change (`fix`) and never printing the password `secret`. The user name
/// is shown (`guest:***@`), and the test broker's password is its user
/// name, so what must not appear is the password after the `:`.
fn assert_says_what_to_fix(e: &Error, fix: &str, secret: &str) {
    errors::assert_says_what_to_fix(e, fix, &[&format!(":{secret}@"), &format!(":{secret} ")]);
}

/// The test broker's URL split as `(scheme, user, password, host:port)`.
fn parts() -> (String, String, String, String) {
    let base = support::base_url();
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let (creds, host) = rest.rsplit_once('@').expect("credentials in the URL");
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let hostport = host.split(['/', '?']).next().unwrap_or(host);
    (
        scheme.to_owned(),
        user.to_owned(),
        password.to_owned(),
        hostport.to_owned(),
    )
}

#[tokio::test]
async fn connect_with_a_wrong_password_fails_saying_what_to_fix() {
    let (scheme, user, _, host) = parts();
    let url = format!(
        "{scheme}://{user}:wrong-pw@{host}/%2f?prefix={}",
        support::fresh_prefix()
    );
    let started = Instant::now();
    match AmqpBackend::connect(&url).await {
        Ok(_) => panic!("connected with a wrong password"),
        Err(e) => {
            assert_says_what_to_fix(&e, "password", "wrong-pw");
            eprintln!("connect failed with: {e}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused login is not retried: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_to_an_unknown_vhost_fails_saying_what_to_fix() {
    let (scheme, user, password, host) = parts();
    let url = format!(
        "{scheme}://{user}:{password}@{host}/jobsmith-no-such-vhost?prefix={}",
        support::fresh_prefix()
    );
    match AmqpBackend::connect(&url).await {
        Ok(_) => panic!("connected to a virtual host the broker does not have"),
        Err(e) => assert_says_what_to_fix(&e, "virtual host", &password),
    }
}

/// Someone declared the work queue jobsmith would use with other arguments:
/// the broker refuses jobsmith's declaration (`PRECONDITION_FAILED`,
/// "inequivalent arg"), and will every time. The worker stops and `run`
/// returns an error naming the queue.
#[tokio::test]
async fn a_worker_stops_when_its_work_queue_was_declared_with_other_arguments() {
    let b = support::fresh("").await;
    let work = b.work_queue_name("default");
    let (conn, ch) = support::plain_channel().await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(7));
    args.insert("x-expires".into(), AMQPValue::LongLongInt(600_000));
    ch.queue_declare(work.as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("declare the conflicting work queue");
    let worker = tokio::spawn(
        App::new(b)
            .worker()
            .registry(noop_registry())
            .stop_on(std::future::pending())
            .run(),
    );
    let ended = tokio::time::timeout(GIVE_UP, worker).await;
    let _ = ch
        .queue_delete(work.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    let Ok(joined) = ended else {
        panic!("the worker still runs {GIVE_UP:?} after the broker refused its work queue");
    };
    match joined.expect("the worker task") {
        Ok(()) => panic!("the worker stopped, but `run` returned Ok"),
        Err(e) => {
            assert_says_what_to_fix(&e, "declared", "guest");
            assert!(
                e.to_string().contains(&work),
                "the error names the queue: {e}"
            );
            eprintln!("the worker stopped with: {e}");
        }
    }
}
