//! Credentials that SQS refuses stop a worker, whose `run` returns an error
//! that says what to fix, instead of retrying for ever. moto accepts any
//! credentials, so the endpoint here is a stub that answers every request
//! as SQS answers a wrong access key.

mod support;

use jobsmith_conformance::noop_registry;
use jobsmith_core::{App, Error, Settings};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a worker may take to give up on a permanent error.
const GIVE_UP: Duration = Duration::from_secs(15);

/// An endpoint that refuses every request with `code`, as SQS refuses a
/// request signed with credentials it does not accept; its address.
async fn refusing(code: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // One request per connection: read up to the end of its headers
                // and body (the body is small), answer, close.
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await;
                let body = format!(
                    r#"{{"__type":"com.amazonaws.sqs#{code}","message":"The security token included in the request is invalid."}}"#
                );
                let reply = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/x-amz-json-1.0\r\n\
                     x-amzn-query-error: {code};Sender\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_worker_stops_when_sqs_refuses_its_credentials() {
    let endpoint = refusing("InvalidClientTokenId").await;
    let b = support::backend(Settings::default(), Some(&endpoint)).await;
    let worker = tokio::spawn(
        App::new(b)
            .worker()
            .registry(noop_registry())
            .stop_on(std::future::pending())
            .run(),
    );
    let Ok(joined) = tokio::time::timeout(GIVE_UP, worker).await else {
        panic!("the worker still runs {GIVE_UP:?} after SQS refused its credentials");
    };
    let e: Error = match joined.expect("the worker task") {
        Ok(()) => panic!("the worker stopped, but `run` returned Ok"),
        Err(e) => e,
    };
    assert!(
        e.is_permanent() && !e.is_transient(),
        "refused credentials are not a permanent error: {e}"
    );
    assert!(
        e.to_string().contains("credentials"),
        "the error does not say to fix the credentials: {e}"
    );
    eprintln!("the worker stopped with: {e}");
}
