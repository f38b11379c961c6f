//! The worker's `GET /metrics` endpoint (feature `prometheus`): a minimal HTTP/1.1 responder.
//!
//! Ours rather than `metrics-exporter-prometheus`'s own HTTP listener. That
//! listener is built together with a new global recorder, so it can serve
//! neither the recorder `Exporter::install` set up earlier nor one port per
//! worker in the same process; it answers every path and method (we promise
//! 404 and 405) as `text/plain` without the format version; and a bind
//! failure comes back as a string, where `Error::MetricsBind` keeps the
//! `io::Error`.

use crate::error::{Error, Result};
use crate::prometheus::Exporter;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The most of a request the endpoint reads: a scrape's head is far smaller.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many scrapes are answered at once; more connections are closed.
const MAX_CONNECTIONS: usize = 64;
/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder and binds `addr`; fails before the worker reserves anything.
pub(super) async fn bind(addr: SocketAddr) -> Result<(Exporter, TcpListener)> {
    let exporter = Exporter::install()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::MetricsBind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, "serving Prometheus metrics at http://{local}/metrics");
    Ok((exporter, listener))
}

/// Answers scrapes until aborted; aborting it also drops open connections.
pub(super) async fn serve(exporter: Exporter, listener: TcpListener) {
    let mut conns = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if conns.len() >= MAX_CONNECTIONS => drop(stream),
                Ok((stream, _)) => {
                    let exporter = exporter.clone();
                    conns.spawn(async move {
                        if let Err(e) = answer(stream, &exporter).await {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = upkeep.tick() => exporter.run_upkeep(),
            Some(_) = conns.join_next() => {}
        }
    }
}

/// Reads one request head and answers it, then closes the connection.
async fn answer(mut stream: TcpStream, exporter: &Exporter) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Ok(false);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(true)
    })
    .await
    .unwrap_or(Ok(false))?;
    let response = if complete {
        respond(&head, exporter)
    } else {
        reply(
            "400 Bad Request",
            "text/plain",
            "bad request\n".into(),
            true,
        )
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The response to a request head.
fn respond(head: &[u8], exporter: &Exporter) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path != b"/metrics" {
        return reply(
            "404 Not Found",
            "text/plain",
            "not found: metrics are at /metrics\n".into(),
            true,
        );
    }
    match method {
        b"GET" => reply(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            exporter.render(),
            true,
        ),
        b"HEAD" => reply(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            exporter.render(),
            false,
        ),
        _ => reply(
            "405 Method Not Allowed",
            "text/plain",
            "only GET is allowed\n".into(),
            true,
        ),
    }
}

fn reply(status: &str, content_type: &str, body: String, with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
